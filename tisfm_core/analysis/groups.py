"""TF-level views: motifs grouped by TF name or by motif-similarity cluster, and final-layer
coefficients pooled per group.

Motif collections hold several motifs per TF (cisBP has 862 motifs of 639 TFs) and families of
near-identical motifs of different TFs (ETS, HOX, bZIP), between which a model may split one
effect. Grouping pools them, as the paper pools the coefficients of motifs of the same TF.

Similarity is memelite's Tomtom (the MEME suite's motif comparison, complete scores, both
strands): the p-value of the best alignment of one motif against another. Within one collection
the matrix is symmetrised by the larger p-value of the two directions (each motif must match the
other). Clusters are average-linkage clusters of log10 p cut at ``CLUSTER_PVALUE``: the geometric
mean p-value between any two clusters is above it. Tomtom needs about a second for 862 x 862
motifs (after numba's one-off compilation); results are kept per motif-set fingerprint in memory
and, when a ``cache_dir`` is given, as ``tomtom-<fingerprint>.npz`` in it.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

from ..atomic import read_arrays, write_npz
from ..errors import TisfmError
from ..motifs import MotifSet
from .final_layer import as_run, final_layer, require_motif_layer, require_motifs

__all__ = ["motif_similarity", "motif_clusters", "motif_groups", "run_motif_groups", "group_weights",
           "grouped_final_layer", "CLUSTER_PVALUE", "GROUPINGS", "POOLINGS"]

#: Tomtom p-value under which two motifs count as near-identical (clusters, recovery hits).
CLUSTER_PVALUE = 1e-5
GROUPINGS = ("tf", "cluster")
POOLINGS = ("sum", "mean", "max_abs")
_MEMORY = {}
# a CIS-BP / JASPAR style suffix that is not part of the TF name ("Cebpb_2", "CEBPB(var.2)")
_VARIANT_SUFFIX = re.compile(r"(\(var\.\d+\)|_\d+)$")


def _tomtom(queries, targets):
    from memelite import tomtom

    with warnings.catch_warnings():
        # fewer than 25 targets: p-values less calibrated (memelite warns); still rank correctly
        warnings.simplefilter("ignore", UserWarning)
        p = tomtom([np.asarray(m, dtype=np.float64).T for m in queries],
                   [np.asarray(m, dtype=np.float64).T for m in targets])[0]
    return np.asarray(p, dtype=np.float64)


def _check_motifs(motifs, what="motifs"):
    if not isinstance(motifs, MotifSet):
        raise TisfmError(f"{what} must be a MotifSet, got {type(motifs).__name__}")
    return motifs


def motif_similarity(motifs, targets=None, *, cache_dir=None):
    """Tomtom p-values between motifs.

    Parameters
    ----------
    motifs : MotifSet
        Queries.
    targets : MotifSet, optional
        Targets; None compares ``motifs`` with itself and symmetrises (larger p of the two
        directions), which is what the clusters use.
    cache_dir : str or Path, optional
        Folder for ``tomtom-<fingerprint>.npz`` (self-comparisons only); created if needed.

    Returns
    -------
    numpy.ndarray, float64, shape (n_queries, n_targets)
        p-values in [0, 1]; the diagonal of a self-comparison is 0.
    """
    motifs = _check_motifs(motifs)
    if targets is not None:
        return _tomtom(motifs.matrices, _check_motifs(targets, "targets").matrices)
    key = motifs.fingerprint
    if key in _MEMORY:
        return _MEMORY[key]
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"tomtom-{key.partition(':')[2][:24]}.npz"
        if path.is_file():
            try:
                cached = read_arrays(path, what="motif similarity cache")
                if list(cached["ids"]) == list(motifs.ids) and cached["p"].shape == (len(motifs),) * 2:
                    _MEMORY[key] = cached["p"].astype(np.float64)
                    return _MEMORY[key]
            except (TisfmError, KeyError):
                pass  # a broken cache is recomputed and replaced
    p = _tomtom(motifs.matrices, motifs.matrices)
    p = np.maximum(p, p.T)
    np.fill_diagonal(p, 0.0)
    _MEMORY[key] = p
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_npz(path, p=p.astype(np.float32), ids=np.asarray(motifs.ids, dtype=str))
        except OSError:
            pass  # an unwritable cache folder only costs the recomputation next time
    return p


def motif_clusters(motifs, *, threshold=CLUSTER_PVALUE, pvalues=None, cache_dir=None):
    """Motif-similarity clusters of a motif set.

    Parameters
    ----------
    motifs : MotifSet
    threshold : float, default CLUSTER_PVALUE
        Average-linkage clustering of log10 p is cut at log10(threshold).
    pvalues : numpy.ndarray, shape (n, n), optional
        A symmetric p-value matrix to use instead of Tomtom's (e.g. precomputed).
    cache_dir : str or Path, optional
        See :func:`motif_similarity`.

    Returns
    -------
    numpy.ndarray, int64, shape (n,)
        Cluster number of each motif, numbered 0, 1, ... in order of first appearance.
    """
    motifs = _check_motifs(motifs)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold < 1:
        raise TisfmError(f"threshold must be a p-value in (0, 1), got {threshold!r}")
    p = motif_similarity(motifs, cache_dir=cache_dir) if pvalues is None else np.asarray(pvalues, float)
    n = len(motifs)
    if p.shape != (n, n):
        raise TisfmError(f"the p-value matrix is {p.shape}, expected ({n}, {n})")
    if n == 1:
        return np.zeros(1, dtype=np.int64)
    floor = 1e-300
    d = np.log10(np.clip(np.maximum(p, p.T), floor, 1.0)) - np.log10(floor)   # >= 0
    np.fill_diagonal(d, 0.0)
    tree = linkage(squareform(d, checks=False), method="average")
    labels = fcluster(tree, np.log10(threshold) - np.log10(floor), criterion="distance")
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.argsort(np.argsort(first))
    return rank[inverse].astype(np.int64)


def _tf_name(name):
    return _VARIANT_SUFFIX.sub("", name).upper()


def motif_groups(motifs, by="tf", **options):
    """The group of every motif.

    Parameters
    ----------
    motifs : MotifSet
    by : {"tf", "cluster"}, default "tf"
        "tf": the motif's TF name, case-insensitive, without a variant suffix ("Cebpb_2",
        "CEBPB(var.2)" -> "CEBPB"); "cluster": the similarity cluster (:func:`motif_clusters`),
        named after its members' TF names ("ELF1/ETS1/FLI1 +5").
    **options
        For ``by="cluster"``: passed to :func:`motif_clusters` (``threshold``, ``pvalues``,
        ``cache_dir``); unused for ``by="tf"``.

    Returns
    -------
    pandas.Series
        Index = motif ids in motif-set order (named "motif"), values = group names (str). Every
        motif is in exactly one group.
    """
    motifs = _check_motifs(motifs)
    if by not in GROUPINGS:
        raise TisfmError(f"by must be one of {', '.join(GROUPINGS)}, not {by!r}")
    tfs = [_tf_name(name) for name in motifs.names]
    if by == "tf":
        labels = tfs
    else:
        clusters = motif_clusters(motifs, **options)
        names = {}
        for c in range(int(clusters.max()) + 1):
            members = sorted({tfs[k] for k in np.flatnonzero(clusters == c)})
            label = "/".join(members[:3]) + (f" +{len(members) - 3}" if len(members) > 3 else "")
            names[c] = label if label not in names.values() else f"{label} #{c}"
        labels = [names[c] for c in clusters]
    return pd.Series(labels, index=pd.Index(list(motifs.ids), name="motif"), name=by)


def run_motif_groups(run, by="tf", *, cache_dir=None, **options):
    """:func:`motif_groups` of a run's motif set (tiSFM or linear run with its motifs.meme)."""
    run = as_run(run)
    require_motif_layer(run, "motifs to group")
    return motif_groups(require_motifs(run), by=by, cache_dir=cache_dir, **options)


