"""Background jobs, local backend: real training processes, the bounded queue (order, cancel,
restart), cancellation of whole process groups, unique ids, killed and vanished processes, the
generated scripts and the configuration."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import RUNS_ON, planted_dataset

from tisfm_core import claims, jobs
from tisfm_core.errors import TisfmError
from tisfm_core.runs import find_runs, is_run, load_run
from tisfm_core.specs import TrainTask

REPO = Path(__file__).resolve().parents[1]


def _wait(job, states, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = jobs.job_state(jobs.load_job(job.path))
        # a final state only once the job's processes have ended (its exit record written)
        if state["state"] in states and (state["state"] in jobs.ACTIVE_STATES or state["over"]):
            return state
        time.sleep(0.25)
    raise AssertionError(f"job {job.id} still {jobs.job_state(job)['state']} after {timeout} s:\n"
                         f"{jobs.log_tail(job)}")


def _group_reaped(pgid, timeout=30.0):
    """Wait until no process of the group is left, zombies included (init reaps orphans soon)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"process group {pgid} still exists after {timeout} s")


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
            "--folds", "5", "--batch-size", "64", "--device", "cpu", "--precision", "fp32", "--compile", "off",
            "--out", str(out), *(RUNS_ON if epochs >= 1000 else ())]


@pytest.fixture
def slots(monkeypatch):
    """Set the local queue's size for a test (TISFM_JOBS_MAX)."""
    def set_slots(n):
        monkeypatch.setenv("TISFM_JOBS_MAX", str(n))
    monkeypatch.delenv("TISFM_JOBS_CONFIG", raising=False)
    monkeypatch.delenv("TISFM_JOB_BACKEND", raising=False)
    set_slots(2)
    return set_slots


def _wait_started(job, timeout=60.0):
    """The job once the queue has started it (its pid known)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = jobs.load_job(job.path)
        if job.pid:
            return job
        jobs.start_queued(job.path.parent)
        time.sleep(0.1)
    raise AssertionError(f"job {job.id} was not started in {timeout} s")


def _command_pid(job, timeout=60.0):
    """The pid of the job's `python -m tisfm_core` process (a child of its script)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            children = Path(f"/proc/{job.pid}/task/{job.pid}/children").read_text().split()
        except OSError:
            children = []
        for pid in children:
            try:
                if b"tisfm_core" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    return int(pid)
            except OSError:
                continue
        time.sleep(0.05)
    raise AssertionError(f"no command process under job {job.id}")


@pytest.mark.slow
def test_training_job_finishes_and_its_run_appears(tmp_path, data, slots):
    runs = tmp_path / "runs"
    job = jobs.launch("train", _train_args(data, runs / "tiny", 2), tmp_path / "jobs", label="tiny")
    saved = json.loads((job.path / "job.json").read_text())
    assert saved["pid"] == job.pid == job.pgid and saved["kind"] == "train" and saved["backend"] == "local"
    assert saved["out"] == {"path": str(runs / "tiny"), "rel": "../../runs/tiny"}
    assert jobs.load_job(job.path).out == str(runs / "tiny")
    assert saved["command"][-2:] == ["--status-file", str(job.path / "status.json")]
    assert os.getpgid(job.pid) == job.pid  # its own process group, not the test's
    state = _wait(job, ("done", "failed", "died"))
    assert state["state"] == "done", jobs.log_tail(job)
    assert state["fraction"] == 1.0
    # the status file's loss curve has one row per epoch, as the run's own history
    run = load_run(runs / "tiny")
    assert [r["epoch"] for r in state["history"]] == [r["epoch"] for r in run.config["history"]] == [1, 2]
    assert find_runs(runs) == [runs / "tiny"]
    assert "run written to" in jobs.log_tail(job, 5)
    rows = jobs.list_jobs(tmp_path / "jobs")
    assert [(r["id"], r["state"], r["label"]) for r in rows] == [(job.id, "done", "tiny")]
    assert json.loads((job.path / "exit.json").read_text())["returncode"] == 0
    assert jobs.result_run(jobs.load_job(job.path)) == runs / "tiny"
    # the phases the status file went through are those of training; the last is evaluating
    assert state["phase"] == "evaluating" and jobs.progress_text(state) == state["message"]


