"""Regularization path of the final layer: Park & Hastie-style warm starts (reference section 4.5).

For each penalty strength lambda, in ascending order, the final layer is trained with proximal
Adam (L1 or MCP on ``final.weight``; reference section 4.3) starting from the best weights of the
previous lambda. Everything before the final layer stays frozen, the paper's recommended setting
and the only one supported here, so the motif features ``model.features(x)`` do not change along
the path. The fast mode uses that: it computes the features once and trains a bare copy of the
final layer on them with the same optimiser, the same batches and the same schedule as the slow
mode, which runs the whole model forward on every batch. Both give the same weights up to float
error.

Outputs of a path folder::

    PATH_DIR/
      path.npz    lambdas, coefficients, full final-layer weights, per-output MSEs (numbers and
                  unicode strings only: readable with allow_pickle=False)
      path.json   settings, run, timing and the best lambda per output
"""

from __future__ import annotations

import contextlib
import copy
import math
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .atomic import check_format, read_arrays, read_json, write_json, write_npz
from .devices import resolve_device
from .errors import TisfmError, check_indices, check_outputs
from .prox import PATH_PENALTIES
from .sequences import one_hot_torch
from .server import check_inside_roots
from .specs import MAX_LAMBDAS, PathSpec, is_log_grid, store_path, stored_path
from .training import MIN_LR, Batches, TrainSettings, make_optimizer

__all__ = ["PathResult", "regularization_path", "path_from_arrays", "parse_lambdas", "load_path",
           "coefficients_at", "top_coefficients", "load_run_data", "check_path_inputs", "find_paths"]

PATH_NPZ = "path.npz"
PATH_JSON = "path.json"
FORMAT = "tisfm-path"
FORMAT_VERSION = 1


# -- lambda grids ---------------------------------------------------------------------------------

def parse_lambdas(text: str, log: bool = False) -> np.ndarray:
    """Parse a ``START:STOP:NUM`` lambda grid as the reference's ``--penalty-param-range``.

    Parameters
    ----------
    text : str
        ``"START:STOP:NUM"``, e.g. ``"1e-4:1e-1:20"``.
    log : bool, default False
        Log-spaced grid (``geomspace``) instead of ``linspace``.

    Returns
    -------
    np.ndarray, float64, shape (<= NUM + 1,)
        The grid with 0 (the unpenalised fit) prepended, sorted and de-duplicated.

    Raises
    ------
    TisfmError
        For malformed text, NUM < 1, negative or non-finite values, or ``log`` with a bound <= 0.
    """
    parts = str(text).strip().split(":")
    if len(parts) != 3:
        raise TisfmError(f"lambda grid {text!r} must be START:STOP:NUM, e.g. 1e-4:1e-1:20")
    try:
        start, stop = float(parts[0]), float(parts[1])
    except ValueError:
        raise TisfmError(f"lambda grid {text!r}: START and STOP must be numbers") from None
    if not re.fullmatch(r"\s*[+-]?\d{1,12}\s*", parts[2]):
        raise TisfmError(f"lambda grid {text!r}: NUM must be a whole number, got {parts[2]!r}")
    num = int(parts[2])
    if num < 1:
        raise TisfmError(f"lambda grid {text!r}: NUM must be at least 1, got {num}")
    if num > MAX_LAMBDAS:   # refused before the grid is allocated
        raise TisfmError(f"lambda grid {text!r}: NUM is at most {MAX_LAMBDAS}, got {num}")
    if not (math.isfinite(start) and math.isfinite(stop)):
        raise TisfmError(f"lambda grid {text!r}: START and STOP must be finite")
    if start < 0 or stop < 0:
        raise TisfmError(f"lambda grid {text!r}: lambdas must be >= 0")
    if log:
        if start <= 0 or stop <= 0:
            raise TisfmError(f"lambda grid {text!r}: a log grid needs START and STOP > 0")
        grid = np.geomspace(start, stop, num)
    else:
        grid = np.linspace(start, stop, num)
    return np.unique(np.concatenate([[0.0], grid]))


# -- results --------------------------------------------------------------------------------------

