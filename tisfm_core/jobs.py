"""Background jobs: long work (training, cross-validation, fine-tunes, penalty paths) in separate
processes.

A job is a folder::

    JOBS/<id>/
      job.json      id, kind, args, command, pid, pgid, process start time, created, label, out
                    (the folder it writes, relative to the job folder and absolute) and
                    ``cancelled`` once cancelled; written atomically
      status.json   progress kept up to date by the command (``--status-file``)
      log.txt       the command's stdout and stderr
      exit.json     return code, written when the launching process saw the command end

The command runs as ``python -m tisfm_core <kind> ARGS --status-file JOBS/<id>/status.json`` (the
status file only for commands that accept it) in a new session (its own process group), so it
survives the app (or the browser) going away and can be cancelled as a whole. The app only reads
these files; nothing here imports Streamlit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .atomic import read_json, write_json
from .errors import TisfmError
from .specs import store_path, stored_path

JOB = "job.json"
STATUS = "status.json"
LOG = "log.txt"
EXIT = "exit.json"
SPEC = "spec.json"
KINDS = ("train", "cv", "path", "finetune")
#: States a job can be in; "died" means the process vanished without a final status.
STATES = ("starting", "running", "done", "failed", "cancelled", "died")
_PACKAGE_ROOT = Path(__file__).resolve().parents[1]
#: Processes started by this process, by job id: their return code is known the moment they end,
#: before the reaper thread has written exit.json.
_CHILDREN: dict = {}


@dataclass
class Job:
    """A launched job (the contents of its job.json plus its folder)."""

    path: Path
    id: str
    kind: str
    args: list = field(default_factory=list)
    pid: int = 0
    pgid: int = 0
    start_ticks: int | None = None
    created: float = 0.0
    label: str = ""
    out: str | None = None
    cancelled: float | None = None

    @property
    def status_path(self):
        return self.path / STATUS

    @property
    def log_path(self):
        return self.path / LOG

    def to_dict(self):
        # the folder the job writes, relative to the job folder first: a moved home still finds it
        return {"id": self.id, "kind": self.kind, "args": list(self.args), "pid": self.pid,
                "pgid": self.pgid, "start_ticks": self.start_ticks, "created": self.created,
                "label": self.label, "out": store_path(self.out, self.path), "cancelled": self.cancelled,
                "command": [sys.executable, "-m", "tisfm_core", self.kind, *self.args,
                            "--status-file", str(self.status_path)]}


def _out_of(args):
    """The value of ``--out`` in an argument list (the run or folder the job writes), if any."""
    for i, arg in enumerate(args):
        if arg == "--out" and i + 1 < len(args):
            return str(args[i + 1])
        if arg.startswith("--out="):
            return arg.split("=", 1)[1]
    return None


def unique_folder(parent, prefix, *, what="folder", parent_label="", template="{prefix}_{time}_{rand}"):
    """Create a fresh folder named by ``template`` (prefix, time, random hex) in ``parent``.

    The name comes from the app, never from user input; exclusive creation keeps names unique
    when several sessions create folders at the same moment.
    """
    parent = Path(parent)
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TisfmError(f"cannot create {parent_label}{parent}: {exc.strerror or exc}") from None
    for _ in range(100):
        path = parent / template.format(prefix=prefix, time=time.strftime("%Y%m%d-%H%M%S"),
                                        rand=uuid.uuid4().hex[:8])
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        except OSError as exc:
            raise TisfmError(f"cannot create a {what} in {parent}: {exc.strerror or exc}") from None
        return path
    raise TisfmError(f"could not find a free {what} name in {parent}")


def _new_job_folder(jobs_dir, kind):
    """A fresh job folder; the job id is its name."""
    path = unique_folder(jobs_dir, kind, what="job folder", parent_label="the jobs folder ",
                         template="{time}-{prefix}-{rand}")
    return path.name, path


def _proc_stat(pid):
    """Fields 3... of /proc/PID/stat (state first), or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may contain spaces and parentheses: split after the last ')'
    return stat[stat.rfind(")") + 2:].split()


def _start_ticks(pid):
    """Process start time in clock ticks since boot (/proc), or None where /proc is absent."""
    fields = _proc_stat(pid)
    return int(fields[19]) if fields else None


