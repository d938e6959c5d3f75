"""Training: the paper's protocol with proximal Adam, checkpoints every epoch and exact resume.

Protocol (reference document, section 4): Adam (AdamW, weight decay 0.01, when no penalty) at
lr 0.01; the learning rate is divided by 10 after ``lr_patience`` epochs without validation
improvement and training stops once it falls below ``min_lr`` (5e-7) or after ``epochs``.
Stage 1 trains with frozen PWM kernels; an optional stage 2 unfreezes them for
``finetune_epochs`` epochs, starting from the best stage-1 weights. The best-validation weights
are kept. With a penalty (L1 or MCP) the final layer's weights get a proximal step.

The loop feeds uint8 index arrays and one-hot encodes each batch on the device, keeps losses on
the device (one host sync per epoch) and can run under DistributedDataParallel.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import native
from .atomic import atomic_write, read_json, write_json
from .devices import PRECISIONS, conv_precision, keep_freed_memory, resolve_device
from .errors import TisfmError, check_choice, check_integer, check_number
from .fused import motif_conv
from .metrics import regression_metrics
from .prox import PENALTIES, ProxAdam
from .sequences import one_hot_torch

#: The paper's stopping threshold: a stage ends once its learning rate falls below it.
MIN_LR = 5e-7
#: Most epochs a stage may be asked for (a typed 10**9 would never end).
MAX_EPOCHS = 10_000
#: Default early-stopping patience (epochs without a lower validation loss), chosen by the
#: recovery study (bench/README.md).
PATIENCE = 3
INITS = ("data", "reference")
COMPILE_CHOICES = ("auto", "on", "off")


@dataclass
class TrainSettings:
    """Training options (all stored in the run's config.json).

    Parameters
    ----------
    epochs : int, default 100
        Maximum epochs of stage 1 (frozen kernels); training usually stops earlier on ``min_lr``.
    finetune_epochs : int, default 0
        Epochs of stage 2 with trainable kernels (paper: about 10).
    batch_size : int, default 256
    lr : float, default 0.01
    finetune_lr : float or None, default None
        Learning rate of stage 2; None uses ``lr / 10`` (Adam steps of 0.01 are large next to
        PWM probabilities and would wipe out the motifs the model is built on).
    weight_decay : float, default 0.01
        Decoupled weight decay when no penalty is used (the reference's AdamW default).
    penalty : {"none", "l1", "mcp"}, default "none"
        Penalty on the final layer's weights, applied by a proximal step.
    lam : float, default 0.0
        Penalty strength lambda.
    mcp_b : float, default 3.0
        MCP concavity parameter b (> 1).
    lr_patience : int, default 10
        Epochs without validation gain before the learning rate is divided by 10.
    min_lr : float, default 5e-7
        Training stops once the learning rate is below this.
    patience : int or None, default PATIENCE
        Early stopping: a stage ends after this many epochs without a lower validation loss
        (its best weights are kept). None leaves stopping to ``min_lr`` and ``epochs``.
    random_state : int, default 0
        Seeds the initialisation, the batch order and the k-fold split.
    device : str, optional
        "cpu", "cuda" or "cuda:N"; None (or "auto") uses CUDA when present.
    precision : {"auto", "fp32", "bf16"}, default "auto"
        Motif-convolution arithmetic on CPU ("auto": bf16 where the CPU has AMX, else fp32).
        CUDA uses bf16 autocast unless "fp32".
    compile : {"auto", "on", "off"}, default "auto"
        Fuse the element-wise work of the motif block with ``torch.compile`` (about 2x faster
        training steps on CPU, after a few seconds of compilation per model shape). "auto": on
        for CPU training of models with at least ``COMPILE_MIN_MOTIFS`` motifs whose block does
        not run :mod:`tisfm_core.native`'s kernels (which need no compilation per shape: fp32
        blocks where a C++ compiler is found), so in practice for the bf16 block on AMX CPUs.
    final_layer_only : bool, default False
        Train only the final layer (everything else frozen).
    init : {"data", "reference"}, default "data"
        "reference" keeps the model's weights as they are (the reference's initialisation of
        a new model; the parent's weights in a fine-tune). "data" (see
        :func:`initialize_from_data`) starts the residual branches at zero, calibrates each
        motif's sigmoid on the training sequences and fits the final layer by ridge regression,
        so that training starts from a model that already uses its motifs.
    """

    epochs: int = 100
    finetune_epochs: int = 0
    batch_size: int = 256
    lr: float = 0.01
    finetune_lr: float | None = None
    weight_decay: float = 0.01
    penalty: str = "none"
    lam: float = 0.0
    mcp_b: float = 3.0
    lr_patience: int = 10
    min_lr: float = MIN_LR
    patience: int | None = PATIENCE
    random_state: int = 0
    device: str | None = None
    precision: str = "auto"
    compile: str = "auto"
    final_layer_only: bool = False
    init: str = "data"

    def __post_init__(self):
        check_choice(self.init, "init", INITS)
        check_choice(self.compile, "compile", COMPILE_CHOICES)
        check_choice(self.penalty, "penalty", PENALTIES)
        check_choice(self.precision, "precision", PRECISIONS)
        self.epochs = check_integer(self.epochs, "epochs", 0)
        self.finetune_epochs = check_integer(self.finetune_epochs, "finetune_epochs", 0)
        if self.epochs > MAX_EPOCHS or self.finetune_epochs > MAX_EPOCHS:
            raise TisfmError(f"at most {MAX_EPOCHS} epochs per stage, got "
                             f"{max(self.epochs, self.finetune_epochs)}")
        self.batch_size = check_integer(self.batch_size, "batch_size")
        self.lr = check_number(self.lr, "lr", low=0, low_open=True)
        self.finetune_lr = check_number(self.finetune_lr, "finetune_lr", low=0, low_open=True,
                                        allow_none=True)
        self.weight_decay = check_number(self.weight_decay, "weight_decay", low=0)
        self.lam = check_number(self.lam, "lam", low=0)
        self.mcp_b = check_number(self.mcp_b, "mcp_b", low=1, low_open=True)
        self.lr_patience = check_integer(self.lr_patience, "lr_patience", 0)
        self.min_lr = check_number(self.min_lr, "min_lr", low=0, low_open=True)
        if self.patience is not None:
            self.patience = check_integer(self.patience, "patience")
        self.random_state = check_integer(self.random_state, "random_state", 0)
        if self.device is not None and not isinstance(self.device, str):
            raise TisfmError(f"device must be a name such as cpu or cuda, got {self.device!r}")
        if not isinstance(self.final_layer_only, bool):
            raise TisfmError(f"final_layer_only must be true or false, got {self.final_layer_only!r}")
        if self.epochs + self.finetune_epochs == 0:
            raise TisfmError("nothing to train: epochs and finetune_epochs are both 0")

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, data):
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TisfmError(f"unknown training option(s) {', '.join(map(repr, unknown))}")
        return cls(**data)


@dataclass
class Batches:
    """Training data on the device: uint8 sequence indices (N, L) and float targets (N, R)."""

    indices: torch.Tensor
    targets: torch.Tensor

    @classmethod
    def from_arrays(cls, indices, targets, device):
        device = torch.device(device)
        idx = torch.from_numpy(np.ascontiguousarray(indices, dtype=np.uint8))
        tgt = torch.from_numpy(np.ascontiguousarray(targets, dtype=np.float32))
        if device.type == "cuda":
            # 300 bytes a region: even the full atlas (512k regions) fits on the GPU at once
            idx, tgt = idx.pin_memory().to(device, non_blocking=True), tgt.pin_memory().to(device)
        return cls(idx, tgt)

    def __len__(self):
        return self.indices.shape[0]


def _autocast(device, precision):
    if device.type == "cuda" and precision != "fp32":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


@contextmanager
def evaluation(model, device=None, precision="fp32"):
    """``model`` in eval mode on ``device`` with its motif convolution in ``precision``; the
    mode, precision and device it had are restored afterwards (the one place that does this).

    Parameters
    ----------
    model : torch.nn.Module
    device : str or torch.device, optional
        None uses CUDA when present.
    precision : {"fp32", "bf16", "auto"}, default "fp32"

    Yields
    ------
    torch.device
    """
    device = resolve_device(device)
    first = next(model.parameters(), None)
    old_device = None if first is None else first.device
    was_training = model.training
    old_precision = getattr(model, "precision", None)
    model.to(device).eval()
    if old_precision is not None:
        model.precision = conv_precision(device, precision)
    try:
        yield device
    finally:
        if old_precision is not None:
            model.precision = old_precision
        model.train(was_training)
        if old_device is not None and old_device != device:
            model.to(old_device)


def predict_batches(model, indices, *, batch_size=512, device=None, precision="fp32"):
    """Predictions for uint8 index arrays, streamed in batches.

    Parameters
    ----------
    model : torch.nn.Module
    indices : np.ndarray or torch.Tensor, uint8, shape (N, L)
    batch_size : int, default 512
        Sequences per forward pass.
    device : str or torch.device, optional
        None uses CUDA when present.
    precision : {"fp32", "bf16", "auto"}, default "fp32"

    Returns
    -------
    np.ndarray, float32, shape (N, n_outputs)
    """
    batch_size = check_integer(batch_size, "batch_size")
    out = []
    idx = torch.as_tensor(indices)
    with evaluation(model, device, precision) as dev, torch.inference_mode(), _autocast(dev, precision):
        for start in range(0, idx.shape[0], batch_size):
            x = one_hot_torch(idx[start:start + batch_size].to(dev))
            out.append(model(x).float().cpu())
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(out).numpy()


def evaluate_arrays(model, indices, targets, *, batch_size=512, device=None, precision="fp32"):
    """Per-output MSE, R2 and Pearson of ``model`` on all given samples (sums, not batch means)."""
    pred = predict_batches(model, indices, batch_size=batch_size, device=device, precision=precision)
    return regression_metrics(pred, np.asarray(targets, dtype=np.float32))


@torch.no_grad()
def initialize_from_data(model, indices, targets, *, n_samples=2048, quantile=0.999, sharpness=3.0,
                         ridge=0.3, random_state=0):
    """Data-driven start for a tiSFM (the reference's own initialisation learns very slowly).

    With probability kernels the raw motif scores sit around 2-3 and the sigmoid is saturated
    at 0.9 for every position, the N(0, 1) positional table and the attention's residual add
    noise of the size of the signal, and pooled features vary by about 1% between sequences,
    so the final layer needs weights of ~100 that Adam at lr 0.01 reaches only after ~10^4 steps.
    Here:

    1. the positional table and the attention's output projection start at zero, so the
       augmented input equals the one-hot input (both still train: zero-initialised residuals);
    2. each channel's calibration maps its ``quantile`` score on the training sequences to 0 and
       one standard deviation to ``sharpness`` units (background near 0, motif matches near 1);
    3. the final layer is the ridge-regression fit of the targets on the initial features.

    Parameters
    ----------
    model : TISFM
    indices : np.ndarray, uint8, shape (N, L)
        Training sequences (only training data: no leakage into validation or test).
    targets : np.ndarray, float32, shape (N, R)
    n_samples : int, default 2048
        Sequences used (a seeded random subset when N is larger).
    quantile, sharpness, ridge : float
        Calibration quantile, slope in standard deviations, ridge strength relative to the
        mean feature variance. The ridge is strong on purpose: motif collections hold families
        of near-identical motifs (E-boxes, homeoboxes), and a weak ridge gives them large
        opposite weights that training then keeps, which makes the final layer unreadable.
    random_state : int, default 0
    """
    if not hasattr(model, "kernels"):
        return model
    device = next(model.parameters()).device
    pick = sample_rows(len(indices), n_samples, random_state)
    x = one_hot_torch(torch.as_tensor(indices[pick]).to(device))
    y = torch.as_tensor(np.asarray(targets)[pick], dtype=torch.float64, device=device)
    if model.position_emb is not None:
        model.position_emb.weight.zero_()
    if model.attention is not None:
        model.attention.unify.zero_()
        model.attention.unify_bias.zero_()
    xa = torch.cat([model.augment_input(c) for c in x.split(256)])
    n_channels = model.kernels.shape[0]
    sd = torch.empty(n_channels, dtype=torch.float64, device=device)
    q = torch.empty(n_channels, dtype=torch.float64, device=device)
    # a block of channels at a time: all scores of 862 motifs in float64 would take 8 GB, and a
    # block of 16 keeps the transient (scores, their transpose, quantile's copy) near 300 MB
    for start in range(0, n_channels, 16):
        kernels = model.kernels[start:start + 16]
        scores = torch.cat([motif_conv(c, kernels, model.precision).double() for c in xa.split(256)])
        flat = scores.transpose(0, 1).reshape(kernels.shape[0], -1)   # (channels, n * Lc)
        if flat.shape[1] > 2 ** 20:  # torch.quantile's size limit; a strided subsample is plenty
            flat = flat[:, :: math.ceil(flat.shape[1] / 2 ** 20)]
        sd[start:start + 16] = flat.std(dim=1)
        q[start:start + 16] = torch.quantile(flat, quantile, dim=1)
    real = sd > 1e-6  # the zero padding channels keep scale 1, bias 0
    scale = torch.where(real, sharpness / sd.clamp(min=1e-6), torch.ones_like(sd))
    model.scale.copy_(scale.float())
    model.bias.copy_(torch.where(real, -scale * q, torch.zeros_like(q)).float())
    feats = torch.cat([model.features(c).double() for c in x.split(256)])
    weight, bias = ridge_fit(feats, y, ridge=ridge)
    model.final.weight.copy_(weight.float())
    model.final.bias.copy_(bias.float())
    return model


def sample_rows(n, n_samples=2048, random_state=0):
    """Sorted row indices of a seeded random subset of ``min(n_samples, n)`` of ``n`` rows (the
    sequences a data-driven fit looks at)."""
    rng = np.random.default_rng(random_state)
    return np.sort(rng.choice(n, size=min(n_samples, n), replace=False))


@torch.no_grad()
def ridge_fit(features, targets, *, ridge=0.3):
    """Ridge regression with intercept of targets on features: the final layer of a data-driven
    start (:func:`initialize_from_data`) and of new outputs of a fine-tune.

    Parameters
    ----------
    features : torch.Tensor, shape (N, M)
    targets : torch.Tensor, shape (N, R)
    ridge : float, default 0.3
        Strength relative to the mean feature variance, raised further when there are fewer
        sequences than features (N < M). Each output is fitted on its own: a column's weights do
        not depend on the other columns.

    Returns
    -------
    weight : torch.Tensor, float64, shape (R, M)
        In the orientation of ``nn.Linear.weight``.
    bias : torch.Tensor, float64, shape (R,)
    """
    feats, y = features.double(), targets.double()
    fm, ym = feats.mean(0), y.mean(0)
    fc, yc = feats - fm, y - ym
    gram = fc.T @ fc
    # stronger shrinkage when there are fewer sequences than features
    lam = ridge * max(float(gram.trace()) / gram.shape[0], 1e-12) * (1 + gram.shape[0] / len(feats))
    w = torch.linalg.solve(gram + lam * torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device),
                           fc.T @ yc)                                 # (M, R)
    return w.T, ym - fm @ w


def make_optimizer(model, settings, lr):
    """Proximal Adam with the reference's parameter groups.

    Without a penalty every trainable parameter gets AdamW (decoupled weight decay
    ``settings.weight_decay``). With one, the final layer's weight gets the proximal step and
    all other parameters plain Adam (no decay), as in the reference.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise TisfmError("the model has no trainable parameters")
    if settings.penalty == "none" or settings.lam == 0:
        return ProxAdam([p for _, p in named], lr=lr, weight_decay=settings.weight_decay)
    penalised = [p for n, p in named if n == "final.weight"]
    others = [p for n, p in named if n != "final.weight"]
    if not penalised:
        raise TisfmError("a penalty needs a trainable final layer")
    groups = [{"params": penalised, "penalty": settings.penalty, "lam": settings.lam,
               "mcp_b": settings.mcp_b, "weight_decay": 0.0}]
    if others:
        groups.append({"params": others, "weight_decay": 0.0})
    return ProxAdam(groups, lr=lr)


@dataclass(frozen=True)
class Stage:
    """One stage of :func:`fit`.

    Parameters
    ----------
    name : str
        Recorded in the history and the checkpoint ("frozen", "finetune").
    epochs : int
        Maximum epochs.
    lr : float
        Starting learning rate.
    parameters : frozenset of str, optional
        Names of the parameters that train; None follows the protocol (everything but the
        kernels in "frozen", everything in "finetune", only the final layer with
        ``final_layer_only``).
    """

    name: str
    epochs: int
    lr: float
    parameters: frozenset | None = None


def protocol_stages(settings):
    """The paper's stages for ``settings``: frozen kernels, then (``finetune_epochs``) trainable
    kernels at ``finetune_lr`` (default lr / 10)."""
    stages = (Stage("frozen", settings.epochs, settings.lr),
              Stage("finetune", settings.finetune_epochs, settings.finetune_lr or settings.lr / 10))
    return [s for s in stages if s.epochs]


def _set_trainable(model, settings, stage):
    if stage.parameters is not None:
        for name, p in model.named_parameters():
            p.requires_grad_(name in stage.parameters)
        return
    if settings.final_layer_only:
        model.freeze_all_but_final()
        return
    for p in model.parameters():
        p.requires_grad_(True)
    if hasattr(model, "set_kernels_trainable"):
        model.set_kernels_trainable(stage.name == "finetune")


def _train_mode(model):
    """Training mode, except for batch norms whose parameters are frozen: their running
    statistics are part of the frozen layers and must not follow the new data."""
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and not any(
                p.requires_grad for p in module.parameters()):
            module.eval()


def _plain_state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# -- checkpoints (for --resume) -----------------------------------------------------------------

CHECKPOINT = "checkpoint"


def _save_checkpoint(folder, model, best_state, optimizer, scheduler, generator, state):
    from safetensors.torch import save_file

    folder = Path(folder)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"best.{k}": v.detach().cpu().contiguous() for k, v in best_state.items()})
    opt = optimizer.state_dict()
    scalars = {}
    for idx, entry in opt["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value) and value.dim() > 0:
                tensors[f"optim.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{key}"] = value.item() if torch.is_tensor(value) else value
    tensors["rng.generator"] = generator.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {**state, "optim_scalars": scalars, "param_groups": opt["param_groups"],
            "scheduler": {k: v for k, v in scheduler.state_dict().items()
                          if isinstance(v, (int, float, str, list, type(None)))}}
    # weights first, then the JSON that points at them: the JSON names the epoch both describe
    epoch_tag = f"{state['stage']}-{state['epoch']}"
    meta["weights"] = f"state-{epoch_tag}.safetensors"
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / meta["weights"], lambda tmp: save_file(tensors, tmp))
    write_json(folder / "state.json", meta)
    for old in folder.glob("state-*.safetensors"):
        if old.name != meta["weights"]:
            old.unlink(missing_ok=True)


