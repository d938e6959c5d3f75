"""Recovery of planted regulators: how many of an atlas's planted motifs a model's ranking names.

For output o, the planted activators (repressors) are the motifs of ``truth.json["per_output"][o]``
with sign +1 (-1). A ranking scores every motif of the training collection for every output;
the top k motifs by score (activators: largest positive scores; repressors: most negative ones;
zeros never count) recover a planted motif when one of them is near-identical to it: the motif
itself or a training motif whose Tomtom p-value against the planted PWM is below
:data:`~tisfm_core.analysis.groups.CLUSTER_PVALUE` (:func:`planted_hits`). recall@k pools all
(output, planted motif) pairs of one sign.

Rankings: the final layer (:func:`tisfm_core.analysis.final_layer`), the inclusion ratio over CV
folds (:func:`inclusion_scores`) and the coefficients at each output's best lambda of a
regularization path (:func:`path_scores`). With ``groups`` (motif id -> group, e.g. similarity
clusters from :func:`tisfm_core.analysis.groups.motif_groups`), scores are first summed per group
and groups are ranked; a group recovers a planted motif when it holds one of its hits.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .analysis.groups import CLUSTER_PVALUE, group_weights, motif_similarity
from .errors import TisfmError
from .motifs import MotifSet

__all__ = ["planted_hits", "recall", "inclusion_scores", "path_scores", "SIGNS"]

SIGNS = {"activator": 1, "repressor": -1}


def planted_hits(planted, train, *, threshold=CLUSTER_PVALUE):
    """Training motifs that count as each planted motif.

    Parameters
    ----------
    planted, train : MotifSet
        The planted PWMs (``planted.meme``) and the collection a model trained with.
    threshold : float, default CLUSTER_PVALUE

    Returns
    -------
    dict
        Planted motif id -> set of training motif ids (the motif itself when ``train`` holds it,
        and every motif with Tomtom p(planted -> motif) < ``threshold``).
    """
    if not isinstance(planted, MotifSet) or not isinstance(train, MotifSet):
        raise TisfmError("planted_hits expects two MotifSets (planted PWMs, training collection)")
    p = motif_similarity(planted, train)
    ids = np.asarray(train.ids, dtype=object)
    hits = {}
    for i, motif in enumerate(planted.ids):
        found = set(ids[p[i] < threshold].tolist())
        if motif in train.ids:
            found.add(motif)
        hits[motif] = found
    return hits


def recall(scores, truth, hits, k, *, sign=1, groups=None):
    """recall@k of the planted motifs of one sign.

    Parameters
    ----------
    scores : pandas.DataFrame, shape (n_motifs, n_outputs)
        Index = training motif ids, columns = outputs (those of ``truth["outputs"]``).
    truth : dict
        The atlas's truth.json.
    hits : dict
        From :func:`planted_hits`.
    k : int
    sign : {1, -1}, default 1
        Activators (largest positive scores) or repressors (most negative).
    groups : pandas.Series, optional
        Motif id -> group: rank groups by their summed score instead of motifs.

    Returns
    -------
    tuple of int
        (recovered, planted) over all outputs; planted is 0 when the atlas has none of this sign.
    """
    if sign not in (1, -1):
        raise TisfmError(f"sign must be 1 (activators) or -1 (repressors), got {sign!r}")
    missing = [o for o in truth["outputs"] if o not in scores.columns]
    if missing:
        raise TisfmError(f"the scores have no column for output {missing[0]!r}")
    table = group_weights(scores, groups) if groups is not None else scores
    found = total = 0
    for output in truth["outputs"]:
        planted = [e["motif"] for e in truth["per_output"][output] if e["sign"] == sign]
        if not planted:
            continue
        values = sign * table[output].to_numpy(dtype=np.float64)
        order = np.argsort(-values, kind="stable")
        top = set(table.index[order[values[order] > 0][:k]])
        for motif in dict.fromkeys(planted):
            targets = hits[motif] if groups is None else set(groups.loc[sorted(hits[motif])])
            found += bool(targets & top)
            total += 1
    return found, total


def inclusion_scores(weights, *, k=10, sign=1):
    """Signed inclusion ratio over CV folds as a ranking score.

    Parameters
    ----------
    weights : sequence of pandas.DataFrame
        Final layers of the folds (same motifs and outputs).
    k : int, default 10
        A motif counts in a fold when it is among the output's top k by ``sign * w`` (> 0).
    sign : {1, -1}

    Returns
    -------
    pandas.DataFrame
        ``sign`` x (fraction of folds, plus the fold-mean of ``sign * w`` over its largest
        |value| times 1e-3 to break ties), so that ranking by ``sign * score`` orders motifs by
        inclusion ratio first.
    """
    weights = list(weights)
    if not weights:
        raise TisfmError("inclusion scores need at least one fold")
    counts = np.zeros(weights[0].shape)
    for W in weights:
        if not (W.index.equals(weights[0].index) and W.columns.equals(weights[0].columns)):
            raise TisfmError("the folds' final layers have different motifs or outputs")
        values = sign * W.to_numpy(dtype=np.float64)
        for j in range(values.shape[1]):
            order = np.argsort(-values[:, j], kind="stable")
            counts[order[values[order, j] > 0][:k], j] += 1
    mean = sign * np.mean([W.to_numpy(dtype=np.float64) for W in weights], axis=0)
    scale = np.abs(mean).max(axis=0, initial=0.0)
    tie = mean / np.where(scale > 0, scale, 1.0)
    score = np.where(counts > 0, counts / len(weights) + 1e-3 * tie, 0.0)
    return pd.DataFrame(sign * score, index=weights[0].index, columns=weights[0].columns)


def path_scores(result):
    """Each output's coefficients at its best lambda of a :class:`~tisfm_core.path.PathResult`."""
    columns = {o: result.coefs[result.best_index[r], r].astype(np.float64)
               for r, o in enumerate(result.outputs)}
    return pd.DataFrame(columns, index=pd.Index(result.motif_ids, name="motif"))