def _alive(pid, start_ticks=None):
    """True when ``pid`` runs (not a zombie) and, if known, started at ``start_ticks``."""
    if not pid:
        return False
    if _proc_stat("self") is not None:
        fields = _proc_stat(pid)
        if fields is None or fields[0] in ("Z", "X"):
            return False
        # a different start time means the pid was reused by an unrelated process
        return start_ticks is None or int(fields[19]) == start_ticks
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _group_alive(pgid):
    """True while any process of the group exists (zombies excluded where /proc tells)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if _proc_stat("self") is None:
        return True
    for entry in Path("/proc").iterdir():
        fields = _proc_stat(entry.name) if entry.name.isdigit() else None
        if fields and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def _reap(proc, path):
    """Wait for a child started here and record its return code (keeps no zombie behind)."""
    code = proc.wait()
    try:
        write_json(path / EXIT, {"returncode": code, "ended": time.time()})
    except TisfmError:
        pass


def launch(kind, args, jobs_dir, *, label="", spec=None):
    """Start ``python -m tisfm_core <kind> ARGS --status-file JOB/status.json`` in the background.

    Parameters
    ----------
    kind : {"train", "cv", "path", "finetune"}
        The CLI subcommand.
    args : list of str
        Its arguments (without ``--status-file``, which every job command accepts and is added).
    jobs_dir : str or Path
        Folder holding the job folders (created if needed).
    label : str, default ""
        A short description shown in job tables.
    spec : TrainTask, FinetuneTask or PathSpec, optional
        The task, written to ``JOB/spec.json`` (paths relative to the job folder) and passed as
        ``--spec``: the app's forms and typed commands run the same code.

    Returns
    -------
    Job

    Raises
    ------
    TisfmError
        For an unknown kind, or when the job folder or its files cannot be written (unwritable
        folder, full disk), with the reason.
    """
    if kind not in KINDS:
        raise TisfmError(f"unknown job kind {kind!r}; expected one of {', '.join(KINDS)}")
    args = [str(a) for a in args]
    job_id, path = _new_job_folder(jobs_dir, kind)
    if spec is not None:
        write_json(path / SPEC, spec.to_dict(base=path))
        args += ["--spec", str(path / SPEC)]
    job = Job(path=path, id=job_id, kind=kind, args=args, created=time.time(), label=label,
              out=_out_of(args))
    command = job.to_dict()["command"]
    child_env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    child_env["PYTHONPATH"] = os.pathsep.join(
        [str(_PACKAGE_ROOT)] + [p for p in child_env.get("PYTHONPATH", "").split(os.pathsep) if p])
    write_json(path / JOB, job.to_dict())
    try:
        log = open(path / LOG, "ab")
    except OSError as exc:
        raise TisfmError(f"cannot write the job log in {path}: {exc.strerror or exc}") from None
    with log:
        log.write(f"$ {' '.join(command)}\n".encode())
        log.flush()
        try:
            proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=child_env,
                                    start_new_session=True, close_fds=True)
        except OSError as exc:
            raise TisfmError(f"could not start the {kind} job: {exc.strerror or exc}") from None
    job.pid = job.pgid = proc.pid
    job.start_ticks = _start_ticks(proc.pid)
    _CHILDREN[job_id] = proc
    write_json(path / JOB, job.to_dict())
    threading.Thread(target=_reap, args=(proc, path), daemon=True, name=f"reap-{job_id}").start()
    return job


def load_job(path):
    """Read a job folder's job.json into a :class:`Job`."""
    path = Path(path)
    data = read_json(path / JOB, what="job file")
    try:
        return Job(path=path, id=str(data["id"]), kind=str(data["kind"]), args=list(data.get("args", [])),
                   pid=int(data.get("pid") or 0), pgid=int(data.get("pgid") or 0),
                   start_ticks=data.get("start_ticks"), created=float(data.get("created") or 0.0),
                   label=str(data.get("label") or ""), out=stored_path(data.get("out"), path),
                   cancelled=data.get("cancelled"))
    except (KeyError, TypeError, ValueError) as exc:
        raise TisfmError(f"job file {path / JOB} is missing or has a bad field ({exc})") from None


def read_status(job):
    """The job's status.json as a dict ({} before the command wrote it, or if unreadable)."""
    try:
        return read_json(job.status_path, what="job status")
    except TisfmError:
        return {}


def _read_exit(job):
    try:
        return read_json(job.path / EXIT, what="job exit record")
    except TisfmError:
        return {}


