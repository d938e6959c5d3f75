"""Task specifications: one dataclass per task, and the one place that names the choices.

A training task is a :class:`TrainTask` made of a :class:`DataSpec` (what to learn from), a
:class:`ModelSpec` (what to build) and :class:`~tisfm_core.training.TrainSettings` (how to
train); a fine-tune of an existing run is a :class:`FinetuneTask`; a regularization path is a
:class:`PathSpec`. The CLI builds them from flags
(:mod:`tisfm_core.cli`), the app from its forms, jobs serialise them to JSON (``to_dict``) and
runs record them (``request.json``). Every spec checks its values when it is made, so a bad
value is refused where it enters, with the field named.

Paths inside a spec are stored twice by ``to_dict(base)``: relative to ``base`` (the folder of
the file the spec is written into) and absolute. ``from_dict(data, base)`` takes the relative
form first, so an artifact moved together with its data still finds it, and the absolute one
as the fallback (an artifact moved without its data).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .errors import TisfmError, check_choice, check_integer, check_number
from .model import SOFTMAX_AXES, VARIANTS
from .motifs import ERAS

#: Every model a run can hold: the paper's tiSFM ablations, then the baselines.
MODEL_VARIANTS = (*VARIANTS, "linear", "aitac")
#: What each baseline is and is not, in a paragraph the app can show next to a comparison.
BASELINE_NOTES = {
    "linear": (
        "Linear baseline: ridge regression of each output on two features per motif of the run's "
        "own motif collection, the best log-odds match anywhere in the sequence (either strand) "
        "and the number of sites above a fixed null p-value (1e-3), standardised on the training "
        "split and fitted in closed form with the ridge strength chosen on the validation split "
        "(same split as every other run). It is the simplest model that shares tiSFM's motif "
        "vocabulary, so it shows what a final-layer ranking would look like without learned "
        "calibration, pooling, positions, attention or TF-TF interactions. It is not a sequence "
        "model beyond those features: it cannot see where a site lies, its spacing to another "
        "site or any motif outside the collection, and its one weight per motif (the sum of the "
        "two standardised coefficients) is an association, not an effect that holds the other "
        "motifs fixed. Use exact ISM for its attributions (TISM is refused: the site counts have "
        "no gradient)."),
    "aitac": (
        "AI-TAC baseline (Maslova et al. 2020): the three-layer CNN of the paper's comparison "
        "(3.2 million parameters at 300 bp), learning its own filters from one-hot sequence, "
        "trained here with the same data, split, loss (MSE) and best-validation rule as tiSFM, "
        "AdamW at lr 1e-3 as in the tiSFM repository's script. It is the paper's reference for "
        "prediction accuracy, not an interpretable model: no parameter is named by a TF. It was "
        "designed for ~300,000 ImmGen OCRs; on the few thousand regions of the synthetic demo "
        "atlas it memorises the training split within an epoch or two (training MSE falls while "
        "validation MSE rises), so its test R2 there says how little it can learn from so few "
        "regions, not how AI-TAC performs on real data. bench/aitac_size.py measures this on one "
        "planted 10-mer (best possible R2 0.50): validation R2 -0.05 after training on 5,000 "
        "regions (training R2 0.83, memorised) and 0.44 on 40,000."),
}
#: Target transforms; "lineage" and "tree-diff" take a table: ``lineage:MAP.tsv``.
TRANSFORMS = ("none", "zscore", "lineage", "tree-diff")
TASK_FORMAT = "tisfm-train-task"
TASK_VERSION = 2


# -- portable paths -----------------------------------------------------------------------------

def store_path(path, base):
    """``{"path": absolute, "rel": relative to base}`` for a path (None stays None)."""
    if path is None:
        return None
    absolute = Path(path).expanduser().resolve()
    out = {"path": str(absolute)}
    if base is not None:
        out["rel"] = os.path.relpath(absolute, Path(base).resolve())
    return out


def stored_path(stored, base):
    """The path a :func:`store_path` entry names now: relative to ``base`` when that exists, else
    the absolute form (also for plain strings written by older files)."""
    if stored is None:
        return None
    if isinstance(stored, str):
        return _check_path_field(stored, "a stored path")
    if not isinstance(stored, dict) or not isinstance(stored.get("path"), str):
        raise TisfmError(f"a stored path must be an object with 'path' (and 'rel'), got "
                         f"{type(stored).__name__}")
    path = _check_path_field(stored["path"], "a stored path")
    rel = stored.get("rel")
    if base is not None and isinstance(rel, str) and rel.strip() and "\x00" not in rel:
        candidate = Path(base) / rel
        try:
            if candidate.exists():
                return str(candidate.resolve())
        except (OSError, RuntimeError):   # a name too long, a link loop
            pass
    return path


def _check_path_field(value, name):
    if value is None:
        return None
    if not isinstance(value, (str, Path)) or not str(value).strip():
        raise TisfmError(f"{name} must be a file path, got {value!r}")
    if "\x00" in str(value):
        raise TisfmError(f"{name} contains a NUL byte")
    return str(value)


def split_transform(spec):
    """(kind, table path or None) of a transform spec such as ``tree-diff:parents.tsv``."""
    kind, sep, table = str(spec).partition(":")
    kind = kind.strip().lower()
    check_choice(kind, "transform", TRANSFORMS)
    needs_table = kind in ("lineage", "tree-diff")
    if needs_table and not table.strip():
        raise TisfmError(f"transform {kind} needs a table: {kind}:TABLE.tsv")
    if sep and not needs_table:
        raise TisfmError(f"transform {kind} takes no table (got {spec!r})")
    return kind, table.strip() or None


# -- the specs ----------------------------------------------------------------------------------

@dataclass
class DataSpec:
    """The data of a training task.

    Parameters
    ----------
    targets : str
        Targets TSV (header; first column region ids) or an AI-TAC sample folder.
    sequences : str, optional
        FASTA or two-column TSV (id, sequence). Exactly one of ``sequences`` and ``bed``.
    bed, genome : str, optional
        BED / narrowPeak regions (summit-centred windows) and the genome FASTA they index.
    transform : str, default "none"
        One of :data:`TRANSFORMS`, the table-taking ones as ``lineage:MAP.tsv`` /
        ``tree-diff:PARENTS.tsv``.
    outputs : list of str or int, optional
        Train on these outputs only (names or positions of the target columns), in this order.
    folds, fold : int, default 10, 0
        Seeded k-fold split (8 train / 1 validation / 1 test folds for 10); the split's seed
        is the training ``random_state``.
    """

    targets: str | None = None
    sequences: str | None = None
    bed: str | None = None
    genome: str | None = None
    transform: str = "none"
    outputs: list | None = None
    folds: int = 10
    fold: int = 0

    def __post_init__(self):
        for key in ("targets", "sequences", "bed", "genome"):
            setattr(self, key, _check_path_field(getattr(self, key), key))
        if self.sequences is not None and self.bed is not None:
            raise TisfmError("give either sequences or a BED file with a genome, not both")
        if (self.bed is None) != (self.genome is None):
            raise TisfmError("a BED file needs a genome FASTA and a genome needs a BED file")
        kind, table = split_transform(self.transform)
        self.transform = kind if table is None else f"{kind}:{_check_path_field(table, 'transform table')}"
        if self.outputs is not None:
            if isinstance(self.outputs, str) or not all(
                    (isinstance(o, str) and o) or (isinstance(o, int) and not isinstance(o, bool) and o >= 0)
                    for o in self.outputs):
                raise TisfmError(f"outputs must be a list of output names or positions, got {self.outputs!r}")
            if not self.outputs:
                raise TisfmError("outputs names no output")
            if len(set(self.outputs)) != len(self.outputs):
                raise TisfmError("outputs names an output twice")
            self.outputs = list(self.outputs)
        self.folds = check_integer(self.folds, "folds", 3)
        self.fold = check_integer(self.fold, "fold", 0)
        if self.fold >= self.folds:
            raise TisfmError(f"fold must be below folds ({self.folds}), got {self.fold}")

    def check_complete(self):
        """Refuse a spec that names no targets or no sequences (training needs both)."""
        if self.targets is None:
            raise TisfmError("no targets given (--targets)")
        if self.sequences is None and self.bed is None:
            raise TisfmError("no sequences given (--sequences, or --bed with --genome)")
        return self

    @property
    def transform_table(self):
        return split_transform(self.transform)[1]

    def load(self, *, length=None, outputs=None, verbose=False):
        """Read, match and transform the data: a :class:`~tisfm_core.dataset.Dataset`."""
        from .dataset import load_dataset

        self.check_complete()
        return load_dataset(self.sequences, self.targets, bed=self.bed, genome=self.genome,
                            length=length, transform=self.transform,
                            outputs=self.outputs if outputs is None else outputs, verbose=verbose)

    def to_dict(self, base=None):
        out = asdict(self)
        for key in ("targets", "sequences", "bed", "genome"):
            out[key] = store_path(out[key], base)
        kind, table = split_transform(self.transform)
        out["transform"] = {"kind": kind, "table": store_path(table, base)}
        return out

    @classmethod
    def from_dict(cls, data, base=None):
        data = _object(data, "data")
        values = _known(cls, data, "data")
        for key in ("targets", "sequences", "bed", "genome"):
            values[key] = stored_path(values.get(key), base)
        transform = values.get("transform", "none")
        if isinstance(transform, dict):
            table = stored_path(transform.get("table"), base)
            values["transform"] = str(transform.get("kind")) + (f":{table}" if table else "")
        return cls(**values)


@dataclass
class ModelSpec:
    """The model of a training task.

    Parameters
    ----------
    variant : str, default "full"
        One of :data:`MODEL_VARIANTS`: a tiSFM variant, "linear" (ridge regression on per-motif
        max score and site count, :mod:`tisfm_core.linear`) or "aitac" (the AI-TAC CNN).
    motifs : str, default "jaspar:2024"
        A motif file (MEME, JASPAR, TRANSFAC, HOMER) or ``jaspar:RELEASE``; not used by the
        AI-TAC baseline.
    era : {"paper", "head"}, default "head"
        Kernel placement and attention biases of the reference era.
    attention_softmax : {"query", "key"}, default "query"
        Axis of the attention softmax (the reference normalises over queries).
    """

    variant: str = "full"
    motifs: str | None = "jaspar:2024"
    era: str = "head"
    attention_softmax: str = "query"

    def __post_init__(self):
        check_choice(self.variant, "variant", MODEL_VARIANTS)
        check_choice(self.era, "era", ERAS)
        check_choice(self.attention_softmax, "attention_softmax", SOFTMAX_AXES)
        self.motifs = _check_path_field(self.motifs, "motifs")

    @property
    def uses_motifs(self):
        return self.variant != "aitac"

    def load_motifs(self):
        """The motif set (None for the AI-TAC baseline)."""
        from .motifs import load_motifs

        if not self.uses_motifs:
            return None
        if not self.motifs:
            raise TisfmError("no motif collection given (--motifs FILE or jaspar:RELEASE)")
        return load_motifs(self.motifs)

    def build(self, *, motifs, n_outputs, length, random_state=0):
        """A fresh, untrained model of this spec (kernels from ``motifs``)."""
        import torch

        from .aitac import AITAC
        from .model import TISFM, TISFMConfig

        if self.variant == "aitac":
            torch.manual_seed(random_state)
            return AITAC(n_outputs=n_outputs, length=length)
        if self.variant == "linear":
            from .linear import LinearBaseline

            return LinearBaseline.from_motifs(motifs, n_outputs=n_outputs, length=length)
        config = TISFMConfig.for_variant(self.variant, n_motifs=len(motifs), n_outputs=n_outputs,
                                         length=length, kernel_width=max(motifs.max_width, 1),
                                         era=self.era, attention_softmax=self.attention_softmax)
        return TISFM(config, motifs.kernels(era=self.era), random_state=random_state)

    def to_dict(self, base=None):
        return {**asdict(self), "motifs": _motif_field(self.motifs, base)}

    @classmethod
    def from_dict(cls, data, base=None):
        values = _known(cls, _object(data, "model"), "model")
        values["motifs"] = stored_path(values.get("motifs"), base)
        return cls(**values)


@dataclass
class TrainTask:
    """One training: data, model and training settings, plus how the run is stored.

    Parameters
    ----------
    data : DataSpec
    model : ModelSpec
    training : TrainSettings
    group : str, optional
        Name of the set of runs this one belongs to (cross-validation), stored in config.json.
    half : bool, default False
        Store weights in float16.
    """

    data: DataSpec
    model: ModelSpec = field(default_factory=ModelSpec)
    training: object = None
    group: str | None = None
    half: bool = False

    def __post_init__(self):
        from .training import TrainSettings

        if not isinstance(self.data, DataSpec):
            raise TisfmError("a training task needs a DataSpec")
        if not isinstance(self.model, ModelSpec):
            raise TisfmError("a training task needs a ModelSpec")
        self.training = TrainSettings() if self.training is None else self.training
        if not isinstance(self.training, TrainSettings):
            raise TisfmError("a training task needs TrainSettings")
        if self.group is not None and (not isinstance(self.group, str) or "\x00" in self.group):
            raise TisfmError(f"group must be a name, got {self.group!r}")
        if not isinstance(self.half, bool):
            raise TisfmError(f"half must be true or false, got {self.half!r}")
        if self.training.finetune_epochs and self.model.variant in ("aitac", "linear"):
            name = "AI-TAC" if self.model.variant == "aitac" else "linear"
            raise TisfmError(f"the {name} baseline has no motif kernels to fine-tune "
                             "(set finetune_epochs to 0)")

    def replace(self, **changes):
        """A copy with some top-level fields replaced (``data``, ``group``, ...)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return TrainTask(**{**values, **changes})

    def to_dict(self, base=None):
        return {"format": TASK_FORMAT, "format_version": TASK_VERSION,
                "data": self.data.to_dict(base), "model": self.model.to_dict(base),
                "training": self.training.to_dict(), "group": self.group, "half": self.half}

    @classmethod
    def from_dict(cls, data, base=None):
        from .atomic import check_format
        from .training import TrainSettings

        data = _object(data, "training task")
        check_format(data, fmt=TASK_FORMAT, version=TASK_VERSION, where="the task",
                     what="training task")
        return cls(data=DataSpec.from_dict(data.get("data"), base),
                   model=ModelSpec.from_dict(data.get("model", {}), base),
                   training=TrainSettings.from_dict(_object(data.get("training", {}), "training")),
                   group=data.get("group"), half=data.get("half", False))


