"""Fine-tuning in the app (AppTest, no browser): the form on the active run launches a job (or
refuses it with the reason before anything starts), a real job ends in a child run, the run
card shows the lineage, and Final layer shows the child minus the parent and the kernel drift."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from app_fixtures import app_runs_folder
from test_app import arr, charts, page, texts

from tisfm_core import jobs
from tisfm_core.analysis import drift_summary, lineage_drift
from tisfm_core.cli import build_parser
from tisfm_core.finetune import finetune_run
from tisfm_core.runs import load_run
from tisfm_core.server import jobs_dir, user_runs_dir
from tisfm_core.specs import DataSpec, FinetuneTask
from tisfm_core.training import TrainSettings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def fixture_root():
    return app_runs_folder()


@pytest.fixture
def env(fixture_root, tmp_path, monkeypatch):
    monkeypatch.setenv("TISFM_RUNS", str(fixture_root / "runs"))
    monkeypatch.setenv("TISFM_HOME", str(tmp_path / "home"))
    return fixture_root / "runs"


@pytest.fixture(scope="module")
def child(fixture_root, tmp_path_factory):
    """lineages_full fine-tuned with unfrozen kernels on its own data (a parent and its child)."""
    demo = fixture_root / "data" / "demo"
    out = tmp_path_factory.mktemp("children") / "child"
    task = FinetuneTask(data=DataSpec(sequences=str(demo / "sequences.fa"),
                                      targets=str(demo / "targets_lineages.tsv"), folds=5),
                        train="all", training=TrainSettings(epochs=1, lr=3e-2, batch_size=64, device="cpu",
                                                            precision="fp32"))
    return finetune_run(fixture_root / "runs" / "lineages_full", out, task, verbose=False)


def _fake_launch(monkeypatch):
    calls, calls_hidden = [], []
    monkeypatch.setattr(jobs, "launch", lambda kind, args, jobs_dir, label="", spec=None, hide_contents=False:
                        calls.append((kind, args, spec)) or calls_hidden.append(hide_contents) or jobs.Job(path=Path(jobs_dir), id="fake", kind=kind))
    return calls


def test_finetune_form_launches_a_job_on_the_active_run(env, monkeypatch, tmp_path):
    calls = _fake_launch(monkeypatch)
    run_dir = env / "lineages_full"
    at = page("pages/1_Models_and_training.py", run_dir)
    assert at.radio(key="ft_source").value == "The run's own training data"
    at.radio(key="ft_train").set_value("final").run()
    at.number_input(key="ft_epochs").set_value(2).run()
    at.text_input(key="ft_name").input("tuned").run()
    at.button(key="start_finetune").click().run()
    assert not texts(at.error), texts(at.error)
    kind, args, spec = calls[0]
    parsed = build_parser().parse_args([kind, *map(str, args)])
    assert kind == "finetune" and parsed.parent == str(run_dir)
    assert parsed.out == str(tmp_path / "home" / "runs" / "tuned")
    config = json.loads((run_dir / "config.json").read_text())
    assert isinstance(spec, FinetuneTask) and spec.train == "final" and spec.training.epochs == 2
    # the run's own data with its own split: same folds, fold and seed
    assert Path(spec.data.sequences).resolve() == Path(config["data"]["sequences"]["path"]).resolve()
    assert spec.data.folds == config["split"]["n_folds"] and spec.data.fold == config["split"]["fold"]
    assert spec.training.random_state == config["split"]["random_state"]
    assert any("Started job fake" in s and "7 kept" in s for s in texts(at.success))


def test_finetune_form_refuses_targets_that_match_no_sequence(env, monkeypatch, fixture_root, tmp_path):
    calls = _fake_launch(monkeypatch)
    demo = fixture_root / "data" / "demo"
    targets = pd.read_csv(demo / "targets_lineages.tsv", sep="\t", index_col=0)
    targets.index = [f"peak_{i}" for i in range(len(targets))]
    bad = tmp_path / "other_ids.tsv"
    targets.to_csv(bad, sep="\t")
    at = page("pages/1_Models_and_training.py", env / "lineages_full")
    at.radio(key="ft_source").set_value("Other data").run()
    at.radio(key="ft_data_source").set_value("Files on this server").run()
    at.text_input(key="ft_srv_seq").input(str(demo / "sequences.fa")).run()
    at.text_input(key="ft_srv_targets").input(str(bad)).run()
    at.button(key="start_finetune").click().run()
    assert any("no sequence id matches a target id" in e for e in texts(at.error)), texts(at.error)
    assert not calls
    assert not (tmp_path / "home" / "runs").exists() or not any((tmp_path / "home" / "runs").iterdir())


def test_finetune_form_offers_only_aitac_choices(env, fixture_root, tmp_path):
    from tisfm_core.specs import ModelSpec, TrainTask
    from tisfm_core.workflows import train_run

    demo = fixture_root / "data" / "demo"
    aitac = tmp_path / "home" / "runs" / "aitac"
    train_run(aitac, TrainTask(data=DataSpec(sequences=str(demo / "sequences.fa"),
                                             targets=str(demo / "targets_lineages.tsv"), folds=5),
                               model=ModelSpec(variant="aitac"),
                               training=TrainSettings(epochs=1, batch_size=64, device="cpu")), verbose=False)
    at = page("pages/1_Models_and_training.py", aitac)
    assert list(at.radio(key="ft_train").options) == ["final layer only", "everything but the PWM kernels"]


def test_a_real_finetune_job_makes_a_child(env):
    at = page("pages/1_Models_and_training.py", env / "lineages_full")
    at.radio(key="ft_train").set_value("final").run()
    at.number_input(key="ft_epochs").set_value(1).run()
    at.text_input(key="ft_name").input("real_child").run()
    at.button(key="start_finetune").click().run()
    assert not texts(at.error), texts(at.error)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        rows = jobs.list_jobs(jobs_dir())
        if rows and rows[0]["state"] not in ("starting", "running"):
            break
        time.sleep(0.5)
    assert rows[0]["state"] == "done", jobs.log_tail(rows[0]["job"])
    child = load_run(user_runs_dir() / "real_child")
    assert child.config["finetune"]["train"] == "final"
    assert child.config["finetune"]["parent"]["name"] == "lineages_full"


def _with_child(monkeypatch, env, child):
    monkeypatch.setenv("TISFM_RUNS", f"{env}{os.pathsep}{child.parent}")


def test_run_card_shows_the_lineage(env, child, monkeypatch):
    _with_child(monkeypatch, env, child)
    at = page("app.py", child)
    body = "\n".join(texts(at.markdown))
    assert "**Lineage** (oldest first): lineages_full (trained) → child (fine-tuned (train all))" in body
    assert "this run trained **all**" in body and "7 kept" in body


def test_final_layer_shows_child_minus_parent_and_kernel_drift(env, child, monkeypatch):
    _with_child(monkeypatch, env, child)
    at = page("pages/2_Final_layer.py", child)
    before = len(charts(at))
    at.toggle(key="vs_parent").set_value(True).run()
    diff = charts(at)[1]["data"][0]
    assert len(charts(at)) == before + 1
    a, b = load_run(child), load_run(env / "lineages_full")
    n = len(a.motif_ids)
    delta = pd.DataFrame((a.model.final.weight.detach().numpy()[:, :n]
                          - b.model.final.weight.detach().numpy()[:, :n]).T, index=a.motif_ids,
                         columns=a.outputs)
    shown = [c[0][0] for c in diff["customdata"]]
    assert np.allclose(arr(diff["z"]), delta.loc[shown].to_numpy(), atol=1e-6)
    top = set()
    for output in delta.columns:
        col = np.abs(delta[output].to_numpy())
        top |= {delta.index[i] for i in np.argsort(-col, kind="stable")[:5] if col[i] > 0}
    assert set(shown) == top
    metrics = {m.label: m.value for m in at.metric}
    s = drift_summary(lineage_drift(a))
    assert metrics["Kernels nearest to their own PWM"] == f"{s['fraction_self_nearest']:.1%}"
    assert metrics["Mean MSE to the parent's kernels"] == f"{s['parent_mean_mse']:.4f}"
    # a run without a parent has no toggle
    at = page("pages/2_Final_layer.py", env / "lineages_full")
    assert not at.get("toggle")
