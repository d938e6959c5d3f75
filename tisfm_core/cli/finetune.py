"""``finetune``: continue any run on new data or new outputs, into a new run."""

from __future__ import annotations

from ..progress import reporting
from ..specs import TRAIN_CHOICES, FinetuneTask
from .common import (
    UsageError,
    add_data,
    add_spec,
    add_status,
    add_training,
    data_spec,
    spec_or_flags,
    status,
    task_flag,
    training_settings,
)


def finetune_task(a):
    """The FinetuneTask of ``finetune``: from ``--spec`` or from the flags (not both)."""
    return spec_or_flags(a, FinetuneTask, lambda: FinetuneTask(
        data=data_spec(a).check_complete(), train=a.train, training=training_settings(a, init="reference"),
        motifs=a.motifs, half=a.half),
        missing=None if a.targets is not None else "needs --targets (or --spec TASK.json)")


def cmd_finetune(a):
    from ..finetune import finetune_run, resume_finetune

    callback = status(a)
    result = {}
    with reporting(callback, lambda: f"run written to {result['out']}"):
        if a.resume:
            if a.parent or a.out:
                raise UsageError("--resume reads the parent and the task from the child's "
                                 "request.json; drop PARENT and --out")
            result["out"] = resume_finetune(a.resume, verbose=not a.quiet, callback=callback)
        else:
            if not a.parent or not a.out:
                raise UsageError("finetune needs PARENT and --out CHILD (or --resume CHILD)")
            result["out"] = finetune_run(a.parent, a.out, finetune_task(a), force=a.force,
                                         verbose=not a.quiet, callback=callback)
    print(f"run written to {result['out']}")


def add_parsers(sub):
    p = sub.add_parser(
        "finetune", help="fine-tune any run (tiSFM, imported reference, AI-TAC) on new data or "
                         "new outputs into a new run; the parent is never written to",
        description="Start from the weights of PARENT and train the parameters --train names on "
                    "the data given. Outputs (target columns) the parent has keep their final-layer "
                    "rows; new ones are fitted by ridge regression on the parent's features first; "
                    "parent outputs absent from the targets are dropped.")
    p.add_argument("parent", nargs="?", metavar="PARENT", help="the run to start from (read only)")
    flags = {}
    add_data(p, flags)
    f = p.add_argument_group("fine-tune")
    task_flag(flags, f, "--train", default="all-but-kernels", choices=list(TRAIN_CHOICES),
               help="what trains: final (final layer), calibration (per-motif sigmoid scale and "
                    "bias + final layer), all-but-kernels (everything but the PWM kernels, default), "
                    "all (the PWM kernels too); AI-TAC: final or all-but-kernels")
    task_flag(flags, f, "--motifs", default=None,
               help="only for a tiSFM parent without motifs.meme: the motif file it was built from")
    add_training(p, flags, epochs_default=10, lr_default=1e-3, stages=False)
    o = p.add_argument_group("storage")
    task_flag(flags, o, "--half", action="store_true", help="store weights in float16")
    add_spec(p, flags, "data, what trains and training settings")
    p.add_argument("--out", help="the child run directory to create")
    p.add_argument("--resume", metavar="CHILD", help="continue an interrupted fine-tune in CHILD")
    p.add_argument("--force", action="store_true",
                   help="replace an existing run in --out (only once the new inputs proved readable)")
    p.add_argument("--quiet", action="store_true")
    add_status(p)
    p.set_defaults(func=cmd_finetune)
