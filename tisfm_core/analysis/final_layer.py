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
#: "raw": the weights as trained; "sd": times the standard deviation of the motif's feature over
#: the training sequences (the change of the output per standard deviation of the motif).
SCALES = ("raw", "sd")
#: The scale the app shows first (the recovery study's better ranking; bench/README.md).
DEFAULT_SCALE = "sd"
#: Training sequences (a seeded sample) over which a feature's standard deviation is taken.
FEATURE_SD_SAMPLES = 2048


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


def final_layer(run, scale="raw"):
    """Final-layer weights of a run.

    Parameters
    ----------
    run : Run or str or Path
    scale : {"raw", "sd"}, default "raw"
        "sd" multiplies each motif's weights by the standard deviation of its feature over the
        training sequences (:func:`feature_sd`): the change of the output per standard deviation
        of the motif, comparable across motifs whose features vary more or less.

    Returns
    -------
    pandas.DataFrame
        Shape (n_motifs, n_outputs): index = motif ids in motif-file order (named "motif"; the
        padding features are excluded), columns = output names, float32 values (float64 scaled).
        For a linear baseline each value is the sum of the motif's standardised max-score and
        site-count coefficients (:attr:`tisfm_core.linear.LinearBaseline.final_weights`), per
        standard deviation already.
    """
    if scale not in SCALES:
        raise TisfmError(f"scale must be one of {', '.join(SCALES)}, not {scale!r}")
    run = as_run(run)
    require_motif_layer(run, "motif final layer")
    w = run.model.final_weights.cpu().numpy().T
    W = pd.DataFrame(w, index=pd.Index(run.motif_ids, name="motif"), columns=run.outputs)
    if scale == "sd":
        W = W.astype(np.float64) * feature_sd(run).to_numpy()[:, None]
    return W


def compute_feature_sd(model, indices, *, n_samples=FEATURE_SD_SAMPLES, batch_size=256, random_state=0):
    """Standard deviation of each motif's final-layer input over (a seeded sample of) sequences.

    Parameters
    ----------
    model : TISFM
    indices : numpy.ndarray, uint8, shape (N, L)
        Base indices (0-3 = A, C, G, T) of the training sequences.
    n_samples : int, default FEATURE_SD_SAMPLES
        At most this many sequences, drawn without replacement with ``random_state``.
    batch_size : int, default 256

    Returns
    -------
    numpy.ndarray, float64, shape (n_motifs,)
    """
    import torch

    from ..sequences import one_hot_torch

    indices = np.asarray(indices)
    n = len(indices)
    if n < 2:
        raise TisfmError(f"the standard deviation of a feature needs at least 2 sequences, got {n}")
    pick = np.sort(np.random.default_rng(random_state).choice(n, min(n_samples, n), replace=False))
    device = next(model.parameters()).device
    # fp32 arithmetic whatever the model trained in (bf16 moves these by about 1%)
    was_training, precision, compiled = model.training, model.precision, model.compiled
    model.eval()
    model.precision, model.compiled = "fp32", False
    try:
        with torch.inference_mode():
            feats = torch.cat([model.features(one_hot_torch(torch.from_numpy(indices[pick[s:s + batch_size]])
                                                            .to(device))).double().cpu()
                               for s in range(0, len(pick), batch_size)])
    finally:
        model.train(was_training)
        model.precision, model.compiled = precision, compiled
    return feats[:, :model.config.n_motifs].std(dim=0).numpy()


def feature_sd(run):
    """Each motif's feature standard deviation over the run's training sequences.

    Training stores it in config.json ("feature_sd"); for runs made before that it is computed
    from the training data the run records (:func:`compute_feature_sd`). A linear baseline's
    features are standardised, so its values are 1.

    Returns
    -------
    pandas.Series
        Index = motif ids (named "motif"), float64 values.

    Raises
    ------
    TisfmError
        For a run that stores no feature scale and whose training data cannot be read.
    """
    run = as_run(run)
    require_motif_layer(run, "feature scale")
    index = pd.Index(run.motif_ids, name="motif")
    if run.kind == "linear":
        return pd.Series(1.0, index=index, name="sd")
    stored = run.config.get("feature_sd")
    if isinstance(stored, dict) and isinstance(stored.get("values"), list) and len(stored["values"]) == len(index):
        values = np.asarray(stored["values"], dtype=np.float64)
        if np.isfinite(values).all() and (values >= 0).all():
            return pd.Series(values, index=index, name="sd")
    from ..path import load_run_data

    try:
        train = load_run_data(run)["train"][0]
    except TisfmError as exc:
        raise TisfmError(f"run {run.name} stores no feature scale and its training data cannot be "
                         f"read: {exc}") from exc
    return pd.Series(compute_feature_sd(run.model, train), index=index, name="sd")


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
