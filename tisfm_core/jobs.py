"""Background jobs: long work (training, cross-validation, fine-tunes, penalty paths) outside the
web server.

One interface (:func:`launch`, :func:`list_jobs`, :func:`job_state`, :func:`cancel`,
:func:`log_tail`), two backends chosen by configuration (:func:`load_config`):

``local`` (the default)
    A queue on this machine. At most ``max_jobs`` jobs run at once (default one per two cores,
    at least one); the others wait in state ``queued`` and start in the order they were launched
    when a slot frees. Each job gets ``cores / max_jobs`` compute threads, so concurrent jobs
    never oversubscribe the CPU. Queued jobs are started under a lock on the jobs folder by every
    launch, list and cancel (the app's jobs panel polls) and by every job as it ends, so the queue
    moves on with the app closed, and again after it restarts.
``slurm``
    Each job is a batch script given to ``sbatch``; SLURM queues it. State comes from ``squeue``
    (``scontrol`` for a job squeue no longer lists), cancelling is ``scancel`` and the log is the
    job's output file. The job and run folders must be on a filesystem the nodes share.

Both run the same command, ``python -m tisfm_core KIND ARGS [--spec JOB/spec.json] --status-file
JOB/status.json``, from the same generated script (``job.sh``: the SLURM batch script, run by
``bash`` for the local backend), which records the return code in ``exit.json`` when the command
ends. A job is a folder::

    JOBS/<id>/
      job.json      id, kind, args, backend, label, out, created; pid / pgid / process start time
                    and threads (local) or the SLURM job id; ``cancelled`` once cancelled
      spec.json     the task (paths relative to the job folder), passed as --spec
      job.sh        the script that runs the command
      status.json   progress kept up to date by the command (phase, epoch, fraction, losses)
      log.txt       the command's stdout and stderr
      exit.json     return code (written by job.sh), or the scheduler's final state

Every file is written atomically; job.json only under the jobs folder's lock. The output folder
in job.json is stored relative to the job folder with an absolute fallback, and the command's own
files (spec, status) are named from the job folder's place when it starts. Nothing here imports
Streamlit, and torch only to look into a run folder, so a job's closing hook stays light.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from . import claims
from .atomic import read_json, write_json, write_text
from .errors import TisfmError, check_choice, check_integer
from .processes import alive, group_alive, start_ticks
from .server import redact
from .specs import store_path, stored_path

JOB = "job.json"
STATUS = "status.json"
LOG = "log.txt"
EXIT = "exit.json"
SPEC = "spec.json"
SCRIPT = "job.sh"
LOCK = ".lock"
KINDS = ("train", "cv", "path", "finetune")
BACKENDS = ("local", "slurm")
#: States a job can be in. "queued": waiting for a local slot or pending in SLURM; "timeout" and
#: "node_fail": ended by SLURM; "died": the process vanished without a result; "unknown": the
#: scheduler cannot be asked from here.
STATES = ("queued", "starting", "running", "done", "failed", "cancelled", "timeout", "node_fail",
          "died", "unknown")
ACTIVE_STATES = ("queued", "starting", "running")
#: Final states of a job that did not finish its work.
UNFINISHED_STATES = ("failed", "cancelled", "timeout", "node_fail", "died")
#: Phases a job's status file reports (see progress.StatusFile), in words.
PHASES = {"preparing": "preparing data", "compiling": "compiling", "evaluating": "evaluating"}
_PACKAGE_ROOT = Path(__file__).resolve().parents[1]
#: SLURM job states (squeue %T / scontrol JobState) -> ours.
SLURM_STATES = {
    "PENDING": "queued", "REQUEUED": "queued", "REQUEUE_HOLD": "queued", "REQUEUE_FED": "queued",
    "RESV_DEL_HOLD": "queued", "CONFIGURING": "starting", "RUNNING": "running",
    "COMPLETING": "running", "STAGE_OUT": "running", "SIGNALING": "running", "RESIZING": "running",
    "SUSPENDED": "running", "STOPPED": "running", "COMPLETED": "done", "CANCELLED": "cancelled",
    "TIMEOUT": "timeout", "NODE_FAIL": "node_fail", "FAILED": "failed", "OUT_OF_MEMORY": "failed",
    "BOOT_FAIL": "failed", "DEADLINE": "failed", "PREEMPTED": "failed", "SPECIAL_EXIT": "failed",
    "REVOKED": "failed"}
#: SLURM states of a job that still holds (or waits for) resources.
SLURM_ACTIVE = {s for s, ours in SLURM_STATES.items() if ours in ACTIVE_STATES}


# -- configuration --------------------------------------------------------------------------------

@dataclass(frozen=True)
class SlurmOptions:
    """What every generated batch script asks SLURM for (None: the cluster's default)."""

    partition: str | None = None
    time: str | None = None          # --time, e.g. "04:00:00" or "2-00:00:00"
    mem: str | None = None           # --mem, e.g. "16G"
    cpus: int | None = None          # --cpus-per-task
    gpus: int = 0                    # --gres=gpu:N (per node)
    nodes: int = 1                   # > 1 (or gpus > 1) trains with srun torchrun
    account: str | None = None
    extra: tuple = ()                # further sbatch flags, e.g. ("--qos=normal",)
    python: str | None = None        # the interpreter on the nodes (default: this one)
    setup: tuple = ()                # shell lines run before the command ("module load cuda")


@dataclass(frozen=True)
class JobConfig:
    """The jobs configuration: backend, local queue size and threads, SLURM options."""

    backend: str = "local"
    max_jobs: int | None = None      # local: jobs running at once (default cores // 2, >= 1)
    threads: int | None = None       # local: compute threads per job (default cores // max_jobs)
    slurm: SlurmOptions = field(default_factory=SlurmOptions)

    def slots(self):
        return self.max_jobs or max(1, cpu_count() // 2)

    def job_threads(self):
        return self.threads or max(1, cpu_count() // self.slots())


#: Environment variables of the configuration (they override the config file).
ENV = {"backend": "TISFM_JOB_BACKEND", "max_jobs": "TISFM_JOBS_MAX", "threads": "TISFM_JOB_THREADS",
       "partition": "TISFM_SLURM_PARTITION", "time": "TISFM_SLURM_TIME", "mem": "TISFM_SLURM_MEM",
       "cpus": "TISFM_SLURM_CPUS", "gpus": "TISFM_SLURM_GPUS", "nodes": "TISFM_SLURM_NODES",
       "account": "TISFM_SLURM_ACCOUNT", "extra": "TISFM_SLURM_EXTRA", "python": "TISFM_SLURM_PYTHON"}
CONFIG_ENV = "TISFM_JOBS_CONFIG"


def cpu_count():
    """Cores this process may use (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _read_config_file(path):
    path = Path(path).expanduser()
    try:
        text = path.read_text()
    except OSError as exc:
        raise TisfmError(f"jobs config {path} ({CONFIG_ENV}) cannot be read: {exc.strerror or exc}") from None
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise TisfmError(f"jobs config {path} is not valid JSON: {exc}") from None
    else:
        try:
            import tomllib
        except ImportError:
            raise TisfmError(f"jobs config {path}: TOML needs Python 3.11; write it as JSON") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise TisfmError(f"jobs config {path} is not valid TOML: {exc}") from None
    if not isinstance(data, dict):
        raise TisfmError(f"jobs config {path} must hold a table of settings")
    return data


def _one_line(value, name):
    value = str(value)
    if "\n" in value or "\r" in value or "\x00" in value:
        raise TisfmError(f"jobs config: {name} must be one line")
    return value


def load_config(environ=None):
    """The jobs configuration from ``TISFM_JOBS_CONFIG`` (TOML or JSON) and environment variables.

    The file holds ``backend``, a ``[local]`` table (``max_jobs``, ``threads``) and a ``[slurm]``
    table (``partition``, ``time``, ``mem``, ``cpus``, ``gpus``, ``nodes``, ``account``, ``extra``
    (list of sbatch flags), ``python``, ``setup`` (list of shell lines)). The variables in
    :data:`ENV` override it (``TISFM_SLURM_EXTRA`` is split like a shell line).

    Raises
    ------
    TisfmError
        For an unreadable file, an unknown setting or a bad value, naming it.
    """
    env = os.environ if environ is None else environ
    data = _read_config_file(env[CONFIG_ENV]) if env.get(CONFIG_ENV) else {}
    unknown = sorted(set(data) - {"backend", "local", "slurm"})
    local, slurm = dict(data.get("local") or {}), dict(data.get("slurm") or {})
    unknown += [f"local.{k}" for k in sorted(set(local) - {"max_jobs", "threads"})]
    slurm_keys = {f.name for f in fields(SlurmOptions)}
    unknown += [f"slurm.{k}" for k in sorted(set(slurm) - slurm_keys)]
    if unknown:
        raise TisfmError(f"jobs config: unknown setting {unknown[0]!r}")
    settings = {"backend": data.get("backend", "local"), **local, **slurm}
    for key, var in ENV.items():
        if env.get(var, "").strip():
            value = env[var].strip()
            settings[key] = shlex.split(value) if key == "extra" else value
    for key in ("max_jobs", "threads", "cpus", "gpus", "nodes"):
        if isinstance(settings.get(key), str):
            try:
                settings[key] = int(settings[key])
            except ValueError:
                raise TisfmError(f"jobs config: {key} must be an integer, got {settings[key]!r}") from None
    backend = check_choice(settings.pop("backend"), "jobs backend (TISFM_JOB_BACKEND)", BACKENDS)
    for key in ("max_jobs", "threads", "cpus"):
        if settings.get(key) is not None:
            check_integer(settings[key], f"jobs config {key}")
    check_integer(settings.setdefault("gpus", 0), "jobs config gpus", minimum=0)
    check_integer(settings.setdefault("nodes", 1), "jobs config nodes")
    for key in ("extra", "setup"):
        value = settings.get(key) or ()
        if isinstance(value, str):
            raise TisfmError(f"jobs config: slurm.{key} must be a list of strings")
        settings[key] = tuple(_one_line(v, key) for v in value)
    for flag in settings["extra"]:
        if not flag.startswith("-"):
            raise TisfmError(f"jobs config: slurm extra flags must start with '-', got {flag!r}")
    for key in ("partition", "time", "mem", "account", "python"):
        if settings.get(key) is not None:
            settings[key] = _one_line(settings[key], key)
    return JobConfig(backend=backend, max_jobs=settings.pop("max_jobs", None),
                     threads=settings.pop("threads", None),
                     slurm=SlurmOptions(**{k: v for k, v in settings.items() if k in slurm_keys}))


# -- the job record -------------------------------------------------------------------------------

@dataclass
class Job:
    """A launched job (the contents of its job.json plus its folder)."""

    path: Path
    id: str
    kind: str
    args: list = field(default_factory=list)
    backend: str = "local"
    spec: bool = False
    pid: int = 0
    pgid: int = 0
    start_ticks: int | None = None
    threads: int | None = None
    slurm_id: str | None = None
    created: float = 0.0
    started: float | None = None
    label: str = ""
    out: str | None = None
    cancelled: float | None = None
    cwd: str = ""
    #: The job reads files the user did not upload (typed server paths, a run's recorded data):
    #: what it reports is shown with quoted contents hidden (:func:`tisfm_core.server.redact`).
    hide_contents: bool = False

    @property
    def status_path(self):
        return self.path / STATUS

    @property
    def log_path(self):
        return self.path / LOG

    def command(self, python=None):
        """The command the job runs (paths of its own files as they are now)."""
        spec = ["--spec", str(self.path / SPEC)] if self.spec else []
        return [python or sys.executable, "-m", "tisfm_core", self.kind, *self.args, *spec,
                "--status-file", str(self.status_path)]

    def to_dict(self):
        return {"id": self.id, "kind": self.kind, "args": list(self.args), "backend": self.backend,
                "spec": self.spec, "pid": self.pid, "pgid": self.pgid, "start_ticks": self.start_ticks,
                "threads": self.threads, "slurm_id": self.slurm_id, "created": self.created,
                "started": self.started, "label": self.label,
                "out": store_path(self.out, self.path), "cancelled": self.cancelled,
                "cwd": self.cwd, "hide_contents": self.hide_contents, "host": socket.gethostname(),
                "command": self.command()}


def load_job(path):
    """Read a job folder's job.json into a :class:`Job`."""
    path = Path(path)
    data = read_json(path / JOB, what="job file")
    try:
        out = stored_path(data.get("out"), path)
        return Job(path=path, id=str(data["id"]), kind=str(data["kind"]), args=[str(a) for a in data.get("args", [])],
                   backend=str(data.get("backend") or "local"), spec=bool(data.get("spec")),
                   pid=int(data.get("pid") or 0), pgid=int(data.get("pgid") or 0),
                   start_ticks=data.get("start_ticks"), threads=data.get("threads"),
                   slurm_id=data.get("slurm_id"), created=float(data.get("created") or 0.0),
                   started=data.get("started"), label=str(data.get("label") or ""),
                   out=None if out is None else str(out), cancelled=data.get("cancelled"),
                   cwd=str(data.get("cwd") or path), hide_contents=bool(data.get("hide_contents")))
    except (KeyError, TypeError, ValueError, TisfmError) as exc:
        raise TisfmError(f"job file {path / JOB} is missing or has a bad field ({exc})") from None


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


@contextmanager
def _locked(jobs_dir):
    """The jobs folder's lock: job.json writes and queue starts happen one at a time."""
    try:
        handle = open(Path(jobs_dir) / LOCK, "a")
    except OSError as exc:
        raise TisfmError(f"cannot lock the jobs folder {jobs_dir}: {exc.strerror or exc}") from None
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _job_folders(jobs_dir):
    jobs_dir = Path(jobs_dir)
    if not jobs_dir.is_dir():
        return []
    # a folder without job.json is being created by another session, or a failed launch's
    return [p for p in jobs_dir.iterdir() if p.is_dir() and (p / JOB).exists()]


def _read_exit(job):
    try:
        return read_json(job.path / EXIT, what="job exit record")
    except TisfmError:
        return {}


def read_status(job):
    """The job's status.json as a dict ({} before the command wrote it, or if unreadable)."""
    try:
        return read_json(job.status_path, what="job status")
    except TisfmError:
        return {}


# -- the generated script -------------------------------------------------------------------------

def _distributed(job, opts):
    """Processes per node when the job trains one model across GPUs or nodes (srun torchrun)."""
    if job.kind != "train" or (opts.nodes == 1 and opts.gpus <= 1):
        return None
    return max(opts.gpus, 1)


def batch_script(job, config):
    """The shell script that runs ``job`` (for SLURM, its batch script with ``#SBATCH`` lines).

    It exports the thread count (the local slot's, or the SLURM allocation's CPUs), runs the
    command and records its return code in ``exit.json``. For SLURM jobs that train across several
    GPUs or nodes (``gpus`` > 1 or ``nodes`` > 1) the command runs as ``srun torchrun
    --nnodes=$SLURM_NNODES --nproc_per_node=GPUS ... -m tisfm_core train ... --distributed`` (one
    torchrun per node, rendezvous on the first node).
    """
    opts = config.slurm
    slurm = job.backend == "slurm"
    python = (opts.python if slurm else None) or sys.executable
    q = shlex.quote
    lines = ["#!/bin/bash"]
    nproc = _distributed(job, opts) if slurm else None
    if slurm:
        sbatch = [f"--job-name=tisfm-{job.kind}", f"--output={job.path / LOG}", "--open-mode=append",
                  f"--chdir={job.cwd}"]
        sbatch += [f"--{name}={value}" for name, value in (
            ("partition", opts.partition), ("time", opts.time), ("mem", opts.mem),
            ("cpus-per-task", opts.cpus), ("account", opts.account)) if value is not None]
        if opts.gpus:
            sbatch.append(f"--gres=gpu:{opts.gpus}")
        if opts.nodes > 1 or nproc:
            sbatch += [f"--nodes={opts.nodes}", "--ntasks-per-node=1"]
        sbatch += list(opts.extra)
        lines += [f"#SBATCH {flag}" for flag in sbatch]
    lines += [f"# tisfm job {job.id} ({job.backend} backend), generated {time.strftime('%Y-%m-%d %H:%M:%S')}",
              f"cd {q(job.cwd)} || exit 1",
              f"export TISFM_JOB_ID={q(job.id)} PYTHONUNBUFFERED=1",
              f"export PYTHONPATH={q(str(_PACKAGE_ROOT))}${{PYTHONPATH:+:$PYTHONPATH}}"]
    if slurm:
        per_process = f"$(( ${{SLURM_CPUS_PER_TASK:-1}} / {nproc or 1} ))"
        lines.append(f"threads={per_process}; [ \"$threads\" -ge 1 ] || threads=1")
    else:
        lines.append(f"threads={job.threads or 1}")
    lines.append('export OMP_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads" '
                 'TORCHINDUCTOR_COMPILE_THREADS="$threads"')
    if slurm:
        lines += list(opts.setup)
    command = job.command(python)
    if nproc:
        torchrun = str(Path(python).with_name("torchrun"))
        lines.append('head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)')
        lines.append(f"srun --kill-on-bad-exit=1 {q(torchrun)} --nnodes=\"$SLURM_NNODES\" "
                     f"--nproc_per_node={nproc} --rdzv_id=\"$SLURM_JOB_ID\" --rdzv_backend=c10d "
                     f"--rdzv_endpoint=\"$head:29500\" "
                     + " ".join(q(a) for a in command[1:]) + " --distributed")
    else:
        lines.append(" ".join(q(a) for a in command))
    hook = "import sys; from tisfm_core.jobs import job_ended; job_ended(sys.argv[1], int(sys.argv[2]))"
    lines += ["code=$?", f'{q(python)} -c {q(hook)} {q(str(job.path))} "$code"', 'exit "$code"']
    return "\n".join(lines) + "\n"


def job_ended(path, returncode):
    """Called by ``job.sh`` when the command ended: record the return code, release what a failed
    command left claimed, and (local backend) start the next queued jobs."""
    path = Path(path)
    write_json(path / EXIT, {"returncode": int(returncode), "ended": time.time()})
    job = load_job(path)
    if returncode != 0 and job.out:
        claims.release_dead(job.out, job.id, ended=True)
    if job.backend == "local":
        start_queued(path.parent)


# -- launching ------------------------------------------------------------------------------------

def launch(kind, args, jobs_dir, *, label="", spec=None, backend=None, config=None, hide_contents=False):
    """Queue ``python -m tisfm_core <kind> ARGS --status-file JOB/status.json`` as a job.

    Parameters
    ----------
    kind : str
        The CLI subcommand, one of :data:`KINDS`.
    args : list of str
        Its arguments (without ``--spec`` and ``--status-file``, which the job adds).
    jobs_dir : str or Path
        Folder holding the job folders (created if needed).
    label : str, default ""
        A short description shown in job tables.
    spec : TrainTask or PathSpec, optional
        The task, written to ``JOB/spec.json`` (paths relative to the job folder) and passed as
        ``--spec``: the app's forms and typed commands run the same code.
    backend : {"local", "slurm"}, optional
        Default: the configured one (:func:`load_config`).
    config : JobConfig, optional
        Default: :func:`load_config`.
    hide_contents : bool, default False
        The job reads files the user did not upload: :func:`shown_message` and :func:`shown_log`
        hide the file contents its messages quote.

    Returns
    -------
    Job
        Queued (local: started at once when a slot is free) or submitted (SLURM).

    Raises
    ------
    TisfmError
        For an unknown kind or backend; when the output folder is claimed, or is the output of
        another queued or running job; when the job folder cannot be written (unwritable folder,
        full disk) or ``sbatch`` refuses the job, with the reason. Nothing is left behind.
    """
    config = config or load_config()
    backend = check_choice(backend or config.backend, "jobs backend", BACKENDS)
    if kind not in KINDS:
        raise TisfmError(f"unknown job kind {kind!r}; expected one of {', '.join(KINDS)}")
    args = [str(a) for a in args]
    job_id, path = _new_job_folder(jobs_dir, kind)
    out = _out_of(args)
    # the command runs where it was asked for, so relative paths mean what they meant here
    job = Job(path=path, id=job_id, kind=kind, args=args, backend=backend, spec=spec is not None,
              created=time.time(), label=label, cwd=os.getcwd(), hide_contents=bool(hide_contents),
              out=None if out is None else os.path.abspath(out))
    try:
        if spec is not None:
            write_json(path / SPEC, spec.to_dict(base=path))
        _write_log_header(job)
        # checked and registered under the lock: two launches for one output cannot both pass
        with _locked(path.parent):
            _check_output_free(job)
            if backend == "slurm":
                _submit(job, config)
            write_json(path / JOB, job.to_dict())
    except BaseException:
        if job.slurm_id:
            subprocess.run(["scancel", job.slurm_id], capture_output=True)
        _remove_job_folder(path)
        raise
    if backend == "local":
        start_queued(path.parent, config=config)
    return load_job(path)


def _remove_job_folder(path):
    for child in path.iterdir():
        child.unlink(missing_ok=True)
    path.rmdir()


def _check_output_free(job):
    """Refuse an output folder that is claimed or that another queued or running job will write."""
    if not job.out:
        return
    claims.check_free(job.out, force="--force" in job.args)
    target = os.path.realpath(job.out)
    for other in _load_jobs(job.path.parent):
        if other.out and os.path.realpath(other.out) == target:   # (this job is not registered yet)
            state = job_state(other)["state"]
            if state in ACTIVE_STATES:
                raise TisfmError(f"{job.out} is already the output of job {other.id} ({state}); "
                                 "choose another name or cancel that job")


def _write_log_header(job):
    try:
        with open(job.log_path, "ab") as log:
            log.write(f"$ {shlex.join(job.command())}\n".encode())
    except OSError as exc:
        raise TisfmError(f"cannot write the job log in {job.path}: {exc.strerror or exc}") from None


def start_queued(jobs_dir, *, config=None):
    """Start queued local jobs, oldest first, while fewer than ``max_jobs`` run.

    Called by :func:`launch`, :func:`list_jobs` and :func:`cancel`, and by each job as it ends;
    safe to call from any number of processes at once (the jobs folder's lock). Returns the jobs
    started.
    """
    jobs_dir = Path(jobs_dir)
    if not jobs_dir.is_dir():
        return []
    config = config or load_config()
    started = []
    with _locked(jobs_dir):
        queue = _queue(_load_jobs(jobs_dir), config)
        for job in queue["queued"][:max(0, queue["slots"] - queue["running"])]:
            started.append(_start_local(job, config))
    return started


def _start_local(job, config):
    """Start a queued local job (under the jobs lock) in its own session: it survives the app."""
    job.threads = config.job_threads()
    write_text(job.path / SCRIPT, batch_script(job, config))
    try:
        log = open(job.log_path, "ab")
    except OSError as exc:
        raise TisfmError(f"cannot write the job log in {job.path}: {exc.strerror or exc}") from None
    with log:
        try:
            proc = subprocess.Popen(["bash", str(job.path / SCRIPT)], stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True, close_fds=True)
        except OSError as exc:
            raise TisfmError(f"could not start the {job.kind} job: {exc.strerror or exc}") from None
    job.pid = job.pgid = proc.pid
    job.start_ticks = start_ticks(proc.pid)
    job.started = time.time()
    write_json(job.path / JOB, job.to_dict())
    # reap it when it ends (no zombie); its script records the return code itself
    threading.Thread(target=proc.wait, daemon=True, name=f"reap-{job.id}").start()
    return job


def _local_alive(job):
    """The job's script, or any process of its group, still runs (its leader may have been
    killed alone while the command goes on)."""
    return alive(job.pid, job.start_ticks) or bool(job.pgid) and group_alive(job.pgid)


# -- SLURM ----------------------------------------------------------------------------------------

def _slurm(args, *, timeout=60):
    """Run a SLURM client command; its stdout, or a TisfmError with its first line of stderr."""
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise TisfmError(f"{args[0]} not found: the slurm jobs backend needs the SLURM client "
                         "commands (sbatch, squeue, scontrol, scancel) on this machine") from None
    except subprocess.TimeoutExpired:
        raise TisfmError(f"{args[0]} did not answer within {timeout} s") from None
    if done.returncode != 0:
        first = (done.stderr.strip() or done.stdout.strip() or f"exit status {done.returncode}").splitlines()[0]
        raise TisfmError(f"{args[0]} failed: {first}")
    return done.stdout


def _submit(job, config):
    """Write the batch script and ``sbatch`` it; records the SLURM job id in ``job``."""
    write_text(job.path / SCRIPT, batch_script(job, config))
    out = _slurm(["sbatch", "--parsable", str(job.path / SCRIPT)]).strip()
    slurm_id = out.split(";")[0].strip()
    if not slurm_id.isdigit():
        raise TisfmError(f"sbatch answered {out!r}, not a job id")
    job.slurm_id = slurm_id


def slurm_states(ids):
    """SLURM's view of jobs: ``{id: (STATE, reason)}`` for the ids squeue or scontrol still know.

    Raises
    ------
    TisfmError
        When the SLURM commands cannot be run.
    """
    ids = [str(i) for i in ids]
    if not ids:
        return {}
    known = {}
    try:
        text = _slurm(["squeue", "-h", "-t", "all", "-o", "%i|%T|%r", "-j", ",".join(ids)])
    except TisfmError as exc:
        if "Invalid job id" not in str(exc):
            raise
        text = ""   # none of them is listed any more
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3 and parts[0] in ids:
            known[parts[0]] = (parts[1].strip().upper(), parts[2].strip())
    for job_id in ids:
        if job_id not in known:
            try:
                text = _slurm(["scontrol", "show", "job", "-o", job_id])
            except TisfmError:
                continue   # forgotten by SLURM too
            record = dict(f.split("=", 1) for f in text.split() if "=" in f)
            if record.get("JobState"):
                known[job_id] = (record["JobState"].upper(), record.get("Reason", ""))
    return known


def _slurm_view(job, scheduler):
    """(STATE, reason) of a SLURM job, None once SLURM forgot it; raises when SLURM cannot be asked
    (``scheduler``: the answer for all listed jobs, or the error asking gave)."""
    if isinstance(scheduler, TisfmError):
        raise scheduler
    if scheduler is None:
        scheduler = slurm_states([job.slurm_id])
    return scheduler.get(job.slurm_id)


# -- state ----------------------------------------------------------------------------------------

def _signal_message(returncode):
    if returncode < 0:
        return f"killed by signal {-returncode}"
    if returncode > 128:   # bash reports a command killed by signal N as 128 + N
        return f"killed by signal {returncode - 128}"
    return f"exited with status {returncode}"


def job_state(job, *, scheduler=None, queue=None):
    """Current state of a job and what is known about its progress.

    Parameters
    ----------
    job : Job
    scheduler : dict, optional
        :func:`slurm_states` of the listed SLURM jobs (asked here when not given).
    queue : dict, optional
        Queue positions and slot use of the jobs folder (computed here when not given).

    Returns
    -------
    dict
        ``state`` (one of :data:`STATES`), ``over`` (its processes are known to have ended),
        ``fraction`` (0..1), ``phase``, ``stage``, ``epoch``, ``epochs``, ``fold``, ``folds``,
        ``step``, ``steps``, ``message``, ``reason`` (why a queued job waits), ``position`` (in
        the local queue), ``scheduler_state`` (SLURM's word), ``history`` (per-epoch losses),
        ``updated`` (Unix time or None) and ``returncode`` (None while unknown).
    """
    status = read_status(job)
    ended = _read_exit(job)
    returncode = ended.get("returncode")
    reported = status.get("state")
    info = {"reason": "", "position": None, "scheduler_state": ended.get("scheduler_state")}
    scheduled = None   # our word for SLURM's state
    live = False       # its processes run (or wait to); None: cannot tell
    if job.backend == "slurm":
        if not ended.get("state") and job.slurm_id:
            try:
                view = _slurm_view(job, scheduler)
            except TisfmError as exc:
                view, live, info["reason"] = None, None, str(exc)
            if view is not None:
                info["scheduler_state"], reason = view
                scheduled = SLURM_STATES.get(view[0], "running")
                live = view[0] in SLURM_ACTIVE
                if scheduled == "queued":
                    info["reason"] = f"SLURM: {reason if reason not in ('', 'None') else 'pending'}"
                elif not live and returncode is None:
                    # SLURM ended it (time limit, node failure, scancel) before its script could say
                    ended = {"state": scheduled, "scheduler_state": view[0], "ended": time.time()}
                    write_json(job.path / EXIT, ended)
    elif returncode is None and job.pid:
        live = _local_alive(job)
    if job.cancelled:
        state = "cancelled"
    elif ended.get("state"):
        state = ended["state"]
    elif reported in ("done", "failed"):
        state = reported
    elif returncode is not None:
        state = "done" if returncode == 0 else "failed"
    elif live is None:
        state = "unknown"
    elif live:
        state = ("queued" if scheduled == "queued" else
                 "running" if status and scheduled != "starting" else "starting")
    elif job.backend == "local" and not job.pid:
        state = "queued"
        queue = _queue(_load_jobs(job.path.parent), load_config()) if queue is None else queue
        info["position"] = queue["order"].get(job.id)
        info["reason"] = (f"position {info['position']} in the queue; {queue['running']} of "
                          f"{queue['slots']} job slots in use")
    else:
        state = "died"
    over = state not in ACTIVE_STATES and live is False
    message = status.get("message") or ""
    if job.hide_contents:   # what the job read was not the user's upload: no quoted contents
        message = redact(message)
    if state == "failed" and reported != "failed":
        # the command did not live to say why: its exit tells
        message = (_signal_message(returncode) if returncode is not None
                   else f"SLURM ended the job as {ended.get('scheduler_state')}")
    elif state == "died":
        message = ("SLURM no longer knows this job and it left no result" if job.backend == "slurm" else
                   "the process ended without reporting a result (killed, out of memory, or the "
                   "machine restarted)")
    elif state == "cancelled":
        message = "cancelled"
    elif state == "timeout":
        message = "SLURM stopped the job at its time limit"
    elif state == "node_fail":
        message = "the SLURM node running the job failed"
    elif state in ("queued", "unknown"):
        message = info["reason"]
    return {"state": state, "over": over,
            "fraction": float(status.get("fraction") or (1.0 if state == "done" else 0.0)),
            **{k: status.get(k) for k in ("phase", "stage", "epoch", "epochs", "fold", "folds", "step",
                                          "steps", "updated")},
            "message": message, **info, "history": list(status.get("history") or []),
            "returncode": returncode}


def _load_jobs(jobs_dir):
    """The jobs of a folder whose job.json can be read."""
    loaded = []
    for folder in _job_folders(jobs_dir):
        try:
            loaded.append(load_job(folder))
        except TisfmError:
            continue
    return loaded


def _queue(jobs, config):
    """The queued local jobs in the order they start, with their positions (1 = next), and how
    many of the slots run."""
    local = [j for j in jobs if j.backend == "local" and not j.cancelled]
    queued = sorted((j for j in local if not j.pid), key=lambda j: (j.created, j.id))
    running = sum(1 for j in local if j.pid and not (j.path / EXIT).exists() and _local_alive(j))
    return {"queued": queued, "order": {j.id: i + 1 for i, j in enumerate(queued)},
            "running": running, "slots": config.slots()}


def list_jobs(jobs_dir, *, config=None):
    """One row per job folder, newest first (queued local jobs are started first if slots are free).

    Returns
    -------
    list of dict
        Each row holds ``job`` (the :class:`Job`), ``id``, ``kind``, ``label``, ``out``,
        ``backend``, ``slurm_id``, ``created`` and every field of :func:`job_state`. Unreadable
        job folders are listed with state "failed" and the reason as message.
    """
    jobs_dir = Path(jobs_dir)
    config = config or load_config()
    start_queued(jobs_dir, config=config)
    loaded, rows = [], []
    for path in _job_folders(jobs_dir):
        try:
            loaded.append(load_job(path))
        except TisfmError as exc:
            rows.append({"job": None, "id": path.name, "kind": "?", "label": "", "out": None,
                         "backend": "?", "slurm_id": None, "created": path.stat().st_mtime,
                         "state": "failed", "over": True, "fraction": 0.0, "message": str(exc),
                         "reason": "", "position": None, "history": []})
    slurm_ids = [j.slurm_id for j in loaded if j.backend == "slurm" and j.slurm_id
                 and not _read_exit(j).get("state")]
    try:
        scheduler = slurm_states(slurm_ids)
    except TisfmError as exc:
        scheduler = exc   # each SLURM row then says why its state is unknown
    queue = _queue(loaded, config)
    for job in loaded:
        state = job_state(job, scheduler=scheduler, queue=queue)
        _release_unfinished(job, state)
        rows.append({"job": job, "id": job.id, "kind": job.kind, "label": job.label, "out": job.out,
                     "backend": job.backend, "slurm_id": job.slurm_id, "created": job.created, **state})
    rows.sort(key=lambda r: r["created"], reverse=True)
    return rows


def _release_unfinished(job, state):
    """A job that ended without finishing leaves no claim (nor half-written output) behind."""
    if job.out and state["over"] and state["state"] in UNFINISHED_STATES:
        claims.release_dead(job.out, job.id, ended=True)


def find_job(jobs_dir, ref):
    """The job named ``ref``: its id, a unique prefix of it, or its SLURM job id."""
    folders = _job_folders(jobs_dir)
    exact = [p for p in folders if p.name == ref]
    matches = exact or [p for p in folders if p.name.startswith(ref)]
    if not matches:
        for p in folders:
            try:
                if load_job(p).slurm_id == ref:
                    matches.append(p)
            except TisfmError:
                continue
    if not matches:
        raise TisfmError(f"no job {ref!r} in {jobs_dir}")
    if len(matches) > 1:
        raise TisfmError(f"{ref!r} names {len(matches)} jobs in {jobs_dir}; give more of the id")
    return load_job(matches[0])


# -- cancelling -----------------------------------------------------------------------------------

def cancel(job, *, timeout=5.0):
    """Stop a queued or running job.

    A queued local job is only marked; a running one gets SIGTERM on its whole process group,
    SIGKILL after ``timeout`` s; a SLURM job is ``scancel``-ed. The job is marked cancelled in
    its job.json first, so every reader sees the same state; what it left unfinished is removed
    once it has stopped, and the next queued job starts.

    Returns
    -------
    dict
        The job's state after cancelling (``state`` is "cancelled").

    Raises
    ------
    TisfmError
        When the job is not queued or running (already done, failed or cancelled), or scancel fails.
    """
    jobs_dir = job.path.parent
    with _locked(jobs_dir):
        job = load_job(job.path)
        state = job_state(job)["state"]
        if state not in ACTIVE_STATES:
            raise TisfmError(f"job {job.id} is not queued or running (it is {state}); nothing to cancel")
        if job.backend == "slurm" and job.slurm_id:
            _slurm(["scancel", job.slurm_id])
        job.cancelled = time.time()
        write_json(job.path / JOB, job.to_dict())
    if job.backend == "local" and job.pgid:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(job.pgid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and group_alive(job.pgid):
                time.sleep(0.05)
            if not group_alive(job.pgid):
                break
    try:
        with open(job.log_path, "ab") as log:
            log.write(f"\n[cancelled at {time.strftime('%Y-%m-%d %H:%M:%S')}]\n".encode())
    except OSError:
        pass  # the job is cancelled either way; the note in the log is a courtesy
    state = job_state(job)
    _release_unfinished(job, state)
    if job.backend == "local":
        start_queued(jobs_dir)
    return state


# -- reading --------------------------------------------------------------------------------------

def log_tail(job, n=40):
    """The last ``n`` lines of the job's log ("" when there is none yet).

    Progress bars that redraw with carriage returns keep only their last state; a job that
    reads files the user did not upload (``hide_contents``) has their quoted contents hidden.
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
    return "\n".join(redact(line) if job.hide_contents else line for line in lines[-n:])


def progress_text(row):
    """What a job is doing, in a few words: its phase ("compiling", "epoch 3/10", "fold 2/5 ·
    epoch 1/20 · 12%") while it runs, why it waits while queued, its message once over."""
    state = row["state"]
    if state == "queued":
        return f"queued · {row.get('reason') or 'waiting'}"
    if state == "starting":
        return "starting"
    if state != "running":
        return row.get("message") or state
    phase = row.get("phase")
    if phase in PHASES:
        return f"{PHASES[phase]} · {row['message']}" if row.get("message") else PHASES[phase]
    parts = []
    if row.get("folds"):
        parts.append(f"fold {row.get('fold') or 1}/{row['folds']}")
    if row.get("steps"):
        parts.append(f"step {row.get('step') or 1}/{row['steps']}")
    if row.get("epochs"):
        stage = "fine-tune epoch" if row.get("stage") == "finetune" else "epoch"
        parts.append(f"{stage} {min(row.get('epoch') or 1, row['epochs'])}/{row['epochs']}")
    parts.append(f"{100 * row.get('fraction', 0.0):.0f}%")
    return " · ".join(parts)


def result_run(job):
    """The run a finished job made (train: its --out; cv: its first fold; path: the run it
    explored), or None when there is none to open."""
    from .runs import is_run

    if job.kind == "path":
        candidate = Path(job.args[0]) if job.args and not job.args[0].startswith("-") else None
    elif job.kind == "cv" and job.out:
        folds = sorted(Path(job.out).glob("fold_*"), key=lambda p: p.name)
        candidate = next((p for p in folds if is_run(p)), None)
    else:
        candidate = Path(job.out) if job.out else None
    return candidate if candidate is not None and is_run(candidate) else None


def with_backend(config, backend):
    """``config`` with another backend (``--backend`` on the command line)."""
    return replace(config, backend=check_choice(backend, "jobs backend", BACKENDS))