@dataclass
class PathResult:
    """A regularization path of the final layer.

    Attributes
    ----------
    lambdas : np.ndarray, float64, shape (L,)
        Ascending penalty strengths.
    coefs : np.ndarray, float32, shape (L, R, n_motifs)
        Final-layer weights of the real motifs (padding features dropped) at each lambda, in the
        order of scikit-learn's ``lasso_path`` (lambdas x outputs x motifs).
    intercepts : np.ndarray, float32, shape (L, R)
        Final-layer bias.
    weights : np.ndarray, float32, shape (L, R, n_features)
        The full final-layer weight (real motifs and padding features): with ``intercepts`` it
        reproduces the predictions (:meth:`apply`).
    val_mse, test_mse : np.ndarray, float64, shape (L, R)
        Per-output MSE on all validation / test samples (sums of squared errors, not batch means).
    n_nonzero : np.ndarray, int64, shape (L, R)
        Non-zero motif weights per output.
    epochs : np.ndarray, int64, shape (L,)
        Epochs trained at each lambda (early stopping can end a lambda before ``epochs``).
    best_index : np.ndarray, int64, shape (R,)
        Per output, the index of the lambda with the lowest validation MSE of that output.
    motif_ids, motif_names : list of str, length n_motifs
    outputs : list of str, length R
    penalty : {"l1", "mcp"}
    mcp_b : float
    mode : {"fast", "slow"}
    seconds : float
        Wall time of the whole path (feature pass included).
    lambda_seconds : np.ndarray, float64, shape (L,)
    feature_seconds : float
        Time of the one feature pass (fast mode; 0 in slow mode).
    settings : dict
        The options the path was computed with.
    run : str or None
        The run folder the path belongs to.
    """

    lambdas: np.ndarray
    coefs: np.ndarray
    intercepts: np.ndarray
    weights: np.ndarray
    val_mse: np.ndarray
    test_mse: np.ndarray
    n_nonzero: np.ndarray
    epochs: np.ndarray
    best_index: np.ndarray
    motif_ids: list
    motif_names: list
    outputs: list
    penalty: str
    mcp_b: float
    mode: str
    seconds: float
    lambda_seconds: np.ndarray
    feature_seconds: float = 0.0
    settings: dict = field(default_factory=dict)
    run: str | None = None

    @property
    def log_grid(self):
        """Whether the positive lambdas are log-spaced (:func:`tisfm_core.specs.is_log_grid`)."""
        return is_log_grid(self.lambdas)

    @property
    def best_lambdas(self):
        """Per output, the lambda with the lowest validation MSE: (R,)."""
        return self.lambdas[self.best_index]

    def best_table(self):
        """Per output, its best lambda: DataFrame indexed by output with ``index``, ``lambda``,
        ``val_mse``, ``test_mse`` and ``n_nonzero``."""
        rows = np.arange(len(self.outputs))
        return pd.DataFrame({"index": self.best_index, "lambda": self.lambdas[self.best_index],
                             "val_mse": self.val_mse[self.best_index, rows],
                             "test_mse": self.test_mse[self.best_index, rows],
                             "n_nonzero": self.n_nonzero[self.best_index, rows]},
                            index=pd.Index(self.outputs, name="output"))

    def apply(self, model, index):
        """Copy the final layer of lambda ``index`` into ``model.final`` (in place) and return it."""
        index = _lambda_index(self, index)
        final = model.final
        if tuple(final.weight.shape) != self.weights.shape[1:]:
            raise TisfmError(f"the path's final layer is {self.weights.shape[1:]} but the model's is "
                             f"{tuple(final.weight.shape)} (the path belongs to another model)")
        with torch.no_grad():
            final.weight.copy_(torch.from_numpy(self.weights[index]))
            final.bias.copy_(torch.from_numpy(self.intercepts[index]))
        return model

    def save(self, path_dir):
        """Write ``path.npz`` and ``path.json`` into ``path_dir`` (atomically; folder created)."""
        path_dir = Path(path_dir)
        write_npz(path_dir / PATH_NPZ, lambdas=self.lambdas, coefs=self.coefs,
                  intercepts=self.intercepts, weights=self.weights, val_mse=self.val_mse,
                  test_mse=self.test_mse, n_nonzero=self.n_nonzero, epochs=self.epochs,
                  best_index=self.best_index, lambda_seconds=self.lambda_seconds,
                  motif_ids=np.asarray(self.motif_ids, dtype=str),
                  motif_names=np.asarray(self.motif_names, dtype=str),
                  outputs=np.asarray(self.outputs, dtype=str))
        best = {o: {"index": int(row["index"]), "lambda": float(row["lambda"]),
                    "val_mse": float(row["val_mse"]), "test_mse": float(row["test_mse"]),
                    "n_nonzero": int(row["n_nonzero"])}
                for o, row in self.best_table().iterrows()}
        write_json(path_dir / PATH_JSON, {
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "run": store_path(self.run, path_dir),
            "penalty": self.penalty, "mcp_b": float(self.mcp_b), "mode": self.mode,
            "settings": self.settings, "lambdas": self.lambdas.tolist(),
            "timing": {"seconds": float(self.seconds), "feature_seconds": float(self.feature_seconds),
                       "lambda_seconds": self.lambda_seconds.tolist()},
            "best": best})
        return path_dir


