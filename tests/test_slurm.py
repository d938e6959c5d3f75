"""The slurm jobs backend on a real (one-node) SLURM cluster: pending, running, completed, cancelled
jobs through the library, `tisfm jobs` and the app, and a restart mid-job.

`.ci/run` starts the cluster (`.ci/slurm start`). Without one these tests skip with the reason; in
CI (CI=true) they fail instead, so the backend is never left untested there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import RUNS_ON, planted_dataset

from tisfm_core import claims, jobs
from tisfm_core.cli import main
from tisfm_core.runs import find_runs, is_run, load_run

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _unavailable():
    """Why no SLURM cluster answers here (None when one does)."""
    for command in ("sbatch", "squeue", "scontrol", "scancel", "sinfo"):
        if shutil.which(command) is None:
            return f"{command} is not installed"
    try:
        info = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 30 s"
    if info.returncode != 0:
        return f"sinfo failed: {(info.stderr or info.stdout).strip()}"
    states = info.stdout.split()
    if not any(s.rstrip("*~#$@^-") in ("idle", "mix", "alloc", "comp") for s in states):
        return f"no usable node (sinfo says {' '.join(states) or 'nothing'})"
    return None


@pytest.fixture(scope="module")
def slurm():
    reason = _unavailable()
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI is set but SLURM is not available ({reason}); .ci/run starts a one-node "
                        "cluster with `.ci/slurm start`")
        pytest.skip(f"SLURM is not available: {reason}")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return planted_dataset(tmp_path_factory.mktemp("slurm_data"), n=160, length=60, n_outputs=2)[:3]


@pytest.fixture
def env(monkeypatch, tmp_path):
    """The slurm backend configured through the environment, as a site would."""
    monkeypatch.setenv("TISFM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TISFM_JOB_BACKEND", "slurm")
    monkeypatch.setenv("TISFM_SLURM_MEM", "2G")
    monkeypatch.setenv("TISFM_SLURM_CPUS", "1")
    monkeypatch.delenv("TISFM_JOBS_CONFIG", raising=False)
    return tmp_path / "home"


def _args(data, out, epochs, *extra):
    fasta, tsv, meme = data
    return ["--sequences", str(fasta), "--targets", str(tsv), "--motifs", str(meme), "--epochs", str(epochs),
            "--folds", "5", "--batch-size", "64", "--device", "cpu", "--precision", "fp32", "--compile", "off",
            "--out", str(out), *extra]


def _until(job, predicate, what, timeout=300.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = jobs.job_state(jobs.load_job(job.path))
        if predicate(state):
            return state
        time.sleep(0.5)
    raise AssertionError(f"job {job.id} never {what}; last state {state}:\n{jobs.log_tail(job)}")


def test_pending_running_cancelled_and_completed(slurm, data, env, tmp_path):
    folder = env / "jobs"
    whole_node = jobs.JobConfig(backend="slurm", slurm=jobs.SlurmOptions(cpus=jobs.cpu_count(), mem="2G"))
    long_out, waiting_out, done_out = tmp_path / "long", tmp_path / "waiting", tmp_path / "done"
    blocker = jobs.launch("train", _args(data, long_out, 10000, *RUNS_ON), folder, label="blocker",
                          config=whole_node)
    assert blocker.backend == "slurm" and blocker.slurm_id.isdigit()
    assert (blocker.path / "job.sh").read_text().startswith("#!/bin/bash\n")
    waiting = jobs.launch("train", _args(data, waiting_out, 1), folder, label="waiting", config=whole_node)
    # the first holds every CPU of the node: the second waits, and SLURM says why
    _until(blocker, lambda s: s["state"] == "running" and s["scheduler_state"] == "RUNNING", "ran")
    rows = {r["id"]: r for r in jobs.list_jobs(folder)}
    assert rows[waiting.id]["state"] == "queued" and rows[waiting.id]["scheduler_state"] == "PENDING"
    assert rows[waiting.id]["reason"].startswith("SLURM: ") and rows[waiting.id]["slurm_id"] == waiting.slurm_id
    assert rows[blocker.id]["backend"] == "slurm"
    # cancel the pending one: it never runs
    state = jobs.cancel(waiting)
    assert state["state"] == "cancelled"
    state = _until(waiting, lambda s: s["over"], "ended")
    assert state["scheduler_state"] == "CANCELLED" and not waiting_out.exists()
    # cancel the running one once it has written into its run folder: its half run goes too
    _until(blocker, lambda s: (long_out / "checkpoint" / "state.json").is_file(), "checkpointed")
    assert jobs.cancel(blocker)["state"] == "cancelled"
    state = _until(blocker, lambda s: s["over"], "ended", timeout=120)
    assert state["state"] == "cancelled" and state["scheduler_state"] == "CANCELLED"
    deadline = time.monotonic() + 60
    while long_out.exists() or claims.read_claim(long_out) is not None:
        assert time.monotonic() < deadline, "the cancelled job's half run is still there"
        time.sleep(0.5)
    # one that runs to the end: its run appears, with its status and log
    done = jobs.launch("train", _args(data, done_out, 2), folder, label="done")
    assert "--cpus-per-task=1" in (done.path / "job.sh").read_text()   # from TISFM_SLURM_CPUS
    # a new process (a restarted app, a login shell) finds it mid-way by its SLURM id
    mid = subprocess.run([sys.executable, "-m", "tisfm_core", "jobs", "status", done.slurm_id, "--json",
                          "--jobs-dir", str(folder)], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert mid.returncode == 0, mid.stderr
    seen = json.loads(mid.stdout)
    assert seen["id"] == done.id and seen["slurm_id"] == done.slurm_id and seen["backend"] == "slurm"
    assert seen["state"] in ("queued", "starting", "running", "done")
    state = _until(done, lambda s: s["state"] == "done" and s["over"], "finished", timeout=600)
    assert state["fraction"] == 1.0 and [h["epoch"] for h in state["history"]] == [1, 2]
    assert json.loads((done.path / "exit.json").read_text())["returncode"] == 0
    assert find_runs(tmp_path) == [done_out] and load_run(done_out).config["training"]["epochs"] == 2
    assert "run written to" in jobs.log_tail(done, 5)   # the log is SLURM's output file
    assert jobs.result_run(jobs.load_job(done.path)) == done_out


def test_tisfm_jobs_command_line(slurm, data, env, tmp_path, capsys):
    folder = env / "jobs"
    out = tmp_path / "cli_run"
    assert main(["jobs", "launch", "--jobs-dir", str(folder), "--label", "from the shell", "train",
                 *_args(data, out, 1)]) == 0
    line = capsys.readouterr().out
    job = jobs.list_jobs(folder)[0]["job"]
    assert line.startswith(f"job {job.id} (slurm as SLURM job {job.slurm_id}): ")
    # the task flags went into the job's spec, the rest onto its command line
    assert job.spec and job.args == ["--out", str(out)] and job.label == "from the shell"
    spec = json.loads((job.path / "spec.json").read_text())
    assert spec["training"]["epochs"] == 1 and spec["data"]["sequences"]["rel"] == os.path.relpath(data[0], job.path)
    assert main(["jobs", "list", "--jobs-dir", str(folder), "--backend", "slurm"]) == 0
    listed = capsys.readouterr().out
    assert job.id in listed and f"slurm {job.slurm_id}" in listed
    _until(job, lambda s: s["state"] == "done" and s["over"], "finished", timeout=600)
    assert main(["jobs", "status", job.id[:20], "--jobs-dir", str(folder)]) == 0
    status = capsys.readouterr().out
    assert f"slurm (SLURM job {job.slurm_id})" in status and "state      done (SLURM COMPLETED)" in status
    assert main(["jobs", "log", job.id, "--jobs-dir", str(folder), "-n", "1"]) == 0
    assert capsys.readouterr().out.strip() == f"run written to {out}"
    assert is_run(out)
    # a finished job cannot be cancelled; a bad flag is refused before anything is submitted
    assert main(["jobs", "cancel", job.id, "--jobs-dir", str(folder)]) == 2
    assert "is not queued or running (it is done)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["jobs", "launch", "--jobs-dir", str(folder), "train", *_args(data, tmp_path / "x", 1),
              "--penalty", "lasso"])
    assert exit_.value.code == 2 and "invalid choice: 'lasso'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["jobs", "launch", "--jobs-dir", str(folder), "train", "--out", str(tmp_path / "y")])
    assert exit_.value.code == 2 and "tisfm jobs: error: needs --targets" in capsys.readouterr().err
    assert len(jobs.list_jobs(folder)) == 1


def test_app_launches_shows_and_reopens_a_slurm_job(slurm, data, env, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("TISFM_RUNS", str(tmp_path / "no_runs"))
    fasta, tsv, meme = data

    def page():
        at = AppTest.from_file(str(REPO / "pages/1_Models_and_training.py"), default_timeout=120)
        at.run()
        assert not at.exception, at.exception
        return at

    at = page()
    at.radio(key="data_source").set_value("Files on this server").run()
    at.text_input(key="srv_seq").input(str(fasta))
    at.text_input(key="srv_targets").input(str(tsv))
    at.radio(key="motif_source").set_value("file on this server").run()
    at.text_input(key="motif_path").input(str(meme))
    at.number_input(key="epochs").set_value(2)
    at.number_input(key="folds").set_value(5)
    at.selectbox(key="device").set_value("cpu")
    at.text_input(key="run_name").input("on the cluster").run()
    at.button(key="start_training").click().run()
    assert not [e.value for e in at.error], [e.value for e in at.error]
    assert any(s.value.startswith("Started job") for s in at.success)
    job = jobs.list_jobs(env / "jobs")[0]["job"]
    assert job.backend == "slurm" and job.slurm_id
    table = next(d.value for d in at.dataframe if "backend" in d.value.columns)
    assert list(table["backend"]) == [f"slurm {job.slurm_id}"]
    # a restarted app (a new session) finds the job while it waits or runs
    again = page()
    table = next(d.value for d in again.dataframe if "backend" in d.value.columns)
    assert list(table["job"]) == [job.id] and table["state"][0] in ("queued", "starting", "running", "done")
    _until(job, lambda s: s["state"] == "done" and s["over"], "finished", timeout=600)
    done = page()
    table = next(d.value for d in done.dataframe if "backend" in d.value.columns)
    assert list(table["state"]) == ["done"] and list(table["progress"]) == [100]
    run = env / "runs" / "on_the_cluster"
    runs_table = done.dataframe[0].value
    assert str(run) in list(runs_table["folder"])   # the run appears in the runs list
    done.button(key=f"open_{job.id}").click().run()
    assert done.session_state["active_run"] == str(run)
