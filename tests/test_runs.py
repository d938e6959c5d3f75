"""Run directories: round trips, half precision, and clear refusals of broken or foreign folders."""

import json
import os

import pytest
import torch
from conftest import random_motifs

from tisfm_core.errors import TisfmError
from tisfm_core.runs import (
    data_paths,
    find_runs,
    format_seconds,
    load_run,
    read_run_config,
    run_origin,
    run_summary,
    save_run,
)
from tisfm_core.sequences import one_hot_torch
from tisfm_core.workflows import build_untrained


def _save(tmp_path, name="run", variant="full", half=False, **meta):
    motifs = random_motifs(5)
    model = build_untrained(variant, motifs=motifs, n_outputs=2, length=50, random_state=3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = save_run(tmp_path / name, model, outputs=["a", "b"], motifs=motifs, meta=meta, half=half,
                    split={"train": [0, 1], "val": [2], "test": [3]})
    return path, model, motifs


def _x(n=6, length=50):
    return one_hot_torch(torch.randint(0, 4, (n, length), generator=torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("variant", ["full", "base", "maxpool", "linear", "aitac"])
def test_round_trip_reproduces_predictions(tmp_path, variant):
    path, model, motifs = _save(tmp_path, variant=variant)
    run = load_run(path)
    model.eval()
    with torch.no_grad():
        assert torch.equal(run.model(_x()), model(_x()))
    assert run.outputs == ["a", "b"]
    if variant != "aitac":
        assert run.motif_ids == list(motifs.ids) and run.motifs.fingerprint == motifs.fingerprint
        assert run.model.config == model.config
    assert json.loads((path / "split.json").read_text()) == {"train": [0, 1], "val": [2], "test": [3]}


def test_half_precision_reload_within_1e3(tmp_path):
    path, model, _ = _save(tmp_path, half=True)
    run = load_run(path)
    with torch.no_grad():
        ref, got = model.eval()(_x()), run.model(_x())
    assert (got - ref).abs().max() < 1e-3
    full, _, _ = _save(tmp_path, "full32")
    saved = (full / "model.safetensors").stat().st_size - (path / "model.safetensors").stat().st_size
    floats = sum(p.numel() for p in model.state_dict().values() if p.is_floating_point())
    assert abs(saved - 2 * floats) < 64   # 2 bytes saved per float, up to header differences


def test_missing_and_truncated_weights(tmp_path):
    path, _, _ = _save(tmp_path)
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(TisfmError, match="not a readable safetensors file"):
        load_run(path)
    (path / "model.safetensors").unlink()
    with pytest.raises(TisfmError, match="missing: the run has no weights"):
        load_run(path)


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.pop("outputs"), "'outputs' must be a non-empty list"),
    (lambda c: c.update(format="something-else"), "not a tiSFM run config"),
    (lambda c: c.update(format_version="1"), "'format_version' must be an integer"),
    (lambda c: c.update(format_version=99), "written by a newer tisfm"),
    (lambda c: c["model"]["config"].update(n_motifs="5"), "'n_motifs' should be int"),
    (lambda c: c["model"]["config"].update(n_motifs=7), "7 motifs|motif set does not match"),
    (lambda c: c["motifs"].update(ids=c["motifs"]["ids"][:3]), "3 motif ids for a model built with 5"),
    (lambda c: c.update(outputs=["a", "b", "c"]), "3 output names for a model with 2 outputs"),
    (lambda c: c["model"].update(kind="transformer"), "unknown model kind"),
])
def test_broken_config_is_refused_with_the_field_named(tmp_path, edit, message):
    path, _, _ = _save(tmp_path)
    config = json.loads((path / "config.json").read_text())
    edit(config)
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(TisfmError, match=message):
        load_run(path)


def test_weights_of_another_model_and_changed_motif_file(tmp_path):
    a, _, _ = _save(tmp_path, "a", variant="full")
    b, _, _ = _save(tmp_path, "b", variant="base")
    (b / "model.safetensors").write_bytes((a / "model.safetensors").read_bytes())
    with pytest.raises(TisfmError, match="does not fit the model in config.json"):
        load_run(b)
    text = (a / "motifs.meme").read_text().replace("MOTIF M0", "MOTIF X0")
    (a / "motifs.meme").write_text(text)
    with pytest.raises(TisfmError, match="does not match the fingerprint"):
        load_run(a)


