"""The bad-input matrix of the command line: every case must exit with status 2, print one line
that names the problem, show no traceback, and leave every saved file untouched."""

import json
import shutil

import pytest
import torch
from conftest import folder_digest, planted_dataset, write_bad_inputs

from tisfm_core.cli import main


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad")
    fasta, tsv, meme, _ = planted_dataset(tmp, n=300, length=40, n_outputs=2)
    run = tmp / "run"
    assert main(["train", "--sequences", str(fasta), "--targets", str(tsv), "--motifs", str(meme),
                 "--out", str(run), "--epochs", "1", "--batch-size", "64", "--quiet"]) == 0
    aitac = tmp / "aitac"
    assert main(["train", "--sequences", str(fasta), "--targets", str(tsv), "--variant", "aitac",
                 "--out", str(aitac), "--epochs", "1", "--batch-size", "64", "--quiet"]) == 0
    write_bad_inputs(tmp, fasta, tsv)
    # broken copies of the run
    for name, edit in {
        "run_noweights": lambda d: (d / "model.safetensors").unlink(),
        "run_truncated": lambda d: (d / "model.safetensors").write_bytes(
            (d / "model.safetensors").read_bytes()[:300]),
        "run_nofield": lambda d: _edit_config(d, lambda c: c.pop("model")),
        "run_wrongtype": lambda d: _edit_config(d, lambda c: c["model"]["config"].update(length="300")),
        "run_motifs": lambda d: _edit_config(d, lambda c: c["motifs"].update(ids=c["motifs"]["ids"][:-1])),
    }.items():
        shutil.copytree(run, tmp / name)
        edit(tmp / name)
    return tmp, fasta, tsv, meme, run, aitac


def _edit_config(folder, fn):
    config = json.loads((folder / "config.json").read_text())
    fn(config)
    (folder / "config.json").write_text(json.dumps(config))


