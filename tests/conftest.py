"""Shared fixtures: where ../shared is, small motif sets and datasets made on the fly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REFERENCE = SHARED / "data" / "reference_tisfm"
CISBP = SHARED / "data" / "motifs" / "cisBP_mouse.meme"
IMMGEN = SHARED / "data" / "immgen_sample"

# (folder, variant, era, parameter count stated in info.json)
REFERENCE_FIXTURES = [
    ("full_paper", "full", "paper", 966_182),
    ("full_head", "full", "head", 966_190),
    ("base_head", "base", "head", 218_750),
    ("interaction_head", "interaction", "head", 966_110),
    ("attention_head", "attention", "head", 218_830),
]


#: CLI flags of a training that runs every epoch it is given (a "long" job that tests cancel or
#: kill mid-way): no early stopping, no learning-rate decay. Without them a tiny dataset's
#: training stops within seconds, before the test acts.
RUNS_ON = ("--patience", "0", "--lr-patience", "100000")


def need(path):
    """Skip the test when a file from ../shared is absent."""
    if not Path(path).exists():
        pytest.skip(f"{path} is not available")
    return Path(path)


@pytest.fixture(scope="session")
def cisbp():
    from tisfm_core.motifs import read_meme

    return read_meme(need(CISBP))


def random_motifs(n=6, *, widths=(6, 8, 10), random_state=0):
    """A small MotifSet of random PWMs with distinct widths."""
    from tisfm_core.motifs import MotifSet

    rng = np.random.default_rng(random_state)
    mats = []
    for i in range(n):
        w = widths[i % len(widths)]
        m = rng.dirichlet(np.full(4, 0.3), size=w)
        mats.append(m)
    ids = tuple(f"M{i}" for i in range(n))
    return MotifSet(ids=ids, names=tuple(f"TF{i}" for i in range(n)), matrices=tuple(mats),
                    source="random")


def planted_dataset(tmp_path, *, n=600, length=60, n_outputs=3, random_state=0, motifs=None):
    """Write a FASTA + targets TSV where output k is driven by motif k (known answer).

    Returns (fasta, targets_tsv, meme, motifs).
    """
    from tisfm_core.motifs import write_meme

    rng = np.random.default_rng(random_state)
    motifs = motifs or random_motifs(6, random_state=random_state)
    seqs = rng.choice(list("ACGT"), size=(n, length))
    counts = np.zeros((n, len(motifs)))
    for i in range(n):
        for k in range(len(motifs)):
            if rng.random() < 0.3:
                m = motifs.matrices[k]
                site = [("ACGT")[rng.choice(4, p=row / row.sum())] for row in m]
                pos = rng.integers(0, length - len(site))
                seqs[i, pos:pos + len(site)] = site
                counts[i, k] += 1
    y = counts[:, :n_outputs] * 1.0 + 0.1 * rng.normal(size=(n, n_outputs))
    fasta = tmp_path / "seqs.fa"
    fasta.write_text("".join(f">r{i}\n{''.join(s)}\n" for i, s in enumerate(seqs)))
    tsv = tmp_path / "targets.tsv"
    header = "id\t" + "\t".join(f"out{k}" for k in range(n_outputs)) + "\n"
    tsv.write_text(header + "".join(f"r{i}\t" + "\t".join(f"{v:.5f}" for v in y[i]) + "\n"
                                    for i in range(n)))
    meme = tmp_path / "motifs.meme"
    write_meme(motifs, meme)
    return fasta, tsv, meme, motifs


def _replace_cell(row, value):
    cells = row.split("\t")
    cells[1] = value
    return "\t".join(cells)


def write_bad_inputs(tmp, fasta, tsv):
    """Malformed inputs for the bad-input matrices (CLI and app), written into ``tmp``.

    Built from a good FASTA and targets TSV so that only the named defect differs. Returns a dict
    of file name -> path; ``evil.pt`` is a checkpoint that would create ``tmp/pwned`` if unpickled.
    """
    import gzip
    import subprocess
    import sys

    tmp = Path(tmp)
    files = {}

    def write(name, text):
        files[name] = tmp / name
        files[name].write_text(text)

    header = "MEME version 4\n\nALPHABET= ACGT\n\n"
    write("bad_row.meme", header + "MOTIF a\nletter-probability matrix: alength= 4 w= 2\n0.25 0.25 0.5\n"
          "0.25 0.25 0.25 0.25\n")
    write("rna.meme", "MEME version 4\n\nALPHABET= ACGU\n\nMOTIF a\nletter-probability matrix: w= 1\n"
          "0.25 0.25 0.25 0.25\n")
    write("empty.meme", "")
    write("nomotif.meme", header)
    write("dup.meme", header + "MOTIF a\nletter-probability matrix: w= 1\n0.25 0.25 0.25 0.25\n\n"
          "MOTIF a\nletter-probability matrix: w= 1\n0.25 0.25 0.25 0.25\n")
    write("negative.meme", header + "MOTIF a\nletter-probability matrix: w= 1\n-0.25 0.5 0.5 0.25\n")
    write("halfsum.meme", header + "MOTIF a\nletter-probability matrix: w= 1\n0.1 0.1 0.1 0.1\n")
    write("binary.meme", "\x00\x01\x02PK\x03\x04 not text at all \xff")
    seqs = Path(fasta).read_text().splitlines()
    body = "\n".join(seqs[:20]) + "\n"
    write("letters.fa", body.replace(seqs[3], seqs[3][:10] + "X" + seqs[3][11:]))
    write("lengths.fa", body + ">extra\nACGT\n")
    write("emptyrec.fa", f"{seqs[0]}\n\n{seqs[2]}\n{seqs[3]}\n")
    write("dupid.fa", f"{seqs[0]}\n{seqs[1]}\n{seqs[0]}\n{seqs[3]}\n")
    write("otherids.fa", "".join(f">peak_{i}\n{seqs[2 * i + 1]}\n" for i in range(10)))
    write("short.fa", ">s\nACGTACGT\n")
    rows = Path(tsv).read_text().splitlines()
    write("nan.tsv", "\n".join(rows[:5] + [_replace_cell(rows[5], "nan")] + rows[6:]) + "\n")
    write("text.tsv", "\n".join(rows[:5] + [_replace_cell(rows[5], "high")] + rows[6:]) + "\n")
    write("onecol.tsv", "\n".join(r.rsplit("\t", 1)[0] for r in rows) + "\n")
    write("genome.fa", ">chr1\n" + "ACGT" * 50 + "\n")
    write("offend.bed", "chr1\t150\t260\tp1\n")
    write("unknown.bed", "chrZ\t10\t60\tp1\n")
    write("notes.pt", "not a checkpoint\n")
    write("targets.csv", Path(tsv).read_text().replace("\t", ","))
    files["image.png"] = tmp / "image.png"
    files["image.png"].write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    files["damaged.fa.gz"] = tmp / "damaged.fa.gz"
    files["damaged.fa.gz"].write_bytes(gzip.compress(Path(fasta).read_bytes())[:-40])
    evil = tmp / "evil.pt"
    script = ("import os, torch\nclass E:\n    def __reduce__(self): return (os.system, ('touch "
              f"{tmp / 'pwned'}',))\ntorch.save({{'linreg.weight': E()}}, r'{evil}')\n")
    subprocess.run([sys.executable, "-c", script], check=True)
    files["evil.pt"] = evil
    return files


def folder_digest(folder, skip=()):
    """SHA-256 over the names and bytes of every file under ``folder`` ("" folder: nothing),
    leaving out the top-level entries named in ``skip`` (caches)."""
    import hashlib

    h = hashlib.sha256()
    folder = Path(folder)
    for p in sorted(folder.rglob("*")) if folder.exists() else []:
        if p.is_file() and p.relative_to(folder).parts[0] not in skip:
            h.update(str(p.relative_to(folder)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def reference_state(run):
    """A run's weights under the reference implementation's parameter names (a state dict as
    the reference's torch.save writes it)."""
    from tisfm_core.reference import NAME_MAP
    from tisfm_core.runs import load_run

    ours = load_run(run).model.state_dict()
    return {ref: ours[name].clone() for ref, name in NAME_MAP.items() if name in ours}


# -- decompression bombs, made at test time -------------------------------------------------------

def gzip_bomb(size_mb=1024, *, head=b"", fill=b"A"):
    """A real gzip file of ``head`` + ``size_mb`` MiB of ``fill`` (about 1000-fold smaller: one
    compressed MiB repeated as concatenated gzip members, which gzip readers inflate in full)."""
    import gzip

    member = gzip.compress(fill * 2**20, compresslevel=9)
    return gzip.compress(head) + member * size_mb


def deflate_bomb(size_mb=1024):
    """(raw deflate stream, CRC-32) of ``size_mb`` MiB of zero bytes, about 1000-fold smaller.

    One MiB compressed with a full flush is a self-contained run of deflate blocks; repeated and
    closed with an empty final block it is a valid stream of the whole size.
    """
    import zlib

    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(b"\0" * 2**20) + compressor.flush(zlib.Z_FULL_FLUSH)
    crc, chunk = 0, b"\0" * 2**20
    for _ in range(size_mb):
        crc = zlib.crc32(chunk, crc)
    return block * size_mb + compressor.flush(), crc


def make_zip(members):
    """Bytes of a zip archive. ``members``: name -> bytes (deflated here) or (raw deflate
    stream, crc, size) for a member compressed elsewhere (a bomb)."""
    import struct
    import zlib

    local, central = b"", b""
    for name, value in members.items():
        if isinstance(value, tuple):
            data, crc, size = value
        else:
            compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
            data, crc, size = compressor.compress(value) + compressor.flush(), zlib.crc32(value), len(value)
        encoded = name.encode()
        offset = len(local)
        local += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, crc, len(data), size,
                             len(encoded), 0) + encoded + data
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 0x031E, 20, 0, 8, 0, 0x21, crc,
                               len(data), size, len(encoded), 0, 0, 0, 0, 0o100644 << 16,
                               offset) + encoded
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central),
                      len(local), 0)
    return local + central + end