@pytest.mark.slow
def test_cancel_stops_the_whole_process_group_and_frees_the_name(tmp_path, data, slots):
    out = tmp_path / "long"
    job = jobs.launch("train", _train_args(data, out, 5000), tmp_path / "jobs")
    assert jobs.job_state(job)["state"] in ("starting", "running")
    # once it has written into its run folder (first checkpoint), cancel it
    deadline = time.monotonic() + 300
    while not (out / "checkpoint" / "state.json").is_file():
        assert time.monotonic() < deadline and jobs.job_state(job)["state"] in ("starting", "running")
        time.sleep(0.2)
    state = jobs.cancel(job, timeout=5)
    assert state["state"] == "cancelled" and state["over"]
    _group_reaped(job.pgid)
    assert jobs.load_job(job.path).cancelled is not None
    assert "[cancelled at" in jobs.log_tail(job, 3)
    with pytest.raises(TisfmError, match="not queued or running"):
        jobs.cancel(job)
    # no half-run folder and no claim are left: the same name can be used at once
    assert not out.exists() and claims.read_claim(out) is None
    again = jobs.launch("train", _train_args(data, out, 1), tmp_path / "jobs")
    assert _wait(again, ("done", "failed", "died"))["state"] == "done" and is_run(out)


def test_cancel_reaches_grandchildren(tmp_path, slots):
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
                   start_ticks=jobs.start_ticks(proc.pid), created=time.time())
    (folder / "job.json").write_text(json.dumps(job.to_dict()))
    threading.Thread(target=proc.wait, daemon=True).start()  # reap like launch() does
    assert jobs.cancel(jobs.load_job(folder), timeout=5)["state"] == "cancelled"
    assert _gone(proc.pid) and _gone(child)


@pytest.mark.slow
def test_concurrent_launches_get_distinct_ids(tmp_path, data, slots):
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
    assert len({j.id for j in launched}) == 2
    for job in launched:
        state = _wait(job, ("done", "failed", "died"))
        assert state["state"] == "failed"
        assert "missing.tsv" in state["message"] and "does not exist" in state["message"]
    assert len({jobs.load_job(j.path).pid for j in launched}) == 2


@pytest.mark.slow
def test_killed_job_is_reported_and_leaves_no_half_run(tmp_path, data, slots):
    out = tmp_path / "long"
    job = _wait_started(jobs.launch("train", _train_args(data, out, 5000), tmp_path / "jobs"))
    deadline = time.monotonic() + 300
    while not (out / "checkpoint" / "state.json").is_file():
        assert time.monotonic() < deadline, jobs.log_tail(job)
        time.sleep(0.2)
    os.kill(_command_pid(job), signal.SIGKILL)   # the out-of-memory killer, say
    state = _wait(job, ("failed", "died"), timeout=60)
    # the job's script saw the command die: failed with the signal, its unfinished run removed
    assert state["state"] == "failed" and state["message"] == "killed by signal 9"
    assert state["returncode"] == 128 + 9
    assert "tisfm_core train" in jobs.log_tail(job)
    deadline = time.monotonic() + 30
    while out.exists() or claims.read_claim(out) is not None:
        assert time.monotonic() < deadline, sorted(p.name for p in out.iterdir())
        time.sleep(0.1)


