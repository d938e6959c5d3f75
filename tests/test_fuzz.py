"""Hostile-file fuzzing: seeded mutations of valid files (truncation, bit flips, inserted bytes,
deleted or duplicated lines, binary junk) fed to every reader. Each mutant must either read as
valid data or be refused with a TisfmError; any other exception is a crash in the app and a
traceback in the CLI."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import planted_dataset, random_motifs

from tisfm_core.errors import TisfmError
from tisfm_core.motifs import load_motifs, write_meme
from tisfm_core.path import load_path, regularization_path
from tisfm_core.reference import read_state_dict
from tisfm_core.runs import load_run, run_summary
from tisfm_core.sequences import read_bed_windows, read_sequences
from tisfm_core.specs import DataSpec, ModelSpec, PathSpec, TrainTask
from tisfm_core.targets import read_parent_table, read_targets
from tisfm_core.training import TrainSettings
from tisfm_core.workflows import train_run

N_MUTANTS = 60


def mutants(data, n=N_MUTANTS, seed=0):
    """Seeded corruptions of ``data`` (bytes)."""
    rng = random.Random(seed)
    lines = data.split(b"\n")
    out = [b"", b"\x00" * 64, bytes(rng.randrange(256) for _ in range(300)), data + b"\xff\xfe",
           data.replace(b"\n", b"\r\n"), data.replace(b"\t", b" "), b"\xef\xbb\xbf" + data]
    while len(out) < n:
        kind = rng.randrange(6)
        b = bytearray(data)
        if kind == 0 and b:                                          # truncate
            out.append(bytes(b[: rng.randrange(len(b))]))
        elif kind == 1 and b:                                        # flip bits
            for _ in range(rng.randint(1, 8)):
                b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
            out.append(bytes(b))
        elif kind == 2:                                              # insert junk
            i = rng.randrange(len(b) + 1)
            out.append(bytes(b[:i]) + rng.choice([b"nan", b"-1e999", b"\t\t", b">", b"MOTIF",
                                                  b"\x00", b"inf", b"1e40", b"\n\n"]) + bytes(b[i:]))
        elif kind == 3 and len(lines) > 1:                           # delete a line
            i = rng.randrange(len(lines))
            out.append(b"\n".join(lines[:i] + lines[i + 1:]))
        elif kind == 4 and len(lines) > 1:                           # duplicate a line
            i = rng.randrange(len(lines))
            out.append(b"\n".join(lines[:i + 1] + lines[i:]))
        else:                                                        # swap two lines
            ls = list(lines)
            i, j = rng.randrange(len(ls)), rng.randrange(len(ls))
            ls[i], ls[j] = ls[j], ls[i]
            out.append(b"\n".join(ls))
    return out


def survive(reader, path, data):
    """Write ``data`` to ``path`` and read it: valid data or a TisfmError, nothing else."""
    Path(path).write_bytes(data)
    try:
        reader(path)
    except TisfmError as exc:
        assert str(exc).strip(), "empty error message"
        return "refused"
    return "read"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    fasta, tsv, meme, _ = planted_dataset(tmp, n=160, length=40, n_outputs=2)
    run = tmp / "run"
    train_run(run, TrainTask(data=DataSpec(targets=str(tsv), sequences=str(fasta), folds=4),
                             model=ModelSpec(variant="full", motifs=str(meme)),
                             training=TrainSettings(epochs=1, batch_size=64, device="cpu")), verbose=False)
    path = tmp / "path"
    regularization_path(run, PathSpec(penalty="l1", lambdas=[0.0, 0.01], epochs=1, device="cpu")).save(path)
    return dict(tmp=tmp, fasta=fasta, tsv=tsv, meme=meme, run=run, path=path)


def _motif_files(tmp):
    motifs = random_motifs(3)
    meme = tmp / "good.meme"
    write_meme(motifs, meme)
    jaspar = "".join(f">{m}\t{m}\n" + "".join(
        f"{b} [ " + " ".join(f"{v * 20:.0f}" for v in mat[:, k]) + " ]\n" for k, b in enumerate("ACGT"))
        for m, mat in zip(motifs.ids, motifs.matrices))
    homer = "".join(f">{m}\t{m}\t5.0\n" + "".join(" ".join(f"{v:.3f}" for v in row) + "\n" for row in mat)
                    for m, mat in zip(motifs.ids, motifs.matrices))
    transfac = "".join(f"ID {m}\nP0 A C G T\n" + "".join(
        f"{i + 1:02d} " + " ".join(f"{v * 20:.0f}" for v in row) + "\n" for i, row in enumerate(mat)) + "//\n"
        for m, mat in zip(motifs.ids, motifs.matrices))
    return {"meme": meme.read_bytes(), "jaspar": jaspar.encode(), "homer": homer.encode(),
            "transfac": transfac.encode()}


@pytest.mark.parametrize("fmt", ["meme", "jaspar", "homer", "transfac"])
def test_motif_readers(world, fmt):
    good = _motif_files(world["tmp"])[fmt]
    path = world["tmp"] / f"m.{fmt}"
    assert survive(load_motifs, path, good) == "read"          # the unmutated file is valid
    outcomes = [survive(lambda p: load_motifs(str(p)), path, m) for m in mutants(good, seed=len(fmt))]
    assert "refused" in outcomes


@pytest.mark.parametrize("kind", ["fasta", "tsv"])
def test_sequence_readers(world, kind):
    good = Path(world["fasta"]).read_bytes()
    if kind == "tsv":
        recs = good.decode().split(">")[1:]
        good = "".join("\t".join(r.strip().split("\n", 1)) + "\n" for r in recs).encode()
    path = world["tmp"] / f"s.{'fa' if kind == 'fasta' else 'tsv'}"
    outcomes = [survive(read_sequences, path, m) for m in mutants(good, seed=7)]
    assert "refused" in outcomes and "read" in outcomes


def test_target_and_tree_readers(world):
    good = Path(world["tsv"]).read_bytes()
    outcomes = [survive(read_targets, world["tmp"] / "t.tsv", m) for m in mutants(good, seed=3)]
    assert "refused" in outcomes
    parents = b"child\tparent\nout1\tout0\n"
    for m in mutants(parents, seed=4):
        survive(lambda p: read_parent_table(p, cell_types=["out0", "out1"]), world["tmp"] / "p.tsv", m)


def test_bed_reader(world):
    genome = world["tmp"] / "genome.fa"
    genome.write_text(">chr1\n" + "ACGT" * 100 + "\n>chr2\n" + "GGCC" * 60 + "\n")
    good = b"chr1\t100\t160\tp1\t0\t.\t0\t0\t0\t30\nchr2\t50\t120\tp2\t0\t.\t0\t0\t0\t-1\n"
    for i, m in enumerate(mutants(good, seed=5)):
        shutil.rmtree(world["tmp"] / "genome.fa.fai", ignore_errors=True)
        survive(lambda p: read_bed_windows(p, genome, length=40), world["tmp"] / f"b{i}.bed", m)


@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "motifs.meme"])
def test_run_loader(world, tmp_path, name):
    good = (world["run"] / name).read_bytes()
    outcomes = []
    for i, m in enumerate(mutants(good, n=30, seed=hash(name) % 1000)):
        copy = tmp_path / f"r{i}"
        shutil.copytree(world["run"], copy)
        outcomes.append(survive(lambda p: load_run(copy), copy / name, m))
    assert "refused" in outcomes


def test_wrong_json_types_in_the_run_config(world, tmp_path):
    config = json.loads((world["run"] / "config.json").read_text())
    rng = random.Random(11)
    junk = [None, 1, -1, 1.5, "x", [], {}, True, [1, "a"], {"a": None}]

    def paths(obj, prefix=()):
        if isinstance(obj, dict):
            for k, v in obj.items():
                yield prefix + (k,)
                yield from paths(v, prefix + (k,))

    keys = list(paths(config))
    for i in range(60):
        c = json.loads(json.dumps(config))
        key = rng.choice(keys)
        node = c
        for k in key[:-1]:
            node = node[k]
        node[key[-1]] = rng.choice(junk)
        copy = tmp_path / f"c{i}"
        shutil.copytree(world["run"], copy)
        survive(lambda p: (load_run(copy), run_summary(copy)), copy / "config.json", json.dumps(c).encode())


@pytest.mark.parametrize("name", ["path.json", "path.npz"])
def test_path_loader(world, tmp_path, name):
    good = (world["path"] / name).read_bytes()
    for i, m in enumerate(mutants(good, n=30, seed=len(name))):
        copy = tmp_path / f"p{i}"
        shutil.copytree(world["path"], copy)
        survive(lambda p: load_path(copy), copy / name, m)


def test_state_dict_reader(tmp_path):
    good_path = tmp_path / "good.pt"
    torch.save({"linreg.weight": torch.randn(3, 4), "conv_motif.weight": torch.randn(8, 4, 5)}, good_path)
    good = good_path.read_bytes()
    assert survive(read_state_dict, tmp_path / "sd.pt", good) == "read"
    outcomes = [survive(read_state_dict, tmp_path / "sd.pt", m) for m in mutants(good, seed=9)]
    assert "refused" in outcomes
    # numpy files saved with pickled objects are refused, not loaded
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert survive(read_state_dict, tmp_path / "x.pt", (tmp_path / "obj.npy").read_bytes()) == "refused"
