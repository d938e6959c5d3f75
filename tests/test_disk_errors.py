"""A full disk or an unwritable folder is reported in one line, and nothing saved is lost."""

import errno
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import torch
from conftest import planted_dataset

from tisfm_core import jobs
from tisfm_core.cli import main
from tisfm_core.errors import TisfmError
from tisfm_core.runs import load_run


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("disk")
    return planted_dataset(tmp, n=240, length=40, n_outputs=2)[:3]


def _train(data, out, *extra):
    fasta, tsv, meme = data
    return main(["train", "--sequences", str(fasta), "--targets", str(tsv), "--motifs", str(meme),
                 "--out", str(out), "--epochs", "3", "--batch-size", "64", "--quiet", *extra])


def _one_error_line(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def _leftovers(folder):
    return [p.name for p in Path(folder).rglob("*.tmp")]


def test_unwritable_output_folder_is_named(data, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert _train(data, blocker / "run") == 2
    err = _one_error_line(capsys)
    assert str(blocker) in err and "Not a directory" in err
    assert blocker.read_text() == "not a folder"


def test_disk_full_mid_training_keeps_the_last_checkpoint_and_resume_finishes(data, tmp_path, capsys,
                                                                             monkeypatch):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert _train(data, whole) == 0
    real_fsync = os.fsync

    def fsync(fd):   # the disk fills up while the epoch-2 checkpoint is being written
        if "state-frozen-2" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    capsys.readouterr()
    assert _train(data, cut) == 2
    err = _one_error_line(capsys)
    assert "No space left on device" in err and "state-frozen-2" in err
    meta = json.loads((cut / "checkpoint" / "state.json").read_text())
    assert (meta["stage"], meta["epoch"]) == ("frozen", 1)          # the last completed epoch
    assert (cut / "checkpoint" / meta["weights"]).is_file() and not _leftovers(cut)
    monkeypatch.undo()                                             # space freed
    assert main(["train", "--resume", str(cut), "--quiet"]) == 0
    a, b = load_run(whole).model.state_dict(), load_run(cut).model.state_dict()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name


def test_disk_full_when_saving_the_run_leaves_other_runs_alone(data, tmp_path, capsys, monkeypatch):
    first = tmp_path / "first"
    assert _train(data, first) == 0
    before = {p.name: p.read_bytes() for p in first.iterdir() if p.is_file()}
    real_fsync = os.fsync

    def fsync(fd):
        if "model.safetensors" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    capsys.readouterr()
    assert _train(data, tmp_path / "second") == 2
    assert "No space left on device" in _one_error_line(capsys)
    assert not (tmp_path / "second" / "model.safetensors").exists()
    assert not _leftovers(tmp_path / "second")
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in first.iterdir() if p.is_file()} == before
    assert load_run(first).model is not None


@pytest.fixture
def small_disk(tmp_path):
    """A real 512 KiB filesystem (tmpfs); skipped where mounting is not allowed."""
    mount = tmp_path / f"disk_{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {r.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def test_really_full_disk(data, tmp_path, small_disk, capsys):
    saved = tmp_path / "saved"
    assert _train(data, saved) == 0
    shutil.copytree(saved, small_disk / "saved")
    before = {p.name: p.read_bytes() for p in (small_disk / "saved").iterdir() if p.is_file()}
    # fill the disk, leaving too little for a run
    free = shutil.disk_usage(small_disk).free
    (small_disk / "filler").write_bytes(b"\0" * max(free - 8192, 0))
    capsys.readouterr()
    assert _train(data, small_disk / "new") == 2
    err = _one_error_line(capsys)
    assert "No space left on device" in err
    assert not _leftovers(small_disk)
    assert {p.name: p.read_bytes() for p in (small_disk / "saved").iterdir() if p.is_file()} == before


def test_jobs_in_an_unwritable_folder_are_refused_with_the_folder_named(tmp_path):
    blocker = tmp_path / "jobs_file"
    blocker.write_text("x")
    with pytest.raises(TisfmError, match="cannot create the jobs folder .*jobs_file"):
        jobs.launch("train", ["--resume", str(tmp_path / "run")], blocker / "jobs")


def test_orphaned_temporary_files_are_removed_only_when_ours_and_old(tmp_path):
    """A write killed mid-way leaves ``.NAME.XXXXXXXX.tmp``: the next write into the folder, and
    the app's sweep of the user's folders, remove those older than an hour and nothing else."""
    import time

    from tisfm_core import atomic

    folder = tmp_path / "run"
    (folder / "nested" / "deeper").mkdir(parents=True)
    old = time.time() - 2 * atomic.STALE_TEMP_SECONDS
    names = {".config.json.abcd_123.tmp": old, ".config.json.fresh123.tmp": time.time(),
             "notes.tmp": old, ".config.json.tmp": old, ".x.toolong123.tmp": old}
    for name, mtime in names.items():
        for where in (folder, folder / "nested" / "deeper"):
            (where / name).write_text("partial")
            os.utime(where / name, (mtime, mtime))
    atomic.write_text(folder / "config.json", "{}\n")
    left = sorted(p.name for p in folder.iterdir() if p.is_file())
    assert left == [".config.json.fresh123.tmp", ".config.json.tmp", ".x.toolong123.tmp", "config.json",
                    "notes.tmp"]
    removed = atomic.sweep_stale_temps(tmp_path)
    assert removed == [folder / "nested" / "deeper" / ".config.json.abcd_123.tmp"]
