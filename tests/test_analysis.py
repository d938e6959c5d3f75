"""Interpretation analyses, each checked against a small independent computation."""

import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import random_motifs
from scipy import stats

from tisfm_core.analysis import (
    cluster_order,
    correlations,
    cv_siblings,
    drift_summary,
    edge_metrics,
    edge_top_motifs,
    final_layer,
    inclusion_filter,
    inclusion_ratio,
    interaction_influence,
    kept_edges,
    kernel_drift,
    mark_kept,
    motif_table,
    normalise_rows,
    outliers,
    pooling_vs_ic,
    similarity_matrix,
    top_k_union,
    tree_layout,
)
from tisfm_core.cli import build_parser
from tisfm_core.errors import TisfmError
from tisfm_core.motifs import MotifSet
from tisfm_core.runs import load_run, save_run
from tisfm_core.workflows import build_untrained

REPO = Path(__file__).resolve().parents[1]

LENGTH = 40


def make_run(path, motifs, *, outputs=("o0", "o1"), W=None, variant="full", era="head", meta=None,
             edit=None):
    """Save a tiny untrained run; ``W`` (n_outputs, n_motifs) goes into the final layer and
    ``edit(model)`` may change anything else before saving."""
    model = build_untrained(variant, motifs=motifs, n_outputs=len(outputs), length=LENGTH, era=era)
    with torch.no_grad():
        if W is not None:
            model.final.weight[:, : len(motifs)] = torch.as_tensor(np.asarray(W), dtype=torch.float32)
        if edit is not None:
            edit(model)
    return save_run(path, model, outputs=list(outputs), motifs=motifs, meta=meta)


# -- final layer ------------------------------------------------------------------------------

W_OUT = np.array([[2.0, -4.0, 0.0, 1.0, 0.0],     # 3 outputs x 5 motifs (PyTorch orientation)
                  [0.0, 0.0, 0.0, 0.0, 0.0],
                  [0.5, 0.25, -1.0, 0.0, 0.0]])
MOTIFS5 = ["m0", "m1", "m2", "m3", "m4"]


def test_normalise_rows_and_top_k_by_hand():
    W = pd.DataFrame(W_OUT.T, index=MOTIFS5, columns=["a", "b", "c"])
    want = np.array([[0.5, -1.0, 0.0, 0.25, 0.0], [0.0] * 5, [0.5, 0.25, -1.0, 0.0, 0.0]]).T
    got = normalise_rows(W)
    np.testing.assert_allclose(got.to_numpy(), want)
    assert list(got.index) == MOTIFS5 and list(got.columns) == ["a", "b", "c"]
    np.testing.assert_allclose(normalise_rows(W_OUT.T), want)
    # a: m1 (|-4|), m0 (2); b: nothing (all zero); c: m2 (|-1|), m0 (already listed)
    assert top_k_union(W, k=2) == ["m1", "m0", "m2"]
    # positive: a: m0 (2), m3 (1); c: m0, m1 (0.25)
    assert top_k_union(W, k=2, by="positive") == ["m0", "m3", "m1"]
    assert top_k_union(W_OUT.T, k=1) == [1, 2]
    with pytest.raises(TisfmError, match="by must be"):
        top_k_union(W, by="largest")


@pytest.mark.parametrize("metric", ["correlation", "euclidean"])
def test_cluster_order_groups_identical_rows(metric):
    rng = np.random.default_rng(1)
    base = rng.normal(size=(3, 6))
    # rows 0/4 equal, 1/5 equal, 2 alone, 3/6 constant (correlation undefined)
    W = np.vstack([base[0], base[1], base[2], np.full(6, 0.7), base[0], base[1], np.full(6, 0.7)])
    rows, cols = cluster_order(pd.DataFrame(W), metric=metric)
    assert sorted(rows.tolist()) == list(range(7)) and sorted(cols.tolist()) == list(range(6))
    pos = {r: i for i, r in enumerate(rows.tolist())}
    for a, b in [(0, 4), (1, 5), (3, 6)]:
        assert abs(pos[a] - pos[b]) == 1
    assert np.array_equal(cluster_order(W, metric=metric)[0], rows)   # deterministic


