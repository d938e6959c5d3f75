"""Inclusion ratios over cross-validation runs (paper Fig. 2B).

ratio[j, k] = (1 / F) * sum over the F runs of 1[motif j is among the top-k motifs of output k by
|w|]. Exact zeros never count as top-k (a sparse output with fewer than k non-zero weights
contributes only those).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import TisfmError
from ..runs import is_run, read_run_config
from .final_layer import as_run, final_layer, top_k
from .groups import group_weights


def inclusion_ratio(runs, k=10, *, groups=None, how="sum", scale="raw"):
    """Fraction of runs in which each motif (or motif group) is among an output's top-k by |w|.

    Parameters
    ----------
    runs : sequence of Run or run directory paths
        Typically the folds of one CV set (:func:`cv_siblings`). They must share motif ids
        (same order) and outputs.
    k : int, default 10
    groups : pandas.Series, optional
        The group of every motif (:func:`~tisfm_core.analysis.groups.motif_groups`): each run's
        weights are pooled per group (``how``) before ranking, so the rows are groups.
    how : {"sum", "mean", "max_abs"}, default "sum"
        Pooling of a group's weights (see :func:`~tisfm_core.analysis.groups.group_weights`).
    scale : {"raw", "sd"}, default "raw"
        Rank each run's weights as trained or per standard deviation of the motif's feature
        (:func:`~tisfm_core.analysis.final_layer.final_layer`).

    Returns
    -------
    pandas.DataFrame
        Shape (n_motifs, n_outputs), index = motif ids (named "motif"; group names, named
        "group", with ``groups``), columns = outputs, values in [0, 1] (multiples of
        1 / len(runs)).

    Raises
    ------
    TisfmError
        For no runs, an AI-TAC run, or a run whose motif ids or outputs differ from the first
        run's (the message names it).
    """
    runs = list(runs)
    if not runs:
        raise TisfmError("inclusion ratios need at least one run")
    counts, first = None, None
    for item in runs:
        run = as_run(item)
        W = final_layer(run, scale=scale)
        if groups is not None:
            W = group_weights(W, groups, how=how)
        if first is None:
            first = (run.name, W.index, W.columns)
            counts = np.zeros(W.shape)
        else:
            name, motifs, outputs = first
            if not W.index.equals(motifs):
                raise TisfmError(f"run {run.path} has other motif ids than run {name}; inclusion "
                                 "ratios compare runs trained on the same motif set")
            if not W.columns.equals(outputs):
                raise TisfmError(f"run {run.path} has outputs {list(W.columns)}, but run {name} has "
                                 f"{list(outputs)}")
        values = W.to_numpy()
        for j in range(values.shape[1]):
            counts[top_k(values[:, j], k, by="abs"), j] += 1
    _, motifs, outputs = first
    return pd.DataFrame(counts / len(runs), index=motifs, columns=outputs)


def _fold(path, config):
    split = config.get("split")
    fold = split.get("fold") if isinstance(split, dict) else None
    if isinstance(fold, bool) or not isinstance(fold, int):
        fold = np.inf
    return fold, path.name


def cv_siblings(run_path):
    """The runs of the CV set that ``run_path`` belongs to, sorted by fold.

    Siblings are the run directories in the same parent folder whose config.json has the same
    ``group`` (set by ``tisfm cv``); ``run_path`` itself is included.

    Parameters
    ----------
    run_path : str or Path

    Returns
    -------
    list of Path
        Sorted by ``config["split"]["fold"]`` (then folder name).

    Raises
    ------
    TisfmError
        When the run has no ``group`` (it was not trained as part of a CV set).
    """
    run_path = Path(run_path)
    group = read_run_config(run_path).get("group")
    if not group:
        raise TisfmError(f"run {run_path} has no 'group' in its config.json: it was not trained as "
                         "part of a cross-validation set (tisfm cv)")
    found = []
    for path in sorted(p for p in run_path.resolve().parent.iterdir() if p.is_dir()):
        if not is_run(path):
            continue
        config = read_run_config(path)
        if config.get("group") == group:
            found.append((_fold(path, config), path))
    return [path for _, path in sorted(found, key=lambda item: item[0])]


def inclusion_filter(ratio, threshold=0.5):
    """Rows of an inclusion-ratio table with ratio > ``threshold`` for at least one output.

    Parameters
    ----------
    ratio : pandas.DataFrame
        From :func:`inclusion_ratio`.
    threshold : float, default 0.5

    Returns
    -------
    pandas.DataFrame
        The kept rows, in their original order.
    """
    if not isinstance(ratio, pd.DataFrame):
        raise TisfmError("inclusion_filter expects the DataFrame returned by inclusion_ratio")
    return ratio.loc[(ratio.to_numpy() > threshold).any(axis=1)]
