"""Background jobs: real training processes, cancellation of whole process groups, unique ids,
killed and vanished processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import planted_dataset

from tisfm_core import jobs
from tisfm_core.errors import TisfmError
from tisfm_core.runs import find_runs, load_run

pytestmark = pytest.mark.slow


def _wait(job, states, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = jobs.job_state(job)
        if state["state"] in states:
            return state
        time.sleep(0.25)
    raise AssertionError(f"job {job.id} still {jobs.job_state(job)['state']} after {timeout} s:\n"
                         f"{jobs.log_tail(job)}")


def _gone(pid):
    """True when no live (non-zombie) process has this pid."""
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2] in "ZX"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return planted_dataset(tmp_path_factory.mktemp("jobs_data"), n=160, length=60, n_outputs=2)


def _train_args(data, out, epochs):
    fasta, tsv, meme, _ = data
    return ["--sequences", str(fasta), "--targets", str(tsv), "--motifs", str(meme), "--epochs", str(epochs),
            "--folds", "5", "--batch-size", "64", "--device", "cpu", "--precision", "fp32", "--out", str(out)]


def test_training_job_finishes_and_its_run_appears(tmp_path, data):
    runs = tmp_path / "runs"
    job = jobs.launch("train", _train_args(data, runs / "tiny", 2), tmp_path / "jobs", label="tiny")
    saved = json.loads((job.path / "job.json").read_text())
    assert saved["pid"] == job.pid == job.pgid and saved["kind"] == "train"
    # the output folder is recorded relative to the job folder too (a moved home finds it)
    assert saved["out"] == {"path": str((runs / "tiny").resolve()), "rel": "../../runs/tiny"}
    assert saved["command"][-2:] == ["--status-file", str(job.path / "status.json")]
    assert os.getpgid(job.pid) == job.pid  # its own process group, not the test's
    state = _wait(job, ("done", "failed", "died"))
    assert state["state"] == "done", jobs.log_tail(job)
    assert state["fraction"] == 1.0
    assert jobs.load_job(job.path).out == str((runs / "tiny").resolve())
    # the status file's loss curve has one row per epoch, as the run's own history
    run = load_run(runs / "tiny")
    assert [r["epoch"] for r in state["history"]] == [r["epoch"] for r in run.config["history"]] == [1, 2]
    assert find_runs(runs) == [runs / "tiny"]
    assert "run written to" in jobs.log_tail(job, 5)
    rows = jobs.list_jobs(tmp_path / "jobs")
    assert [(r["id"], r["state"], r["label"]) for r in rows] == [(job.id, "done", "tiny")]


def test_cancel_stops_the_whole_process_group(tmp_path, data):
    job = jobs.launch("train", _train_args(data, tmp_path / "long", 5000), tmp_path / "jobs")
    assert jobs.job_state(job)["state"] in ("starting", "running")
    state = jobs.cancel(job, timeout=5)
    assert state["state"] == "cancelled"
    with pytest.raises(ProcessLookupError):
        os.killpg(job.pgid, 0)
    assert jobs.load_job(job.path).cancelled is not None
    assert "[cancelled at" in jobs.log_tail(job, 3)
    with pytest.raises(TisfmError, match="not running"):
        jobs.cancel(job)


def test_cancel_reaches_grandchildren(tmp_path):
    # a job whose process started a child of its own: cancel must stop both
    proc = subprocess.Popen(["sh", "-c", "sleep 60 & echo $! > child.pid; wait"], cwd=tmp_path,
                            start_new_session=True)
    deadline = time.monotonic() + 10
    while not (tmp_path / "child.pid").exists() or not (tmp_path / "child.pid").read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    child = int((tmp_path / "child.pid").read_text())
    folder = tmp_path / "jobs" / "manual"
    folder.mkdir(parents=True)
    job = jobs.Job(path=folder, id="manual", kind="train", pid=proc.pid, pgid=proc.pid,
                   start_ticks=jobs._start_ticks(proc.pid), created=time.time())
    (folder / "job.json").write_text(json.dumps(job.to_dict()))
    threading.Thread(target=proc.wait, daemon=True).start()  # reap like launch() does
    assert jobs.cancel(jobs.load_job(folder), timeout=5)["state"] == "cancelled"
    assert _gone(proc.pid) and _gone(child)


def test_concurrent_launches_get_distinct_ids(tmp_path, data):
    ids, errors = [], []

    def make():
        try:
            for _ in range(25):
                ids.append(jobs._new_job_folder(tmp_path / "jobs", "train")[0])
        except Exception as exc:  # collected: a failure in a thread must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=make) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(ids) == len(set(ids)) == 150
    assert len(list((tmp_path / "jobs").iterdir())) == 150
    # two real launches at once: distinct jobs, and a bad input fails with its one-line reason
    launched = []

    def start(i):
        args = _train_args(data, tmp_path / f"x{i}", 1)
        args[3] = str(tmp_path / "missing.tsv")
        launched.append(jobs.launch("train", args, tmp_path / "real"))

    pair = [threading.Thread(target=start, args=(i,)) for i in range(2)]
    for t in pair:
        t.start()
    for t in pair:
        t.join()
    assert len({j.id for j in launched}) == 2 and len({j.pid for j in launched}) == 2
    for job in launched:
        state = _wait(job, ("done", "failed", "died"))
        assert state["state"] == "failed"
        assert "missing.tsv" in state["message"] and "does not exist" in state["message"]


def test_killed_job_is_reported_with_its_log(tmp_path, data):
    job = jobs.launch("train", _train_args(data, tmp_path / "long", 5000), tmp_path / "jobs")
    time.sleep(0.5)
    os.kill(job.pid, signal.SIGKILL)
    state = _wait(job, ("failed", "died"), timeout=30)
    # the launching process saw the exit: failed with the signal; without that record: died
    assert state["state"] == "failed" and state["message"] == "killed by signal 9"
    assert state["returncode"] == -9
    assert "tisfm_core train" in jobs.log_tail(job)
    # seen from another app process (no child handle) once the exit record is gone: died
    deadline = time.monotonic() + 10
    while not (job.path / "exit.json").exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    (job.path / "exit.json").unlink()
    jobs._CHILDREN.pop(job.id)
    assert jobs.job_state(jobs.load_job(job.path))["state"] == "died"


def test_vanished_process_without_result_is_died(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    folder = tmp_path / "jobs" / "ghost"
    folder.mkdir(parents=True)
    job = jobs.Job(path=folder, id="ghost", kind="train", pid=proc.pid, pgid=proc.pid, created=time.time())
    (folder / "job.json").write_text(json.dumps(job.to_dict()))
    (folder / "status.json").write_text(json.dumps({"state": "running", "fraction": 0.4}))
    (folder / "log.txt").write_text("epoch 1\nepoch 2\n")
    row = jobs.list_jobs(tmp_path / "jobs")[0]
    assert row["state"] == "died" and row["fraction"] == 0.4
    assert jobs.log_tail(row["job"], 1) == "epoch 2"
    with pytest.raises(TisfmError, match="not running"):
        jobs.cancel(row["job"])


def test_unwritable_jobs_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(TisfmError, match="cannot create the jobs folder"):
        jobs.launch("train", ["--help"], blocker / "jobs")
    with pytest.raises(TisfmError, match="unknown job kind"):
        jobs.launch("rm", [], tmp_path / "jobs")


def test_log_tail_keeps_last_lines_and_last_progress_state(tmp_path):
    folder = tmp_path / "j"
    folder.mkdir()
    job = jobs.Job(path=folder, id="j", kind="train")
    (folder / "log.txt").write_text("".join(f"line {i}\n" for i in range(100)) + "bar 10%\rbar 50%\rbar 90%\n")
    assert jobs.log_tail(job, 3).splitlines() == ["line 98", "line 99", "bar 90%"]
    assert jobs.log_tail(jobs.Job(path=tmp_path / "none", id="n", kind="train")) == ""


def test_every_job_command_takes_a_status_file():
    """launch() always appends --status-file: each job kind's command must accept it."""
    from tisfm_core.cli import build_parser

    commands = next(a for a in build_parser()._subparsers._group_actions if hasattr(a, "choices"))
    for kind in jobs.KINDS:
        assert "--status-file" in commands.choices[kind]._option_string_actions, kind