def _lambda_index(result, index):
    n = len(result.lambdas)
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not -n <= index < n:
        raise TisfmError(f"lambda index {index!r} is out of range: the path has {n} lambdas")
    return int(index) % n


def coefficients_at(result, index):
    """Motif weights at one lambda.

    Parameters
    ----------
    result : PathResult
    index : int
        Lambda index (negative counts from the end).

    Returns
    -------
    pandas.DataFrame, shape (n_motifs, R)
        Index = motif ids (named "motif"), columns = outputs.
    """
    index = _lambda_index(result, index)
    return pd.DataFrame(result.coefs[index].T, index=pd.Index(result.motif_ids, name="motif"),
                        columns=list(result.outputs))


def top_coefficients(result, output, k=9):
    """The motifs with the largest ``|coef|`` at an output's best lambda.

    Parameters
    ----------
    result : PathResult
    output : str or int
        Output name or index.
    k : int, default 9
        How many motifs (the reference's coefficient-path plot labels 9).

    Returns
    -------
    pandas.DataFrame
        At most ``k`` rows (motifs whose weight is exactly zero are left out), ordered by
        decreasing ``|coef|``; index = motif ids, columns "name" and "coef" (signed).
    """
    r = int(check_outputs(output, len(result.outputs), result.outputs, owner="the path")[0])
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise TisfmError(f"k must be a whole number >= 1, got {k!r}")
    coef = result.coefs[result.best_index[r], r].astype(np.float64)
    order = np.argsort(-np.abs(coef), kind="stable")[:k]
    order = order[coef[order] != 0]
    return pd.DataFrame({"name": [result.motif_names[i] for i in order], "coef": coef[order]},
                        index=pd.Index([result.motif_ids[i] for i in order], name="motif"))


# -- loading a saved path -------------------------------------------------------------------------

_ARRAYS = {"lambdas": "f", "coefs": "f", "intercepts": "f", "weights": "f", "val_mse": "f",
           "test_mse": "f", "n_nonzero": "iu", "epochs": "iu", "best_index": "iu",
           "lambda_seconds": "f", "motif_ids": "U", "motif_names": "U", "outputs": "U"}


def find_paths(run_path, folders):
    """Path folders (path.json + path.npz) under ``folders`` that were computed from the run at
    ``run_path``, in folder order (bounded search: see :func:`tisfm_core.runs.find_folders`)."""
    from .runs import find_folders

    target = Path(run_path).resolve()
    found = []
    for folder in folders:
        for path_dir in find_folders(folder, PATH_JSON):
            try:
                check_inside_roots(path_dir, (PATH_JSON,))
                stored = read_json(path_dir / PATH_JSON, what="path summary").get("run")
                run = stored_path(stored, path_dir) if isinstance(stored, (str, dict)) else None
            except TisfmError:
                continue
            if run and Path(run).resolve() == target and (path_dir / PATH_NPZ).exists():
                found.append(path_dir)
    return list(dict.fromkeys(found))