T = "train --sequences {fasta} --targets {tsv} --motifs {meme} --epochs 1 --out {tmp}/new"
CASES = [
    # (id, command, text the message must contain)
    ("motif bad row", "train --sequences {fasta} --targets {tsv} --motifs {tmp}/bad_row.meme --out {tmp}/n1",
     "line 7"),
    ("motif wrong alphabet", "train --sequences {fasta} --targets {tsv} --motifs {tmp}/rna.meme --out {tmp}/n2",
     "ACGU"),
    ("motif file empty", "train --sequences {fasta} --targets {tsv} --motifs {tmp}/empty.meme --out {tmp}/n3",
     "empty.meme"),
    ("motif file without motifs",
     "train --sequences {fasta} --targets {tsv} --motifs {tmp}/nomotif.meme --out {tmp}/n4", "no motif"),
    ("duplicate motif ids", "train --sequences {fasta} --targets {tsv} --motifs {tmp}/dup.meme --out {tmp}/n5",
     "duplicate"),
    ("negative probability",
     "train --sequences {fasta} --targets {tsv} --motifs {tmp}/negative.meme --out {tmp}/n6", "negative"),
    ("rows not summing to 1",
     "train --sequences {fasta} --targets {tsv} --motifs {tmp}/halfsum.meme --out {tmp}/n7", "sum"),
    ("unknown JASPAR release",
     "train --sequences {fasta} --targets {tsv} --motifs jaspar:1999 --out {tmp}/n8", "1999"),
    ("invalid letter", "predict {run} --sequences {tmp}/letters.fa --out {tmp}/p.tsv", "position 11"),
    ("mixed lengths", "predict {run} --sequences {tmp}/lengths.fa --out {tmp}/p.tsv", "extra"),
    ("empty record", "predict {run} --sequences {tmp}/emptyrec.fa --out {tmp}/p.tsv", "r0"),
    ("duplicate sequence ids", "predict {run} --sequences {tmp}/dupid.fa --out {tmp}/p.tsv", "r0"),
    ("wrong length for the run", "predict {run} --sequences {tmp}/short.fa --out {tmp}/p.tsv", "40"),
    ("ids do not match targets",
     "train --sequences {tmp}/otherids.fa --targets {tsv} --motifs {meme} --out {tmp}/n9", "peak_"),
    ("NaN target", "train --sequences {fasta} --targets {tmp}/nan.tsv --motifs {meme} --out {tmp}/n10", "r4"),
    ("non-numeric target", "train --sequences {fasta} --targets {tmp}/text.tsv --motifs {meme} --out {tmp}/n11",
     "high"),
    ("BED interval past the contig end",
     "predict {run} --bed {tmp}/offend.bed --genome {tmp}/genome.fa --out {tmp}/p.tsv", "chr1"),
    ("BED unknown contig", "predict {run} --bed {tmp}/unknown.bed --genome {tmp}/genome.fa --out {tmp}/p.tsv",
     "chrZ"),
    ("unknown output name", T.replace("--out", "--outputs out0,nope --out"), "nope"),
    ("evaluate without an output column",
     "evaluate {run} --sequences {fasta} --targets {tmp}/onecol.tsv", "out1"),
    ("missing weights", "summary {tmp}/run_noweights", "model.safetensors"),
    ("truncated weights", "predict {tmp}/run_truncated --sequences {fasta} --out {tmp}/p.tsv", "truncated"),
    ("config missing field", "summary {tmp}/run_nofield", "'model'"),
    ("config wrong type", "summary {tmp}/run_wrongtype", "'length'"),
    ("motif set does not match the weights", "summary {tmp}/run_motifs", "motif"),
    ("cuda without a GPU", T.replace("--out", "--device cuda --out"), "CUDA"),
    ("existing output folder", "train --sequences {fasta} --targets {tsv} --motifs {meme} --out {run}",
     "--force"),
    ("resume without checkpoint", "train --resume {run}", "checkpoint"),
    ("checkpoint that runs code", "import-reference {tmp}/evil.pt --motifs {meme} --variant full --era head "
     "--out {tmp}/imp1", "refused"),
    ("text file as checkpoint", "import-reference {tmp}/notes.pt --motifs {meme} --variant full --era head "
     "--out {tmp}/imp2", "notes.pt"),
    ("final layer of the AI-TAC baseline", "export {aitac} --final-layer {tmp}/w.tsv", "AI-TAC"),
    ("TISM for an unknown output", "tism {run} --sequences {fasta} --outputs nope --out {tmp}/t.npz", "nope"),
    ("not a run folder", "summary {tmp}", "config"),
    ("missing sequence file", "predict {run} --sequences {tmp}/missing.fa --out {tmp}/p.tsv", "missing.fa"),
    ("demo data into a non-empty folder", "demo-data --out {run}", "--force"),
    ("folder as sequence file", "predict {run} --sequences {tmp} --out {tmp}/p.tsv", "is a folder"),
    ("damaged gzip sequence file", "predict {run} --sequences {tmp}/damaged.fa.gz --out {tmp}/p.tsv",
     "damaged or truncated gzip"),
    ("comma-separated targets", "train --sequences {fasta} --targets {tmp}/targets.csv --motifs {meme} "
     "--out {tmp}/n12", "tab-separated"),
    ("zero batch size", "predict {run} --sequences {fasta} --batch-size 0 --out {tmp}/p.tsv",
     "batch_size must be a positive integer"),
]


@pytest.mark.parametrize("name, command, needle", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_clearly_and_changes_nothing(world, capsys, name, command, needle):
    if "cuda" in command and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    tmp, fasta, tsv, meme, run, aitac = world
    before = folder_digest(run), folder_digest(aitac)
    args = command.format(tmp=tmp, fasta=fasta, tsv=tsv, meme=meme, run=run, aitac=aitac).split()
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert needle.lower() in err.lower(), err
    assert (folder_digest(run), folder_digest(aitac)) == before
    assert not (tmp / "pwned").exists()


def test_matrix_has_at_least_30_cases():
    assert len(CASES) >= 30