def job_state(job):
    """Current state of a job and what is known about its progress.

    Returns
    -------
    dict
        ``state`` (one of :data:`STATES`), ``fraction`` (0..1), ``stage``, ``epoch``, ``epochs``,
        ``message``, ``history`` (per-epoch losses), ``updated`` (Unix time or None) and
        ``returncode`` (None while unknown).
    """
    status = read_status(job)
    ended = _read_exit(job)
    returncode = ended.get("returncode")
    alive = returncode is None and _alive(job.pid, job.start_ticks)
    child = _CHILDREN.get(job.id)
    if not alive and returncode is None and child is not None:
        # our own child just ended: its reaper thread has (or is about to have) the return code
        try:
            returncode = child.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            pass
    reported = status.get("state")
    if job.cancelled:
        state = "cancelled"
    elif reported in ("done", "failed"):
        state = reported
    elif alive:
        state = "running" if status else "starting"
    elif returncode == 0:
        state = "done"
    elif returncode is not None:
        state = "failed"
    else:
        state = "died"
    message = status.get("message") or ""
    if state == "failed" and not message:
        message = (f"killed by signal {-returncode}" if returncode is not None and returncode < 0
                   else f"exited with status {returncode}")
    elif state == "died":
        message = "the process ended without reporting a result (killed, out of memory, or the machine restarted)"
    elif state == "cancelled":
        message = "cancelled"
    return {"state": state, "fraction": float(status.get("fraction") or (1.0 if state == "done" else 0.0)),
            "stage": status.get("stage"), "epoch": status.get("epoch"), "epochs": status.get("epochs"),
            "fold": status.get("fold"), "folds": status.get("folds"), "message": message,
            "history": list(status.get("history") or []), "updated": status.get("updated"),
            "returncode": returncode}


def list_jobs(jobs_dir):
    """One row per job folder, newest first.

    Returns
    -------
    list of dict
        Each row holds ``job`` (the :class:`Job`), ``id``, ``kind``, ``label``, ``out``,
        ``created`` and every field of :func:`job_state`. Unreadable job folders are listed
        with state "failed" and the reason as message.
    """
    jobs_dir = Path(jobs_dir)
    if not jobs_dir.is_dir():
        return []
    rows = []
    for path in jobs_dir.iterdir():
        if not path.is_dir():
            continue
        if not (path / JOB).exists():
            # being created by another session right now, or left behind by a failed launch
            continue
        try:
            job = load_job(path)
        except TisfmError as exc:
            rows.append({"job": None, "id": path.name, "kind": "?", "label": "", "out": None,
                         "created": path.stat().st_mtime, "state": "failed", "fraction": 0.0,
                         "message": str(exc), "history": []})
            continue
        rows.append({"job": job, "id": job.id, "kind": job.kind, "label": job.label, "out": job.out,
                     "created": job.created, **job_state(job)})
    rows.sort(key=lambda r: r["created"], reverse=True)
    return rows


def cancel(job, *, timeout=5.0):
    """Stop a running job: SIGTERM to its whole process group, SIGKILL after ``timeout`` s.

    The job is marked cancelled in its job.json first, so every reader sees the same state.

    Returns
    -------
    dict
        The job's state after cancelling (``state`` is "cancelled").

    Raises
    ------
    TisfmError
        When the job is not running (already done, failed or cancelled).
    """
    state = job_state(job)["state"]
    if state not in ("starting", "running"):
        raise TisfmError(f"job {job.id} is not running (it is {state}); nothing to cancel")
    job.cancelled = time.time()
    write_json(job.path / JOB, job.to_dict())
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, timeout)):
        try:
            os.killpg(job.pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and _group_alive(job.pgid):
            time.sleep(0.05)
        if not _group_alive(job.pgid):
            break
    try:
        with open(job.log_path, "ab") as log:
            log.write(f"\n[cancelled at {time.strftime('%Y-%m-%d %H:%M:%S')}]\n".encode())
    except OSError:
        pass  # the job is cancelled either way; the note in the log is a courtesy
    return job_state(job)


def log_tail(job, n=40):
    """The last ``n`` lines of the job's log ("" when there is none yet).

    Progress bars that redraw with carriage returns keep only their last state.
    """
    try:
        with open(job.log_path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 200 * n - 4096))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [line.rstrip("\r").rsplit("\r", 1)[-1] for line in text.split("\n")]
    if lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines[-n:])