def load_path(path_dir: str | Path) -> PathResult:
    """Read a path folder written by :meth:`PathResult.save`.

    Raises
    ------
    TisfmError
        When ``path.npz`` or ``path.json`` is missing, corrupt or inconsistent.
    """
    path_dir = Path(path_dir)
    if not path_dir.is_dir():
        raise TisfmError(f"path folder {path_dir} does not exist")
    check_inside_roots(path_dir, (PATH_JSON, PATH_NPZ))
    meta = read_json(path_dir / PATH_JSON, what="path summary")
    check_format(meta, fmt=FORMAT, version=FORMAT_VERSION, where=path_dir / PATH_JSON,
                 what="regularization path")
    npz = path_dir / PATH_NPZ
    if not npz.is_file():
        raise TisfmError(f"{npz} is missing: the path folder is incomplete")
    arrays = read_arrays(npz, what="path file")
    if not isinstance(arrays, dict):
        raise TisfmError(f"{npz} is a single array, not the .npz archive of a path")
    missing = [k for k in _ARRAYS if k not in arrays]
    if missing:
        raise TisfmError(f"{npz} lacks the array(s) {', '.join(missing)}")
    for name, kinds in _ARRAYS.items():
        if arrays[name].dtype.kind not in kinds:
            raise TisfmError(f"{npz}: array {name!r} has dtype {arrays[name].dtype}, expected "
                             f"{'numbers' if kinds != 'U' else 'strings'}")
    a = arrays
    n_lam = a["lambdas"].shape[0] if a["lambdas"].ndim == 1 else -1
    n_out, n_mot = a["outputs"].shape[0], a["motif_ids"].shape[0]
    shapes = {"lambdas": (n_lam,), "coefs": (n_lam, n_out, n_mot), "intercepts": (n_lam, n_out),
              "val_mse": (n_lam, n_out), "test_mse": (n_lam, n_out), "n_nonzero": (n_lam, n_out),
              "epochs": (n_lam,), "best_index": (n_out,), "lambda_seconds": (n_lam,),
              "motif_names": (n_mot,), "outputs": (n_out,), "motif_ids": (n_mot,)}
    for name, shape in shapes.items():
        if a[name].shape != shape:
            raise TisfmError(f"{npz}: array {name!r} has shape {a[name].shape}, expected {shape}")
    if a["weights"].ndim != 3 or a["weights"].shape[:2] != (n_lam, n_out) or \
            a["weights"].shape[2] < n_mot:
        raise TisfmError(f"{npz}: array 'weights' has shape {a['weights'].shape}, expected "
                         f"({n_lam}, {n_out}, >= {n_mot})")
    if n_lam < 1 or not np.isfinite(a["lambdas"]).all() or (np.diff(a["lambdas"]) <= 0).any() \
            or (a["lambdas"] < 0).any():
        raise TisfmError(f"{npz}: 'lambdas' must be non-empty, finite, >= 0 and strictly ascending")
    if ((a["best_index"] < 0) | (a["best_index"] >= n_lam)).any():
        raise TisfmError(f"{npz}: 'best_index' points outside the {n_lam} lambdas")
    penalty, mode = meta.get("penalty"), meta.get("mode")
    if penalty not in PATH_PENALTIES or mode not in ("fast", "slow"):
        raise TisfmError(f"{path_dir / PATH_JSON}: 'penalty' must be one of {', '.join(PATH_PENALTIES)} and "
                         f"'mode' fast or slow, got {penalty!r} and {mode!r}")
    mcp_b = meta.get("mcp_b")
    if isinstance(mcp_b, bool) or not isinstance(mcp_b, (int, float)) or not mcp_b > 1:
        raise TisfmError(f"{path_dir / PATH_JSON}: 'mcp_b' must be a number > 1, got {mcp_b!r}")
    timing = meta.get("timing") if isinstance(meta.get("timing"), dict) else {}
    seconds = timing.get("seconds"), timing.get("feature_seconds")
    seconds = [float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 0.0
               for v in seconds]
    run = stored_path(meta.get("run"), path_dir) if isinstance(meta.get("run"), (str, dict)) else None
    return PathResult(
        lambdas=a["lambdas"].astype(np.float64), coefs=a["coefs"].astype(np.float32),
        intercepts=a["intercepts"].astype(np.float32), weights=a["weights"].astype(np.float32),
        val_mse=a["val_mse"].astype(np.float64), test_mse=a["test_mse"].astype(np.float64),
        n_nonzero=a["n_nonzero"].astype(np.int64), epochs=a["epochs"].astype(np.int64),
        best_index=a["best_index"].astype(np.int64), motif_ids=a["motif_ids"].tolist(),
        motif_names=a["motif_names"].tolist(), outputs=a["outputs"].tolist(), penalty=penalty,
        mcp_b=float(mcp_b), mode=mode, seconds=seconds[0],
        lambda_seconds=a["lambda_seconds"].astype(np.float64), feature_seconds=seconds[1],
        settings=meta.get("settings") if isinstance(meta.get("settings"), dict) else {},
        run=run)


# -- the two training back ends -------------------------------------------------------------------

class _Head(nn.Module):
    """A bare copy of the final layer, named like the model's so make_optimizer groups it alike."""

    def __init__(self, final):
        super().__init__()
        self.final = final


def _batch_loss(pred, y):
    # the training loop's loss: mean over the batch and the outputs
    return F.mse_loss(pred, y, reduction="sum") / (y.shape[0] * y.shape[1])