def _load_checkpoint(folder):
    from safetensors.torch import load_file

    folder = Path(folder)
    meta = read_json(folder / "state.json", what="checkpoint")
    weights = folder / str(meta.get("weights", ""))
    if not weights.is_file():
        raise TisfmError(f"checkpoint in {folder} names missing weights {weights.name}")
    return meta, load_file(weights)


# -- the loop -----------------------------------------------------------------------------------

#: Smallest motif set for which ``compile="auto"`` compiles the motif block: below it the
#: element-wise work is small and compilation (seconds) would cost more than it saves.
COMPILE_MIN_MOTIFS = 100


def use_compile(choice, model, device):
    """Whether to compile ``model``'s motif block for training on ``device`` (see ``compile``)."""
    if choice == "off" or not hasattr(model, "config"):
        return False
    if choice == "on":
        return True
    if torch.device(device).type != "cpu" or model.config.pooling != "programmable":
        return False
    # an fp32 block on CPU runs tisfm_core.native's kernels where they exist: nothing to compile
    native_block = getattr(model, "precision", "fp32") == "fp32" and native.library() is not None
    return model.config.n_motifs >= COMPILE_MIN_MOTIFS and not native_block


def fit(model, train, val, settings, *, checkpoint_dir=None, resume=False, callback=None,
        verbose=False, distributed=None, stages=None):
    """Train ``model`` in place by the paper's protocol and load its best-validation weights.

    Parameters
    ----------
    model : TISFM or AITAC
    train, val : tuple of (np.ndarray uint8 (N, L), np.ndarray float32 (N, R))
        Sequence indices and targets.
    settings : TrainSettings
    checkpoint_dir : str or Path, optional
        Where the last completed epoch is saved (atomically) for ``resume``.
    resume : bool, default False
        Continue from ``checkpoint_dir``; gives the same result as an uninterrupted run.
    callback : callable, optional
        Called with a dict after every epoch (``event="epoch"``) and every few batches
        (``event="batch"``), and once before a compiling first step (``event="phase"``,
        ``phase="compiling"``), e.g. to drive a progress bar or write job status.
    verbose : bool, default False
        Print one line per epoch.
    distributed : tuple (rank, world_size), optional
        Set under torchrun: each process takes its share of every batch and gradients are
        averaged by DistributedDataParallel.
    stages : list of Stage, optional
        Default :func:`protocol_stages` of ``settings``. Each stage after the first restarts
        from the best weights so far and keeps the best of its own epochs.

    Returns
    -------
    dict
        ``history`` (list of per-epoch dicts), ``best`` (stage, epoch, val_loss), ``seconds``,
        ``device``, ``precision``.
    """
    device = resolve_device(settings.device)
    precision = conv_precision(device, settings.precision) if device.type == "cpu" else \
        ("fp32" if settings.precision == "fp32" else "bf16-autocast")
    rank, world = distributed or (0, 1)
    model.to(device)
    if hasattr(model, "precision"):
        model.precision = precision if device.type == "cpu" else "fp32"
    if hasattr(model, "compiled"):
        model.compiled = use_compile(settings.compile, model, device)
        if model.compiled and verbose and rank == 0:
            print("compiling the fused motif block for this model shape (seconds, first step only; "
                  "--compile off skips it)", flush=True)
        if model.compiled and callback is not None:
            # the first step compiles: say so, or a job would look stuck at 0 %
            callback({"event": "phase", "phase": "compiling",
                      "message": "compiling the fused motif block (first training step only)"})
    if device.type == "cpu":
        keep_freed_memory()
    if settings.finetune_epochs and not hasattr(model, "set_kernels_trainable"):
        raise TisfmError("this model has no motif kernels to fine-tune (set finetune_epochs to 0)")
    train_b = Batches.from_arrays(*train, device)
    val_b = Batches.from_arrays(*val, device)
    if len(train_b) == 0 or len(val_b) == 0:
        raise TisfmError(f"training needs samples in both the training ({len(train_b)}) and the "
                         f"validation ({len(val_b)}) split")
    generator = torch.Generator().manual_seed(settings.random_state)
    torch.manual_seed(settings.random_state)

    if settings.init == "data" and not resume:
        initialize_from_data(model, train[0], train[1], random_state=settings.random_state)
    stages = protocol_stages(settings) if stages is None else list(stages)
    names = [stage.name for stage in stages]
    history, best, start_stage, start_epoch = [], None, 0, 0
    best_state = _plain_state(model)
    ckpt = Path(checkpoint_dir) / CHECKPOINT if checkpoint_dir else None
    pending = None  # checkpoint of an unfinished stage, restored once its optimiser exists
    if resume:
        if ckpt is None or not (ckpt / "state.json").exists():
            raise TisfmError(f"nothing to resume: no checkpoint in {checkpoint_dir}")
        meta, tensors = _load_checkpoint(ckpt)
        if meta.get("stage") not in names:
            raise TisfmError(f"the checkpoint in {ckpt} is from stage {meta.get('stage')!r}, which "
                             "these settings do not run")
        history, best = meta["history"], meta["best"]
        best_state = {k[5:]: v.to(device) for k, v in tensors.items() if k.startswith("best.")}
        generator.set_state(tensors["rng.generator"])
        torch.set_rng_state(tensors["rng.torch"])
        start_stage = names.index(meta["stage"])
        if meta["stage_done"]:
            start_stage += 1
        else:
            pending, start_epoch = (meta, tensors), meta["epoch"]
    started = time.perf_counter() - (history[-1]["elapsed"] if history else 0.0)
    ddp_model = model
    for index in range(start_stage, len(stages)):
        spec = stages[index]
        stage, n_epochs, lr = spec.name, spec.epochs, spec.lr
        if index > 0 and pending is None:
            # a later stage restarts from the best weights so far and keeps the best of its own epochs
            model.load_state_dict(best_state)
            best = None
        _set_trainable(model, settings, spec)
        if distributed:
            ddp_model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[torch.cuda.current_device()] if device.type == "cuda" else None,
                # max pooling leaves the pooling weights without gradient
                find_unused_parameters=getattr(getattr(model, "config", None), "pooling", "") == "max")
        optimizer = make_optimizer(model, settings, lr)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=0.1, patience=settings.lr_patience)
        epoch0 = 0
        if pending is not None:
            meta, tensors = pending
            model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
            opt_state = {"state": {}, "param_groups": meta["param_groups"]}
            for key, value in tensors.items():
                if key.startswith("optim."):
                    _, idx, name = key.split(".", 2)
                    opt_state["state"].setdefault(int(idx), {})[name] = value
            for key, value in meta["optim_scalars"].items():
                idx, name = key.split(".", 1)
                opt_state["state"].setdefault(int(idx), {})[name] = value
            optimizer.load_state_dict(opt_state)
            scheduler.load_state_dict({**scheduler.state_dict(), **meta["scheduler"]})
            epoch0, pending = start_epoch, None
        for epoch in range(epoch0, n_epochs):
            t0 = time.perf_counter()
            train_loss = _train_epoch(ddp_model, train_b, optimizer, settings, generator, device,
                                      precision, rank, world, callback,
                                      dict(stage=stage, epoch=epoch + 1, epochs=n_epochs))
            val_loss = _mean_loss(model, val_b, settings.batch_size, device, precision)
            lr_now = optimizer.param_groups[0]["lr"]
            scheduler.step(val_loss)
            improved = best is None or val_loss < best["val_loss"]
            if improved:
                best = {"stage": stage, "epoch": epoch + 1, "val_loss": val_loss}
                best_state = _plain_state(model)
            seconds = time.perf_counter() - t0
            row = {"stage": stage, "epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss,
                   "lr": lr_now, "seconds": round(seconds, 3),
                   "elapsed": round(time.perf_counter() - started, 3),
                   "samples_per_s": round(len(train_b) / seconds, 1)}
            history.append(row)
            new_lr = optimizer.param_groups[0]["lr"]
            stale = settings.patience is not None and epoch + 1 - best["epoch"] >= settings.patience
            done = new_lr < settings.min_lr or stale or epoch + 1 == n_epochs
            if ckpt is not None and rank == 0:
                _save_checkpoint(ckpt, model, best_state, optimizer, scheduler, generator,
                                 {"stage": stage, "epoch": epoch + 1, "stage_done": done,
                                  "history": history, "best": best})
            if verbose and rank == 0:
                print(f"[{stage}] epoch {epoch + 1}/{n_epochs}  train {train_loss:.4f}  "
                      f"val {val_loss:.4f}{' *' if improved else '  '}  lr {lr_now:.1e}  "
                      f"{seconds:.1f} s ({row['samples_per_s']:.0f} seq/s)", flush=True)
            if callback is not None:
                callback({"event": "epoch", **row, "best_val_loss": best["val_loss"]})
            if new_lr < settings.min_lr or stale:
                if verbose and rank == 0:
                    reason = (f"learning rate {new_lr:.1e} < {settings.min_lr:.0e}" if not stale else
                              f"{settings.patience} epochs without a lower validation loss")
                    print(f"[{stage}] {reason}: stage done", flush=True)
                break
    model.load_state_dict(best_state)
    model.eval()
    return {"history": history, "best": best, "seconds": round(time.perf_counter() - started, 2),
            "device": str(device), "precision": precision, "world_size": world}


