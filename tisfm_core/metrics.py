"""Per-output regression metrics (MSE, R², Pearson r) accumulated over batches.

The reference averages per-batch MSE vectors, which weights a short last batch like a full one,
and never computes R² or Pearson (reference doc sections 5 and 9.9). Here every batch adds
float64 sums on the CPU, so the result equals the metric on the pooled data whatever the batching.
"""

import math

import numpy as np
import torch

from .errors import TisfmError

__all__ = ["RegressionMetrics", "regression_metrics", "metrics_table"]

_METRICS = ("mse", "r2", "pearson")


def _as_float64(array, name):
    """Detach and copy a tensor or array to a float64 NumPy array on the CPU."""
    if isinstance(array, torch.Tensor):
        return array.detach().to(device="cpu", dtype=torch.float64).numpy()
    try:
        return np.asarray(array, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TisfmError(f"{name} must be a numeric array or tensor: {error}.") from None


class RegressionMetrics:
    """Accumulate per-output MSE, R² and Pearson r over batches.

    Sums are taken over all rows seen, so results equal the pooled-data metrics regardless of
    batch sizes. To stay accurate when values sit far from zero, ``y`` and ``ŷ`` sums are taken
    about a shift (the first row seen per output); variances and covariances do not depend on it.

    Parameters
    ----------
    n_outputs : int
        Number of outputs R (columns of ``pred`` and ``target``).

    Notes
    -----
    For output k: ``mse = Σ(y−ŷ)²/n``, ``r2 = 1 − Σ(y−ŷ)²/Σ(y−ȳ)²`` and ``pearson`` the
    correlation of y and ŷ. R² is nan when the target column is constant; Pearson is nan when the
    target or the prediction column is constant (their spread is zero, so the ratio is undefined).
    """

    def __init__(self, n_outputs):
        if isinstance(n_outputs, bool) or not isinstance(n_outputs, (int, np.integer)) or n_outputs < 1:
            raise TisfmError(f"RegressionMetrics n_outputs must be a positive integer, got {n_outputs!r}.")
        self.n_outputs = int(n_outputs)
        self.reset()

    def reset(self):
        """Forget every batch seen so far."""
        self.n = 0
        self._shift_y = None
        self._shift_p = None
        self._sums = {key: np.zeros(self.n_outputs) for key in ("y", "yy", "p", "pp", "yp", "sq_err")}

    def update(self, pred, target):
        """Add one batch.

        Parameters
        ----------
        pred : torch.Tensor or numpy.ndarray
            Predictions, shape (B, R); any device and real dtype.
        target : torch.Tensor or numpy.ndarray
            Observed values, shape (B, R).
        """
        p = _as_float64(pred, "pred")
        y = _as_float64(target, "target")
        for name, a in (("pred", p), ("target", y)):
            if a.ndim != 2 or a.shape[1] != self.n_outputs:
                raise TisfmError(f"{name} must have shape (B, {self.n_outputs}), got {a.shape}.")
        if p.shape != y.shape:
            raise TisfmError(f"pred and target must have the same shape, got {p.shape} and {y.shape}.")
        for name, a in (("pred", p), ("target", y)):
            if not np.isfinite(a).all():
                raise TisfmError(f"{name} contains NaN or infinite values; metrics need finite numbers.")
        if len(y) == 0:
            return
        if self._shift_y is None:
            self._shift_y, self._shift_p = y[0].copy(), p[0].copy()
        sums = self._sums
        sums["sq_err"] += ((y - p) ** 2).sum(axis=0)
        y = y - self._shift_y
        p = p - self._shift_p
        self.n += len(y)
        sums["y"] += y.sum(axis=0)
        sums["yy"] += (y * y).sum(axis=0)
        sums["p"] += p.sum(axis=0)
        sums["pp"] += (p * p).sum(axis=0)
        sums["yp"] += (y * p).sum(axis=0)

    def compute(self):
        """Metrics over every row seen.

        Returns
        -------
        dict
            ``"mse"``, ``"r2"``, ``"pearson"``: float64 arrays of shape (R,) (nan where undefined,
            see the class notes); ``"n"``: the number of rows (int).
        """
        if self.n == 0:
            raise TisfmError("RegressionMetrics.compute() needs at least one row; call update() first.")
        n, sums = self.n, self._sums
        ss_y = sums["yy"] - sums["y"] ** 2 / n
        ss_p = sums["pp"] - sums["p"] ** 2 / n
        s_yp = sums["yp"] - sums["y"] * sums["p"] / n
        # Rounding can leave a tiny negative spread for constant columns; treat <= 0 as constant.
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = np.where(ss_y > 0, 1.0 - sums["sq_err"] / ss_y, np.nan)
            pearson = np.where((ss_y > 0) & (ss_p > 0), s_yp / np.sqrt(ss_y * ss_p), np.nan)
        return {"mse": sums["sq_err"] / n, "r2": r2, "pearson": pearson, "n": n}


def regression_metrics(pred, target):
    """Per-output MSE, R² and Pearson r in one call.

    Parameters
    ----------
    pred, target : numpy.ndarray or torch.Tensor
        Shape (N, R).

    Returns
    -------
    dict
        As :meth:`RegressionMetrics.compute`.
    """
    shape = np.shape(pred)
    if len(shape) != 2:
        raise TisfmError(f"pred must have shape (N, R), got {tuple(shape)}.")
    metrics = RegressionMetrics(shape[1])
    metrics.update(pred, target)
    return metrics.compute()


def format_metric(value, digits=3):
    """A metric as text; "n/a" when it is undefined (None or NaN: e.g. the R2 of a constant
    output)."""
    if value is None or isinstance(value, bool):
        return "n/a"
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "n/a"
    return "n/a" if not math.isfinite(value) else f"{value:.{digits}f}"


def _json_number(value):
    value = float(value)
    return None if math.isnan(value) else value


def metrics_table(metrics, output_names):
    """JSON-friendly rows, one per output plus a final ``"mean"`` row.

    Parameters
    ----------
    metrics : dict
        Output of :meth:`RegressionMetrics.compute` or :func:`regression_metrics`.
    output_names : sequence of str
        One name per output, in column order.

    Returns
    -------
    list of dict
        Rows ``{"output", "mse", "r2", "pearson", "n"}``; nan becomes None. The ``"mean"`` row
        averages each metric over the outputs where it is defined (None if it is defined for none).
    """
    missing = [key for key in (*_METRICS, "n") if key not in metrics]
    if missing:
        raise TisfmError(f"metrics dict lacks the field(s) {', '.join(missing)}; pass the output of compute().")
    columns = {key: np.asarray(metrics[key], dtype=np.float64).reshape(-1) for key in _METRICS}
    names = [str(name) for name in output_names]
    for key, column in columns.items():
        if len(column) != len(names):
            raise TisfmError(f"metrics field {key!r} has {len(column)} values but {len(names)} "
                             f"output names were given.")
    n = int(metrics["n"])
    rows = [
        {"output": name, **{key: _json_number(columns[key][k]) for key in _METRICS}, "n": n}
        for k, name in enumerate(names)
    ]
    mean = {}
    for key, column in columns.items():
        defined = column[~np.isnan(column)]
        mean[key] = _json_number(defined.mean()) if len(defined) else None
    rows.append({"output": "mean", **mean, "n": n})
    return rows