class _SlowBackend:
    """Runs the whole model forward on every batch (the direct implementation)."""

    def __init__(self, model, data, batch_size, device):
        self.module = model
        batches = {k: Batches.from_arrays(*v, device) for k, v in data.items()}
        self.data = {k: (b.indices, b.targets) for k, b in batches.items()}
        self.batch_size = batch_size

    def train_epoch(self, optimizer, order):
        idx, tgt = self.data["train"]
        for b in order.split(self.batch_size):
            pred = self.module(one_hot_torch(idx[b]))
            loss = _batch_loss(pred, tgt[b])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    @torch.no_grad()
    def squared_errors(self, split):
        idx, tgt = self.data[split]
        total = torch.zeros(tgt.shape[1], dtype=torch.float64, device=tgt.device)
        for start in range(0, idx.shape[0], self.batch_size):
            pred = self.module(one_hot_torch(idx[start:start + self.batch_size]))
            total += (pred.double() - tgt[start:start + self.batch_size].double()).square().sum(0)
        return total.cpu().numpy()


@contextlib.contextmanager
def _one_thread(device):
    """Run the fast mode's tiny per-batch ops on one CPU thread (restored afterwards).

    A step multiplies at most (batch, M) by (M, R); splitting that over threads costs more in
    synchronisation than it saves, and on a busy machine a waiting thread stalls every step.
    """
    previous = torch.get_num_threads()
    if device.type != "cpu" or previous == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class _FastBackend:
    """Computes the frozen features once and trains a bare copy of the final layer on them."""

    def __init__(self, model, data, batch_size, device):
        self.module = _Head(copy.deepcopy(model.final))
        self.batch_size = batch_size
        self.data = {}
        with torch.no_grad():
            for split, (indices, targets) in data.items():
                part = Batches.from_arrays(indices, targets, device)
                idx, tgt = part.indices, part.targets
                feats = [model.features(one_hot_torch(idx[s:s + batch_size])).float()
                         for s in range(0, idx.shape[0], batch_size)]
                self.data[split] = (torch.cat(feats), tgt)

    def train_epoch(self, optimizer, order):
        feats, tgt = self.data["train"]
        weight, bias = self.module.final.weight, self.module.final.bias
        for b in order.split(self.batch_size):
            # gathered per batch so that it stays in cache for the forward and the gradient
            x, y = feats.index_select(0, b), tgt.index_select(0, b)
            # the gradient of _batch_loss written out: autograd's bookkeeping costs more than
            # these two small matrix products
            with torch.no_grad():
                residual = torch.addmm(bias, x, weight.t()).sub_(y).mul_(2.0 / y.numel())
                weight.grad = residual.t().mm(x)
                bias.grad = residual.sum(0)
            optimizer.step()

    @torch.no_grad()
    def squared_errors(self, split):
        feats, tgt = self.data[split]
        pred = self.module.final(feats)
        return (pred.double() - tgt.double()).square().sum(0).cpu().numpy()


# -- the path -------------------------------------------------------------------------------------

def _check_data(name, part, length, n_outputs):
    if not (isinstance(part, (tuple, list)) and len(part) == 2):
        raise TisfmError(f"{name} must be a pair (indices (N, L) uint8, targets (N, R))")
    try:
        idx, y = np.asarray(part[0]), np.asarray(part[1], dtype=np.float32)
    except (TypeError, ValueError):
        raise TisfmError(f"{name} targets must be numbers") from None
    if idx.ndim != 2 or (length is not None and idx.shape[1] != length):
        raise TisfmError(f"{name} indices must be shaped (N, {length or 'L'}), got {idx.shape}")
    if y.ndim != 2 or y.shape != (idx.shape[0], n_outputs):
        raise TisfmError(f"{name} targets must be shaped ({idx.shape[0]}, {n_outputs}), got {y.shape}")
    if idx.shape[0] == 0:
        raise TisfmError(f"the {name} split has no samples")
    idx = check_indices(idx, f"{name} indices")
    if not np.isfinite(y).all():
        raise TisfmError(f"{name} targets contain NaN or infinite values")
    return idx, y


