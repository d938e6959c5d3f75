"""Fine-tuning: any run (shipped tiSFM runs, an imported reference model, AI-TAC) continues on a
slice of the demo atlas into a new run; the parent's files never change; what trains is exactly
what was chosen; new outputs start from a ridge fit; the child records its whole lineage; an
interrupted fine-tune resumes to the uninterrupted result; bad input is one line, exit 2."""

from __future__ import annotations

import hashlib
import json
import shutil
import time

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import CISBP, REFERENCE, REPO, folder_digest, need

from tisfm_core import jobs
from tisfm_core.analysis import (
    drift_summary,
    final_layer_difference,
    kernels_moved,
    lineage_drift,
)
from tisfm_core.cli import main
from tisfm_core.finetune import (
    check_finetune_inputs,
    child_model,
    finetune_run,
    lineage,
    load_parent_of,
    resume_finetune,
)
from tisfm_core.runs import load_run
from tisfm_core.sequences import one_hot_torch
from tisfm_core.specs import DataSpec, FinetuneTask
from tisfm_core.training import TrainSettings, sample_rows
from tisfm_core.workflows import predict_table

SHIPPED = REPO / "trained_models"
ATLAS = SHIPPED / "demo_atlas"
N_REGIONS = 200


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A 200-region slice of the shipped demo atlas: FASTA, lineage targets, cell-type targets and
    a table with two lineages plus one cell type (new for a lineage run)."""
    need(ATLAS / "sequences.fa")
    tmp = tmp_path_factory.mktemp("slice")
    lines = (ATLAS / "sequences.fa").read_text().splitlines()[: 2 * N_REGIONS]
    (tmp / "slice.fa").write_text("\n".join(lines) + "\n")
    lineages = pd.read_csv(ATLAS / "targets_lineages.tsv", sep="\t", index_col=0).iloc[:N_REGIONS]
    celltypes = pd.read_csv(ATLAS / "targets_celltypes.tsv", sep="\t", index_col=0).iloc[:N_REGIONS]
    lineages.to_csv(tmp / "lineages.tsv", sep="\t")
    mixed = pd.concat([lineages[["B", "stem"]], celltypes[["GN.BM"]]], axis=1)
    mixed.to_csv(tmp / "mixed.tsv", sep="\t")
    return {"fasta": tmp / "slice.fa", "lineages": tmp / "lineages.tsv", "mixed": tmp / "mixed.tsv",
            "tmp": tmp}


def settings(**kw):
    return TrainSettings(**{"epochs": 1, "batch_size": 64, "lr": 1e-2, "device": "cpu",
                            "precision": "fp32", "compile": "off", **kw})


def task(data, targets="lineages", train="final", **kw):
    return FinetuneTask(data=DataSpec(sequences=str(data["fasta"]), targets=str(data[targets])),
                        train=train, training=settings(**kw))


def sha256(path):
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def changed(child, parent):
    """Names of the parameters whose values differ between two models of the same shape."""
    p = dict(parent.named_parameters())
    return {n for n, v in child.named_parameters() if not torch.equal(v.detach(), p[n].detach())}


def test_same_outputs_final_only_trains_the_final_layer(data, tmp_path):
    parent = SHIPPED / "ablations" / "base"
    before = folder_digest(parent)
    out = finetune_run(parent, tmp_path / "child", task(data), verbose=False)
    assert folder_digest(parent) == before
    child, ref = load_run(out), load_run(parent)
    assert changed(child.model, ref.model) == {"final.weight", "final.bias"}
    assert child.outputs == ref.outputs
    record = child.config["finetune"]
    assert record["train"] == "final" and record["parameters"] == ["final.weight", "final.bias"]
    assert record["outputs"] == {"kept": ref.outputs, "new": [], "dropped": []}
    assert record["parent"]["weights_sha256"] == sha256(parent / "model.safetensors")
    assert load_parent_of(child).path.resolve() == parent.resolve()
    assert [e["name"] for e in child.config["lineage"]] == ["base"]
    # the motif side is the parent's, so the child's predictions are its final layer on the
    # parent's features
    table = predict_table(child, sequences=data["fasta"])
    x = one_hot_torch(_indices(data["fasta"]))
    with torch.no_grad():
        feats = ref.model.features(x).double()
        expect = feats @ child.model.final.weight.double().T + child.model.final.bias.double()
    assert np.allclose(table.to_numpy(), expect.numpy(), atol=1e-4)
    assert child.config["split"]["n_train"] == 160 and child.config["metrics"]["test"]["n"] == 20


def _indices(fasta):
    from tisfm_core.dataset import load_sequences

    return torch.from_numpy(load_sequences(fasta).indices)


@pytest.mark.parametrize("train, expected", [
    ("calibration", {"final.weight", "final.bias", "scale", "bias"}),
    ("all-but-kernels", {"final.weight", "final.bias", "scale", "bias", "pool_weight",
                         "position_emb.weight"}),
    ("all", {"final.weight", "final.bias", "scale", "bias", "pool_weight", "position_emb.weight",
             "kernels"}),
])
def test_each_choice_trains_exactly_its_parameters(data, tmp_path, train, expected):
    parent = SHIPPED / "ablations" / "base"
    out = finetune_run(parent, tmp_path / "child", task(data, train=train), verbose=False)
    child = load_run(out)
    assert changed(child.model, load_run(parent).model) == expected
    assert kernels_moved(child) == (train == "all") and not kernels_moved(parent)
    assert child.config["finetune"]["n_parameters"] == sum(
        p.numel() for n, p in child.model.named_parameters() if n in expected)


def test_new_outputs_keep_shared_rows_and_start_from_ridge(data, tmp_path, capsys):
    parent = load_run(SHIPPED / "ablations" / "base")
    t = task(data, targets="mixed")
    from tisfm_core.workflows import load_split

    ds, split = load_split(t.data, t.training)
    tr = ds.subset(split["train"])
    model, report = child_model(parent, ds.outputs, tr.indices, tr.targets)
    assert report == {"kept": ["B", "stem"], "new": ["GN.BM"],
                      "dropped": ["myeloid", "innate.lym", "abT", "T.act", "gdT"]}
    w, b = model.final.weight.detach(), model.final.bias.detach()
    rows = [parent.outputs.index(o) for o in ("B", "stem")]
    assert torch.equal(w[:2], parent.model.final.weight.detach()[rows])
    assert torch.equal(b[:2], parent.model.final.bias.detach()[rows])
    # the new row: ridge regression (numpy, centred, strength 0.3 x mean variance x (1 + M/N))
    pick = sample_rows(len(tr), 2048, 0)
    with torch.no_grad():
        f = parent.model.features(one_hot_torch(torch.from_numpy(tr.indices[pick]))).double().numpy()
    y = tr.targets[pick][:, 2].astype(np.float64)
    fc, yc = f - f.mean(0), y - y.mean()
    gram = fc.T @ fc
    lam = 0.3 * np.trace(gram) / gram.shape[0] * (1 + gram.shape[0] / len(f))
    coef = np.linalg.solve(gram + lam * np.eye(len(gram)), fc.T @ yc)
    assert np.allclose(w[2].numpy(), coef, atol=1e-4 * np.abs(coef).max())
    assert abs(float(b[2]) - (y.mean() - f.mean(0) @ coef)) < 1e-3
    # the whole fine-tune records the same report and keeps the shared rows' start
    out = finetune_run(parent.path, tmp_path / "child", t, verbose=False)
    child = load_run(out)
    assert child.outputs == ["B", "stem", "GN.BM"]
    assert child.config["finetune"]["outputs"] == report
    diff = final_layer_difference(child)
    assert list(diff.columns) == ["B", "stem"]
    expect = (child.model.final_weights.numpy().T[:, :2].astype(np.float64)
              - parent.model.final_weights.numpy().T[:, rows].astype(np.float64))
    assert np.allclose(diff.to_numpy(), expect)
    table = tmp_path / "diff.tsv"
    assert main(["analyze", "parent-diff", str(out), "--out", str(table)]) == 0
    assert "2 shared output(s)" in capsys.readouterr().out
    written = pd.read_csv(table, sep="\t", index_col=0)
    assert list(written.columns) == ["B", "stem"] and np.allclose(written.to_numpy(), expect, atol=1e-5)


def test_train_all_moves_kernels_and_drift_compares_with_parent(data, tmp_path, capsys):
    parent = SHIPPED / "cv_full" / "fold_0"
    out = finetune_run(parent, tmp_path / "child", task(data, train="all", lr=3e-2), verbose=False)
    child, ref = load_run(out), load_run(parent)
    assert not torch.equal(child.model.kernels, ref.model.kernels)
    df = lineage_drift(child)
    # independent check of one motif: the forward-strand kernel cut to the motif's own columns
    from tisfm_core.motifs import kernel_slots

    cfg, motifs = child.model.config, child.motifs
    k = int(np.argmax(df["parent_mse"].to_numpy()))
    s = int(kernel_slots(motifs.widths, cfg.kernel_width, cfg.era)[k])
    w = int(motifs.widths[k])
    a = child.model.kernels.detach().numpy()[2 * k, :, s:s + w]
    b = ref.model.kernels.detach().numpy()[2 * k, :, s:s + w]
    assert df["parent_mse"].iloc[k] == pytest.approx(np.mean((a - b) ** 2), rel=1e-6)
    assert df["parent_mse"].iloc[k] > 0
    summary = drift_summary(df)
    assert summary["parent_fraction_self_nearest"] == pytest.approx(df["parent_is_self"].mean())
    assert main(["analyze", "drift", str(out)]) == 0
    assert "against the parent fold_0" in capsys.readouterr().out


def test_child_of_a_child_keeps_the_chain(data, tmp_path, capsys):
    parent = SHIPPED / "ablations" / "base"
    first = finetune_run(parent, tmp_path / "first", task(data), verbose=False)
    second = finetune_run(first, tmp_path / "nested" / "second", task(data, train="calibration"),
                          verbose=False)
    config = json.loads((second / "config.json").read_text())
    assert [e["name"] for e in config["lineage"]] == ["base", "first"]
    assert [e["made"] for e in config["lineage"]] == ["trained", "fine-tuned (train final)"]
    assert config["lineage"][0]["weights_sha256"] == sha256(parent / "model.safetensors")
    assert main(["summary", str(second)]) == 0
    assert ("fine-tuned   train calibration, from base (trained) -> first (fine-tuned (train final))"
            in capsys.readouterr().out)
    rows = lineage(second)
    assert [r["name"] for r in rows] == ["base", "first", "second"]
    assert rows[0]["unchanged"] and rows[1]["unchanged"] and rows[2]["made"] == "fine-tuned (train calibration)"
    # stored relative to the child: the chain still resolves when the whole tree moves
    moved = tmp_path.parent / (tmp_path.name + "_moved")
    shutil.copytree(tmp_path, moved)
    shutil.rmtree(tmp_path / "first")
    rows = lineage(moved / "nested" / "second")
    assert rows[1]["path"] == str((moved / "first").resolve()) and rows[1]["present"]


def test_imported_reference_model_fine_tunes(data, tmp_path):
    root = need(REFERENCE / "full_paper")
    need(CISBP)
    imported = tmp_path / "imported"
    outputs = "abT,B,gdT,innate.lym,myeloid,stem,stroma,T.act"
    assert main(["import-reference", str(root / "state_dict.pt"), "--motifs", str(CISBP), "--variant",
                 "full", "--era", "paper", "--outputs", outputs, "--out", str(imported)]) == 0
    before = folder_digest(imported)
    out = tmp_path / "child"
    assert main(["finetune", str(imported), "--out", str(out), "--sequences", str(data["fasta"]),
                 "--targets", str(data["lineages"]), "--train", "final", "--epochs", "1",
                 "--batch-size", "64", "--device", "cpu", "--compile", "off", "--quiet"]) == 0
    assert folder_digest(imported) == before
    child, ref = load_run(out), load_run(imported)
    assert changed(child.model, ref.model) == {"final.weight", "final.bias"}
    record = child.config["finetune"]
    assert record["parent"]["made"] == "imported"
    assert record["outputs"]["dropped"] == ["stroma"] and not record["outputs"]["new"]
    # kept rows started from the imported weights: the untrained start is the parent's rows
    start, _ = child_model(ref, child.outputs)
    rows = [ref.outputs.index(o) for o in child.outputs]
    assert torch.equal(start.final.weight, ref.model.final.weight[rows])
    assert len(predict_table(child, sequences=data["fasta"])) == N_REGIONS


def test_aitac_final_layer_only_and_kernel_choices_refused(data, tmp_path, capsys):
    parent = need(SHIPPED / "ablations" / "aitac")
    before = folder_digest(parent)
    out = finetune_run(parent, tmp_path / "child", task(data, lr=1e-3), verbose=False)
    child, ref = load_run(out), load_run(parent)
    assert changed(child.model, ref.model) == {"fc3.weight", "fc3.bias"}
    # the frozen batch norms kept their running statistics
    buffers = dict(ref.model.named_buffers())
    assert all(torch.equal(v, buffers[n]) for n, v in child.model.named_buffers())
    for choice, what in (("all", "no PWM kernels"), ("calibration", "no motif calibration")):
        code = main(["finetune", str(parent), "--out", str(tmp_path / choice), "--sequences",
                     str(data["fasta"]), "--targets", str(data["lineages"]), "--train", choice])
        err = capsys.readouterr().err
        assert code == 2 and what in err and len(err.strip().splitlines()) == 1
        assert not (tmp_path / choice).exists()
    assert folder_digest(parent) == before


def _interrupt_after(n):
    seen = []

    def callback(event):
        if event["event"] == "epoch":
            seen.append(1)
            if len(seen) == n:
                raise KeyboardInterrupt
    return callback


def test_interrupted_fine_tune_resumes_to_the_uninterrupted_result(data, tmp_path, capsys):
    parent = SHIPPED / "ablations" / "base"
    t = task(data, targets="mixed", train="all-but-kernels", epochs=3, lr=3e-3)
    whole = finetune_run(parent, tmp_path / "whole", t, verbose=False)
    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        finetune_run(parent, cut, t, verbose=False, callback=_interrupt_after(2))
    assert not (cut / "config.json").exists() and (cut / "checkpoint" / "state.json").exists()
    # a training resume names the right command
    assert main(["train", "--resume", str(cut)]) == 2
    assert "tisfm finetune --resume" in capsys.readouterr().err
    assert main(["finetune", "--resume", str(cut), "--quiet"]) == 0
    a, b = load_run(whole), load_run(cut)
    for (name, p), q in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.allclose(p, q, atol=1e-6), name
    assert len(b.config["history"]) == len(a.config["history"]) == 3
    assert b.config["finetune"] == {**a.config["finetune"], "parent": b.config["finetune"]["parent"]}
    assert not (cut / "checkpoint").exists()


def test_resume_refuses_a_changed_parent(data, tmp_path):
    parent = tmp_path / "parent"
    shutil.copytree(SHIPPED / "ablations" / "base", parent)
    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        finetune_run(parent, cut, task(data, epochs=2), verbose=False, callback=_interrupt_after(1))
    (parent / "model.safetensors").write_bytes((SHIPPED / "ablations" / "attention" /
                                                "model.safetensors").read_bytes())
    from tisfm_core.errors import TisfmError

    with pytest.raises(TisfmError, match="other weights than when this fine-tune started"):
        resume_finetune(cut, verbose=False)


def _bad_cases(data, tmp):
    base = SHIPPED / "ablations" / "base"
    damaged = tmp / "damaged"
    shutil.copytree(base, damaged)
    (damaged / "config.json").write_text("{not json")
    foreign = tmp / "foreign"
    shutil.copytree(base, foreign)
    config = json.loads((base / "config.json").read_text())
    (foreign / "config.json").write_text(json.dumps({**config, "format": "keras-model"}))
    other = tmp / "other_ids.fa"
    other.write_text(data["fasta"].read_text().replace(">syn_", ">peak_"))
    short = tmp / "short.fa"
    short.write_text(">syn_00000\nACGTACGTACGTACGTACGTACGTACGTACGTACGTACGTACGTACGTACGTACGTACGTACGT\n")
    seq, tgt = str(data["fasta"]), str(data["lineages"])
    return [
        ("missing parent", [str(tmp / "nowhere"), "--sequences", seq, "--targets", tgt], "does not exist"),
        ("parent is a file", [str(data["fasta"]), "--sequences", seq, "--targets", tgt], "is a file"),
        ("damaged parent", [str(damaged), "--sequences", seq, "--targets", tgt], "not valid JSON"),
        ("unknown format", [str(foreign), "--sequences", seq, "--targets", tgt], "is not a tiSFM run"),
        ("no id overlap", [str(base), "--sequences", str(other), "--targets", tgt], "no sequence id matches"),
        ("other length", [str(base), "--sequences", str(short), "--targets", tgt], "takes 300-bp"),
        ("motifs given", [str(base), "--sequences", seq, "--targets", tgt, "--motifs",
                          str(ATLAS / "motifs.meme")], "has its own motifs"),
        ("unknown output", [str(base), "--sequences", seq, "--targets", tgt, "--outputs", "nope"],
         "'nope' is not an output of the targets"),
    ]


def test_bad_input_is_one_line_and_writes_nothing(data, tmp_path, capsys):
    base = SHIPPED / "ablations" / "base"
    before = folder_digest(base)
    for name, args, message in _bad_cases(data, tmp_path):
        out = tmp_path / "out" / name.replace(" ", "_")
        code = main(["finetune", *args, "--out", str(out)])
        err = capsys.readouterr().err
        assert code == 2, (name, err)
        assert message in err and len(err.strip().splitlines()) == 1, (name, err)
        assert err.startswith("tisfm finetune: error:") and "Traceback" not in err
        assert not out.exists(), name
    # the child may not be written into its parent
    code = main(["finetune", str(base), "--out", str(base / "child"), "--sequences", str(data["fasta"]),
                 "--targets", str(data["lineages"])])
    assert code == 2 and "never writes into the parent" in capsys.readouterr().err
    assert folder_digest(base) == before


def test_check_finetune_inputs_reports_without_writing(data, tmp_path):
    parent = SHIPPED / "ablations" / "base"
    summary = check_finetune_inputs(task(data, targets="mixed", train="calibration"), parent)
    assert summary["n_regions"] == N_REGIONS and summary["length"] == 300
    assert summary["outputs"]["new"] == ["GN.BM"]
    model = load_run(parent).model
    assert summary["n_parameters"] == model.scale.numel() + model.bias.numel() + model.final.in_features * 3 + 3
    assert not any(tmp_path.iterdir())


def test_task_round_trip_and_spec_flags(data, tmp_path, capsys):
    t = task(data, targets="mixed", train="all")
    folder = tmp_path / "job"
    folder.mkdir()
    stored = t.to_dict(base=folder)
    assert stored["data"]["sequences"]["rel"].startswith("..")
    back = FinetuneTask.from_dict(json.loads(json.dumps(stored)), base=folder)
    assert back == t and back.training.init == "reference"
    from tisfm_core.errors import TisfmError

    with pytest.raises(TisfmError, match="one stage"):
        FinetuneTask(data=t.data, training=TrainSettings(epochs=1, finetune_epochs=2))
    with pytest.raises(TisfmError, match="train must be one of"):
        FinetuneTask(data=t.data, train="kernels")
    (folder / "spec.json").write_text(json.dumps(stored))
    with pytest.raises(SystemExit) as stop:   # a usage error: argparse's exit with the usage line
        main(["finetune", str(SHIPPED / "ablations" / "base"), "--out", str(tmp_path / "x"), "--spec",
              str(folder / "spec.json"), "--epochs", "3"])
    assert stop.value.code == 2 and "drop --epochs" in capsys.readouterr().err
    # train's own --spec check is unchanged by finetune's different defaults
    code = main(["train", "--out", str(tmp_path / "y"), "--spec", str(folder / "spec.json")])
    assert code == 2 and "not a training task" in capsys.readouterr().err


@pytest.mark.slow
def test_fine_tune_job_runs_to_a_child(data, tmp_path):
    parent = SHIPPED / "ablations" / "base"
    out = tmp_path / "runs" / "child"
    job = jobs.launch("finetune", [str(parent), "--out", str(out)], tmp_path / "jobs",
                      label="fine-tune", spec=task(data))
    deadline = time.monotonic() + 240
    while jobs.job_state(job)["state"] in ("starting", "running") and time.monotonic() < deadline:
        time.sleep(0.5)
    state = jobs.job_state(job)
    assert state["state"] == "done", jobs.log_tail(job)
    assert state["history"] and state["history"][0]["stage"] == "finetune"
    assert load_run(out).config["finetune"]["train"] == "final"


def test_parent_without_motif_file_takes_the_motifs_it_was_built_from(data, tmp_path, capsys):
    from tisfm_core.motifs import read_meme, write_meme

    parent = tmp_path / "bare"
    shutil.copytree(SHIPPED / "ablations" / "base", parent)
    own = tmp_path / "own.meme"
    shutil.move(parent / "motifs.meme", own)
    fewer = tmp_path / "fewer.meme"
    motifs = read_meme(own)
    write_meme(motifs.subset(motifs.ids[:10]), fewer)
    args = ["finetune", str(parent), "--sequences", str(data["fasta"]), "--targets", str(data["lineages"]),
            "--train", "final", "--epochs", "1", "--device", "cpu", "--compile", "off", "--quiet"]
    for extra, message in (([], "has no motifs.meme"), (["--motifs", str(fewer)], "does not list the 163")):
        assert main([*args, "--out", str(tmp_path / "refused"), *extra]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "refused").exists()
    assert main([*args, "--out", str(tmp_path / "child"), "--motifs", str(own)]) == 0
    assert read_meme(tmp_path / "child" / "motifs.meme").fingerprint == motifs.fingerprint