def test_final_layer_and_motif_table(tmp_path):
    motifs = random_motifs(4)
    W = np.arange(8, dtype=float).reshape(2, 4) - 3
    run = load_run(make_run(tmp_path / "r", motifs, W=W))
    table = final_layer(run)
    assert list(table.index) == list(motifs.ids) and list(table.columns) == ["o0", "o1"]
    np.testing.assert_array_equal(table.to_numpy(), W.T)
    info = motif_table(run)
    assert info["width"].tolist() == [len(m) for m in motifs.matrices]
    assert info["name"].tolist() == list(motifs.names)


# -- inclusion ratio --------------------------------------------------------------------------

def test_inclusion_ratio_by_hand(tmp_path):
    motifs = random_motifs(8)
    rng = np.random.default_rng(0)
    weights = []
    for i in range(3):
        W = rng.permutation(np.arange(1, 17)).reshape(2, 8) * rng.choice([-1, 1], size=(2, 8)) / 10
        W[0, 0] = 5.0        # motif 0 always first for output 0
        W[1, 7] = 0.0        # a zero weight never counts
        weights.append(W)
    paths = [make_run(tmp_path / f"cv/fold_{i}", motifs, W=W,
                      meta={"group": "cv", "split": {"n_folds": 3, "fold": i}})
             for i, W in enumerate(weights)]
    got = inclusion_ratio(paths, k=3)
    want = np.zeros((8, 2))
    for W in weights:
        for out in range(2):
            ranked = sorted(range(8), key=lambda j: -abs(W[out, j]))
            for j in ranked[:3]:
                want[j, out] += 1 / 3
    np.testing.assert_allclose(got.to_numpy(), want)
    assert got.loc["M0", "o0"] == 1.0
    assert list(got.index) == list(motifs.ids) and list(got.columns) == ["o0", "o1"]
    kept = inclusion_filter(got, 0.5)
    assert list(kept.index) == [m for m, row in zip(motifs.ids, want) if (row > 0.5).any()]

    other = MotifSet(tuple(f"X{i}" for i in range(8)), motifs.names, motifs.matrices, "renamed")
    odd = make_run(tmp_path / "odd", other, W=weights[0])
    with pytest.raises(TisfmError, match="odd.*other motif ids"):
        inclusion_ratio(paths + [odd])
    outs = make_run(tmp_path / "outs", motifs, W=weights[0], outputs=("o0", "x"))
    with pytest.raises(TisfmError, match="outs"):
        inclusion_ratio(paths + [outs])


def test_cv_siblings_sorted_by_fold(tmp_path):
    motifs = random_motifs(3)
    for name, fold, group in [("z", 0, "cv"), ("a", 2, "cv"), ("m", 1, "cv"), ("other", 0, "x")]:
        make_run(tmp_path / name, motifs, meta={"group": group, "split": {"fold": fold}})
    (tmp_path / "notes").mkdir()
    got = cv_siblings(tmp_path / "a")
    assert [p.name for p in got] == ["z", "m", "a"]
    lone = make_run(tmp_path / "lone" / "r", motifs)
    with pytest.raises(TisfmError, match="no 'group'"):
        cv_siblings(lone)


# -- pooling vs information content -----------------------------------------------------------

def _ic_motifs():
    a = np.array([[1.0, 0, 0, 0], [0.25, 0.25, 0.25, 0.25]])     # 2 + 0 = 2 bits
    b = np.array([[0.5, 0.5, 0, 0], [0.7, 0.1, 0.1, 0.1], [0.4, 0.3, 0.2, 0.1]])
    rnd = random_motifs(4, random_state=5)
    mats = (a, b) + rnd.matrices
    return MotifSet(tuple(f"M{i}" for i in range(6)), tuple(f"TF{i}" for i in range(6)), mats, "hand")