def _fit_lambda(backend, settings, generator, *, patience, index, callback):
    """Train the final layer at one lambda from its current weights and leave the best ones in it.

    New optimiser and ReduceLROnPlateau; stops after ``settings.epochs`` epochs, ``patience``
    epochs without a lower validation loss, or once the learning rate falls below MIN_LR.

    Returns
    -------
    tuple
        Best-validation weight (R, M) and bias (R,), the validation squared errors summed over
        samples at that epoch (R,), and the number of epochs run.
    """
    final = backend.module.final
    n_train = backend.data["train"][1].shape[0]
    n_val, n_out = backend.data["val"][1].shape
    optimizer = make_optimizer(backend.module, settings, settings.lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=0.1, patience=settings.lr_patience)
    best_loss, best, since_best, epoch = math.inf, None, 0, 0
    for epoch in range(1, settings.epochs + 1):
        backend.train_epoch(optimizer, torch.randperm(n_train, generator=generator).to(final.weight.device))
        sq = backend.squared_errors("val")
        val_loss = float(sq.sum()) / (n_val * n_out)
        scheduler.step(val_loss)
        if val_loss < best_loss:
            best_loss, since_best = val_loss, 0
            best = (final.weight.detach().clone(), final.bias.detach().clone(), sq)
        else:
            since_best += 1
        lr = optimizer.param_groups[0]["lr"]
        if callback is not None:
            callback({"event": "epoch", "index": index, "lam": settings.lam, "epoch": epoch,
                      "val_loss": val_loss, "lr": lr})
        if since_best >= patience or lr < MIN_LR:
            break
    if best is None:
        raise TisfmError(f"training diverged at lambda {settings.lam:g}: the validation loss is not "
                         f"finite (try a smaller learning rate than {settings.lr:g})")
    with torch.no_grad():
        final.weight.copy_(best[0])
        final.bias.copy_(best[1])
    return best[0], best[1], best[2], epoch


_LINEAR = ("the linear baseline is fitted in closed form on max scores and site counts (ridge "
           "strength chosen on the validation split); the regularization path is for tiSFM's "
           "final layer")