#: What a fine-tune trains, from the fewest parameters to all (see :class:`FinetuneTask`).
TRAIN_CHOICES = ("final", "calibration", "all-but-kernels", "all")
FINETUNE_FORMAT = "tisfm-finetune-task"
FINETUNE_VERSION = 1


def _motif_field(motifs, base):
    """A motif spec for JSON: ``jaspar:RELEASE`` as is, a file as a move-safe stored path."""
    return motifs if not motifs or motifs.startswith("jaspar:") else store_path(motifs, base)


@dataclass
class FinetuneTask:
    """A fine-tune of an existing run (the parent, given to
    :func:`tisfm_core.finetune.finetune_run`): the data, what trains, and how.

    Parameters
    ----------
    data : DataSpec
        Sequences and targets, given as for a training. Target columns the parent has keep
        their final-layer rows; other columns are new outputs, whose rows are fitted by ridge
        regression on the parent's features (pooled and gated motif activations; for AI-TAC
        the hidden layer before the output layer) of the training split before training;
        parent outputs missing from the targets are dropped.
    train : {"final", "calibration", "all-but-kernels", "all"}, default "all-but-kernels"
        The parameters that train; all others keep the parent's values exactly.

        * "final": the final layer, weights and bias (AI-TAC: its output layer ``fc3``).
        * "calibration": the final layer and the per-channel calibration of the motif
          sigmoid (``scale`` and ``bias`` of every kernel channel, both strands): the motifs'
          sensitivity adapts, the kernels, pooling and interactions do not. tiSFM only.
        * "all-but-kernels": every parameter except the PWM kernels (the paper's first
          stage): positional table, attention, calibration, pooling, interaction and final
          layer. For AI-TAC, which has no PWM kernels, every parameter.
        * "all": every parameter, the PWM kernels included (the paper's second stage); see
          how far they drift with :func:`tisfm_core.analysis.kernel_drift`. tiSFM only.
    training : TrainSettings, optional
        Epochs, learning rate, batch size, penalty, device, seed (the split's too); default
        10 epochs at lr 1e-3. One stage of ``epochs`` epochs at ``lr`` trains what ``train``
        names, so ``finetune_epochs``, ``finetune_lr`` and ``final_layer_only`` are refused;
        ``init`` is always "reference": the start is the parent's weights.
    motifs : str, optional
        The motif file (or ``jaspar:RELEASE``) a tiSFM parent was built from, only for a
        parent without its own motifs.meme.
    half : bool, default False
        Store the child's weights in float16.
    """

    data: DataSpec
    train: str = "all-but-kernels"
    training: object = None
    motifs: str | None = None
    half: bool = False

    def __post_init__(self):
        from dataclasses import replace

        from .training import TrainSettings

        if not isinstance(self.data, DataSpec):
            raise TisfmError("a fine-tune task needs a DataSpec")
        check_choice(self.train, "train", TRAIN_CHOICES)
        if self.training is None:
            self.training = TrainSettings(epochs=10, lr=1e-3)
        if not isinstance(self.training, TrainSettings):
            raise TisfmError("a fine-tune task needs TrainSettings")
        t = self.training
        if t.finetune_epochs or t.finetune_lr is not None or t.final_layer_only:
            raise TisfmError("a fine-tune has one stage: say what trains with train "
                             f"({', '.join(TRAIN_CHOICES)}) and how long with epochs, not with "
                             "finetune_epochs, finetune_lr or final_layer_only")
        self.training = replace(t, init="reference")
        self.motifs = _check_path_field(self.motifs, "motifs")
        if not isinstance(self.half, bool):
            raise TisfmError(f"half must be true or false, got {self.half!r}")

    def to_dict(self, base=None):
        return {"format": FINETUNE_FORMAT, "format_version": FINETUNE_VERSION,
                "data": self.data.to_dict(base), "train": self.train,
                "training": self.training.to_dict(), "motifs": _motif_field(self.motifs, base),
                "half": self.half}

    @classmethod
    def from_dict(cls, data, base=None):
        from .atomic import check_format
        from .training import TrainSettings

        data = _object(data, "fine-tune task")
        check_format(data, fmt=FINETUNE_FORMAT, version=FINETUNE_VERSION, where="the task",
                     what="fine-tune task")
        values = _known(cls, data, "fine-tune task")
        return cls(data=DataSpec.from_dict(values.get("data"), base),
                   train=values.get("train", "all-but-kernels"),
                   training=TrainSettings.from_dict(_object(values.get("training", {}), "training")),
                   motifs=stored_path(values.get("motifs"), base),
                   half=values.get("half", False))