@pytest.mark.slow
def test_failed_job_never_removes_a_finished_run(tmp_path, data, slots):
    out = tmp_path / "run"
    first = jobs.launch("train", _train_args(data, out, 1), tmp_path / "jobs")
    assert _wait(first, ("done", "failed", "died"))["state"] == "done"
    weights = (out / "model.safetensors").read_bytes()
    # --force over it with inputs that cannot be read: the job fails, the run stays whole
    args = _train_args(data, out, 1) + ["--force"]
    args[3] = str(tmp_path / "missing.tsv")
    second = jobs.launch("train", args, tmp_path / "jobs")
    assert _wait(second, ("done", "failed", "died"))["state"] == "failed"
    assert is_run(out) and (out / "model.safetensors").read_bytes() == weights


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
    assert row["state"] == "died" and row["fraction"] == 0.4 and row["over"]
    assert jobs.log_tail(row["job"], 1) == "epoch 2"
    with pytest.raises(TisfmError, match="not queued or running"):
        jobs.cancel(row["job"])


@pytest.mark.parametrize("hidden", [True, False])
def test_a_job_reading_server_files_reports_without_their_contents(tmp_path, hidden):
    """A job launched with hide_contents (it reads typed server paths or a run's recorded data)
    shows its failure message and log with quoted file contents hidden; the flag survives
    job.json; other jobs show their messages as written."""
    folder = tmp_path / "jobs" / "j"
    folder.mkdir(parents=True)
    job = jobs.Job(path=folder, id="j", kind="path", created=time.time(), hide_contents=hidden)
    (folder / "job.json").write_text(json.dumps(job.to_dict()))
    secret = "targets.tsv line 2: row 'SECRET-ID', column 'B' holds 'top-secret'; expected a number"
    (folder / "status.json").write_text(json.dumps({"state": "failed", "message": secret}))
    (folder / "exit.json").write_text(json.dumps({"returncode": 2, "ended": time.time()}))
    (folder / "log.txt").write_text(f"reading\ntisfm path: error: {secret}\n")
    row = jobs.list_jobs(tmp_path / "jobs")[0]
    assert row["job"].hide_contents is hidden and row["state"] == "failed"
    shown = [row["message"], jobs.log_tail(row["job"])]
    assert all(("SECRET-ID" in text) is not hidden and ("top-secret" in text) is not hidden for text in shown)
    if hidden:
        assert row["message"] == "targets.tsv line 2: row '…', column '…' holds '…'; expected a number"


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


# -- the local queue --------------------------------------------------------------------------------

@pytest.mark.slow
def test_queue_runs_one_job_at_a_time_in_launch_order(tmp_path, data, slots):
    slots(1)
    folder = tmp_path / "jobs"
    launched = [jobs.launch("train", _train_args(data, tmp_path / f"run{i}", 1), folder, label=f"job {i}")
                for i in range(4)]
    rows = {r["id"]: r for r in jobs.list_jobs(folder)}
    states = [rows[j.id]["state"] for j in launched]
    assert states[0] in ("starting", "running") and states[1:] == ["queued"] * 3
    assert [rows[j.id]["position"] for j in launched[1:]] == [1, 2, 3]
    assert rows[launched[2].id]["reason"] == "position 2 in the queue; 1 of 1 job slots in use"
    assert jobs.progress_text(rows[launched[3].id]).startswith("queued · position 3")
    # the one running has every core (cores / 1 threads); its script says so
    assert jobs.load_job(launched[0].path).threads == jobs.cpu_count()
    assert f'threads={jobs.cpu_count()}' in (launched[0].path / "job.sh").read_text()
    # cancelling a queued job only marks it: it never starts, the others move up
    state = jobs.cancel(launched[2])
    assert state["state"] == "cancelled" and state["over"]
    assert [r["position"] for r in jobs.list_jobs(folder) if r["id"] == launched[3].id] == [2]
    for job in launched:
        _wait(job, ("done", "failed", "died", "cancelled"), timeout=600)
    final = [jobs.load_job(j.path) for j in launched]
    assert [jobs.job_state(j)["state"] for j in final] == ["done", "done", "cancelled", "done"]
    assert final[2].pid == 0 and not (tmp_path / "run2").exists()
    ran = [j for j in final if j.pid]
    ends = [json.loads((j.path / "exit.json").read_text())["ended"] for j in ran]
    starts = [j.started for j in ran]
    # in launch order, and each only after the one before it had ended
    assert starts == sorted(starts) and all(s >= e for s, e in zip(starts[1:], ends[:-1]))
    assert all(is_run(tmp_path / f"run{i}") for i in (0, 1, 3))