def _proc_status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


class memory_cap:
    """Cap this process's address space at what it has mapped now plus ``cap_mb`` for the
    duration of a ``with`` block (an allocation past it raises MemoryError instead of taking the
    machine), and measure what the block added to the resident memory (``added_mb``: the peak,
    reset at the start through /proc/self/clear_refs, minus the resident memory then)."""

    def __init__(self, cap_mb=1536):
        self.cap = cap_mb * 2**20

    def __enter__(self):
        import resource

        self.saved = resource.getrlimit(resource.RLIMIT_AS)
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        self.start = _proc_status("VmRSS")
        resource.setrlimit(resource.RLIMIT_AS, (_proc_status("VmSize") + self.cap, self.saved[1]))
        return self

    def __exit__(self, *exc):
        import resource

        resource.setrlimit(resource.RLIMIT_AS, self.saved)
        self.added_mb = (_proc_status("VmHWM") - self.start) / 2**20
        return False


def sensitive_tisfm(variant="full", random_state=0, *, n_outputs=3, length=48, **kwargs):
    """A tiny random tiSFM whose sigmoids are in their sensitive range (not saturated), so that
    single bases change its outputs; returns (model in eval mode, motifs). ``kwargs`` go to
    :func:`tisfm_core.workflows.build_untrained` (era, attention_softmax)."""
    import torch

    from tisfm_core.workflows import build_untrained

    motifs = random_motifs(4, widths=(5, 6, 7), random_state=random_state)
    model = build_untrained(variant, motifs=motifs, n_outputs=n_outputs, length=length,
                            random_state=random_state, **kwargs)
    g = torch.Generator().manual_seed(random_state)
    with torch.no_grad():
        model.scale.copy_(2 + torch.rand(model.scale.shape, generator=g))
        model.bias.copy_(-3 - torch.rand(model.bias.shape, generator=g))
        model.pool_weight.copy_(1 + 2 * torch.rand(model.pool_weight.shape, generator=g))
        if model.position_emb is not None:
            model.position_emb.weight.mul_(0.2)
    return model.eval(), motifs