PATH_MODES = ("auto", "fast", "slow")
#: Largest lambda grid a path takes (each lambda trains the final layer for up to ``epochs``).
MAX_LAMBDAS = 200


@dataclass
class PathSpec:
    """A regularization path of a run's final layer (see :mod:`tisfm_core.path`).

    Parameters
    ----------
    lambdas : sequence of float
        Penalty strengths >= 0; sorted ascending and de-duplicated (at most :data:`MAX_LAMBDAS`).
        Lambda 0 trains without penalty (AdamW, decoupled weight decay 0.01).
    penalty : {"l1", "mcp"}, default "mcp"
    mcp_b : float, default 3.0
        MCP concavity b (> 1).
    epochs : int, default 20
        Maximum epochs per lambda.
    lr : float, optional
        Learning rate of the first lambda; default the run's training lr (else 0.01).
    step_lr : float, optional
        Learning rate of the warm-started lambdas; default ``lr / 10``.
    batch_size : int, default 256
        Sequences per batch.
    mode : {"auto", "fast", "slow"}, default "auto"
        "fast" computes the frozen features once; "slow" runs the whole model every batch
        (same weights up to float error); "auto" is "fast".
    lr_patience : int, default 2
        Epochs without validation gain before the learning rate is divided by 10.
    patience : int, default 5
        Early stopping per lambda.
    device : str, optional
        None: CUDA when present.
    random_state : int, default 0
        Seeds the batch order.
    """

    lambdas: tuple = (0.0,)
    penalty: str = "mcp"
    mcp_b: float = 3.0
    epochs: int = 20
    lr: float | None = None
    step_lr: float | None = None
    batch_size: int = 256
    mode: str = "auto"
    lr_patience: int = 2
    patience: int = 5
    device: str | None = None
    random_state: int = 0

    def __post_init__(self):
        from .prox import PATH_PENALTIES
        from .training import MAX_EPOCHS

        check_choice(self.penalty, "penalty", PATH_PENALTIES)
        check_choice(self.mode, "mode", PATH_MODES)
        self.lambdas = check_lambdas(self.lambdas)
        self.mcp_b = check_number(self.mcp_b, "mcp_b", low=1, low_open=True)
        self.epochs = check_integer(self.epochs, "epochs")
        if self.epochs > MAX_EPOCHS:
            raise TisfmError(f"at most {MAX_EPOCHS} epochs per lambda, got {self.epochs}")
        self.batch_size = check_integer(self.batch_size, "batch_size")
        self.patience = check_integer(self.patience, "patience")
        self.lr_patience = check_integer(self.lr_patience, "lr_patience", 0)
        self.random_state = check_integer(self.random_state, "random_state", 0)
        self.lr = check_number(self.lr, "lr", low=0, low_open=True, allow_none=True)
        self.step_lr = check_number(self.step_lr, "step_lr", low=0, low_open=True, allow_none=True)

    @property
    def log_grid(self):
        """Whether the positive lambdas are evenly spaced in log (see :func:`is_log_grid`)."""
        return is_log_grid(self.lambdas)

    def to_dict(self, base=None):
        """JSON-ready fields (``base`` is accepted like the other specs'; a path spec holds no
        paths)."""
        return {**asdict(self), "lambdas": list(self.lambdas)}

    @classmethod
    def from_dict(cls, data, base=None):
        """``base`` is accepted as by every task spec; a path spec holds no paths."""
        return cls(**_known(cls, _object(data, "path settings"), "path settings"))


