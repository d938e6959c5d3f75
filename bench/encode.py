"""Encoding benchmark: BED + genome FASTA -> uint8 windows, ours vs a naive per-record encoder.

Generates a synthetic mouse-sized genome (21 contigs, --genome-mb in total, 60-column FASTA) and
--regions narrowPeak regions, then times

* ours: ``tisfm_core.sequences.read_bed_windows`` (contig by contig, vectorised), and
* naive: one pyfaidx fetch, one Python string and one per-character lookup per region,

on the same regions (the naive encoder on a --naive-regions subset, scaled to all regions), checks
that both give identical windows on that subset, and reports our peak memory (ru_maxrss of a
child process that does only our encoding).

    python bench/encode.py [--regions 512596] [--genome-mb 2700] [--naive-regions 20000]

Ends with one line: ``encode: <ratio>x <details>``. Targets: ours under 60 s and under 1 GB.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CHILD = """
import resource, sys, time
sys.path.insert(0, {repo!r})
from tisfm_core.sequences import read_bed_windows
t = time.perf_counter()
s = read_bed_windows({bed!r}, {genome!r}, length={length})
print(time.perf_counter() - t, len(s), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def make_genome(path, total_mb, random_state=0):
    """21 contigs with mouse-like relative sizes; written in 60-column lines, 16 MB at a time."""
    rng = np.random.default_rng(random_state)
    sizes = np.array([195, 182, 160, 157, 152, 150, 145, 130, 125, 131, 122, 120, 121, 125, 104, 98,
                      95, 91, 61, 171, 92], dtype=float)
    sizes = (sizes / sizes.sum() * total_mb * 1_000_000).astype(int)
    letters = np.frombuffer(b"ACGT", dtype=np.uint8)
    with open(path, "wb") as fh:
        for i, n in enumerate(sizes):
            fh.write(f">chr{i + 1}\n".encode())
            done = 0
            while done < n:
                m = min(n - done, 16 * 1024 * 1024 // 61 * 60)
                seq = letters[rng.integers(0, 4, m)]
                pad = (-m) % 60
                block = np.concatenate([seq, np.full(pad, ord("N"), np.uint8)]).reshape(-1, 60)
                block = np.concatenate([block, np.full((len(block), 1), ord("\n"), np.uint8)], axis=1)
                data = block.tobytes()
                if pad:
                    data = data[: len(data) - pad - 1] + b"\n"
                fh.write(data)
                done += m
    return dict(zip([f"chr{i + 1}" for i in range(len(sizes))], sizes))


def make_bed(path, contigs, n, length, random_state=0):
    rng = np.random.default_rng(random_state + 1)
    names = list(contigs)
    weights = np.array([contigs[c] for c in names], dtype=float)
    chrom = rng.choice(len(names), size=n, p=weights / weights.sum())
    widths = rng.integers(150, 1500, n)
    with open(path, "w") as fh:
        for i in range(n):
            size = contigs[names[chrom[i]]]
            start = int(rng.integers(0, size - widths[i]))
            end = start + int(widths[i])
            summit = int(rng.integers(0, widths[i]))
            fh.write(f"{names[chrom[i]]}\t{start}\t{end}\tpeak_{i}\t0\t.\t0\t0\t0\t{summit}\n")


def naive_encode(bed, genome, length, limit):
    """The obvious way: one fetch, one string and one dict lookup per base, region by region."""
    import pyfaidx

    table = {"A": 0, "C": 1, "G": 2, "T": 3}
    fa = pyfaidx.Fasta(str(genome), as_raw=True, sequence_always_upper=True)
    out = []
    with open(bed) as fh:
        for i, line in enumerate(fh):
            if i >= limit:
                break
            f = line.split("\t")
            chrom, start, end = f[0], int(f[1]), int(f[2])
            centre = start + int(f[9]) if len(f) > 9 and int(f[9]) >= 0 else (start + end) // 2
            lo = centre - length // 2
            hi = lo + length
            size = len(fa[chrom])
            seq = "N" * max(0, -lo) + fa[chrom][max(lo, 0):min(hi, size)] + "N" * max(0, hi - size)
            out.append([table.get(ch, 4) for ch in seq])
    return np.array(out, dtype=np.uint8)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regions", type=int, default=512_596)
    parser.add_argument("--genome-mb", type=int, default=2700)
    parser.add_argument("--naive-regions", type=int, default=20_000)
    parser.add_argument("--length", type=int, default=300)
    parser.add_argument("--workdir", default=None, help="keep the generated files here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp = Path(tmp)
        genome, bed = tmp / "genome.fa", tmp / "peaks.narrowPeak"
        t0 = time.perf_counter()
        contigs = make_genome(genome, args.genome_mb)
        make_bed(bed, contigs, args.regions, args.length)
        import pyfaidx
        pyfaidx.Faidx(str(genome))  # build the index once, outside both timings
        print(f"generated {args.genome_mb} Mb genome and {args.regions} regions in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
        child = CHILD.format(repo=str(Path(__file__).resolve().parents[1]), bed=str(bed),
                             genome=str(genome), length=args.length)
        out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, check=True)
        ours_s, n, maxrss_kb = out.stdout.split()
        ours_s, peak_mb = float(ours_s), int(maxrss_kb) / 1024
        print(f"ours: {int(n)} regions in {ours_s:.1f} s, peak RSS {peak_mb:.0f} MB (incl. imports)",
              flush=True)
        t = time.perf_counter()
        naive = naive_encode(bed, genome, args.length, args.naive_regions)
        naive_s = (time.perf_counter() - t) * args.regions / len(naive)
        from tisfm_core.sequences import read_bed_windows
        sub = tmp / "sub.bed"
        sub.write_text("".join(bed.read_text().splitlines(keepends=True)[: len(naive)]))
        ours_sub = read_bed_windows(sub, genome, length=args.length)
        assert np.array_equal(ours_sub.indices, naive), "ours and the naive encoder disagree"
        print(f"naive: {len(naive)} regions in {naive_s * len(naive) / args.regions:.1f} s -> "
              f"{naive_s:.0f} s for all {args.regions} (identical windows on the subset)", flush=True)
        ok = "meets" if ours_s < 60 and peak_mb < 1024 else "MISSES"
        print(f"encode: {naive_s / ours_s:.1f}x ours {ours_s:.1f} s / {peak_mb:.0f} MB peak vs naive "
              f"~{naive_s:.0f} s for {args.regions} regions x {args.length} bp ({ok} the <60 s, <1 GB "
              f"target; naive extrapolated from {len(naive)} regions)")


if __name__ == "__main__":
    main()
