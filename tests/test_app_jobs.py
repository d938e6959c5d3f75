"""The app's jobs panel with AppTest: phases, queue positions and backends, *Open this run*, cancel,
a restart with jobs queued, and two users asking for the same run name at once."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from streamlit.runtime.scriptrunner.script_cache import ScriptCache
from app_fixtures import app_runs_folder
from conftest import planted_dataset
from test_app import texts

from tisfm_core import jobs
from tisfm_core.specs import TrainTask

REPO = Path(__file__).resolve().parents[1]
PAGE = "pages/1_Models_and_training.py"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def fixture_root():
    return app_runs_folder()


@pytest.fixture
def home(fixture_root, tmp_path, monkeypatch):
    monkeypatch.setenv("TISFM_RUNS", str(fixture_root / "runs"))
    monkeypatch.setenv("TISFM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TISFM_JOBS_MAX", "1")
    monkeypatch.delenv("TISFM_JOB_BACKEND", raising=False)
    monkeypatch.delenv("TISFM_JOBS_CONFIG", raising=False)
    return tmp_path / "home"


@pytest.fixture
def sleepers():
    """Live processes standing in for running jobs (killed at the end)."""
    procs = []

    def start():
        proc = subprocess.Popen(["sleep", "120"], start_new_session=True)
        procs.append(proc)
        return proc
    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def page(**state):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / PAGE), default_timeout=60)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, at.exception
    return at


def _job(home, name, *, created, pid=0, status=None, out=None, kind="train", exit_code=None):
    folder = home / "jobs" / name
    folder.mkdir(parents=True)
    job = jobs.Job(path=folder, id=name, kind=kind, args=["--out", str(out)] if out else [], pid=pid,
                   pgid=pid, start_ticks=jobs.start_ticks(pid) if pid else None, created=created,
                   label=name, out=str(out) if out else None, threads=2)
    (folder / "job.json").write_text(json.dumps(job.to_dict()))
    if status is not None:
        (folder / "status.json").write_text(json.dumps(status))
    if exit_code is not None:
        (folder / "exit.json").write_text(json.dumps({"returncode": exit_code, "ended": created + 1}))
    (folder / "log.txt").write_text(f"log of {name}\n")
    return job


def _table(at):
    return next(d.value for d in at.dataframe if "backend" in d.value.columns)


def test_panel_shows_phase_queue_position_and_backend(home, sleepers):
    running = sleepers()
    _job(home, "a_compiling", created=1.0, pid=running.pid,
         status={"state": "running", "phase": "compiling", "fraction": 0.0,
                 "message": "compiling the fused motif block (first training step only)"})
    _job(home, "b_queued", created=2.0)
    _job(home, "c_queued", created=3.0)
    at = page()
    table = _table(at).set_index("job")
    assert table.loc["a_compiling", "state"] == "running"
    assert table.loc["a_compiling", "status"] == "compiling · compiling the fused motif block (first training step only)"
    assert list(table.loc[["b_queued", "c_queued"], "state"]) == ["queued", "queued"]
    assert list(table.loc[["b_queued", "c_queued"], "backend"]) == ["local, #1 in queue", "local, #2 in queue"]
    assert table.loc["c_queued", "status"] == "queued · position 2 in the queue; 1 of 1 job slots in use"
    # the running job's bar names its phase, not a percentage
    bars = texts([p.proto.text for p in at.get("progress")])
    assert "compiling · compiling the fused motif block (first training step only)" in bars
    assert not any(b.startswith("0%") for b in bars)
    assert any("waits: position 1 in the queue" in c for c in texts(at.caption))


def test_open_this_run_makes_the_result_active(home, fixture_root):
    runs = home / "runs"
    shutil.copytree(fixture_root / "runs" / "lineages_full", runs / "mine")
    shutil.copytree(fixture_root / "runs" / "cv_lineages", runs / "my_cv")
    _job(home, "a_train", created=1.0, out=runs / "mine", status={"state": "done", "fraction": 1.0,
                                                                   "message": "run written"}, exit_code=0)
    _job(home, "b_cv", created=2.0, kind="cv", out=runs / "my_cv",
         status={"state": "done", "fraction": 1.0, "message": "2 fold runs"}, exit_code=0)
    _job(home, "c_failed", created=3.0, out=runs / "gone", status={"state": "failed", "message": "bad"},
         exit_code=2)
    at = page()
    keys = [b.key for b in at.button]
    assert "open_a_train" in keys and "open_b_cv" in keys and "open_c_failed" not in keys
    at.button(key="open_a_train").click().run()
    assert not at.exception, at.exception
    assert at.session_state["active_run"] == str(runs / "mine")
    assert at.sidebar.selectbox[0].value == str(runs / "mine")
    assert any("Opened mine" in s.value for s in at.success)
    # a CV job opens its first fold
    at.button(key="open_b_cv").click().run()
    assert at.session_state["active_run"] == str(runs / "my_cv" / "fold_0")


def test_restart_with_jobs_queued_and_cancel_from_the_panel(home, sleepers, monkeypatch):
    started = []
    stand_in = sleepers()

    def start(job, config):   # the queue's start, with a sleeping stand-in for the training
        started.append(job.id)
        job.pid = job.pgid = stand_in.pid
        job.start_ticks = jobs.start_ticks(stand_in.pid)
        (job.path / "job.json").write_text(json.dumps(job.to_dict()))
        return job

    monkeypatch.setattr(jobs, "_start_local", start)
    first = sleepers()
    _job(home, "a_running", created=1.0, pid=first.pid, status={"state": "running", "fraction": 0.5,
                                                                 "epoch": 2, "epochs": 4, "phase": "training"})
    for i, name in enumerate(("b_queued", "c_queued", "d_queued")):
        _job(home, name, created=2.0 + i)
    at = page()
    assert _table(at).set_index("job").loc["a_running", "status"] == "epoch 2/4 · 50%"
    at.button(key="cancel_c_queued").click().run()
    assert not at.exception, at.exception
    assert any("Cancelled job c_queued" in m for m in texts(at.success))
    assert jobs.load_job(home / "jobs" / "c_queued").cancelled and not started
    # the app goes away; meanwhile the running job ends. A new session (a restarted app) finds the
    # jobs again and starts the next queued one in order
    first.kill()
    first.wait()
    (home / "jobs" / "a_running" / "exit.json").write_text(json.dumps({"returncode": 0, "ended": time.time()}))
    (home / "jobs" / "a_running" / "status.json").write_text(json.dumps({"state": "done", "fraction": 1.0}))
    again = page()
    table = _table(again).set_index("job")
    assert started == ["b_queued"]
    assert list(table.loc[["a_running", "b_queued", "c_queued", "d_queued"], "state"]) == \
        ["done", "starting", "cancelled", "queued"]
    assert table.loc["d_queued", "backend"] == "local, #1 in queue"


def test_two_users_asking_for_one_run_name_at_once(home, tmp_path, monkeypatch):
    fasta, tsv, meme, _ = planted_dataset(tmp_path, n=160, length=60, n_outputs=2)
    monkeypatch.setattr(jobs, "_start_local", lambda job, config: job)   # keep them queued
    # A served app compiles each page once, under its script cache's lock; every AppTest run has a
    # cache of its own, so two threads would compile at once, which CPython 3.11 can
    # fail ("AST constructor recursion depth mismatch", gh-106905). One lock, as on the server.
    compile_lock = threading.Lock()
    get_bytecode = ScriptCache.get_bytecode

    def locked(self, script_path):
        with compile_lock:
            return get_bytecode(self, script_path)

    monkeypatch.setattr(ScriptCache, "get_bytecode", locked)
    sessions = []
    for _ in range(2):
        at = page()
        at.radio(key="data_source").set_value("Files on this server").run()
        at.text_input(key="srv_seq").input(str(fasta))
        at.text_input(key="srv_targets").input(str(tsv))
        at.radio(key="motif_source").set_value("file on this server").run()
        at.text_input(key="motif_path").input(str(meme))
        at.number_input(key="folds").set_value(5)
        at.text_input(key="run_name").input("shared name").run()
        sessions.append(at)
    threads = [threading.Thread(target=lambda at=at: at.button(key="start_training").click().run())
               for at in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    errors = [texts(at.error) for at in sessions]
    notices = [texts(at.success) for at in sessions]
    out = home / "runs" / "shared_name"
    refused = [i for i, e in enumerate(errors) if any("is already the output of job" in m for m in e)]
    accepted = [i for i, n in enumerate(notices) if any(m.startswith("Started job") for m in n)]
    assert len(refused) == 1 and len(accepted) == 1 and refused != accepted, (errors, notices)
    assert any(str(out) in m for m in errors[refused[0]])
    # one job, with the task the form built
    folders = [p for p in (home / "jobs").iterdir() if p.is_dir()]
    assert len(folders) == 1
    job = jobs.load_job(folders[0])
    assert job.out == str(out) and job.kind == "train"
    task = TrainTask.from_dict(json.loads((folders[0] / "spec.json").read_text()), base=folders[0])
    assert task.data.sequences == str(fasta) and task.training.epochs == 20
