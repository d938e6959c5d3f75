"""Pooling weight against information content (paper Fig. 3A).

Low-information motifs learn small pooling weights (close to average pooling), high-information
motifs large ones (close to max pooling). The table also carries the final-layer coefficient of
one output (the colour of the figure) and the residual of the linear trend, whose largest
values mark the outliers (in the paper the three width-30 motifs Pax4, Bcl6 and Rela).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import TisfmError, check_outputs
from .final_layer import as_run, final_layer, motif_table, require_tisfm


def pooling_vs_ic(run, output=None):
    """Per-motif information content, pooling weight and final-layer coefficient.

    Parameters
    ----------
    run : Run or str or Path
    output : str or int or None, default None
        Output whose coefficient fills ``coef`` (name or position); None means the first.

    Returns
    -------
    pandas.DataFrame
        One row per motif in motif-file order with columns ``motif``, ``name``, ``ic`` (bits,
        uniform background), ``width``, ``pooling`` (the learned pooling weight a), ``coef``,
        ``residual`` (pooling minus the least-squares line pooling ~ ic) and ``residual_z``
        (residual over its standard deviation, ddof 0). Both are zero when the line fits
        exactly (within rounding).
        ``df.attrs`` holds ``output``, ``slope`` and ``intercept``.

    Raises
    ------
    TisfmError
        For a baseline run (AI-TAC, linear), a run without motifs.meme, a max-pooling run (its pooling weights are
        unused) or an unknown output.
    """
    run = as_run(run)
    require_tisfm(run, "pooling weights")
    table = motif_table(run)
    if run.model.config.pooling != "programmable":
        raise TisfmError(f"run {run.name} is the {run.model.config.variant} variant with max pooling: "
                         "its pooling weights are not used, so there is no pooling-vs-IC relation")
    position = 0 if output is None else check_outputs(output, len(run.outputs), run.outputs,
                                                      owner=f"run {run.name}")[0]
    column = run.outputs[int(position)]
    pooling = run.model.pooling_weights.cpu().numpy().astype(np.float64)
    ic = table["ic"].to_numpy()
    if len(table) >= 2 and np.ptp(ic) > 0:
        slope, intercept = np.polyfit(ic, pooling, 1)
    else:
        slope, intercept = 0.0, float(pooling.mean())
    residual = pooling - (slope * ic + intercept)
    spread = residual.std()
    # rounding noise around an exact fit (e.g. untrained, all-equal pooling weights) is no signal
    if spread <= 1e-9 * max(1.0, float(np.abs(pooling).max())):
        residual, spread = np.zeros_like(residual), 0.0
    out = pd.DataFrame({
        "motif": table["id"], "name": table["name"], "ic": ic, "width": table["width"],
        "pooling": pooling, "coef": final_layer(run)[column].to_numpy(dtype=np.float64),
        "residual": residual,
        "residual_z": (residual - residual.mean()) / spread if spread > 0 else np.zeros_like(residual),
    })
    out.attrs.update(output=column, slope=float(slope), intercept=float(intercept))
    return out


def correlations(df, x="ic", y="pooling"):
    """Pearson and Spearman correlation of two columns of :func:`pooling_vs_ic`.

    Returns
    -------
    dict
        ``pearson_r``, ``pearson_p``, ``spearman_rho``, ``spearman_p`` (scipy.stats, two-sided)
        and ``n``. The four statistics are NaN when either column is constant (e.g. the pooling
        weights of an untrained model).
    """
    for col in (x, y):
        if col not in df.columns:
            raise TisfmError(f"the table has no column {col!r}; expected one of "
                             f"{', '.join(map(str, df.columns))}")
    a = df[x].to_numpy(dtype=np.float64)
    b = df[y].to_numpy(dtype=np.float64)
    if len(a) < 3:
        raise TisfmError(f"correlations need at least 3 motifs, got {len(a)}")
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        nan = float("nan")
        return {"pearson_r": nan, "pearson_p": nan, "spearman_rho": nan, "spearman_p": nan, "n": len(a)}
    pearson = stats.pearsonr(a, b)
    spearman = stats.spearmanr(a, b)
    return {"pearson_r": float(pearson.statistic), "pearson_p": float(pearson.pvalue),
            "spearman_rho": float(spearman.statistic), "spearman_p": float(spearman.pvalue),
            "n": len(a)}


def outliers(df, n=5):
    """The ``n`` motifs farthest from the pooling ~ IC trend (largest |residual|), farthest first."""
    if "residual" not in df.columns:
        raise TisfmError("outliers expects the table returned by pooling_vs_ic (column 'residual')")
    order = np.argsort(-np.abs(df["residual"].to_numpy()), kind="stable")
    return df.iloc[order[:n]]
