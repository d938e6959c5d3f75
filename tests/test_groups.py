"""TF-level views: grouping keeps every motif exactly once, pooling per group, clusters from
Tomtom p-values, and recall of planted motifs counting near-identical ones."""

import numpy as np
import pandas as pd
import pytest
from conftest import random_motifs

from tisfm_core.analysis.groups import group_weights, motif_clusters, motif_groups
from tisfm_core.errors import TisfmError
from tisfm_core.motifs import MotifSet
from tisfm_core.recovery import inclusion_scores, recall


def _named(names, random_state=0):
    base = random_motifs(len(names), random_state=random_state)
    return MotifSet(base.ids, tuple(names), base.matrices, "test")


def _every_motif_once(groups, motifs):
    assert list(groups.index) == list(motifs.ids)
    members = [m for g in groups.unique() for m in groups.index[groups == g]]
    assert sorted(members) == sorted(motifs.ids) and len(members) == len(set(members))


def test_grouping_by_tf_keeps_every_motif_exactly_once():
    motifs = _named(["Cebpb", "CEBPB", "Cebpb_2", "Spi1", "CEBPB(var.2)", "Gata3"])
    groups = motif_groups(motifs, by="tf")
    _every_motif_once(groups, motifs)
    assert groups.tolist() == ["CEBPB", "CEBPB", "CEBPB", "SPI1", "CEBPB", "GATA3"]


def test_grouping_the_cisbp_collection_keeps_every_motif_exactly_once(cisbp):
    groups = motif_groups(cisbp, by="tf")
    _every_motif_once(groups, cisbp)
    assert 400 < groups.nunique() < len(cisbp)     # several motifs per TF, but not all one


def test_clusters_follow_the_pvalues_and_keep_every_motif_once():
    motifs = _named([f"TF{i}" for i in range(5)])
    p = np.full((5, 5), 0.5)
    p[0, 1] = p[1, 0] = 1e-9        # 0, 1 near-identical
    p[2, 3] = p[3, 2] = 1e-7        # 2, 3 too; 4 alone
    p[1, 2] = p[2, 1] = 1e-3        # similar, but not enough to merge
    np.fill_diagonal(p, 0)
    clusters = motif_clusters(motifs, pvalues=p)
    assert clusters.tolist() == [0, 0, 1, 1, 2]
    groups = motif_groups(motifs, by="cluster", pvalues=p)
    _every_motif_once(groups, motifs)
    assert groups.tolist() == ["TF0/TF1", "TF0/TF1", "TF2/TF3", "TF2/TF3", "TF4"]


def test_tomtom_puts_a_motif_and_its_reverse_complement_together():
    motifs = random_motifs(30, widths=(8, 10, 12), random_state=5)
    mats = list(motifs.matrices)
    mats[1] = mats[0][::-1, ::-1]                    # motif 1 = reverse complement of motif 0
    motifs = MotifSet(motifs.ids, motifs.names, tuple(mats), "test")
    clusters = motif_clusters(motifs)
    assert clusters[0] == clusters[1]
    assert (clusters == clusters[0]).sum() < 30      # the random motifs are not all one cluster


def test_group_weights_pool_members():
    W = pd.DataFrame({"a": [1.0, -3.0, 2.0], "b": [0.5, 0.5, -1.0]}, index=["m0", "m1", "m2"])
    groups = pd.Series(["X", "X", "Y"], index=["m0", "m1", "m2"])
    total = group_weights(W, groups)
    assert total.loc["X"].tolist() == [-2.0, 1.0] and total.loc["Y"].tolist() == [2.0, -1.0]
    assert group_weights(W, groups, how="max_abs").loc["X"].tolist() == [-3.0, 0.5]
    assert group_weights(W, groups, how="mean").loc["X"].tolist() == [-1.0, 0.5]
    assert total.attrs["members"] == {"X": ["m0", "m1"], "Y": ["m2"]}
    with pytest.raises(TisfmError, match="no group"):
        group_weights(W, groups.iloc[:2])


def test_recall_counts_near_identical_motifs_and_signs():
    truth = {"outputs": ["o"], "per_output": {"o": [
        {"motif": "P1", "sign": 1}, {"motif": "P2", "sign": 1}, {"motif": "P3", "sign": -1}]}}
    hits = {"P1": {"m1", "m1b"}, "P2": {"m2"}, "P3": {"m3"}}
    W = pd.DataFrame({"o": [0.0, 5.0, 1.0, 0.5, -2.0, 3.0]}, index=["m1", "m1b", "m2", "x", "m3", "y"])
    assert recall(W, truth, hits, 1) == (1, 2)            # m1b counts for P1
    assert recall(W, truth, hits, 3) == (2, 2)
    assert recall(W, truth, hits, 5, sign=-1) == (1, 1)
    groups = pd.Series(["G", "G", "H", "I", "J", "K"], index=W.index)
    assert recall(W, truth, hits, 1, groups=groups) == (1, 2)


def test_inclusion_scores_rank_by_fraction_of_folds():
    idx = ["a", "b", "c"]
    folds = [pd.DataFrame({"o": v}, index=idx) for v in ([3.0, 2.0, -1.0], [1.0, 2.0, 0.0], [2.0, 0.5, 0.1])]
    s = inclusion_scores(folds, k=1)
    # "a" tops two folds, "b" one, "c" none
    assert s["o"].tolist() == pytest.approx([2 / 3 + 1e-3, 1 / 3 + 1e-3 * 1.5 / 2, 0.0])
