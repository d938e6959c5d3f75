"""The final layer (motif x output weights) and the paper's Fig. 2A presentation of it.

Every function here takes the weights in the orientation of :func:`final_layer`: one row per
motif, one column per output (the transpose of the PyTorch weight, which is (outputs, motifs)).
The paper's "row normalisation" is of PyTorch rows, i.e. of outputs, i.e. of our columns.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.cluster.hierarchy import leaves_list, linkage
from scipy.spatial.distance import pdist, squareform

from ..errors import TisfmError
from ..runs import Run, load_run

BY = ("abs", "positive")
METRICS = ("correlation", "euclidean")


def as_run(run):
    """A loaded :class:`~tisfm_core.runs.Run` from a Run or a run directory path."""
    if isinstance(run, Run):
        return run
    if isinstance(run, (str, Path)):
        return load_run(run)
    raise TisfmError(f"expected a run directory or a loaded Run, got {type(run).__name__}")


def require_motif_layer(run, what):
    """TisfmError unless ``run`` has one final-layer weight per motif and output (tiSFM or the
    linear baseline; the AI-TAC baseline has none)."""
    if not run.has_motif_layer:
        raise TisfmError(f"run {run.name} is an AI-TAC baseline: it has no {what}")


def require_tisfm(run, what):
    """TisfmError unless ``run`` is a tiSFM run (the baselines have no pooling weights,
    interaction gate or trainable kernels)."""
    if run.kind != "tisfm":
        kind = "a linear baseline" if run.kind == "linear" else "an AI-TAC baseline"
        raise TisfmError(f"run {run.name} is {kind}: it has no {what}")


def require_motifs(run):
    """The run's MotifSet; TisfmError when its motifs.meme is missing."""
    if run.motifs is None:
        raise TisfmError(f"run {run.name} has no motifs.meme, so the motif matrices (information "
                         "content, widths, original kernels) are unknown")
    return run.motifs


def final_layer(run):
    """Final-layer weights of a run.

    Parameters
    ----------
    run : Run or str or Path

    Returns
    -------
    pandas.DataFrame
        Shape (n_motifs, n_outputs): index = motif ids in motif-file order (named "motif"; the
        padding features are excluded), columns = output names, float32 values. For a linear
        baseline each value is the sum of the motif's standardised max-score and site-count
        coefficients (:attr:`tisfm_core.linear.LinearBaseline.final_weights`).
    """
    run = as_run(run)
    require_motif_layer(run, "motif final layer")
    w = run.model.final_weights.cpu().numpy().T
    return pd.DataFrame(w, index=pd.Index(run.motif_ids, name="motif"), columns=run.outputs)


def final_layer_difference(run, parent=None):
    """Final layer of a fine-tuned run minus its parent's, for the outputs both have.

    Parameters
    ----------
    run : Run or str or Path
    parent : Run or str or Path, optional
        Default the parent the run records (:func:`tisfm_core.finetune.load_parent_of`).

    Returns
    -------
    pandas.DataFrame
        Shape (n_motifs, n_shared): index = motif ids, columns = the shared outputs in the
        run's order, values ``w_run - w_parent`` (float64).

    Raises
    ------
    TisfmError
        When the runs have other motifs or no output in common.
    """
    from ..finetune import load_parent_of

    run = as_run(run)
    parent = load_parent_of(run) if parent is None else as_run(parent)
    child_w, parent_w = final_layer(run), final_layer(parent)
    if list(child_w.index) != list(parent_w.index):
        raise TisfmError(f"runs {run.name} and {parent.name} have other motifs: their final layers "
                         "cannot be compared")
    shared = [o for o in child_w.columns if o in set(parent_w.columns)]
    if not shared:
        raise TisfmError(f"run {run.name} shares no output with {parent.name}: every output is new")
    return child_w[shared].astype(np.float64) - parent_w[shared].astype(np.float64)


def motif_table(run):
    """One row per motif: ``id``, ``name``, ``ic`` (bits, uniform background), ``width``.

    Raises
    ------
    TisfmError
        For an AI-TAC run or a run without its motifs.meme.
    """
    run = as_run(run)
    require_motif_layer(run, "motifs")
    motifs = require_motifs(run)
    return pd.DataFrame({"id": list(motifs.ids), "name": list(motifs.names),
                         "ic": motifs.information_content(), "width": motifs.widths})