def test_pooling_vs_ic(tmp_path):
    motifs = _ic_motifs()
    pool = np.array([0.3, 1.7, 2.2, -0.4, 3.1, 0.9])
    W = np.array([np.linspace(-1, 1, 6), np.arange(6.0)])

    def edit(model):
        model.pool_weight[:6] = torch.as_tensor(pool, dtype=torch.float32)

    run = load_run(make_run(tmp_path / "r", motifs, W=W, edit=edit))
    df = pooling_vs_ic(run, output="o1")
    assert df["ic"].iloc[0] == pytest.approx(2.0)
    b = motifs.matrices[1]
    hand = sum(2 + sum(p * math.log2(p) for p in row if p > 0) for row in b)
    assert df["ic"].iloc[1] == pytest.approx(hand)
    np.testing.assert_allclose(df["pooling"], pool, rtol=1e-6)
    np.testing.assert_allclose(df["coef"], W[1])
    fit = stats.linregress(df["ic"], df["pooling"])
    residual = df["pooling"] - (fit.intercept + fit.slope * df["ic"])
    np.testing.assert_allclose(df["residual"], residual, atol=1e-9)
    np.testing.assert_allclose(df["residual_z"], residual / np.std(residual), atol=1e-9)
    assert df["width"].tolist() == [2, 3] + [len(m) for m in motifs.matrices[2:]]

    c = correlations(df)
    assert c["pearson_r"] == pytest.approx(stats.pearsonr(df["ic"], pool).statistic, rel=1e-6)
    assert c["pearson_p"] == pytest.approx(stats.pearsonr(df["ic"], pool).pvalue, rel=1e-5)
    assert c["spearman_rho"] == pytest.approx(stats.spearmanr(df["ic"], pool).statistic)
    assert c["spearman_p"] == pytest.approx(stats.spearmanr(df["ic"], pool).pvalue)

    top = outliers(df, n=2)
    by_hand = sorted(range(6), key=lambda i: -abs(residual[i]))[:2]
    assert top["motif"].tolist() == [f"M{i}" for i in by_hand]
    assert pooling_vs_ic(run)["coef"].tolist() == pytest.approx(W[0].tolist())
    with pytest.raises(TisfmError, match="'B' is not an output of run r"):
        pooling_vs_ic(run, output="B")


def test_pooling_vs_ic_refusals(tmp_path):
    motifs = _ic_motifs()
    path = make_run(tmp_path / "r", motifs)
    (path / "motifs.meme").unlink()
    with pytest.raises(TisfmError, match="no motifs.meme"):
        pooling_vs_ic(path)
    with pytest.raises(TisfmError, match="max pooling"):
        pooling_vs_ic(make_run(tmp_path / "mp", motifs, variant="maxpool"))
    # untrained: every pooling weight is 2.0, so the trend is exact and correlations undefined
    flat = pooling_vs_ic(make_run(tmp_path / "flat", motifs))
    assert (flat["pooling"] == 2.0).all() and (flat["residual"] == 0).all()
    assert (flat["residual_z"] == 0).all() and math.isnan(correlations(flat)["pearson_r"])


# -- interaction ------------------------------------------------------------------------------

def test_interaction_influence_is_column_sums(tmp_path):
    motifs = random_motifs(5)
    rng = np.random.default_rng(2)
    A = rng.normal(size=(7, 7))     # 5 motifs + 2 padding features
    W = rng.normal(size=(2, 5))

    def edit(model):
        model.interaction.weight[:] = torch.as_tensor(A, dtype=torch.float32)

    df = interaction_influence(make_run(tmp_path / "r", motifs, W=W, edit=edit))
    A32 = A.astype(np.float32).astype(np.float64)
    for j in range(5):
        assert df["influence"].iloc[j] == pytest.approx(sum(abs(A32[i, j]) for i in range(5)))
    strength = [max(abs(W[0, j]), abs(W[1, j])) for j in range(5)]
    np.testing.assert_allclose(df["importance"], np.array(strength) / max(strength), rtol=1e-6)
    assert df["motif"].tolist() == list(motifs.ids)
    with pytest.raises(TisfmError, match="'base' variant"):
        interaction_influence(make_run(tmp_path / "b", motifs, variant="base"))


# -- tree-diff --------------------------------------------------------------------------------

EDGES = [["B", "A"], ["C", "A"], ["D", "B"], ["E", "B"], ["G", "X"]]
LABELS = [f"{c}-{p}" for c, p in EDGES]


def _tree_run(tmp_path, W):
    lineages = {"A": "stem", "B": "B", "C": "myeloid", "D": "B", "E": "B"}
    meta = {"transform": {"spec": "tree-diff:parents.tsv", "kind": "tree-diff", "edges": EDGES,
                          "lineages": lineages},
            "metrics": {"test": {"outputs": LABELS, "r2": [0.2, 0.01, None, 0.06, 0.05],
                                 "pearson": [0.5, 0.1, 0.0, 0.3, 0.25]}}}
    return make_run(tmp_path / "tree", random_motifs(6), outputs=LABELS, W=W, meta=meta)


