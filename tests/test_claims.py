"""Exclusive claims on output folders: one writer per run, a second one refused with one line,
stale claims of killed processes taken over only with --force, unfinished job outputs removed."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import RUNS_ON, planted_dataset

from tisfm_core import claims
from tisfm_core.cli import main
from tisfm_core.errors import TisfmError
from tisfm_core.runs import is_run, load_run

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return planted_dataset(tmp_path_factory.mktemp("claims_data"), n=160, length=60, n_outputs=2)[:3]


def _train_argv(data, out, epochs, *extra):
    fasta, tsv, meme = data
    return ["train", "--sequences", str(fasta), "--targets", str(tsv), "--motifs", str(meme),
            "--epochs", str(epochs), "--folds", "5", "--batch-size", "64", "--device", "cpu",
            "--precision", "fp32", "--compile", "off", "--out", str(out), *extra]


def _tisfm(argv, **kwargs):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "tisfm_core", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kwargs)


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _plant(out, **fields):
    """A claim file as another process would have left it."""
    record = {"format": claims.FORMAT, "out": str(out), "kind": "train", "pid": _dead_pid(),
              "start_ticks": None, "host": socket.gethostname(), "started": time.time() - 60,
              "job": None, "discard": False, "token": "planted", **fields}
    path = claims.claim_file(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return path


def _wait_for(predicate, timeout=120.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} not met after {timeout} s")


def test_claim_is_exclusive_and_released(tmp_path):
    out = tmp_path / "runs" / "x"
    with claims.claim_output(out, kind="train") as claim:
        assert claim.path == tmp_path / "runs" / ".x.claim" and claim.path.is_file()
        record = claims.read_claim(out)
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
        assert record["kind"] == "train" and abs(record["started"] - time.time()) < 60
        # a second writer, even in this process and even with --force, is refused: the owner runs
        for force in (False, True):
            with pytest.raises(TisfmError, match=rf"{out} is being written by train \(pid {os.getpid()}"):
                with claims.claim_output(out, kind="cv", force=force):
                    pass
        # the same folder spelled through a link shares the claim
        (tmp_path / "link").symlink_to(tmp_path / "runs")
        with pytest.raises(TisfmError, match="is being written"):
            claims.check_free(tmp_path / "link" / "x")
    assert not claim.path.exists() and claims.read_claim(out) is None
    claims.check_free(out)
    # no temporary files are left next to the folder
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == []


def test_stale_claim_is_taken_over_only_with_force(tmp_path):
    out = tmp_path / "x"
    _plant(out)
    with pytest.raises(TisfmError, match="which no longer runs; use --force"):
        claims.acquire(out, kind="train")
    assert claims.read_claim(out)["token"] == "planted"   # refused: left as it was
    with claims.claim_output(out, kind="train", force=True):
        assert claims.read_claim(out)["pid"] == os.getpid()
    assert claims.read_claim(out) is None
    # --resume takes over a dead owner's claim without --force (it continues that work)
    _plant(out)
    with claims.claim_output(out, kind="train", stale_ok=True):
        assert claims.read_claim(out)["pid"] == os.getpid()


def test_claim_of_another_host_needs_force(tmp_path):
    out = tmp_path / "x"
    _plant(out, host="some-other-node", pid=os.getpid())
    for stale_ok in (False, True):
        with pytest.raises(TisfmError, match="cannot be checked from this host; if it has ended, use --force"):
            claims.acquire(out, kind="train", stale_ok=stale_ok)
    with claims.claim_output(out, kind="train", force=True):
        assert claims.read_claim(out)["host"] == socket.gethostname()


def test_pid_reused_by_another_process_is_stale(tmp_path):
    out = tmp_path / "x"
    # our own pid, but a different process start time: the owner is gone, the pid was reused
    _plant(out, pid=os.getpid(), start_ticks=1)
    with pytest.raises(TisfmError, match="no longer runs"):
        claims.check_free(out)


def test_unfinished_output_is_removed_under_a_job_only(tmp_path, monkeypatch):
    def fail_in(out, kind="train"):
        with pytest.raises(RuntimeError):
            with claims.claim_output(out, kind=kind):
                out.mkdir(parents=True, exist_ok=True)
                (out / "request.json").write_text("{}")
                (out / "checkpoint").mkdir()
                (out / "checkpoint" / "state.json").write_text("{}")
                raise RuntimeError("killed mid-training")

    typed = tmp_path / "typed"
    fail_in(typed)                      # typed at a terminal: kept for --resume
    assert (typed / "checkpoint" / "state.json").is_file() and claims.read_claim(typed) is None
    monkeypatch.setenv(claims.JOB_ENV, "job-1")
    job_out = tmp_path / "job_out"
    fail_in(job_out)                    # under a job: the name is free again
    assert not job_out.exists() and claims.read_claim(job_out) is None
    # files that are not ours stay, and so does the folder holding them
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "notes.txt").write_text("mine")
    fail_in(mixed)
    assert sorted(p.name for p in mixed.iterdir()) == ["notes.txt"]
    # a CV folder loses its unfinished folds, never a finished one
    cv = tmp_path / "cv"
    (cv / "fold_0").mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (cv / "fold_0" / name).write_text("x")
    with pytest.raises(RuntimeError):
        with claims.claim_output(cv, kind="cv"):
            (cv / "fold_1").mkdir()
            (cv / "fold_1" / "request.json").write_text("{}")
            raise RuntimeError("cancelled")
    assert sorted(p.name for p in cv.iterdir()) == ["fold_0"] and is_run(cv / "fold_0")
    # --resume keeps its checkpoint even under a job
    resumed = tmp_path / "resumed"
    with pytest.raises(RuntimeError):
        with claims.claim_output(resumed, kind="train", keep_unfinished=True):
            resumed.mkdir()
            (resumed / "request.json").write_text("{}")
            raise RuntimeError("again")
    assert (resumed / "request.json").is_file()


def test_release_dead_cleans_after_a_killed_job_only(tmp_path):
    out = tmp_path / "x"
    out.mkdir()
    (out / "request.json").write_text("{}")
    _plant(out, job="job-7", discard=True)
    assert not claims.release_dead(out, "job-8")          # another job's claim: untouched
    assert claims.read_claim(out) is not None and out.is_dir()
    assert claims.release_dead(out, "job-7")
    assert claims.read_claim(out) is None and not out.exists()
    # the owner still runs: nothing is removed
    out.mkdir()
    (out / "request.json").write_text("{}")
    _plant(out, job="job-9", discard=True, pid=os.getpid(), start_ticks=None)
    assert not claims.release_dead(out, "job-9", ended=True) and out.is_dir()


def test_train_cv_and_path_refuse_a_claimed_folder(tmp_path, data, capsys):
    out = tmp_path / "run"
    with claims.claim_output(out, kind="path"):
        for argv in (_train_argv(data, out, 1, "--quiet"), _train_argv(data, out, 1, "--quiet", "--force"),
                     ["cv", *_train_argv(data, out, 1, "--quiet")[1:]],
                     ["path", str(tmp_path / "some_run"), "--lambdas", "0.001:0.1:3", "--out", str(out)]):
            assert main(argv) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and f"{out} is being written by path (pid {os.getpid()}" in err
    assert not out.exists()


@pytest.mark.slow
def test_two_concurrent_trainings_one_refused_other_intact(tmp_path, data):
    out = tmp_path / "run"
    first = _tisfm(_train_argv(data, out, 3))
    try:
        _wait_for(lambda: claims.read_claim(out) is not None or first.poll() is not None,
                  what="the first training's claim")
        assert first.poll() is None, first.communicate()
        os.kill(first.pid, signal.SIGSTOP)   # held mid-training while the second one starts
        second = _tisfm(_train_argv(data, out, 1, "--force"))
        err = second.communicate(timeout=300)[1]
        os.kill(first.pid, signal.SIGCONT)
        assert second.returncode == 2
        assert err.count("\n") == 1 and "Traceback" not in err
        assert f"{out} is being written by train (pid {first.pid}" in err
        stdout, stderr = first.communicate(timeout=600)
    finally:
        first.kill()
    assert first.returncode == 0, stderr
    run = load_run(out)   # the first one's result, whole
    assert [r["epoch"] for r in run.config["history"]] == [1, 2, 3]
    assert run.config["training"]["epochs"] == 3 and claims.read_claim(out) is None


@pytest.mark.slow
def test_stale_claim_of_a_killed_training(tmp_path, data):
    out = tmp_path / "run"
    killed = _tisfm(_train_argv(data, out, 5000, *RUNS_ON))
    _wait_for(lambda: claims.read_claim(out) is not None or killed.poll() is not None,
              what="the training's claim")
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    record = claims.read_claim(out)
    assert record is not None and record["pid"] == killed.pid
    refused = _tisfm(_train_argv(data, out, 1))
    err = refused.communicate(timeout=300)[1]
    assert refused.returncode == 2 and err.count("\n") == 1
    assert f"pid {killed.pid}" in err and "which no longer runs; use --force" in err
    forced = _tisfm(_train_argv(data, out, 1, "--force"))
    stdout, stderr = forced.communicate(timeout=600)
    assert forced.returncode == 0, stderr
    assert is_run(out) and claims.read_claim(out) is None


@pytest.mark.slow
def test_sigterm_releases_the_claim(tmp_path, data):
    out = tmp_path / "run"
    proc = _tisfm(_train_argv(data, out, 5000, *RUNS_ON))
    _wait_for(lambda: (out / "checkpoint" / "state.json").is_file() or proc.poll() is not None,
              what="a checkpoint")
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 128 + signal.SIGTERM and err.strip().endswith("tisfm train: terminated")
    # typed at a terminal: the claim is gone and the checkpoint stays for --resume
    assert claims.read_claim(out) is None and (out / "checkpoint" / "state.json").is_file()


def test_unreadable_claim_file_needs_force(tmp_path):
    out = tmp_path / "x"
    claims.claim_file(out).write_text("not json")
    with pytest.raises(TisfmError, match=r"\.x\.claim, which cannot be read; use --force"):
        claims.acquire(out, kind="train")
    with claims.claim_output(out, kind="train", force=True):
        assert claims.read_claim(out)["pid"] == os.getpid()
    assert not claims.claim_file(out).exists()