def _matrix(W):
    values = np.asarray(W, dtype=np.float64)
    if values.ndim != 2:
        raise TisfmError(f"weights must be a 2-D (motifs x outputs) table, got {values.ndim} dimension(s)")
    if not np.isfinite(values).all():
        raise TisfmError("weights contain NaN or infinite values")
    return values


def normalise_rows(W):
    """The paper's normalisation (Fig. 2A): each output's weights over that output's max |w|.

    Values land in [-1, 1]; zeros stay zero and signs are kept, so sparsity is preserved. An
    output whose weights are all zero stays all zero.

    Parameters
    ----------
    W : pandas.DataFrame or array-like, shape (n_motifs, n_outputs)

    Returns
    -------
    Same type as ``W`` (a DataFrame keeps its labels), float64.
    """
    values = _matrix(W)
    scale = np.abs(values).max(axis=0, initial=0.0)
    out = values / np.where(scale > 0, scale, 1.0)
    if isinstance(W, pd.DataFrame):
        return pd.DataFrame(out, index=W.index, columns=W.columns)
    return out


def top_k(values, k, by="abs"):
    """Positions of the k largest entries of a 1-D weight vector, best first.

    ``by="abs"`` ranks by |w| and skips exact zeros; ``by="positive"`` ranks by w and keeps
    only w > 0. Ties keep motif order (stable sort).
    """
    if by not in BY:
        raise TisfmError(f"by must be one of {', '.join(BY)}, not {by!r}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise TisfmError(f"k must be a positive integer, not {k!r}")
    score = np.abs(values) if by == "abs" else np.asarray(values, dtype=np.float64)
    order = np.argsort(-score, kind="stable")
    return order[score[order] > 0][:k]


def top_k_union(W, k=5, by="abs"):
    """Union over outputs of each output's top-k motifs (the rows shown in Fig. 2A).

    Parameters
    ----------
    W : pandas.DataFrame or array-like, shape (n_motifs, n_outputs)
    k : int, default 5
    by : {"abs", "positive"}, default "abs"
        Rank by |w| (zero weights never count) or by w (only positive weights count).

    Returns
    -------
    list
        Motif ids (DataFrame index labels; row positions for an array), ordered by output and,
        within an output, by rank; each motif appears once, at its first occurrence.
    """
    values = _matrix(W)
    labels = list(W.index) if isinstance(W, pd.DataFrame) else list(range(values.shape[0]))
    chosen = {}
    for j in range(values.shape[1]):
        for i in top_k(values[:, j], k, by=by):
            chosen.setdefault(labels[i], None)
    return list(chosen)


def _distances(values, metric):
    if metric == "euclidean":
        return pdist(values, "euclidean")
    # correlation distance 1 - r, with constant rows (r undefined) at distance 0 from each other
    # and 1 from every other row, so they cluster together instead of turning the linkage NaN
    centred = values - values.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(centred, axis=1)
    constant = norms <= 1e-12 * np.maximum(np.abs(values).max(axis=1, initial=0.0), 1.0)
    unit = centred / np.where(constant, 1.0, norms)[:, None]
    dist = np.clip(1.0 - unit @ unit.T, 0.0, 2.0)
    dist[constant, :] = 1.0
    dist[:, constant] = 1.0
    dist[np.ix_(constant, constant)] = 0.0
    np.fill_diagonal(dist, 0.0)
    return squareform((dist + dist.T) / 2, checks=False)


def _leaf_order(values, metric):
    if values.shape[0] < 3:
        return np.arange(values.shape[0])
    tree = linkage(_distances(values, metric), method="average", optimal_ordering=True)
    return leaves_list(tree)


def cluster_order(W, metric="correlation"):
    """Row and column order from average-linkage hierarchical clustering (deterministic).

    Parameters
    ----------
    W : pandas.DataFrame or array-like, shape (n_motifs, n_outputs)
    metric : {"correlation", "euclidean"}, default "correlation"
        Correlation distance is 1 - Pearson r; constant rows (or columns) are at distance 0
        from each other and 1 from all others. Leaves are put in optimal order.

    Returns
    -------
    rows, columns : numpy.ndarray of int
        Permutations of ``range(n_motifs)`` and ``range(n_outputs)``; apply with
        ``W.iloc[rows, columns]``.
    """
    if metric not in METRICS:
        raise TisfmError(f"metric must be one of {', '.join(METRICS)}, not {metric!r}")
    values = _matrix(W)
    return _leaf_order(values, metric), _leaf_order(values.T, metric)
