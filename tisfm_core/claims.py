"""Exclusive claims on output folders: one writer per run, CV or path folder at a time.

A claim on ``PARENT/NAME`` is the file ``PARENT/.NAME.claim``, next to the folder (so the folder
itself holds only its own files). It is created atomically (written to a temporary file, then
hard-linked to its name, which fails when the name exists) and records the owner: pid, process
start time, host, start time, the kind of task and the job id (``TISFM_JOB_ID``, set by
:mod:`tisfm_core.jobs`). A second writer is refused with one line naming the owner. A claim whose
owner no longer runs (checked on the same host by pid and process start time) is stale: it is
taken over only with ``force`` (``--force``), or by ``--resume``, which exists to continue the work
of a process that died.

Under a job, a task that fails or is cancelled removes what it wrote of an unfinished output, so
that the same name can be used again; a finished run is never removed. Typed at a terminal, the
unfinished folder (and its checkpoint, for ``--resume``) is kept.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import TisfmError
from .processes import alive, start_ticks

#: Environment variable naming the job a process runs for (set by the jobs layer).
JOB_ENV = "TISFM_JOB_ID"
FORMAT = "tisfm-claim"


def claim_file(out):
    """The claim file of output folder ``out`` (links resolved, so every spelling of a folder
    shares one claim)."""
    real = Path(os.path.realpath(Path(out).expanduser()))
    return real.parent / f".{real.name}.claim"


def read_claim(out):
    """The record of the claim on ``out``, or None when there is none (or it is unreadable)."""
    try:
        data = json.loads(claim_file(out).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == FORMAT else None


def holder_state(record):
    """``"alive"``, ``"dead"`` or ``"unknown"`` (another host: its processes are not visible here)."""
    if record.get("host") != socket.gethostname():
        return "unknown"
    try:
        pid, ticks = int(record.get("pid") or 0), record.get("start_ticks")
    except (TypeError, ValueError):
        return "dead"
    return "alive" if alive(pid, ticks) else "dead"


def describe(record):
    """The owner of a claim in words: ``pid 12 on host since 2026-12-01 10:00 (job J)``."""
    since = time.strftime("%Y-%m-%d %H:%M", time.localtime(float(record.get("started") or 0)))
    job = f", job {record['job']}" if record.get("job") else ""
    return f"{record.get('kind', 'a task')} (pid {record.get('pid')} on {record.get('host')} since {since}{job})"


def refusal(out, record, *, force=False, stale_ok=False):
    """The error for writing into ``out`` while ``record`` claims it, or None when the claim may be
    taken over (stale and ``force`` or ``stale_ok``; another host's only with ``force``)."""
    state = holder_state(record)
    if state == "alive":
        return TisfmError(f"{out} is being written by {describe(record)}; wait for it to finish or "
                          "choose another output folder")
    if state == "dead" and (force or stale_ok):
        return None
    if state == "unknown" and force:
        return None
    if state == "dead":
        return TisfmError(f"{out} is claimed by {describe(record)}, which no longer runs; use --force "
                          "to take the claim over")
    return TisfmError(f"{out} is claimed by {describe(record)}, which cannot be checked from this host; "
                      "if it has ended, use --force to take the claim over")


def check_free(out, *, force=False):
    """Raise the refusal for ``out`` if anything claims it (checked before a job is queued;
    ``force``: the job's command will take over a stale claim)."""
    record = read_claim(out)
    error = None if record is None else refusal(out, record, force=force)
    if error is not None:
        raise error


@dataclass
class Claim:
    """A held claim; :meth:`release` removes it (only while it is still ours)."""

    path: Path
    out: Path
    record: dict

    def release(self):
        current = read_claim(self.out)
        if current is not None and current.get("token") == self.record["token"]:
            self.path.unlink(missing_ok=True)


def acquire(out, *, kind, force=False, stale_ok=False, keep_unfinished=False):
    """Claim ``out`` for this process (see :func:`claim_output`); returns a :class:`Claim`."""
    out = Path(out)
    path = claim_file(out)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise TisfmError(f"cannot create {out}: {os.strerror(errno.ENOTDIR)} ({path.parent} is a "
                         "file)") from None
    except OSError as exc:
        raise TisfmError(f"cannot create {path.parent}: {exc.strerror or exc}") from None
    job = os.environ.get(JOB_ENV) or None
    record = {"format": FORMAT, "out": str(out), "kind": kind, "pid": os.getpid(),
              "start_ticks": start_ticks(os.getpid()), "host": socket.gethostname(),
              "started": time.time(), "job": job, "discard": bool(job) and not keep_unfinished,
              "token": uuid.uuid4().hex}
    tmp = path.parent / f"{path.name}.{record['token']}.tmp"
    try:
        try:
            tmp.write_text(json.dumps(record) + "\n")
        except OSError as exc:
            raise TisfmError(f"cannot claim {out}: {exc.strerror or exc} in {path.parent}") from None
        for _ in range(5):
            try:
                os.link(tmp, path)
                return Claim(path=path, out=out, record=record)
            except FileExistsError:
                pass
            except OSError as exc:
                raise TisfmError(f"cannot claim {out}: {exc.strerror or exc}") from None
            holder = read_claim(out)
            if holder is None and not path.exists():
                time.sleep(0.05)   # released at this moment: try again
                continue
            if holder is None and not force:
                raise TisfmError(f"{out} is claimed by {path}, which cannot be read; use --force to "
                                 "take the claim over")
            error = None if holder is None else refusal(out, holder, force=force, stale_ok=stale_ok)
            if error is not None:
                raise error
            _take_over(path, holder)
        raise TisfmError(f"cannot claim {out}: other processes keep claiming it")
    finally:
        tmp.unlink(missing_ok=True)


def _take_over(path, stale):
    """Move a stale claim (None: an unreadable one) out of the way; if another taker replaced it
    meanwhile, put theirs back."""
    aside = path.parent / f"{path.name}.{uuid.uuid4().hex}.stale"
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    try:
        moved = json.loads(aside.read_text())
    except (OSError, ValueError):
        moved = None
    moved_token = moved.get("token") if isinstance(moved, dict) else None
    if moved_token != (stale or {}).get("token"):
        try:
            os.link(aside, path)
        except FileExistsError:
            pass
    aside.unlink(missing_ok=True)


@contextmanager
def claim_output(out, *, kind="train", force=False, stale_ok=False, keep_unfinished=False):
    """Hold the exclusive claim on output folder ``out`` while the block writes it.

    Parameters
    ----------
    out : str or Path
        The run, CV or path folder (need not exist yet).
    kind : str, default "train"
        What writes it ("train", "cv", "path", "finetune"), for messages and for what counts as
        finished (:func:`discard_unfinished`).
    force : bool, default False
        Take over a stale claim (its owner no longer runs, or runs on another host).
    stale_ok : bool, default False
        Take over a claim whose owner is known to have died (``--resume``), without ``force``.
    keep_unfinished : bool, default False
        Keep an unfinished output when the block fails under a job (``--resume`` does: its
        checkpoint is the work to continue).

    Yields
    ------
    Claim

    Raises
    ------
    TisfmError
        When another live process (or, without ``force``, a dead one) holds the claim.
    """
    claim = acquire(out, kind=kind, force=force, stale_ok=stale_ok, keep_unfinished=keep_unfinished)
    try:
        yield claim
    except BaseException:
        if claim.record["discard"]:
            discard_unfinished(out, kind)
        raise
    finally:
        claim.release()


def release_dead(out, job_id, *, ended=False):
    """Remove the claim job ``job_id`` left on ``out`` when its process is gone, with the unfinished
    output if the claim says so (a job killed too hard to clean up after itself).

    ``ended`` tells that the job is known to be over (e.g. its scheduler says so) when its host's
    processes cannot be seen from here. Returns True when a claim was removed.
    """
    record = read_claim(out)
    if record is None or record.get("job") != job_id:
        return False
    state = holder_state(record)
    if state == "alive" or (state == "unknown" and not ended):
        return False
    if record.get("discard"):
        discard_unfinished(out, record.get("kind", "train"))
    current = read_claim(out)
    if current is not None and current.get("token") == record.get("token"):
        claim_file(out).unlink(missing_ok=True)
    return True


def discard_unfinished(out, kind):
    """Remove the files a failed task of ``kind`` wrote into ``out`` when they make no finished
    result; never a finished run, never files of others (the folder goes only when then empty)."""
    out = Path(out)
    if not out.is_dir():
        return
    if kind == "cv":
        for fold in sorted(out.glob("fold_*")):
            if fold.is_dir():
                _discard_run(fold)
    elif kind == "path":
        from .path import PATH_JSON, PATH_NPZ

        if not (out / PATH_JSON).is_file():
            (out / PATH_NPZ).unlink(missing_ok=True)
    else:
        _discard_run(out)
        return
    _remove_if_empty(out)


def _discard_run(folder):
    from .runs import is_run
    from .training import CHECKPOINT
    from .workflows import RUN_FILES

    if is_run(folder):
        return
    for name in RUN_FILES:
        (folder / name).unlink(missing_ok=True)
    shutil.rmtree(folder / CHECKPOINT, ignore_errors=True)
    _remove_if_empty(folder)


def _remove_if_empty(folder):
    try:
        folder.rmdir()
    except OSError:
        pass  # holds files that are not ours: kept