def group_weights(W, groups, how="sum"):
    """Final-layer weights pooled per motif group.

    Parameters
    ----------
    W : pandas.DataFrame, shape (n_motifs, n_outputs)
        From :func:`tisfm_core.analysis.final_layer` (index = motif ids).
    groups : pandas.Series
        From :func:`motif_groups` (index = motif ids): must cover every row of ``W``.
    how : {"sum", "mean", "max_abs"}, default "sum"
        Sum or mean of the members' weights, or the member weight of largest |w| (sign kept).

    Returns
    -------
    pandas.DataFrame, shape (n_groups, n_outputs)
        Index = group names (named "group") in order of first appearance in ``W``; the
        attribute ``attrs["members"]`` maps each group to its motif ids.
    """
    if how not in POOLINGS:
        raise TisfmError(f"how must be one of {', '.join(POOLINGS)}, not {how!r}")
    if not isinstance(W, pd.DataFrame) or not isinstance(groups, pd.Series):
        raise TisfmError("group_weights expects the weights DataFrame and the groups Series")
    missing = [m for m in W.index if m not in groups.index]
    if missing:
        raise TisfmError(f"{len(missing)} motif(s) of the weights have no group, e.g. {missing[0]!r}")
    label = groups.loc[W.index].to_numpy()
    order = list(dict.fromkeys(label))
    values = W.to_numpy(dtype=np.float64)
    out = np.zeros((len(order), values.shape[1]))
    members = {}
    for g, name in enumerate(order):
        rows = label == name
        members[name] = list(W.index[rows])
        block = values[rows]
        if how == "sum":
            out[g] = block.sum(axis=0)
        elif how == "mean":
            out[g] = block.mean(axis=0)
        else:
            out[g] = block[np.argmax(np.abs(block), axis=0), np.arange(block.shape[1])]
    table = pd.DataFrame(out, index=pd.Index(order, name="group"), columns=W.columns)
    table.attrs["members"] = members
    return table


def grouped_final_layer(run, by="tf", how="sum", *, scale="raw", cache_dir=None):
    """A run's final layer with one row per motif group (:func:`group_weights` of
    :func:`run_motif_groups`).

    Parameters
    ----------
    run : Run or path
        A tiSFM or linear run with its motifs.meme.
    by : {"tf", "cluster"}, default "tf"
    how : {"sum", "mean", "max_abs"}, default "sum"
    scale : {"raw", "sd"}, default "raw"
        The weights as trained or per standard deviation of each motif's feature, before pooling.
    cache_dir : str or Path, optional
        Where the Tomtom p-values of ``by="cluster"`` are kept.

    Returns
    -------
    W : pandas.DataFrame, shape (n_groups, n_outputs)
        As :func:`group_weights` (``attrs["members"]`` lists each group's motif ids).
    groups : pandas.Series
        The group of every motif (index = motif ids).
    """
    run = as_run(run)
    groups = run_motif_groups(run, by=by, cache_dir=cache_dir)
    return group_weights(final_layer(run, scale=scale), groups, how=how), groups