def test_tree_diff_edges_and_top_motifs(tmp_path):
    W = np.random.default_rng(3).normal(size=(5, 6))
    W[0, [1, 4]] = 0.0
    path = _tree_run(tmp_path, W)
    df = edge_metrics(path)
    assert df["edge"].tolist() == LABELS and df["child"].tolist() == [c for c, _ in EDGES]
    assert df["parent_lineage"].tolist() == ["stem", "stem", "B", "B", ""]
    assert df["child_lineage"].tolist() == ["B", "myeloid", "B", "B", ""]
    np.testing.assert_allclose(df["test_pearson"], [0.5, 0.1, 0.0, 0.3, 0.25])
    assert df["kept"].tolist() == [True, False, False, True, False]    # 0.05 is not > 0.05
    assert kept_edges(df)["edge"].tolist() == ["B-A", "E-B"]
    # a new threshold recomputes the 'kept' column itself (the table a page exports)
    lowered = mark_kept(df, -1.0)
    assert lowered["kept"].tolist() == (df["test_r2"] > -1.0).tolist() and df["kept"].sum() == 2
    assert kept_edges(df, -1.0)["edge"].tolist() == lowered.loc[lowered["kept"], "edge"].tolist()
    override = edge_metrics(path, r2={label: 1.0 for label in LABELS})
    assert override["kept"].all()

    top = edge_top_motifs(path, kept_edges(df), k=5)
    want = []
    for label in ["B-A", "E-B"]:
        w = W[LABELS.index(label)].astype(np.float32)
        ranked = [j for j in sorted(range(6), key=lambda j: -abs(w[j])) if w[j] != 0][:5]
        want += [(label, r + 1, f"M{j}", f"TF{j}", float(w[j])) for r, j in enumerate(ranked)]
    got = list(top.itertuples(index=False, name=None))
    assert [g[:4] for g in got] == [x[:4] for x in want]
    np.testing.assert_allclose([g[4] for g in got], [x[4] for x in want])
    assert top.loc[top["edge"] == "B-A", "motif"].tolist().count("M1") == 0   # zero weight

    plain = make_run(tmp_path / "plain", random_motifs(6))
    with pytest.raises(TisfmError, match="not trained on tree-diff"):
        edge_metrics(plain)
    with pytest.raises(TisfmError, match="not trained on tree-diff"):
        edge_top_motifs(plain, ["o0"])


def _check_layered(lay, edges, gap):
    """Parents above children, one depth per level, and in every level boxes in depth-first
    order at least ``gap`` apart."""
    children = edges.groupby("parent", sort=False)["child"].apply(list)
    for parent, kids in children.items():
        assert (lay.loc[kids, "y"] > lay.loc[parent, "y"]).all()          # parent drawn above
        assert (lay.loc[kids, "depth"] == lay.loc[parent, "depth"] + 1).all()
        assert (lay.loc[kids, "parent"] == parent).all()
    for _, level in lay.groupby("depth", sort=False):
        left = (level["x"] - level["width"] / 2).to_numpy()
        right = (level["x"] + level["width"] / 2).to_numpy()
        assert (left[1:] - right[:-1] >= gap - 1e-6).all()
    assert (lay["x"] - lay["width"] / 2).min() == pytest.approx(0.0, abs=1e-6)