def is_log_grid(lambdas):
    """Whether the positive lambdas (at least 3) are evenly spaced in log and not in linear
    scale: such a grid is drawn on a log axis."""
    positive = sorted(float(v) for v in lambdas if v > 0)
    if len(positive) < 3:
        return False
    ratios = [b / a for a, b in zip(positive, positive[1:])]
    diffs = [b - a for a, b in zip(positive, positive[1:])]
    return max(ratios) / min(ratios) < 1.01 and max(diffs) / min(diffs) > 1.5


def check_lambdas(lambdas):
    """Lambdas as a sorted tuple of distinct finite floats >= 0 (at most :data:`MAX_LAMBDAS`)."""
    if isinstance(lambdas, (str, bytes)):
        raise TisfmError("lambdas must be a list of numbers (parse a START:STOP:NUM grid with "
                         "tisfm_core.path.parse_lambdas)")
    try:
        values = [check_number(v, "lambda", low=0) for v in lambdas]
    except TypeError:
        raise TisfmError(f"lambdas must be a list of numbers, got {lambdas!r}") from None
    if not values:
        raise TisfmError("the lambda grid is empty")
    values = tuple(sorted(set(values)))
    if len(values) > MAX_LAMBDAS:
        raise TisfmError(f"{len(values)} lambdas; a path takes at most {MAX_LAMBDAS}")
    return values


# -- helpers ------------------------------------------------------------------------------------

def _object(data, what):
    if not isinstance(data, dict):
        raise TisfmError(f"the {what} must be a JSON object, got {type(data).__name__}")
    return data


def _known(cls, data, what):
    """The fields of ``cls`` in ``data``; an unknown key is refused (a typo would be ignored)."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names - {"format", "format_version"})
    if unknown:
        raise TisfmError(f"the {what} has unknown field(s) {', '.join(map(repr, unknown))}")
    return {k: v for k, v in data.items() if k in names}

