"""The command line contract: subcommands, outputs, and one-line errors with non-zero exits."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO, planted_dataset

from tisfm_core.cli import main
from tisfm_core.motifs import read_meme
from tisfm_core.runs import load_run


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    fasta, tsv, meme, motifs = planted_dataset(tmp, n=500, length=60, n_outputs=3)
    run = tmp / "run"
    code = main(["train", "--sequences", str(fasta), "--targets", str(tsv), "--motifs", str(meme),
                 "--out", str(run), "--epochs", "3", "--batch-size", "64", "--quiet"])
    assert code == 0
    return tmp, fasta, tsv, meme, run


def _err(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_train_writes_a_complete_run(trained):
    tmp, *_, run = trained
    config = json.loads((run / "config.json").read_text())
    assert config["outputs"] == ["out0", "out1", "out2"]
    assert config["split"]["n_folds"] == 10 and config["split"]["n_test"] == 50
    assert len(config["history"]) == 3 and config["training"]["device"] == "cpu"
    assert set(config["metrics"]["test"]) >= {"mse", "r2", "pearson", "mean_r2"}
    assert config["versions"]["torch"].startswith("2.13")
    assert not (run / "checkpoint").exists()


def test_train_refuses_existing_folder_without_force(trained, capsys):
    tmp, fasta, tsv, meme, run = trained
    before = (run / "model.safetensors").read_bytes()
    code = main(["train", "--sequences", str(fasta), "--targets", str(tsv), "--motifs", str(meme),
                 "--out", str(run), "--epochs", "1"])
    err = _err(capsys)
    assert code == 2 and "already exists" in err and "--force" in err
    assert (run / "model.safetensors").read_bytes() == before


def test_predict_keeps_input_order_and_header(trained, tmp_path):
    _, fasta, *_, run = trained
    records = fasta.read_text().split(">")[1:][:7][::-1]        # reversed subset
    small = tmp_path / "few.fa"
    small.write_text("".join(">" + r for r in records))
    out = tmp_path / "pred.tsv"
    assert main(["predict", str(run), "--sequences", str(small), "--out", str(out)]) == 0
    table = pd.read_csv(out, sep="\t")
    assert list(table.columns) == ["id", "out0", "out1", "out2"]
    assert list(table["id"]) == [r.split("\n")[0] for r in records]
    model = load_run(run).model
    seqs = [r.split("\n", 1)[1].replace("\n", "") for r in records]
    from tisfm_core.sequences import encode, one_hot
    with torch.no_grad():
        expected = model(torch.from_numpy(one_hot(encode(seqs)))).numpy()
    assert np.allclose(table[["out0", "out1", "out2"]].to_numpy(), expected, atol=1e-5)


def test_export_final_layer_and_kernels(trained, tmp_path):
    *_, meme, run = trained
    w_path, k_path = tmp_path / "w.tsv", tmp_path / "k.meme"
    assert main(["export", str(run), "--final-layer", str(w_path), "--kernels", str(k_path)]) == 0
    table = pd.read_csv(w_path, sep="\t")
    motifs = read_meme(meme)
    assert list(table.columns) == ["motif", "name", "out0", "out1", "out2"]
    assert list(table["motif"]) == list(motifs.ids)            # padding features excluded
    assert list(table["name"]) == list(motifs.names)           # the TF next to its motif id
    weights = load_run(run).model.final.weight.detach().numpy()[:, : len(motifs)].T
    assert np.allclose(table[["out0", "out1", "out2"]].to_numpy(), weights, atol=1e-5)
    kernels = read_meme(k_path)
    assert kernels.ids == motifs.ids                            # frozen kernels = the PWMs
    assert all(np.allclose(a, b, atol=1e-6) for a, b in zip(kernels.matrices, motifs.matrices))


def test_evaluate_reports_metrics_and_writes_json(trained, tmp_path, capsys):
    _, fasta, tsv, _, run = trained
    out = tmp_path / "m.json"
    assert main(["evaluate", str(run), "--sequences", str(fasta), "--targets", str(tsv), "--out", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["n"] == 500 and len(metrics["r2"]) == 3
    assert "mean\tMSE" in capsys.readouterr().out


def test_summary_lists_parameters_and_metrics(trained, capsys):
    *_, run = trained
    assert main(["summary", str(run), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    model = load_run(run).model
    assert info["parameters_total"] == sum(p.numel() for p in model.parameters())
    assert info["variant"] == "full" and info["motifs"] == 6


@pytest.mark.parametrize("args, message", [
    (["predict", "{run}", "--sequences", "{tmp}/missing.fa", "--out", "{tmp}/p.tsv"], "missing.fa"),
    (["summary", "{tmp}/not_a_run"], "does not exist"),
    (["train", "--sequences", "{fasta}", "--targets", "{tsv}", "--motifs", "{meme}", "--out", "{tmp}/x",
      "--outputs", "out0,nope"], "'nope' is not an output of the targets"),
    (["train", "--sequences", "{fasta}", "--targets", "{tsv}", "--motifs", "{meme}", "--out", "{tmp}/y",
      "--device", "cuda"], "no usable CUDA"),
    (["train", "--sequences", "{fasta}", "--targets", "{tsv}", "--motifs", "jaspar:1999", "--out", "{tmp}/z"],
     "1999"),
    (["export", "{run}"], "--final-layer"),
])
def test_errors_are_one_line_with_exit_2(trained, tmp_path, capsys, args, message):
    if "--device" in args and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    _, fasta, tsv, meme, run = trained
    args = [a.format(run=run, tmp=tmp_path, fasta=fasta, tsv=tsv, meme=meme) for a in args]
    with pytest.raises(SystemExit) if args[0] == "export" else _no_raise():
        code = main(args)
        assert code == 2
    err = _err(capsys)
    assert message in err and len(err.strip().splitlines()) == 1


class _no_raise:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_console_entry_point_runs_as_a_module(trained):
    *_, run = trained
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-m", "tisfm_core", "summary", str(run)], capture_output=True,
                       text=True, env=env)
    assert r.returncode == 0 and "parameters" in r.stdout
    r = subprocess.run([sys.executable, "-m", "tisfm_core", "summary", str(run) + "_nope"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "does not exist" in r.stderr


def test_status_file_tracks_progress_to_done(trained, tmp_path):
    tmp, fasta, tsv, meme, _ = trained
    status = tmp_path / "status.json"
    events = []
    from tisfm_core.progress import StatusFile
    original = StatusFile.__call__

    def spy(self, event):
        original(self, event)
        events.append(self.status["fraction"])
    StatusFile.__call__ = spy
    try:
        code = main(["train", "--sequences", str(fasta), "--targets", str(tsv), "--motifs", str(meme),
                     "--out", str(tmp_path / "r"), "--epochs", "2", "--finetune-epochs", "1",
                     "--batch-size", "64", "--quiet", "--status-file", str(status)])
    finally:
        StatusFile.__call__ = original
    assert code == 0
    data = json.loads(status.read_text())
    assert data["state"] == "done" and data["fraction"] == 1.0
    assert [(h["stage"], h["epoch"]) for h in data["history"]] == [("frozen", 1), ("frozen", 2),
                                                                  ("finetune", 1)]
    assert events and 0 <= min(events) and max(events) <= 1.0   # a valid progress-bar value


def test_status_file_records_failure(trained, tmp_path):
    _, fasta, tsv, meme, _ = trained
    status = tmp_path / "status.json"
    code = main(["train", "--sequences", str(fasta), "--targets", str(tsv), "--motifs", str(meme),
                 "--out", str(tmp_path / "r"), "--outputs", "missing", "--status-file", str(status)])
    data = json.loads(status.read_text())
    assert code == 2 and data["state"] == "failed" and "missing" in data["message"]