def test_tree_layout_tidy():
    edges = pd.DataFrame(EDGES + [["H", "D"], ["I", "D"], ["J", "D"]], columns=["child", "parent"])
    lay = tree_layout(edges).set_index("node")
    assert set(lay.index) == set("ABCDEGHIJX")
    _check_layered(lay, edges, 1.0)
    # depth-first order: every level reads left to right as the edges were given
    assert list(lay.index) == list("ABDHIJECXG")
    # as narrow as the widest level allows (three nodes one apart), parents over their children
    assert (lay["x"] + lay["width"] / 2).max() == pytest.approx(2.0)
    for parent, kids in edges.groupby("parent")["child"]:
        assert lay.loc[kids, "x"].min() - 1e-9 <= lay.loc[parent, "x"] <= lay.loc[kids, "x"].max() + 1e-9
    assert lay.loc["A", "depth"] == 0 and lay.loc["X", "depth"] == 0 and lay.loc["A", "parent"] == ""
    assert lay.loc["X", "x"] > lay.loc[["A", "B", "C", "D", "E"], "x"].max()   # roots side by side
    # wide boxes push their neighbours apart; spread lets the drawing be wider
    wide = tree_layout(edges, widths={"H": 5.0, "I": 2.0}, gap=0.5).set_index("node")
    _check_layered(wide, edges, 0.5)
    assert wide.loc["I", "x"] - wide.loc["H", "x"] == pytest.approx(3.5 + 0.5)
    assert (tree_layout(edges, spread=2.0)["x"].max()) <= 4.0 + 1e-9
    with pytest.raises(TisfmError, match="two parents"):
        tree_layout([("B", "A"), ("B", "C")])
    with pytest.raises(TisfmError, match="cycle"):
        tree_layout([("B", "A"), ("A", "B")])
    with pytest.raises(TisfmError, match="spread"):
        tree_layout(edges, spread=0.5)


def test_tree_layout_of_the_81_immgen_cell_types_keeps_labels_apart():
    """The shipped tree-diff run's tree (81 cell types): with each box as wide as its label the
    boxes of a level never overlap, and the drawing is only as wide as its widest level."""
    from tisfm_core.plots import TREE_FONT_SIZE, tree_boxes

    run = REPO / "trained_models" / "treediff_full"
    edges = pd.DataFrame(json.loads((run / "config.json").read_text())["transform"]["edges"],
                         columns=["child", "parent"])
    nodes = set(edges["child"]) | set(edges["parent"])
    assert len(nodes) == 81
    boxes = tree_boxes(nodes)
    for node, (label, w, h) in boxes.items():
        lines = label.split("<br>")
        assert "".join(lines) == node
        assert w >= 0.6 * TREE_FONT_SIZE * max(map(len, lines)) and h >= 1.2 * TREE_FONT_SIZE * len(lines)
    lay = tree_layout(edges, widths={n: b[1] for n, b in boxes.items()}, gap=8.0).set_index("node")
    _check_layered(lay, edges, 8.0)
    widest = max(sum(boxes[n][1] for n in level.index) + 8.0 * (len(level) - 1)
                 for _, level in lay.groupby("depth"))
    assert (lay["x"] + lay["width"] / 2).max() == pytest.approx(widest, rel=1e-6)


# -- kernel drift -----------------------------------------------------------------------------

def _brute_similarity(t, o):
    """Best Pearson r over offsets and strands, overlap >= ceil(min width / 2), by loops."""
    best = -np.inf
    for oo in (o, o[::-1, ::-1]):
        need = math.ceil(min(len(t), len(oo)) / 2)
        for s in range(-len(t) + 1, len(oo)):
            cols = [c for c in range(len(t)) if 0 <= c + s < len(oo)]
            if len(cols) >= need:
                best = max(best, np.corrcoef(t[cols].ravel(), oo[[c + s for c in cols]].ravel())[0, 1])
    return best


def test_similarity_matrix_matches_loops():
    motifs = random_motifs(5, widths=(5, 9, 12), random_state=4)
    rng = np.random.default_rng(0)
    other = random_motifs(4, widths=(7, 12), random_state=8)
    tuned = [m + 0.1 * rng.normal(size=m.shape) for m in other.matrices]
    sim, _ = similarity_matrix(tuned, list(motifs.matrices))
    want = np.array([[_brute_similarity(t, o) for o in motifs.matrices] for t in tuned])
    np.testing.assert_allclose(sim, want, atol=1e-9)