@pytest.mark.slow
def test_queued_jobs_start_after_a_restart(tmp_path, data, slots):
    slots(1)
    folder = tmp_path / "jobs"
    first = _wait_started(jobs.launch("train", _train_args(data, tmp_path / "a", 5000), folder))
    second = jobs.launch("train", _train_args(data, tmp_path / "b", 1), folder)
    assert jobs.job_state(second)["state"] == "queued"
    # the machine goes down hard: the running job dies without its script noticing, and no
    # process is left that would start the next one
    os.killpg(first.pgid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while jobs.job_state(first)["state"] != "died":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert jobs.load_job(second.path).pid == 0
    # the app (or `tisfm jobs list`) starts again: a new process finds the queue and moves it
    listed = subprocess.run([sys.executable, "-m", "tisfm_core", "jobs", "list", "--jobs-dir", str(folder)],
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
                            timeout=300)
    assert listed.returncode == 0, listed.stderr
    lines = {line.split()[0]: line for line in listed.stdout.splitlines()}
    assert " died " in lines[first.id] and lines[second.id].split()[3] in ("starting", "running")
    assert _wait(second, ("done", "failed", "died"), timeout=600)["state"] == "done"


def test_launch_refuses_an_output_another_job_will_write(tmp_path, slots, monkeypatch):
    slots(1)
    started = []
    monkeypatch.setattr(jobs, "_start_local", lambda job, config: started.append(job) or job)
    out = tmp_path / "runs" / "x"
    first = jobs.launch("train", ["--out", str(out)], tmp_path / "jobs")
    assert jobs.job_state(first)["state"] == "queued" and [j.id for j in started] == [first.id]
    with pytest.raises(TisfmError, match=rf"{out} is already the output of job {first.id} \(queued\)"):
        jobs.launch("cv", ["--out", str(tmp_path / "runs" / "." / "x")], tmp_path / "jobs")
    # nothing is left of the refused launch
    assert [p.name for p in (tmp_path / "jobs").iterdir() if p.is_dir()] == [first.id]
    # a folder another process claims is refused too
    with claims.claim_output(tmp_path / "runs" / "y"):
        with pytest.raises(TisfmError, match="is being written by train"):
            jobs.launch("train", ["--out", str(tmp_path / "runs" / "y")], tmp_path / "jobs")
    jobs.cancel(first)
    assert jobs.launch("train", ["--out", str(out)], tmp_path / "jobs").id != first.id


def test_queue_counts_only_live_jobs(tmp_path, slots, monkeypatch):
    slots(2)
    started = []
    # one job running (a live process of ours), one dead: one slot is free
    sleeper = subprocess.Popen(["sleep", "60"], start_new_session=True)

    def start(job, config):   # "starts" a job as the live sleeper
        started.append(job.id)
        job.pid, job.start_ticks = sleeper.pid, jobs.start_ticks(sleeper.pid)
        (job.path / "job.json").write_text(json.dumps(job.to_dict()))
        return job

    monkeypatch.setattr(jobs, "_start_local", start)
    folder = tmp_path / "jobs"
    try:
        for name, pid in (("a_live", sleeper.pid), ("b_dead", 0)):
            path = folder / name
            path.mkdir(parents=True)
            job = jobs.Job(path=path, id=name, kind="train", pid=pid or _dead_pid(), pgid=pid,
                           start_ticks=jobs.start_ticks(pid) if pid else None, created=1.0)
            (path / "job.json").write_text(json.dumps(job.to_dict()))
        queued = [jobs.launch("train", [], folder) for _ in range(3)]
        assert started == [queued[0].id]
        rows = {r["id"]: r for r in jobs.list_jobs(folder)}
        assert rows["a_live"]["state"] == "starting" and rows["b_dead"]["state"] == "died"
        assert [rows[j.id]["position"] for j in queued[1:]] == [1, 2]
        assert rows[queued[1].id]["reason"] == "position 1 in the queue; 2 of 2 job slots in use"
    finally:
        sleeper.kill()
        sleeper.wait()


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# -- configuration and generated scripts ------------------------------------------------------------

def test_config_from_file_and_environment(tmp_path):
    toml = tmp_path / "jobs.toml"
    toml.write_text('backend = "slurm"\n[local]\nmax_jobs = 3\n[slurm]\npartition = "gpu"\n'
                    'time = "04:00:00"\nmem = "16G"\ncpus = 8\ngpus = 2\naccount = "lab"\n'
                    'extra = ["--qos=high"]\nsetup = ["module load cuda"]\n')
    config = jobs.load_config({"TISFM_JOBS_CONFIG": str(toml)})
    assert config.backend == "slurm" and config.max_jobs == 3
    assert config.slurm == jobs.SlurmOptions(partition="gpu", time="04:00:00", mem="16G", cpus=8, gpus=2,
                                             account="lab", extra=("--qos=high",), setup=("module load cuda",))
    # variables win over the file
    config = jobs.load_config({"TISFM_JOBS_CONFIG": str(toml), "TISFM_JOB_BACKEND": "local",
                               "TISFM_SLURM_GPUS": "4", "TISFM_SLURM_EXTRA": "--qos=low --exclusive"})
    assert config.backend == "local" and config.slurm.gpus == 4
    assert config.slurm.extra == ("--qos=low", "--exclusive")
    as_json = tmp_path / "jobs.json"
    as_json.write_text(json.dumps({"local": {"max_jobs": 2, "threads": 3}}))
    config = jobs.load_config({"TISFM_JOBS_CONFIG": str(as_json)})
    assert (config.backend, config.slots(), config.job_threads()) == ("local", 2, 3)
    # defaults: one job per two cores (at least one), the cores shared among them
    default = jobs.load_config({})
    assert default.slots() == max(1, jobs.cpu_count() // 2)
    assert default.job_threads() == max(1, jobs.cpu_count() // default.slots())


@pytest.mark.parametrize("env, message", [
    ({"TISFM_JOB_BACKEND": "pbs"}, "jobs backend .* must be one of local, slurm"),
    ({"TISFM_JOBS_MAX": "0"}, "max_jobs must be a positive integer"),
    ({"TISFM_JOBS_MAX": "two"}, "max_jobs must be an integer, got 'two'"),
    ({"TISFM_SLURM_GPUS": "-1"}, "gpus must be an integer >= 0"),
    ({"TISFM_SLURM_EXTRA": "qos=high"}, "must start with '-'"),
    ({"TISFM_SLURM_PARTITION": "a\nb"}, "partition must be one line"),
    ({"TISFM_JOBS_CONFIG": "/nonexistent/jobs.toml"}, "cannot be read"),
])
def test_bad_config_is_named(env, message):
    with pytest.raises(TisfmError, match=message):
        jobs.load_config(env)


def test_bad_config_file_is_named(tmp_path):
    bad = tmp_path / "jobs.toml"
    bad.write_text('[slurm]\nqueue = "gpu"\n')
    with pytest.raises(TisfmError, match="unknown setting 'slurm.queue'"):
        jobs.load_config({"TISFM_JOBS_CONFIG": str(bad)})
    bad.write_text("backend = \n")
    with pytest.raises(TisfmError, match="is not valid TOML"):
        jobs.load_config({"TISFM_JOBS_CONFIG": str(bad)})


def _job(tmp_path, kind="train", args=("--out", "/runs/my run"), backend="slurm"):
    path = tmp_path / "jobs" / "j1"
    path.mkdir(parents=True, exist_ok=True)
    return jobs.Job(path=path, id="j1", kind=kind, args=list(args), backend=backend, spec=True,
                    threads=3, cwd=str(tmp_path))


def test_slurm_batch_script(tmp_path):
    import shlex

    opts = jobs.SlurmOptions(partition="gpu", time="02:00:00", mem="16G", cpus=8, gpus=1, account="lab",
                             extra=("--qos=high",), python="/shared/venv/bin/python",
                             setup=("module load cuda/12",))
    job = _job(tmp_path)
    text = jobs.batch_script(job, jobs.JobConfig(backend="slurm", slurm=opts))
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash"
    sbatch = [line[len("#SBATCH "):] for line in lines if line.startswith("#SBATCH ")]
    assert sbatch == ["--job-name=tisfm-train", f"--output={job.path / 'log.txt'}", "--open-mode=append",
                      f"--chdir={tmp_path}", "--partition=gpu", "--time=02:00:00", "--mem=16G",
                      "--cpus-per-task=8", "--account=lab", "--gres=gpu:1", "--qos=high"]
    # all #SBATCH lines come before the first command (sbatch ignores them after it)
    assert max(i for i, l in enumerate(lines) if l.startswith("#SBATCH")) < \
        min(i for i, l in enumerate(lines) if l and not l.startswith("#"))
    command = next(line for line in lines if "-m tisfm_core train" in line)
    assert shlex.split(command) == ["/shared/venv/bin/python", "-m", "tisfm_core", "train", "--out",
                                    "/runs/my run", "--spec", str(job.path / "spec.json"),
                                    "--status-file", str(job.path / "status.json")]
    assert "module load cuda/12" in lines and "srun" not in text
    assert "export TISFM_JOB_ID=j1" in text and "threads=$(( ${SLURM_CPUS_PER_TASK:-1} / 1 ))" in text
    assert lines[-1] == 'exit "$code"' and "job_ended" in lines[-2]


def test_slurm_batch_script_multi_gpu_uses_srun_torchrun(tmp_path):
    import shlex

    opts = jobs.SlurmOptions(gpus=4, nodes=2, cpus=16, python="/venv/bin/python")
    text = jobs.batch_script(_job(tmp_path), jobs.JobConfig(backend="slurm", slurm=opts))
    assert "#SBATCH --gres=gpu:4" in text and "#SBATCH --nodes=2" in text
    assert "#SBATCH --ntasks-per-node=1" in text
    line = next(line for line in text.splitlines() if line.startswith("srun "))
    words = shlex.split(line)
    assert words[:2] == ["srun", "--kill-on-bad-exit=1"] and words[2] == "/venv/bin/torchrun"
    assert "--nproc_per_node=4" in words and "--nnodes=$SLURM_NNODES" in words
    assert "--rdzv_backend=c10d" in words and "--rdzv_endpoint=$head:29500" in words
    assert words[words.index("-m") + 1:words.index("-m") + 3] == ["tisfm_core", "train"]
    assert words[-1] == "--distributed" and "--status-file" in words
    assert "threads=$(( ${SLURM_CPUS_PER_TASK:-1} / 4 ))" in text
    # one GPU, or a job that is not a single training: one process, no torchrun
    for kind, gpus in (("train", 1), ("cv", 4), ("path", 2)):
        one = jobs.batch_script(_job(tmp_path, kind=kind),
                                jobs.JobConfig(backend="slurm", slurm=jobs.SlurmOptions(gpus=gpus)))
        assert "torchrun" not in one and f"--gres=gpu:{gpus}" in one


def test_local_script_has_no_sbatch_lines_and_the_slot_threads(tmp_path):
    text = jobs.batch_script(_job(tmp_path, backend="local"), jobs.JobConfig())
    assert text.startswith("#!/bin/bash\n") and "#SBATCH" not in text and "threads=3\n" in text
    assert f"cd {tmp_path} || exit 1\n" in text   # where the job was launched
    assert 'export OMP_NUM_THREADS="$threads"' in text
    assert f"{sys.executable} -m tisfm_core train" in text


def test_slurm_states_map_to_job_states():
    assert {jobs.SLURM_STATES[s] for s in ("PENDING", "REQUEUED")} == {"queued"}
    assert jobs.SLURM_STATES["RUNNING"] == jobs.SLURM_STATES["COMPLETING"] == "running"
    assert [jobs.SLURM_STATES[s] for s in ("COMPLETED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "FAILED",
                                           "OUT_OF_MEMORY")] == \
        ["done", "cancelled", "timeout", "node_fail", "failed", "failed"]
    assert set(jobs.SLURM_STATES.values()) <= set(jobs.STATES)


def test_slurm_job_ended_by_the_scheduler_is_recorded(tmp_path):
    job = _job(tmp_path, args=())
    job.slurm_id = "42"
    (job.path / "job.json").write_text(json.dumps(job.to_dict()))
    (job.path / "status.json").write_text(json.dumps({"state": "running", "fraction": 0.5}))
    pending = jobs.job_state(job, scheduler={"42": ("PENDING", "Resources")})
    assert pending["state"] == "queued" and pending["reason"] == "SLURM: Resources"
    assert pending["scheduler_state"] == "PENDING" and not pending["over"]
    running = jobs.job_state(job, scheduler={"42": ("RUNNING", "None")})
    assert running["state"] == "running" and running["fraction"] == 0.5
    timeout = jobs.job_state(job, scheduler={"42": ("TIMEOUT", "TimeLimit")})
    assert timeout["state"] == "timeout" and timeout["over"]
    assert timeout["message"] == "SLURM stopped the job at its time limit"
    # recorded: once SLURM has forgotten the job, the state stays
    assert jobs.job_state(job, scheduler={})["state"] == "timeout"
    (job.path / "exit.json").unlink()
    forgotten = jobs.job_state(job, scheduler={})
    assert forgotten["state"] == "died" and "SLURM no longer knows" in forgotten["message"]
    unreachable = jobs.job_state(job, scheduler=TisfmError("squeue failed: Unable to contact slurm controller"))
    assert unreachable["state"] == "unknown" and "Unable to contact" in unreachable["message"]


def test_progress_text_names_the_phase():
    row = {"state": "running", "fraction": 0.0, "phase": "compiling",
           "message": "compiling the fused motif block (first training step only)"}
    assert jobs.progress_text(row) == "compiling · compiling the fused motif block (first training step only)"
    assert "%" not in jobs.progress_text({**row, "phase": "preparing", "message": ""})
    training = {"state": "running", "fraction": 0.25, "phase": "training", "epoch": 3, "epochs": 10,
                "folds": 5, "fold": 2, "stage": "frozen"}
    assert jobs.progress_text(training) == "fold 2/5 · epoch 3/10 · 25%"
    assert jobs.progress_text({**training, "folds": None, "stage": "finetune"}) == "fine-tune epoch 3/10 · 25%"
    assert jobs.progress_text({"state": "failed", "message": "x.tsv does not exist"}) == "x.tsv does not exist"


# -- phases ---------------------------------------------------------------------------------------

def test_status_file_reports_phases(tmp_path):
    from tisfm_core.progress import StatusFile

    path = tmp_path / "status.json"
    status = StatusFile(path, interval=1000.0)

    def read():
        return json.loads(path.read_text())

    status({"event": "phase", "phase": "preparing", "message": "reading the motifs and the data"})
    assert (read()["phase"], read()["message"], read()["fraction"]) == \
        ("preparing", "reading the motifs and the data", 0.0)
    status({"event": "phase", "phase": "compiling", "message": "compiling the fused motif block"})
    assert read()["phase"] == "compiling"   # written at once, whatever the interval
    status({"event": "batch", "stage": "frozen", "epoch": 1, "epochs": 4, "batch": 1, "batches": 2})
    status({"event": "epoch", "stage": "frozen", "epoch": 1, "train_loss": 1.0, "val_loss": 2.0})
    assert read()["phase"] == "training" and read()["epoch"] == 2 and read()["fraction"] == 0.25
    status({"event": "phase", "phase": "evaluating", "message": "evaluating the best weights"})
    state = read()
    assert state["phase"] == "evaluating" and state["fraction"] == 0.25 and len(state["history"]) == 1
    row = {"state": "running", **state}
    assert jobs.progress_text(row) == "evaluating · evaluating the best weights"


def test_fit_says_it_compiles_before_the_first_step(monkeypatch):
    from conftest import random_motifs

    from tisfm_core import training
    from tisfm_core.training import TrainSettings, fit
    from tisfm_core.workflows import build_untrained

    model = build_untrained("full", motifs=random_motifs(4), n_outputs=2, length=40)
    monkeypatch.setattr(training, "use_compile", lambda choice, model, device: True)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 4, size=(32, 40)).astype(np.uint8)
    y = rng.normal(size=(32, 2)).astype(np.float32)
    events = []

    class Stop(Exception):
        pass

    def callback(event):
        events.append(event)
        raise Stop   # before the first (compiling) step runs

    with pytest.raises(Stop):
        fit(model, (x, y), (x, y), TrainSettings(epochs=1, device="cpu"), callback=callback)
    assert events == [{"event": "phase", "phase": "compiling",
                       "message": "compiling the fused motif block (first training step only)"}]


# -- `tisfm jobs` -----------------------------------------------------------------------------------

def test_jobs_launch_builds_the_spec_as_the_command_would(tmp_path, data, slots, monkeypatch, capsys):
    from tisfm_core.cli import main
    from tisfm_core.cli.jobs import job_request

    fasta, tsv, meme, _ = data
    monkeypatch.chdir(tmp_path)
    args, task = job_request("train", ["--sequences", str(fasta), "--targets", str(tsv), "--motifs", str(meme),
                                       "--epochs", "7", "--lr", "0.002", "--out", "runs/a", "--force"])
    assert args == ["--out", "runs/a", "--force"]
    assert task.training.epochs == 7 and task.training.lr == 0.002 and task.data.targets == str(tsv)
    args, spec = job_request("path", ["runs/a", "--lambdas", "0.001:0.1:3", "--log", "--out", "runs/a_path"])
    assert args == ["runs/a", "--out", "runs/a_path"] and spec.penalty == "mcp" and len(spec.lambdas) == 4
    # --resume has no task to build: the arguments go on as they are
    assert job_request("train", ["--resume", "runs/a"]) == (["--resume", "runs/a"], None)
    monkeypatch.setattr(jobs, "_start_local", lambda job, config: job)   # stays queued
    assert main(["jobs", "launch", "--jobs-dir", "jobs", "--label", "seven epochs", "train", "--sequences",
                 str(fasta), "--targets", str(tsv), "--motifs", str(meme), "--epochs", "7", "--out", "runs/a"]) == 0
    line = capsys.readouterr().out
    job = jobs.list_jobs(tmp_path / "jobs")[0]["job"]
    assert line == f"job {job.id} (local): queued · position 1 in the queue; 0 of 2 job slots in use\n"
    # relative paths mean what they meant where the job was launched
    assert job.cwd == str(tmp_path) and job.out == str(tmp_path / "runs" / "a") and job.label == "seven epochs"
    command = job.command()
    assert command[3:] == ["train", "--out", "runs/a", "--spec", str(job.path / "spec.json"),
                           "--status-file", str(job.path / "status.json")]
    task = TrainTask.from_dict(json.loads((job.path / "spec.json").read_text()), base=job.path)
    assert task.training.epochs == 7 and task.data.sequences == str(fasta)
    assert main(["jobs", "status", job.id, "--jobs-dir", "jobs"]) == 0
    status = capsys.readouterr().out
    assert "state      queued" in status and "waits for  position 1 in the queue" in status
    assert main(["jobs", "cancel", job.id[:22], "--jobs-dir", "jobs"]) == 0
    assert capsys.readouterr().out == f"job {job.id[:22]}: cancelled\n"
    assert main(["jobs", "log", job.id, "--jobs-dir", "jobs", "-n", "1"]) == 0
    assert capsys.readouterr().out.startswith("[cancelled at ")
    assert main(["jobs", "status", "nope", "--jobs-dir", "jobs"]) == 2
    assert "no job 'nope'" in capsys.readouterr().err
