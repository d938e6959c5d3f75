"""Benchmark: variant effects for 10,000 variants, batched vs one variant at a time.

Usage::

    python bench/variants.py [--run trained_models/cv_full/fold_0] [--n 10000] [--single 200]
                             [--threads 2] [--device cpu]

Writes a synthetic genome (3 contigs of 2 Mb, random bases) and a bgzipped VCF of ``--n``
variants (80% SNPs, 10% insertions of 1-10 bp, 10% deletions of 1-10 bp, REF from the genome)
into a temporary folder, then times in this process:

* batched: :func:`tisfm_core.variants.score_variants` on all variants (the genome index built
  beforehand, reading the VCF timed separately);
* one at a time: for the first ``--single`` variants, the windows of one variant
  (:func:`variant_windows`) and one forward pass of its reference and alternative windows,
  scaled to ``--n`` variants; half of them timed before the batched call and half after, so
  that both see the same load on a shared machine.

It checks that both give the same differences on that subset and ends with one line::

    variants: <one-at-a-time time / batched time>x <details>
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tisfm_core.genome import open_genome  # noqa: E402
from tisfm_core.runs import load_run  # noqa: E402
from tisfm_core.training import predict_batches  # noqa: E402
from tisfm_core.variants import read_vcf, score_variants, variant_windows  # noqa: E402

CONTIG_BP = 2_000_000


def cpu_model():
    """The CPU's model name and torch's CPU capability, for every printed number."""
    name = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, torch CPU capability {torch.backends.cpu.get_cpu_capability()}"


def make_inputs(folder, n, rng):
    """A 3-contig random genome and a bgzipped VCF of ``n`` variants on it."""
    import pysam

    letters = np.frombuffer(b"ACGT", dtype=np.uint8)
    contigs = {f"chr{i + 1}": letters[rng.integers(0, 4, CONTIG_BP)].tobytes().decode() for i in range(3)}
    genome = folder / "genome.fa"
    with open(genome, "w") as fh:
        for name, seq in contigs.items():
            fh.write(f">{name}\n")
            fh.write("\n".join(seq[i:i + 60] for i in range(0, len(seq), 60)) + "\n")
    names = list(contigs)
    kind = rng.random(n)
    rows = []
    for i in range(n):
        chrom = names[int(rng.integers(0, len(names)))]
        seq = contigs[chrom]
        pos = int(rng.integers(1000, CONTIG_BP - 1000))
        ref = seq[pos - 1]
        if kind[i] < 0.8:
            alt = "ACGT"[("ACGT".index(ref) + int(rng.integers(1, 4))) % 4]
        elif kind[i] < 0.9:
            alt = ref + "".join(rng.choice(list("ACGT"), int(rng.integers(1, 11))))
        else:
            ref = seq[pos - 1:pos + int(rng.integers(1, 11))]
            alt = ref[0]
        rows.append((chrom, pos, ref, alt))
    rows.sort(key=lambda r: (names.index(r[0]), r[1]))
    vcf = folder / "variants.vcf"
    header = "##fileformat=VCFv4.2\n" + "".join(f"##contig=<ID={c},length={CONTIG_BP}>\n" for c in names)
    vcf.write_text(header + "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
                   + "".join(f"{c}\t{p}\tv{k}\t{r}\t{a}\t.\t.\t.\n" for k, (c, p, r, a) in enumerate(rows)))
    pysam.tabix_compress(str(vcf), str(vcf) + ".gz", force=True)
    return genome, Path(str(vcf) + ".gz")


def one_at_a_time(model, length, variants, genome, device):
    """Per variant: its two windows and one forward pass of them; (differences, seconds)."""
    started = time.perf_counter()
    diffs = []
    for v in variants:
        w = variant_windows(length, v, genome)
        pred = predict_batches(model, np.stack([w.ref, w.alt]), device=device)
        diffs.append(pred[1] - pred[0])
    return diffs, time.perf_counter() - started


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=str(REPO / "trained_models" / "cv_full" / "fold_0"))
    parser.add_argument("--n", type=int, default=10_000, help="variants (default 10000)")
    parser.add_argument("--single", type=int, default=200, help="variants timed one at a time (default 200)")
    parser.add_argument("--batch-size", type=int, default=256, help="windows per forward pass (default 256)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda (default cpu)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    cpu = cpu_model()
    where = f"device={args.device}, {args.threads} threads, {cpu}"
    if args.device.startswith("cuda"):
        where += f", GPU {torch.cuda.get_device_name()}"
    print(f"machine: {where}", flush=True)

    run = load_run(args.run, device=args.device)
    length = int(run.config["model"]["config"]["length"])
    with tempfile.TemporaryDirectory(prefix="tisfm-bench-variants-") as tmp:
        folder = Path(tmp)
        genome_path, vcf = make_inputs(folder, args.n, rng)
        started = time.perf_counter()
        variants = read_vcf(vcf)
        t_read = time.perf_counter() - started
        with open_genome(genome_path, index_dir=folder / "index") as genome:
            subset = variants[:args.single]
            half = len(subset) // 2
            score_variants(run, subset[:8], genome, device=args.device)             # warm-up
            # one at a time before and after the batched call, so both see the same machine load
            single, t_single = one_at_a_time(run.model, length, subset[:half], genome, args.device)
            started = time.perf_counter()
            scores = score_variants(run, variants, genome, batch_size=args.batch_size, device=args.device)
            t_batched = time.perf_counter() - started
            more, t_more = one_at_a_time(run.model, length, subset[half:], genome, args.device)
            single += more
            t_single = (t_single + t_more) * len(variants) / len(subset)
    table = scores.table
    scored = int((table["status"] == "scored").sum())
    diff_cols = [f"diff:{o}" for o in scores.outputs]
    gap = float(np.abs(table[diff_cols].to_numpy(float)[:len(subset)] - np.stack(single)).max())
    rate_b, rate_s = len(variants) / t_batched, len(variants) / t_single
    # other processes on a shared machine slow both paths; the load says how much
    where += f", load average {os.getloadavg()[0]:.1f}"
    print(f"read VCF: {len(variants)} variants in {t_read:.2f} s ({where})")
    print(f"batched: {t_batched:.2f} s for {len(variants)} variants ({scored} scored), {rate_b:.0f} variants/s, "
          f"batch {args.batch_size} windows ({where})")
    print(f"one at a time: {t_single:.1f} s scaled from {len(subset)} variants, {rate_s:.0f} variants/s "
          f"({where}); max |diff gap| vs batched {gap:.1e}")
    print(f"variants: {t_single / t_batched:.1f}x batched {rate_b:.0f} variants/s vs one at a time "
          f"{rate_s:.0f} variants/s ({len(variants)} variants, L={length}, R={len(scores.outputs)}, "
          f"model {Path(args.run).name} of {Path(args.run).parent.name}, {where})")


if __name__ == "__main__":
    main()