def test_not_a_run_and_invalid_json(tmp_path):
    with pytest.raises(TisfmError, match="does not exist"):
        load_run(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TisfmError, match="run config .* does not exist"):
        load_run(tmp_path / "empty")
    path, _, _ = _save(tmp_path)
    (path / "config.json").write_text("{ not json")
    with pytest.raises(TisfmError, match="not valid JSON \\(line 1"):
        read_run_config(path)


def test_find_runs_and_summaries_report_broken_runs_without_raising(tmp_path):
    _save(tmp_path, "good", metrics={"test": {"r2": [0.5, 0.3]}})
    bad, _, _ = _save(tmp_path, "bad")
    (bad / "config.json").write_text("[]")
    runs = find_runs(tmp_path)
    assert [p.name for p in runs] == ["bad", "good"]
    rows = {r["name"]: r for r in map(run_summary, runs)}
    assert "error" in rows["bad"] and "JSON object" in rows["bad"]["error"]
    assert rows["good"]["mean_test_r2"] == pytest.approx(0.4) and rows["good"]["variant"] == "full"


def test_writes_are_atomic_no_temporary_files_left(tmp_path):
    path, _, _ = _save(tmp_path)
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors", "motifs.meme",
                                                      "split.json"]


def test_moved_run_finds_its_data_through_relative_paths(tmp_path):
    import shutil

    from conftest import planted_dataset

    from tisfm_core.path import load_run_data
    from tisfm_core.runs import resolve_run_data
    from tisfm_core.specs import DataSpec, ModelSpec, TrainTask
    from tisfm_core.training import TrainSettings
    from tisfm_core.workflows import train_run

    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    fasta, tsv, meme, _ = planted_dataset(project / "data", n=200, length=40, n_outputs=2)
    train_run(project / "runs" / "r", TrainTask(
        data=DataSpec(targets=str(tsv), sequences=str(fasta), transform="zscore"),
        model=ModelSpec(motifs=str(meme)), training=TrainSettings(epochs=1, batch_size=64)), verbose=False)
    moved = tmp_path / "elsewhere"
    shutil.move(str(project), str(moved))
    loaded = load_run(moved / "runs" / "r")
    paths = resolve_run_data(loaded)
    assert paths["sequences"] == str((moved / "data" / "seqs.fa").resolve())
    assert paths["targets"] == str((moved / "data" / "targets.tsv").resolve())
    parts = load_run_data(loaded)
    split = json.loads((moved / "runs" / "r" / "split.json").read_text())
    assert parts["test"][0].shape == (len(split["test"]), 40)
    # shown to users relative to the run folder
    assert data_paths(loaded) == {"sequences": ("../../data/seqs.fa", True),
                                  "targets": ("../../data/targets.tsv", True)}
    (moved / "data" / "targets.tsv").unlink()
    assert data_paths(moved / "runs" / "r")["targets"] == (
        os.path.relpath(project / "data" / "targets.tsv", (moved / "runs" / "r").resolve()), False)


def test_run_origin_in_words():
    imported = {"outputs": ["o"] * 8, "imported": {"state_dict": {"path": "/x/state_dict.pt", "rel": "../sd.pt"},
                                                  "variant": "base"}, "training": {"device": "imported"}}
    assert run_origin(imported) == "imported reference checkpoint (state_dict.pt), 8 outputs, trained elsewhere"
    trained = {"outputs": ["a", "b"], "training": {"device": "cpu", "seconds": 204.0, "finished": "2026-01-01"}}
    assert run_origin(trained) == "trained on cpu in 3.4 min, finished 2026-01-01"
    assert run_origin({"outputs": ["a"]}) == "trained on an unrecorded device"
    assert [format_seconds(s) for s in (42, 204, 7200)] == ["42 s", "3.4 min", "2.0 h"]