@pytest.mark.parametrize("era", ["head", "paper"])
def test_kernel_drift_noise_and_swap(tmp_path, era):
    motifs = random_motifs(8, widths=(6, 8, 10))     # motifs 0 and 3 both 6 wide
    rng = np.random.default_rng(7)
    K = motifs.max_width
    start = [0 if era == "paper" else (K - len(m)) // 2 for m in motifs.matrices]
    tuned = [m + 0.01 * rng.normal(size=m.shape) for m in motifs.matrices]
    tuned[0], tuned[3] = tuned[3], tuned[0]

    def edit(model):
        for k, t in enumerate(tuned):
            model.kernels[2 * k, :, start[k]:start[k] + len(t)] = torch.as_tensor(t.T, dtype=torch.float32)

    path = make_run(tmp_path / "ft", motifs, era=era, edit=edit)
    df = kernel_drift(path)
    t32 = [t.astype(np.float32).astype(np.float64) for t in tuned]
    o32 = [m.astype(np.float32).astype(np.float64) for m in motifs.matrices]
    np.testing.assert_allclose(df["mse"], [np.mean((t - o) ** 2) for t, o in zip(t32, o32)], rtol=1e-9)
    assert df["nearest"].tolist() == ["M3", "M1", "M2", "M0", "M4", "M5", "M6", "M7"]
    summary = drift_summary(df)
    assert summary["fraction_self_nearest"] == pytest.approx(6 / 8)
    assert summary["mean_mse"] == pytest.approx(df["mse"].mean())
    # an explicit original motif set works when the run lacks motifs.meme
    (path / "motifs.meme").unlink()
    with pytest.raises(TisfmError, match="no motifs.meme"):
        kernel_drift(path)
    again = kernel_drift(path, original=motifs)
    np.testing.assert_allclose(again["mse"], df["mse"])


def test_cisbp_self_similarity_is_one(cisbp):
    subset = list(cisbp.matrices[:60])
    sim, _ = similarity_matrix(subset, subset)
    np.testing.assert_allclose(np.diag(sim), 1.0, atol=1e-9)
    assert sim.max() <= 1 + 1e-9


# -- command line -----------------------------------------------------------------------------

def test_analyze_command(tmp_path, capsys):
    parser = build_parser()
    motifs = random_motifs(5)
    W = np.array([[0.0, 2.0, -1.0, 0.5, 0.0], [4.0, 0.0, 0.0, 0.0, -2.0]])
    run = make_run(tmp_path / "r", motifs, W=W)
    out = tmp_path / "w.tsv"
    args = parser.parse_args(["analyze", "final-layer", str(run), "--k", "1", "--out", str(out)])
    args.func(args)
    table = pd.read_csv(out, sep="\t", index_col=0)
    assert list(table.index) == ["M1", "M0"]
    np.testing.assert_allclose(table.to_numpy(), [[1.0, 0.0], [0.0, 1.0]])
    base = make_run(tmp_path / "b", motifs, variant="base")
    args = parser.parse_args(["analyze", "interaction", str(base)])
    with pytest.raises(TisfmError, match="no TF-TF interaction"):
        args.func(args)


def test_grouped_inclusion_and_final_layer_pool_a_tfs_motifs(tmp_path, capsys):
    """Motifs of one TF name are one row: their weights summed (or the largest |w|) per fold
    before the top-k ranking; by hand on three folds."""
    base = random_motifs(6)
    names = ("Cebpb", "CEBPB_2", "Spi1", "Gata3", "Spi1_3", "Pax5")
    motifs = MotifSet(base.ids, names, base.matrices, "named")
    tf = ["CEBPB", "CEBPB", "SPI1", "GATA3", "SPI1", "PAX5"]
    rng = np.random.default_rng(3)
    weights = [rng.normal(size=(2, 6)) for _ in range(3)]
    paths = [make_run(tmp_path / f"cv/fold_{i}", motifs, W=W,
                      meta={"group": "cv", "split": {"n_folds": 3, "fold": i}})
             for i, W in enumerate(weights)]
    groups = pd.Series(tf, index=list(motifs.ids))
    order = list(dict.fromkeys(tf))
    for how in ("sum", "max_abs"):
        want = np.zeros((len(order), 2))
        for W in weights:
            pooled = np.zeros((len(order), 2))
            for g, name in enumerate(order):
                block = W[:, [j for j in range(6) if tf[j] == name]].T        # members x outputs
                pooled[g] = block.sum(0) if how == "sum" else block[np.abs(block).argmax(0), [0, 1]]
            for out in range(2):
                for g in sorted(range(len(order)), key=lambda g: -abs(pooled[g, out]))[:2]:
                    want[g, out] += 1 / 3
        got = inclusion_ratio(paths, k=2, groups=groups, how=how)
        assert list(got.index) == order
        np.testing.assert_allclose(got.to_numpy(), want)
    # the command line: final-layer by TF name, summed, normalised per output
    parser = build_parser()
    args = parser.parse_args(["analyze", "final-layer", str(paths[0]), "--group", "tf", "--k", "4",
                              "--scale", "raw"])
    args.func(args)
    table = pd.read_csv(io.StringIO(capsys.readouterr().out), sep="\t", index_col=0)
    summed = pd.DataFrame(weights[0].T, index=tf, columns=["o0", "o1"]).groupby(level=0, sort=False).sum()
    expected = summed / summed.abs().max()
    assert sorted(table.index) == sorted(order)
    np.testing.assert_allclose(table.to_numpy(), expected.loc[table.index].to_numpy(), rtol=1e-3, atol=1e-4)
    # by default the weights per feature s.d.; these runs record no data, so raw ones and a note
    args = parser.parse_args(["analyze", "final-layer", str(paths[0]), "--group", "tf", "--k", "4"])
    args.func(args)
    printed = capsys.readouterr().out.splitlines()
    assert printed[-1].startswith("raw weights: run fold_0 stores no feature scale")
    assert printed[:-1] == table.to_csv(sep="\t", float_format="%.4g").splitlines()
    with pytest.raises(TisfmError, match="stores no feature scale"):
        args = parser.parse_args(["analyze", "final-layer", str(paths[0]), "--scale", "sd"])
        args.func(args)
    with pytest.raises(TisfmError, match="--group applies to final-layer and inclusion"):
        bad = parser.parse_args(["analyze", "interaction", str(paths[0]), "--group", "tf"])
        bad.func(bad)


def test_training_stores_each_motifs_feature_sd_and_final_layer_scales_by_it(tmp_path):
    """The stored standard deviations are those of the model's features over the training split
    (all of it: fewer than 2048 sequences), computed here from the split file; a run without them
    recomputes the same from its recorded data; "sd" scaling multiplies each motif's row."""
    from conftest import planted_dataset

    from tisfm_core.analysis.final_layer import feature_sd
    from tisfm_core.dataset import load_dataset
    from tisfm_core.sequences import one_hot_torch
    from tisfm_core.specs import DataSpec, ModelSpec, TrainTask
    from tisfm_core.training import TrainSettings
    from tisfm_core.workflows import train_run

    fasta, tsv, meme, _ = planted_dataset(tmp_path, n=300, length=40, n_outputs=2)
    task = TrainTask(data=DataSpec(sequences=str(fasta), targets=str(tsv), folds=5, fold=0),
                     model=ModelSpec(variant="base", motifs=str(meme)),
                     training=TrainSettings(epochs=2, batch_size=64, device="cpu"))
    run_dir = train_run(tmp_path / "run", task, verbose=False)
    config = json.loads((run_dir / "config.json").read_text())
    run = load_run(run_dir)
    split = json.loads((run_dir / "split.json").read_text())
    data = load_dataset(fasta, tsv)
    rows = np.sort(split["train"])                      # row numbers of the training sequences
    with torch.inference_mode():
        feats = run.model.features(one_hot_torch(torch.from_numpy(data.indices[rows]))).double()
    want = feats[:, :len(run.motif_ids)].std(dim=0).numpy()
    assert config["feature_sd"]["n_samples"] == len(rows)
    np.testing.assert_allclose(config["feature_sd"]["values"], want, rtol=1e-5, atol=1e-7)
    raw, scaled = final_layer(run), final_layer(run, scale="sd")
    np.testing.assert_allclose(scaled.to_numpy(), raw.to_numpy() * want[:, None], rtol=1e-5, atol=1e-7)
    # a run made before runs stored the scale: recomputed from its recorded training data
    del config["feature_sd"]
    (run_dir / "config.json").write_text(json.dumps(config))
    np.testing.assert_allclose(feature_sd(load_run(run_dir)).to_numpy(), want, rtol=1e-5, atol=1e-7)
    # ... and refused with the reason when those data are gone
    Path(tsv).unlink()
    with pytest.raises(TisfmError, match="stores no feature scale and its training data cannot be read"):
        final_layer(load_run(run_dir), scale="sd")
    with pytest.raises(TisfmError, match="scale must be one of raw, sd"):
        final_layer(run, scale="z")