def path_from_arrays(model: nn.Module, train: tuple, val: tuple, test: tuple, spec: PathSpec, *,
                     verbose: bool = False, callback=None, motif_ids=None,
                     motif_names=None, outputs=None):
    """Regularization path of a model's final layer on explicit data arrays.

    Only the final layer trains; every other parameter is frozen (the paper's recommended
    setting, reference section 4.5 [rec], and the only one supported). ``model`` is not changed:
    the path trains a copy.

    Parameters
    ----------
    model : TISFM
        Any module with ``features(x)`` (N, 4, L) -> (N, M), a ``final`` nn.Linear(M, R) and
        ``config.n_motifs`` (the first ``n_motifs`` features are the real motifs).
    train, val, test : tuple of (np.ndarray uint8 (N, L), np.ndarray float (N, R))
        Sequence indices and targets of the three splits.
    spec : PathSpec
        The penalty, the lambda grid and the per-lambda schedule (lr, epochs, early stopping).
    verbose : bool, default False
        Print one line per lambda.
    callback : callable, optional
        Called with a dict after every epoch (``event="epoch"``) and every lambda
        (``event="lambda"``).
    motif_ids, motif_names, outputs : list of str, optional
        Names stored with the result (default ``M0..``, ``output_0..``).

    Returns
    -------
    PathResult
    """
    t_start = time.perf_counter()
    if not isinstance(spec, PathSpec):
        raise TisfmError("path_from_arrays needs a PathSpec")
    mode = "fast" if spec.mode == "auto" else spec.mode
    lambdas = np.asarray(spec.lambdas, dtype=np.float64)
    lr = 0.01 if spec.lr is None else spec.lr
    step_lr = lr / 10 if spec.step_lr is None else spec.step_lr
    batch_size, epochs = spec.batch_size, spec.epochs
    if getattr(getattr(model, "config", None), "variant", None) == "linear":
        raise TisfmError(_LINEAR)
    if not (hasattr(model, "features") and isinstance(getattr(model, "final", None), nn.Linear)
            and hasattr(getattr(model, "config", None), "n_motifs")):
        raise TisfmError("the regularization path needs a tiSFM model (motif features and a final "
                         "linear layer); the AI-TAC baseline has none")
    n_out, n_feat = model.final.out_features, model.final.in_features
    n_motifs = int(model.config.n_motifs)
    length = getattr(model.config, "length", None)
    data = {name: _check_data(name, part, length, n_out)
            for name, part in (("train", train), ("val", val), ("test", test))}
    motif_ids = [f"M{i}" for i in range(n_motifs)] if motif_ids is None else [str(m) for m in motif_ids]
    motif_names = list(motif_ids) if motif_names is None else [str(m) for m in motif_names]
    outputs = [f"output_{r}" for r in range(n_out)] if outputs is None else [str(o) for o in outputs]
    if len(motif_ids) != n_motifs or len(motif_names) != n_motifs or len(outputs) != n_out:
        raise TisfmError(f"the model has {n_motifs} motifs and {n_out} outputs but {len(motif_ids)} "
                         f"motif ids, {len(motif_names)} names and {len(outputs)} output names were given")
    device = resolve_device(spec.device)

    model = copy.deepcopy(model).to(device).eval()
    if hasattr(model, "precision"):
        model.precision = "fp32"  # the fast mode's features are fp32; the slow mode must match
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("final."))
    t_feat = time.perf_counter()
    backend = (_FastBackend if mode == "fast" else _SlowBackend)(model, data, batch_size, device)
    feature_seconds = time.perf_counter() - t_feat if mode == "fast" else 0.0
    n_train = data["train"][0].shape[0]
    n_val, n_test = data["val"][0].shape[0], data["test"][0].shape[0]
    generator = torch.Generator().manual_seed(spec.random_state)

    n_lam = len(lambdas)
    weights = np.zeros((n_lam, n_out, n_feat), dtype=np.float32)
    intercepts = np.zeros((n_lam, n_out), dtype=np.float32)
    val_mse = np.zeros((n_lam, n_out))
    test_mse = np.zeros((n_lam, n_out))
    used = np.zeros(n_lam, dtype=np.int64)
    lambda_seconds = np.zeros(n_lam)
    # the fast mode's steps are tiny matrix products: one thread is quickest (see _one_thread)
    with _one_thread(device) if mode == "fast" else contextlib.nullcontext():
        for i, lam in enumerate(lambdas):
            t0 = time.perf_counter()
            settings = TrainSettings(epochs=epochs, batch_size=batch_size, lr=lr if i == 0 else step_lr,
                                     penalty=spec.penalty, lam=float(lam), mcp_b=spec.mcp_b,
                                     lr_patience=spec.lr_patience, random_state=spec.random_state,
                                     final_layer_only=True)
            weight, bias, sq, used[i] = _fit_lambda(backend, settings, generator, patience=spec.patience,
                                                    index=i, callback=callback)
            weights[i], intercepts[i] = weight.cpu().numpy(), bias.cpu().numpy()
            val_mse[i] = sq / n_val
            test_mse[i] = backend.squared_errors("test") / n_test
            lambda_seconds[i] = time.perf_counter() - t0
            nnz = int(np.count_nonzero(weights[i, :, :n_motifs]))
            if verbose:
                print(f"lambda {lam:<10.4g} val MSE {val_mse[i].mean():.4f}  non-zeros "
                      f"{nnz}/{n_out * n_motifs}  epochs {used[i]}  {lambda_seconds[i]:.2f} s", flush=True)
            if callback is not None:
                callback({"event": "lambda", "index": i, "lambdas": n_lam, "lam": float(lam),
                          "val_mse": float(val_mse[i].mean()), "n_nonzero": nnz,
                          "epochs": int(used[i]), "seconds": float(lambda_seconds[i])})

    coefs = np.ascontiguousarray(weights[:, :, :n_motifs])
    # argmin per output column (outputs are indexed directly: no "overall" column to skip)
    best_index = np.argmin(np.where(np.isfinite(val_mse), val_mse, np.inf), axis=0).astype(np.int64)
    return PathResult(
        lambdas=lambdas, coefs=coefs, intercepts=intercepts, weights=weights, val_mse=val_mse,
        test_mse=test_mse, n_nonzero=np.count_nonzero(coefs, axis=2).astype(np.int64), epochs=used,
        best_index=best_index, motif_ids=motif_ids, motif_names=motif_names, outputs=outputs,
        penalty=spec.penalty, mcp_b=spec.mcp_b, mode=mode, seconds=time.perf_counter() - t_start,
        lambda_seconds=lambda_seconds, feature_seconds=feature_seconds,
        settings={**spec.to_dict(), "lr": float(lr), "step_lr": float(step_lr), "mode": mode,
                  "min_lr": MIN_LR, "device": str(device), "n_train": int(n_train),
                  "n_val": int(n_val), "n_test": int(n_test), "final_layer_only": True})


