"""``jobs``: launch, list, inspect and cancel background jobs (local queue or SLURM) from a shell,
e.g. on a cluster's login node; the same jobs folder and backends as the app."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import UsageError, path_spec, task_from_args
from .finetune import finetune_task

#: How each kind's task is built from its parsed flags (the flags it consumes are the parser's
#: ``task_flags``, see common.add_spec).
SPEC_BUILDERS = {"train": task_from_args, "cv": task_from_args, "path": path_spec,
                 "finetune": finetune_task}


def _config(a):
    from ..jobs import load_config, with_backend

    config = load_config()
    return with_backend(config, a.backend) if a.backend else config


def _jobs_dir(a):
    from ..server import jobs_dir

    return Path(a.jobs_dir).expanduser() if a.jobs_dir else jobs_dir()


def _subparser(kind):
    from . import build_parser

    commands = next(a for a in build_parser()._subparsers._group_actions
                    if isinstance(a, argparse._SubParsersAction))
    return commands.choices[kind]


def job_request(kind, argv):
    """The job's arguments and task for ``tisfm KIND ARGV``, parsed by that command's own parser.

    The task flags become the job's spec (built as the command builds it, so bad flags are
    refused now, not when the job runs); the other flags (``--out``, ``--force``, the run of a
    path) are passed on. Returns ``(args, spec)``; spec is None for kinds without one and for
    ``train --resume``.
    """
    parser = _subparser(kind)
    ns = parser.parse_args(argv)
    if getattr(ns, "status_file", None):
        raise UsageError("a job writes its own --status-file; drop it")
    builder = SPEC_BUILDERS.get(kind)
    if builder is None or getattr(ns, "resume", None):
        return list(argv), None
    spec = builder(ns)
    consumed = ns.task_flags
    args = []
    for action in parser._actions:
        dest = action.dest
        if dest in consumed or dest in ("spec", "status_file", "help", "task_flags", "func"):
            continue
        value = getattr(ns, dest, None)
        if value is None or value == action.default:
            continue
        if not action.option_strings:
            args.append(str(value))
        elif action.nargs == 0:
            args.append(max(action.option_strings, key=len))
        else:
            args += [max(action.option_strings, key=len), str(value)]
    return args, spec


def cmd_launch(a):
    from ..jobs import KINDS, job_state, launch, progress_text

    if a.kind not in KINDS:
        raise UsageError(f"unknown job kind {a.kind!r}; expected one of {', '.join(KINDS)}")
    args, spec = job_request(a.kind, a.args)
    job = launch(a.kind, args, _jobs_dir(a), label=a.label or "", spec=spec, config=_config(a))
    where = f" as SLURM job {job.slurm_id}" if job.slurm_id else ""
    print(f"job {job.id} ({job.backend}{where}): {progress_text(job_state(job))}")


def _rows(a):
    from ..jobs import list_jobs

    rows = list_jobs(_jobs_dir(a), config=_config(a))
    return [r for r in rows if not a.backend or r["backend"] == a.backend]


def cmd_list(a):
    from ..jobs import progress_text

    rows = _rows(a)
    if not rows:
        print(f"no jobs in {_jobs_dir(a)}")
        return
    for r in rows:
        backend = f"slurm {r['slurm_id']}" if r.get("slurm_id") else r["backend"]
        print(f"{r['id']:<36} {r['kind']:<6} {backend:<12} {r['state']:<10} {progress_text(r)}"
              + (f"  -> {r['out']}" if r.get("out") else ""))


def _find(a):
    from ..jobs import find_job

    return find_job(_jobs_dir(a), a.id)


def cmd_status(a):
    from ..jobs import job_state, progress_text, start_queued

    start_queued(_jobs_dir(a), config=_config(a))
    job = _find(a)
    state = job_state(job)
    if a.json:
        print(json.dumps({"id": job.id, "kind": job.kind, "backend": job.backend,
                          "slurm_id": job.slurm_id, "out": job.out, "label": job.label, **state},
                         indent=1, default=str))
        return
    for key, value in (("job", job.id), ("kind", job.kind), ("label", job.label),
                       ("backend", job.backend + (f" (SLURM job {job.slurm_id})" if job.slurm_id else "")),
                       ("state", state["state"] + (f" (SLURM {state['scheduler_state']})"
                                                   if state.get("scheduler_state") else "")),
                       ("progress", progress_text(state)), ("waits for", state["reason"]),
                       ("output", job.out), ("log", job.log_path)):
        if value:
            print(f"{key:<10} {value}")


def cmd_cancel(a):
    from ..jobs import cancel

    state = cancel(_find(a))
    print(f"job {a.id}: {state['state']}")


def cmd_log(a):
    from ..jobs import log_tail

    job = _find(a)
    if a.lines == 0:
        try:
            text = job.log_path.read_text(errors="replace")
        except OSError:
            text = ""
    else:
        text = log_tail(job, a.lines)
    print(text.rstrip("\n") or "(no output yet)")


def add_parsers(sub):
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--jobs-dir", help="jobs folder (default: the app's, $TISFM_HOME/jobs or "
                                           "~/.tisfm/jobs)")
    common.add_argument("--backend", choices=["local", "slurm"],
                        help="local queue or SLURM (default: TISFM_JOB_BACKEND / TISFM_JOBS_CONFIG, "
                             "else local); for list, show only this backend's jobs")
    p = sub.add_parser("jobs", help="background jobs: launch, list, status, cancel, log")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    q = actions.add_parser("launch", parents=[common],
                           help="run `tisfm KIND ARGS...` as a background job")
    q.add_argument("--label", help="a short description shown in job lists")
    q.add_argument("kind", metavar="KIND", help="train, cv or path (launch's own options go before it)")
    q.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS",
                   help="the command's own arguments, as you would type them after `tisfm KIND`")
    q.set_defaults(func=cmd_launch)

    q = actions.add_parser("list", parents=[common], help="every job, newest first")
    q.set_defaults(func=cmd_list)

    q = actions.add_parser("status", parents=[common], help="state, progress and output of one job")
    q.add_argument("id", help="job id (or a unique start of it, or its SLURM job id)")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_status)

    q = actions.add_parser("cancel", parents=[common], help="cancel a queued or running job")
    q.add_argument("id")
    q.set_defaults(func=cmd_cancel)

    q = actions.add_parser("log", parents=[common], help="the end of a job's log")
    q.add_argument("id")
    q.add_argument("-n", "--lines", type=int, default=40, help="lines to show (0: the whole log)")
    q.set_defaults(func=cmd_log)