def _train_epoch(model, data, optimizer, settings, generator, device, precision, rank, world,
                 callback, info):
    _train_mode(model)
    n = len(data)
    order = torch.randperm(n, generator=generator).to(device)
    total = torch.zeros((), device=device)
    bs = settings.batch_size
    n_batches = math.ceil(n / bs)
    report_every = max(1, n_batches // 20)
    for b in range(n_batches):
        idx = order[b * bs:(b + 1) * bs]
        if world > 1:
            idx = idx.tensor_split(world)[rank]
        x = one_hot_torch(data.indices[idx])
        y = data.targets[idx]
        with _autocast(device, precision):
            pred = model(x)
        # sum over this process's share / global batch size: DDP's gradient average then equals
        # the single-process mean over the whole batch
        sq = F.mse_loss(pred.float(), y, reduction="sum")
        loss = sq / (y.shape[1] * min(bs, n - b * bs)) * world
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += sq.detach() / y.shape[1]
        if callback is not None and (b + 1) % report_every == 0:
            callback({"event": "batch", **info, "batch": b + 1, "batches": n_batches})
    if world > 1:
        torch.distributed.all_reduce(total)
    return float(total) / n


def _mean_loss(model, data, batch_size, device, precision):
    model.eval()
    total = torch.zeros((), device=device, dtype=torch.float64)
    with torch.no_grad(), _autocast(device, precision):
        for start in range(0, len(data), batch_size):
            x = one_hot_torch(data.indices[start:start + batch_size])
            pred = model(x).float()
            total += F.mse_loss(pred, data.targets[start:start + batch_size], reduction="sum").double()
    return float(total) / (len(data) * data.targets.shape[1])