def load_run_data(run):
    """The training, validation and test arrays of a run, as it was trained.

    Reloads the run's data files (``config.json`` field "data") with its target transform and
    output order, and cuts them by its ``split.json``.

    Returns
    -------
    dict
        "train", "val", "test": tuples (indices uint8 (N, L), targets float32 (N, R)).

    Raises
    ------
    TisfmError
        When a data file or split.json is missing, or the data no longer fit the split.
    """
    from .dataset import load_dataset
    from .runs import DATA_KEYS, SPLIT, resolve_run_data
    from .splits import SPLIT_KEYS, load_split

    if not isinstance(run.config.get("data"), dict) or not run.config["data"].get("targets"):
        raise TisfmError(f"{run.path}/config.json records no training data ('data')")
    cfg = resolve_run_data(run)
    for key in DATA_KEYS:
        if cfg.get(key) and not Path(cfg[key]).exists():
            raise TisfmError(f"{cfg[key]} ({key} of run {run.path}) does not exist; this needs the "
                             "run's training data at that path")
    split_file = Path(run.path) / SPLIT
    split = load_split(split_file)
    spec = cfg["transform"]
    data = load_dataset(cfg.get("sequences"), cfg["targets"], bed=cfg.get("bed"), genome=cfg.get("genome"),
                        length=run.config["model"]["config"].get("length") if cfg.get("bed") else None,
                        transform=spec, outputs=run.outputs)
    parts = {}
    for key in SPLIT_KEYS:
        index = split[key]
        if index.size and (index.min() < 0 or index.max() >= len(data)):
            raise TisfmError(f"{split_file}: '{key}' indexes region {int(index.max())} but the run's data "
                             f"now have {len(data)} regions (the data files changed after training)")
        sub = data.subset(index)
        parts[key] = (sub.indices, sub.targets)
    n_regions = run.config["data"].get("n_regions")
    if isinstance(n_regions, int) and n_regions != len(data):
        raise TisfmError(f"run {run.path} was trained on {n_regions} regions but its data files now "
                         f"give {len(data)} (the data files changed after training)")
    return parts


def check_path_inputs(run) -> dict:
    """Read what a regularization path of ``run`` uses (the run, its training data and split)
    without fitting anything: the app calls this before it starts a path job, so that a run
    whose data are gone, changed or outside the allowed folders is refused at once.

    Returns
    -------
    dict
        ``n_train``, ``n_val``, ``n_test``: regions of each part.
    """
    from .runs import load_run

    run = run if hasattr(run, "model") else load_run(run)
    if run.kind != "tisfm":
        raise TisfmError(f"{run.path} is an AI-TAC baseline: it has no motif final layer for a "
                         "regularization path")
    return {f"n_{key}": len(part[0]) for key, part in load_run_data(run).items()}


def regularization_path(run, spec: PathSpec, *, verbose: bool = False, callback=None) -> PathResult:
    """Regularization path of a run's final layer on the run's own train/val/test split.

    Park & Hastie-style warm starts (reference section 4.5): lambdas in ascending order, each
    with a new proximal Adam (L1 or MCP on ``final.weight`` only) and a new ReduceLROnPlateau,
    up to ``spec.epochs`` epochs with early stopping on the validation loss; the best-validation
    weights of each lambda warm-start the next. Only the final layer trains, everything else is
    frozen: the paper's recommended setting and the only one supported. The run is not changed.

    Parameters
    ----------
    run : Run, str or Path
        A tiSFM run (loaded or its folder). Its data files must still exist.
    spec : PathSpec
        ``spec.lr`` None uses the run's training lr (else 0.01).
    verbose, callback
        As in :func:`path_from_arrays`.

    Returns
    -------
    PathResult
        With ``run`` set to the run folder.
    """
    from .runs import load_run

    run = run if hasattr(run, "model") else load_run(run)
    if run.kind == "linear":
        raise TisfmError(f"{run.path}: {_LINEAR}")
    if run.kind != "tisfm":
        raise TisfmError(f"{run.path} is an AI-TAC baseline: it has no motif final layer for a "
                         "regularization path")
    if spec.lr is None:
        trained = run.config.get("training", {}).get("lr")
        spec = replace(spec, lr=float(trained) if isinstance(trained, (int, float)) and trained > 0
                       else 0.01)
    parts = load_run_data(run)
    result = path_from_arrays(run.model, parts["train"], parts["val"], parts["test"], spec,
                              verbose=verbose, callback=callback, motif_ids=run.motif_ids,
                              motif_names=run.motif_names, outputs=run.outputs)
    result.run = str(Path(run.path).resolve())
    return result
