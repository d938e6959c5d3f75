"""The linear baseline: ridge regression on per-motif max score and site count.

The simplest model that shares tiSFM's motif vocabulary, so that every final-layer figure can be
checked against it. For each motif k of the run's motif set and each region:

- ``max[k]``: the best log-odds score (log2 of the PWM probability over the uniform background,
  pseudocount 0.01 per entry) over every start position on both strands;
- ``count[k]``: the number of start positions on both strands whose score reaches the motif's
  threshold, the score whose p-value under a uniform iid background is ``count_pvalue``
  (exact null distribution of the log-odds, discretised to 0.01 bits; FIMO-style). A motif
  whose best match is rarer than that counts only best-scoring matches.

The 2 n features are standardised with the training split's mean and standard deviation and the
outputs are regressed on them by ridge regression in closed form; the ridge strength is the
grid value with the lowest validation MSE (same train / validation / test split as every other
run). Everything needed to predict (log-odds kernels, thresholds, standardisation, the linear
layer) is in the weights, so the model is saved and loaded like any run.

One weight per motif and output (what the final-layer views read, :attr:`LinearBaseline.final_weights`)
is the sum of the two standardised coefficients: the predicted change of the output when both
features of the motif rise by one standard deviation, which a site of the motif does together
(the two features are correlated, and ridge splits their effect between them). Both
coefficients stay available (:attr:`~LinearBaseline.max_weights`,
:attr:`~LinearBaseline.count_weights`).

Attribution: the max score is piecewise linear in the one-hot input and the site count a step
function (gradient 0 almost everywhere), so a Taylor (TISM) attribution would show the max-score
term only; :func:`tisfm_core.attribution.tism` refuses this model and exact ISM is the
attribution to use (cheap: the model is a convolution and a linear layer).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import TisfmError, check_integer
from .sequences import one_hot_torch

__all__ = ["LinearConfig", "LinearBaseline", "log_odds", "score_thresholds", "fit_linear",
           "RIDGE_GRID", "PSEUDOCOUNT", "COUNT_PVALUE"]

#: Added to every PWM entry (then rows renormalised) before taking log-odds.
PSEUDOCOUNT = 0.01
#: Per-position p-value of a counted site (FIMO's default is 1e-4; 1e-3 keeps the sites of
#: short, low-information motifs countable).
COUNT_PVALUE = 1e-3
#: Ridge strengths tried (objective: mean squared error + alpha * ||beta||^2 on standardised
#: features).
RIDGE_GRID = tuple(float(a) for a in np.logspace(-4, 2, 13))
_RESOLUTION = 0.01   # bits per bin of the exact null score distribution


def log_odds(matrix, pseudocount=PSEUDOCOUNT):
    """log2(p / 0.25) of a (w, 4) probability matrix after adding ``pseudocount`` to every entry."""
    m = np.asarray(matrix, dtype=np.float64) + pseudocount
    m /= m.sum(axis=1, keepdims=True)
    return np.log2(m / 0.25)


def _null_tail(scores):
    """Exact upper tail P(S >= s) of the score of a uniform random site, on a 0.01-bit grid.

    Returns the grid offset (integer score of bin 0) and the tail probabilities per bin.
    """
    ints = np.rint(scores / _RESOLUTION).astype(np.int64)   # (w, 4)
    low = ints.min(axis=1)
    shifted = ints - low[:, None]
    dist = np.ones(1)
    for row in shifted:
        new = np.zeros(len(dist) + int(row.max()))
        for b in range(4):
            new[row[b]:row[b] + len(dist)] += 0.25 * dist
        dist = new
    return int(low.sum()), np.cumsum(dist[::-1])[::-1]


def score_thresholds(matrices, pvalue=COUNT_PVALUE, pseudocount=PSEUDOCOUNT):
    """Log-odds score whose null p-value is ``pvalue``, one per motif.

    Parameters
    ----------
    matrices : sequence of array-like, each (w, 4)
        Probability matrices.
    pvalue : float, default COUNT_PVALUE
        In (0, 1): the chance that a uniform random site scores at least the threshold.
    pseudocount : float, default PSEUDOCOUNT

    Returns
    -------
    numpy.ndarray, float64, shape (n,)
        The smallest grid score with tail probability <= ``pvalue`` (at most the motif's best
        score, so that a perfect match always counts).
    """
    if isinstance(pvalue, bool) or not isinstance(pvalue, (int, float)) or not 0 < pvalue < 1:
        raise TisfmError(f"count_pvalue must be a number in (0, 1), got {pvalue!r}")
    out = np.empty(len(matrices))
    for k, matrix in enumerate(matrices):
        scores = log_odds(matrix, pseudocount)
        offset, tail = _null_tail(scores)
        ok = np.flatnonzero(tail <= pvalue)
        best = float(scores.max(axis=1).sum())
        # the grid rounds each entry by up to half a bin: stay within the attainable range
        out[k] = min(best, (ok[0] + offset) * _RESOLUTION) if ok.size else best
    return out


@dataclass
class LinearConfig:
    """Everything needed to rebuild a :class:`LinearBaseline` (stored in config.json).

    Parameters
    ----------
    n_motifs, n_outputs : int
    length : int, default 300
        Input window L.
    kernel_width : int, default 30
        Width of the log-odds kernel buffer (the widest motif); motifs are left-aligned in it.
    count_pvalue : float, default COUNT_PVALUE
    pseudocount : float, default PSEUDOCOUNT
    ridge : float, default 1.0
        The ridge strength the weights were fitted with (chosen on the validation split).
    """

    n_motifs: int
    n_outputs: int
    length: int = 300
    kernel_width: int = 30
    count_pvalue: float = COUNT_PVALUE
    pseudocount: float = PSEUDOCOUNT
    ridge: float = 1.0

    def __post_init__(self):
        for name in ("n_motifs", "n_outputs", "length", "kernel_width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TisfmError(f"linear baseline option {name} must be a positive integer, got {value!r}")
        if self.kernel_width > self.length:
            raise TisfmError(f"the input window ({self.length} bp) is shorter than the widest motif "
                             f"({self.kernel_width} bp)")
        for name in ("count_pvalue", "pseudocount", "ridge"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) \
                    or value < 0:
                raise TisfmError(f"linear baseline option {name} must be a number >= 0, got {value!r}")
        if not 0 < self.count_pvalue < 1:
            raise TisfmError(f"count_pvalue must be in (0, 1), got {self.count_pvalue!r}")

    @property
    def variant(self):
        return "linear"

    @property
    def n_features(self):
        return 2 * self.n_motifs

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, data):
        if not isinstance(data, dict):
            raise TisfmError("linear baseline config must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TisfmError(f"linear baseline config has unknown fields: {', '.join(unknown)}")
        missing = [k for k in ("n_motifs", "n_outputs") if k not in data]
        if missing:
            raise TisfmError(f"linear baseline config is missing required fields: {', '.join(missing)}")
        return cls(**data)


class LinearBaseline(nn.Module):
    """Ridge regression of the outputs on per-motif max log-odds score and site count.

    Parameters
    ----------
    config : LinearConfig
    matrices : sequence of array-like, each (w, 4), optional
        The motif probability matrices; they fill the log-odds kernels and the count thresholds.
        Without them (rebuilding a saved run) every buffer starts at zero and is loaded.

    Attributes
    ----------
    kernels : torch.Tensor, (2 n, 4, kernel_width)
        Log-odds of motif k in channel 2k and of its reverse complement in 2k + 1, left-aligned.
    widths : torch.Tensor, (n,)
    threshold : torch.Tensor, (n,)
        Score of a counted site.
    center, spread : torch.Tensor, (2 n,)
        Training mean and standard deviation of the features (max scores, then counts).
    final : nn.Linear(2 n, n_outputs)
        The ridge coefficients on the standardised features.
    """

    supports_tism = False

    def __init__(self, config, matrices=None):
        super().__init__()
        self.config = config
        n, width = config.n_motifs, config.kernel_width
        kernels = torch.zeros(2 * n, 4, width)
        widths = torch.ones(n, dtype=torch.int64)
        threshold = torch.zeros(n)
        if matrices is not None:
            if len(matrices) != n:
                raise TisfmError(f"{len(matrices)} motif matrices for a linear baseline of {n} motifs")
            for k, matrix in enumerate(matrices):
                lo = log_odds(matrix, config.pseudocount)
                w = lo.shape[0]
                if w > width:
                    raise TisfmError(f"motif {k} is {w} wide, wider than the kernel buffer ({width})")
                kernels[2 * k, :, :w] = torch.from_numpy(lo.T.copy())
                kernels[2 * k + 1, :, :w] = torch.from_numpy(lo[::-1, ::-1].T.copy())
                widths[k] = w
            threshold = torch.from_numpy(score_thresholds(matrices, config.count_pvalue,
                                                          config.pseudocount)).float()
        self.register_buffer("kernels", kernels)
        self.register_buffer("widths", widths)
        self.register_buffer("threshold", threshold)
        self.register_buffer("center", torch.zeros(2 * n))
        self.register_buffer("spread", torch.ones(2 * n))
        self.final = nn.Linear(2 * n, config.n_outputs)
        with torch.no_grad():
            self.final.weight.zero_()
            self.final.bias.zero_()

    @classmethod
    def from_motifs(cls, motifs, *, n_outputs, length, **options):
        """A fresh (unfitted) baseline for a :class:`~tisfm_core.motifs.MotifSet`."""
        config = LinearConfig(n_motifs=len(motifs), n_outputs=n_outputs, length=length,
                              kernel_width=max(motifs.max_width, 1), **options)
        return cls(config, motifs.matrices)

    # -- features -------------------------------------------------------------------------------
    def raw_features(self, x):
        """Max scores and site counts: (N, 4, L) one-hot -> (N, 2 n) float32.

        Start positions where a motif would run past the end of the window are excluded (the
        last ``kernel_width - 1`` starts are scored on a right-padded copy of the sequence end).
        """
        x = x.float()
        if x.dim() != 3 or x.shape[1] != 4 or x.shape[2] != self.config.length:
            raise TisfmError(f"input must be shaped (N, 4, {self.config.length}), got {tuple(x.shape)}")
        if x.shape[0] == 0:
            return x.new_zeros((0, 2 * self.config.n_motifs))
        # (chunk, 2n, L) scores: 32 sequences of 862 motifs take 66 MB
        return torch.cat([self._raw_features(c) for c in x.split(32)])

    def _block(self, scores, threshold):
        """Max over both strands and positions and the number of scores >= threshold."""
        n = self.config.n_motifs
        flat = scores.reshape(scores.shape[0], n, -1)     # channels 2k and 2k + 1 side by side
        best = flat.amax(dim=-1)
        # one subtraction and an in-place comparison: about half the time of (flat >= t).sum()
        count = (flat - threshold[None, :, None]).gt_(0.0).sum(dim=-1)
        return best, count

    def _raw_features(self, x):
        length, width = self.config.length, self.config.kernel_width
        # the 1e-4 margin keeps a site scored exactly at the threshold counted despite rounding
        threshold = self.threshold - 1e-4
        best, count = self._block(F.conv1d(x, self.kernels), threshold)    # starts 0 .. L - K
        if width > 1:
            tail = F.conv1d(F.pad(x[:, :, length - width + 1:], (0, width - 1)), self.kernels)
            starts = torch.arange(length - width + 1, length, device=x.device)
            valid = (starts[None, :] <= (length - self.widths)[:, None]).repeat_interleave(2, dim=0)
            tail = tail.masked_fill(~valid[None], -torch.inf)
            tail_best, tail_count = self._block(tail, threshold)
            best, count = torch.maximum(best, tail_best), count + tail_count
        return torch.cat([best, count], dim=1)

    def features(self, x):
        """Standardised features fed to the linear layer: (N, 2 n)."""
        return (self.raw_features(x) - self.center) / self.spread

    def forward(self, x):
        """x: (N, 4, L) one-hot in A,C,G,T order -> (N, n_outputs)."""
        return self.final(self.features(x))

    # -- views for interpretation ---------------------------------------------------------------
    @property
    def max_weights(self):
        """Standardised coefficients of the max-score features: (R, n)."""
        return self.final.weight.detach()[:, : self.config.n_motifs]

    @property
    def count_weights(self):
        """Standardised coefficients of the site-count features: (R, n)."""
        return self.final.weight.detach()[:, self.config.n_motifs:]

    @property
    def final_weights(self):
        """One weight per motif and output, the sum of its two standardised coefficients: (R, n)."""
        return self.max_weights + self.count_weights


# -- fitting -------------------------------------------------------------------------------------

def _feature_matrix(model, indices, batch_size, device):
    idx = torch.as_tensor(np.ascontiguousarray(indices, dtype=np.uint8))
    out = []
    with torch.inference_mode():
        for start in range(0, idx.shape[0], batch_size):
            out.append(model.raw_features(one_hot_torch(idx[start:start + batch_size].to(device))).cpu())
    return torch.cat(out).double().numpy()


def fit_linear(model, train, val, *, alphas=RIDGE_GRID, batch_size=64, device="cpu", verbose=False):
    """Fit a :class:`LinearBaseline` in place: standardise on ``train``, ridge for every alpha,
    keep the alpha with the lowest validation MSE (mean over outputs).

    Parameters
    ----------
    model : LinearBaseline
    train, val : tuple of (np.ndarray uint8 (N, L), np.ndarray float32 (N, R))
    alphas : sequence of float, default RIDGE_GRID
        Ridge strengths (> 0) for the objective ``mean squared error + alpha * ||beta||^2`` on
        standardised features (one alpha for all outputs).
    batch_size : int, default 64
        Sequences scanned at once.
    device : str, default "cpu"
    verbose : bool, default False

    Returns
    -------
    dict
        ``alphas``, ``val_mse`` (per alpha), ``train_mse`` (per alpha), ``best`` ({"alpha",
        "val_loss"}), ``seconds`` and ``feature_seconds``.
    """
    from .devices import resolve_device

    if not isinstance(model, LinearBaseline):
        raise TisfmError(f"fit_linear fits a LinearBaseline, not a {type(model).__name__}")
    batch_size = check_integer(batch_size, "batch_size")
    alphas = np.asarray(alphas, dtype=np.float64).ravel()
    if alphas.size == 0 or not np.isfinite(alphas).all() or (alphas <= 0).any():
        raise TisfmError(f"ridge strengths must be finite numbers > 0, got {alphas.tolist()}")
    (xi, y), (vi, vy) = train, val
    if len(xi) < 2 or len(vi) == 0:
        raise TisfmError(f"the linear baseline needs at least 2 training and 1 validation samples, "
                         f"got {len(xi)} and {len(vi)}")
    started = time.perf_counter()
    device = resolve_device(device)
    model.to(device).eval()
    X = _feature_matrix(model, xi, batch_size, device)
    V = _feature_matrix(model, vi, batch_size, device)
    feature_seconds = time.perf_counter() - started
    y = np.asarray(y, dtype=np.float64)
    vy = np.asarray(vy, dtype=np.float64)
    center = X.mean(axis=0)
    spread = X.std(axis=0)
    spread = np.where(spread > 1e-8, spread, 1.0)   # constant features stay at 0 and get weight 0
    # in place: the feature matrix of a large atlas is hundreds of MB
    Z = X
    Z -= center
    Z /= spread
    Zv = V
    Zv -= center
    Zv /= spread
    y_mean = y.mean(axis=0)
    n = len(Z)
    gram = Z.T @ Z / n
    cross = Z.T @ (y - y_mean) / n
    eigval, eigvec = np.linalg.eigh(gram)
    eigval = np.clip(eigval, 0.0, None)
    rotated = eigvec.T @ cross
    val_mse, train_mse, betas = [], [], []
    for alpha in alphas:
        beta = eigvec @ (rotated / (eigval + alpha)[:, None])              # (2n, R)
        betas.append(beta)
        val_mse.append(float(np.mean((Zv @ beta + y_mean - vy) ** 2)))
        train_mse.append(float(np.mean((Z @ beta + y_mean - y) ** 2)))
        if verbose:
            print(f"ridge alpha {alpha:<8.3g} train MSE {train_mse[-1]:.4f}  val MSE {val_mse[-1]:.4f}",
                  flush=True)
    best = int(np.argmin(val_mse))
    beta = betas[best]
    with torch.no_grad():
        model.center.copy_(torch.from_numpy(center))
        model.spread.copy_(torch.from_numpy(spread))
        model.final.weight.copy_(torch.from_numpy(beta.T.copy()))
        model.final.bias.copy_(torch.from_numpy(y_mean))
    model.config.ridge = float(alphas[best])
    if verbose:
        print(f"ridge alpha {alphas[best]:.3g} chosen (val MSE {val_mse[best]:.4f})", flush=True)
    return {"alphas": alphas.tolist(), "val_mse": val_mse, "train_mse": train_mse,
            "best": {"alpha": float(alphas[best]), "val_loss": val_mse[best]},
            "seconds": round(time.perf_counter() - started, 2),
            "feature_seconds": round(feature_seconds, 2)}
