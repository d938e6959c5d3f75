"""Flags shared by several commands, and the specs they build.

Each task's flags map onto one spec (:mod:`tisfm_core.specs`); ``--spec FILE`` reads the same
spec from JSON instead (what jobs write), so a job and a typed command run the same code.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import TisfmError
from ..specs import MODEL_VARIANTS, DataSpec, ModelSpec, PathSpec, TrainTask
from ..training import MIN_LR, PATIENCE, TrainSettings


class UsageError(TisfmError):
    """A wrong combination of flags (printed with the command's usage line)."""


def outputs_list(text):
    """``--outputs a,b`` as a list (None when not given)."""
    return None if text is None else [o.strip() for o in text.split(",") if o.strip()]


def add_status(p):
    p.add_argument("--status-file", help="keep a JSON progress file up to date (used by jobs)")


def add_sequences(p, *, targets=True, flags=None):
    """``--sequences``, ``--bed``, ``--genome`` (and ``--targets``); ``flags`` collects them as
    task flags (see :func:`add_spec`)."""
    g = p.add_argument_group("data")
    args = [("--sequences", "FASTA or two-column TSV (id, sequence)"),
            ("--bed", "BED/narrowPeak regions (summit-centred windows) instead of --sequences"),
            ("--genome", "genome FASTA for --bed (indexed with pyfaidx)")]
    if targets:
        args.append(("--targets", "targets TSV (header; first column ids) or an AI-TAC sample folder"))
    for name, text in args:
        action = g.add_argument(name, help=text)
        if flags is not None:
            flags[action.dest] = action.default
    return g


def task_flag(flags, group, *names, **kwargs):
    """Add a flag that goes into a task spec, remembering its default in ``flags``."""
    action = group.add_argument(*names, **kwargs)
    flags[action.dest] = action.default
    return action


def add_data(p, flags):
    """The data flags of a task: sequences (or BED + genome), targets, transform, outputs, folds."""
    g = add_sequences(p, flags=flags)
    task_flag(flags, g, "--transform", default="none",
               help="zscore | none | lineage:MAP.tsv | tree-diff:PARENTS.tsv (default none)")
    task_flag(flags, g, "--outputs", help="comma-separated subset of outputs to train on")
    task_flag(flags, g, "--folds", type=int, default=10)
    task_flag(flags, g, "--fold", type=int, default=0)
    return g


def add_spec(p, flags, what):
    """``--spec TASK.json`` (as jobs write it), which replaces the task ``flags``."""
    p.add_argument("--spec", metavar="TASK.json",
                   help=f"read {what} from a task file (as jobs write it) instead of the flags above")
    p.set_defaults(task_flags=flags)


def spec_file(a):
    """``(JSON object, folder)`` of ``--spec``, or None without it; refused next to a task flag
    (one of the two would be ignored)."""
    if not getattr(a, "spec", None):
        return None
    given = sorted(d for d, default in a.task_flags.items() if getattr(a, d, default) != default)
    if given:
        raise UsageError(f"--spec replaces the task flags; drop --{given[0].replace('_', '-')}")
    from ..atomic import read_json

    return read_json(a.spec, what="task file"), Path(a.spec).parent


def add_task(p, *, spec=True):
    """Data, model and training flags of ``train`` / ``cv`` (and ``--spec``)."""
    flags = {}
    add_data(p, flags)
    m = p.add_argument_group("model")
    task_flag(flags, m, "--motifs", default="jaspar:2024",
               help="motif file (MEME, JASPAR, TRANSFAC, HOMER) or jaspar:RELEASE (default jaspar:2024)")
    task_flag(flags, m, "--variant", default="full", choices=list(MODEL_VARIANTS))
    task_flag(flags, m, "--era", default="head", choices=["paper", "head"],
               help="kernel placement and attention biases of the reference era (default head)")
    task_flag(flags, m, "--attention-softmax", default="query", choices=["query", "key"],
               help="axis of the attention softmax: query (reference) or key (standard)")
    add_training(p, flags)
    o = p.add_argument_group("storage")
    task_flag(flags, o, "--half", action="store_true", help="store weights in float16")
    if spec:
        add_spec(p, flags, "data, model and training settings")


def add_training(p, flags, *, epochs_default=100, lr_default=0.01, stages=True):
    """Training flags (their defaults go into ``flags``); ``stages=False`` leaves out those of
    the protocol's second stage (``--finetune-epochs``, ``--finetune-lr``)."""
    t = p.add_argument_group("training")
    task_flag(flags, t, "--epochs", type=int, default=epochs_default,
               help="max epochs with frozen kernels" if stages else f"max epochs (default {epochs_default})")
    if stages:
        task_flag(flags, t, "--finetune-epochs", type=int, default=0,
                   help="epochs with unfrozen kernels after stage 1 (paper: 10; default 0)")
        task_flag(flags, t, "--finetune-lr", type=float, default=None,
                   help="learning rate of the fine-tuning stage (default lr / 10)")
    task_flag(flags, t, "--batch-size", type=int, default=256, help="sequences per batch")
    task_flag(flags, t, "--lr", type=float, default=lr_default, help=f"learning rate (default {lr_default:g})")
    task_flag(flags, t, "--weight-decay", type=float, default=0.01)
    task_flag(flags, t, "--penalty", default="none", choices=["none", "l1", "mcp"])
    task_flag(flags, t, "--lam", type=float, default=0.0, help="penalty strength on the final layer")
    task_flag(flags, t, "--mcp-b", type=float, default=3.0)
    task_flag(flags, t, "--patience", type=int, default=PATIENCE,
               help=f"early stopping: a stage ends after this many epochs without a lower "
                    f"validation loss (0: none; default {PATIENCE})")
    task_flag(flags, t, "--lr-patience", type=int, default=10)
    task_flag(flags, t, "--min-lr", type=float, default=MIN_LR)
    task_flag(flags, t, "--seed", type=int, default=0, help="random_state: init, batch order and split")
    task_flag(flags, t, "--device", default="auto", help="auto | cpu | cuda (default auto: CUDA when present)")
    task_flag(flags, t, "--precision", default="auto", choices=["auto", "fp32", "bf16"])
    task_flag(flags, t, "--compile", default="auto", choices=["auto", "on", "off"],
               help="fuse the motif block with torch.compile (auto: CPU, >= 100 motifs)")
    return t


def device_arg(value):
    """``--device auto`` is the API's ``device=None``."""
    return None if value in (None, "auto") else value


def training_settings(a, **extra):
    return TrainSettings(epochs=a.epochs, finetune_epochs=getattr(a, "finetune_epochs", 0),
                         batch_size=a.batch_size, lr=a.lr, finetune_lr=getattr(a, "finetune_lr", None),
                         weight_decay=a.weight_decay, penalty=a.penalty, lam=a.lam, mcp_b=a.mcp_b,
                         lr_patience=a.lr_patience, min_lr=a.min_lr, random_state=a.seed,
                         patience=None if a.patience == 0 else a.patience,
                         device=device_arg(a.device), precision=a.precision, compile=a.compile, **extra)


def data_spec(a):
    return DataSpec(targets=a.targets, sequences=a.sequences, bed=a.bed, genome=a.genome,
                    transform=a.transform, outputs=outputs_list(a.outputs), folds=a.folds, fold=a.fold)


def spec_or_flags(a, spec, build, missing=None):
    """A command's task: ``spec.from_dict`` of ``--spec`` (see :func:`spec_file`), else
    ``build()`` from the flags; ``missing`` is the usage error when a flag the task needs is
    absent."""
    given = spec_file(a)
    if given:
        return spec.from_dict(given[0], base=given[1])
    if missing:
        raise UsageError(missing)
    return build()


def task_from_args(a):
    """The TrainTask of ``train`` / ``cv``: from ``--spec`` or from the flags (not both)."""
    return spec_or_flags(a, TrainTask, lambda: TrainTask(
        data=data_spec(a).check_complete(),
        model=ModelSpec(variant=a.variant, motifs=a.motifs, era=a.era, attention_softmax=a.attention_softmax),
        training=training_settings(a), half=a.half),
        missing=None if a.targets is not None else "needs --targets (or --spec TASK.json)")


def add_path_flags(p):
    """The flags of a regularization path (and ``--spec``)."""
    flags = {}
    task_flag(flags, p, "--penalty", default="mcp", choices=["l1", "mcp"])
    task_flag(flags, p, "--lambdas", metavar="START:STOP:NUM",
              help="lambda grid; 0 (no penalty) is always added first")
    task_flag(flags, p, "--log", action="store_true", help="log-spaced lambda grid")
    task_flag(flags, p, "--mcp-b", type=float, default=3.0)
    task_flag(flags, p, "--epochs", type=int, default=20, help="max epochs per lambda (default 20)")
    task_flag(flags, p, "--lr", type=float, default=None,
              help="learning rate of the first lambda (default: the run's)")
    task_flag(flags, p, "--step-lr", type=float, default=None,
              help="learning rate of the warm-started lambdas (default lr/10)")
    task_flag(flags, p, "--mode", default="auto", choices=["auto", "fast", "slow"],
              help="fast: features computed once (default); slow: full forward every batch")
    task_flag(flags, p, "--batch-size", type=int, default=256, help="sequences per batch")
    task_flag(flags, p, "--device", default="auto", help="auto | cpu | cuda (default auto)")
    task_flag(flags, p, "--seed", type=int, default=0)
    add_spec(p, flags, "the path settings")


def path_spec(a):
    """The PathSpec of ``path``: from ``--spec`` or from the flags (not both)."""
    from ..path import parse_lambdas

    return spec_or_flags(a, PathSpec, lambda: PathSpec(
        lambdas=tuple(parse_lambdas(a.lambdas, log=a.log)), penalty=a.penalty, mcp_b=a.mcp_b,
        epochs=a.epochs, lr=a.lr, step_lr=a.step_lr, batch_size=a.batch_size, mode=a.mode,
        device=device_arg(a.device), random_state=a.seed),
        missing=None if a.lambdas else "needs --lambdas START:STOP:NUM (or --spec PATH.json)")


def status(a):
    """A StatusFile callback when --status-file is given, else None."""
    from ..progress import status_file

    return status_file(getattr(a, "status_file", None))

