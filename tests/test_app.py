"""The Streamlit app, page by page, with AppTest (no browser) on a small runs folder.

Figure contents are read from the Plotly specs the pages send and compared with numbers computed
here from the run files (weights, motifs, path arrays), not with the app's own helpers.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from app_fixtures import app_runs_folder

from tisfm_core import jobs
from tisfm_core.cli import build_parser
from tisfm_core.errors import TisfmError
from tisfm_core.motifs import read_meme
from tisfm_core.runs import load_run
from tisfm_core.sequences import encode, one_hot, parse_sequence_text
from tisfm_core.specs import TrainTask
from tisfm_core.uploads import extract_run_zip
from tisfm_core.workflows import RUN_FILES

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def fixture_root():
    return app_runs_folder()


@pytest.fixture
def env(fixture_root, tmp_path, monkeypatch):
    monkeypatch.setenv("TISFM_RUNS", str(fixture_root / "runs"))
    monkeypatch.setenv("TISFM_HOME", str(tmp_path / "home"))
    return fixture_root / "runs"


def page(script, run=None):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / script), default_timeout=60)
    if run is not None:
        at.session_state["active_run"] = str(run)
    at.run()
    assert not at.exception, at.exception
    return at


def charts(at):
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def arr(value):
    """A Plotly spec array (plain list or base64 'bdata' with dtype and shape) as NumPy."""
    if isinstance(value, dict) and "bdata" in value:
        out = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        if "shape" in value:
            out = out.reshape([int(s) for s in str(value["shape"]).split(",")])
        return out
    return np.asarray(value)


def texts(elements):
    """The texts of elements (or strings) as shown: Markdown backslash escapes (ui.md_escape) removed."""
    values = [e if isinstance(e, str) else e.value for e in elements]
    return [re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", v) if isinstance(v, str) else v for v in values]


def weights(run_dir):
    """(motifs x outputs) final-layer weights straight from the model's nn.Linear."""
    run = load_run(run_dir)
    n = len(run.motif_ids)
    w = run.model.final.weight.detach().numpy()[:, :n].T.astype(np.float64)
    return pd.DataFrame(w, index=run.motif_ids, columns=run.outputs), run


# -- home ---------------------------------------------------------------------------------------

def test_home_shows_the_run_card(env):
    run_dir = env / "lineages_full"
    at = page("app.py", run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    bar = charts(at)[0]["data"][0]
    assert list(bar["x"]) == config["outputs"]
    assert np.allclose(arr(bar["y"]), config["metrics"]["test"]["r2"])
    model = load_run(run_dir).model
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    body = "\n".join(texts(at.markdown))
    assert f"**{total:,}** total, **{trainable:,}** trainable" in body
    assert "variant **full**" in body and "trained on cpu in" in body
    # data files are named relative to the run folder
    plain = body.replace("\\", "")
    assert "sequences: ../../data/demo/sequences.fa" in plain
    assert "targets: ../../data/demo/targets_lineages.tsv" in plain
    assert any("Synthetic demo" in w for w in texts(at.warning))
    assert len(at.get("page_link")) == 6
    assert "Test R² of each output" in texts(at.caption)[0]
    table = at.dataframe[0].value          # shown with 3 decimals ("n/a" when undefined)
    assert np.allclose(table["test_r2"].astype(float), config["metrics"]["test"]["r2"], atol=5e-4)


def test_run_picker_lists_broken_runs_with_their_error(env):
    at = page("app.py")
    picker = at.selectbox(key="_run_picker")
    labels = list(picker.options)  # as shown (formatted)
    assert labels[-1].startswith("⚠ broken") and "synthetic demo" in labels[0]
    assert picker.value != str(env / "broken")  # a usable run is picked by default
    picker.set_value(str(env / "broken")).run()
    assert any("not valid JSON" in e for e in texts(at.error))
    assert not at.get("plotly_chart")
    # the choice is kept in the session for the other pages
    assert at.session_state["active_run"] == str(env / "broken")


# -- final layer --------------------------------------------------------------------------------

def test_final_layer_heatmap_is_the_normalised_final_layer(env):
    run_dir = env / "lineages_full"
    at = page("pages/2_Final_layer.py", run_dir)
    at.radio(key="weight_scale").set_value("raw").run()
    at.radio(key="order").set_value("fixed").run()
    at.checkbox(key="with_planted").uncheck().run()
    heat = charts(at)[0]["data"][0]
    W, run = weights(run_dir)
    top = []
    for output in W.columns:
        col = np.abs(W[output].to_numpy())
        for i in np.argsort(-col, kind="stable")[:5]:
            if col[i] > 0 and W.index[i] not in top:
                top.append(W.index[i])
    expected = W / np.abs(W).max(axis=0)
    assert [c[0][0] for c in heat["customdata"]] == top
    assert list(heat["x"]) == list(W.columns)
    assert np.allclose(arr(heat["z"]), expected.loc[top].to_numpy(), atol=1e-6)
    assert any("divided by each output's max |weight|" in c for c in texts(at.caption))


def test_final_layer_ranks_weights_per_feature_sd_by_default(env):
    """The default heatmap: each weight times the standard deviation of its motif's feature over
    the run's training sequences (computed here from the model and the split), normalised per
    output; hovers keep the weight as trained."""
    from tisfm_core.path import load_run_data
    from tisfm_core.sequences import one_hot_torch

    run_dir = env / "lineages_full"
    at = page("pages/2_Final_layer.py", run_dir)
    assert at.radio(key="weight_scale").value == "sd"
    at.radio(key="order").set_value("fixed").run()
    at.checkbox(key="with_planted").uncheck().run()
    heat = charts(at)[0]["data"][0]
    W, run = weights(run_dir)
    train = load_run_data(run)["train"][0]                     # 180 sequences: all of them count
    with torch.inference_mode():
        feats = run.model.features(one_hot_torch(torch.from_numpy(train))).double().numpy()
    scaled = W * feats[:, :len(W)].std(axis=0, ddof=1)[:, None]
    top = []
    for output in W.columns:
        col = np.abs(scaled[output].to_numpy())
        top += [W.index[i] for i in np.argsort(-col, kind="stable")[:5] if col[i] > 0]
    top = list(dict.fromkeys(top))
    assert [c[0][0] for c in heat["customdata"]] == top
    assert np.allclose(arr(heat["z"]), (scaled / scaled.abs().max(axis=0)).loc[top].to_numpy(), atol=1e-5)
    raw = np.array([[c[2] for c in row] for row in heat["customdata"]], dtype=float)
    assert np.allclose(raw, W.loc[top].to_numpy(), atol=1e-6)
    assert any("per standard deviation of each motif's feature" in c for c in texts(at.caption))
    # every cell is clickable (Plotly selects scatter points only): one transparent marker per
    # cell, carrying the cell's motif, raw weight and shown value
    cells = charts(at)[0]["data"][-1]
    assert cells["name"] == "cells" and len(cells["x"]) == arr(heat["z"]).size
    got = {(c[0], x): (c[2], c[3]) for c, x in zip(cells["customdata"], cells["x"])}
    z = arr(heat["z"])
    for i, m in enumerate(top):
        for j, o in enumerate(heat["x"]):
            assert np.allclose(got[(m, o)], (W.loc[m, o], z[i, j]), atol=1e-6)


def test_final_layer_marks_planted_regulators(env, fixture_root):
    at = page("pages/2_Final_layer.py", env / "lineages_full")
    data = charts(at)[0]["data"]
    truth = json.loads((fixture_root / "data" / "demo" / "truth.json").read_text())
    names = dict(zip(*(lambda r: (r.motif_ids, r.motif_names))(load_run(env / "lineages_full"))))
    expected = {(f"{names[e['motif']]} ({e['motif']})", lineage)
                for lineage, rows in truth["per_lineage"].items() for e in rows if e["motif"] in names}
    rings = data[1]
    assert rings["name"] == "planted"
    assert set(zip(rings["y"], rings["x"])) == expected


def test_inclusion_ratio_over_cv_folds(env):
    fold0 = env / "cv_lineages" / "fold_0"
    at = page("pages/2_Final_layer.py", fold0)
    at.radio(key="weight_scale").set_value("raw").run()
    at.slider(key="incl_threshold").set_value(0.0).run()
    heat = charts(at)[1]["data"][0]
    counts = None
    for fold in ("fold_0", "fold_1"):
        W, _ = weights(env / "cv_lineages" / fold)
        hit = np.zeros(W.shape)
        for j in range(W.shape[1]):
            col = np.abs(W.iloc[:, j].to_numpy())
            top = np.argsort(-col, kind="stable")[:10]
            hit[top[col[top] > 0], j] = 1
        counts = hit if counts is None else counts + hit
    ratio = pd.DataFrame(counts / 2, index=W.index, columns=W.columns)
    kept = ratio.loc[(ratio > 0).any(axis=1)]
    assert [c[0][0] for c in heat["customdata"]] == list(kept.index)
    assert np.allclose(arr(heat["z"]), kept.to_numpy())
    # a run outside a CV set explains what is missing
    at = page("pages/2_Final_layer.py", env / "lineages_full")
    assert any("not part of a cross-validation set" in i for i in texts(at.info))


@pytest.fixture
def shipped_cv(tmp_path, monkeypatch):
    """The shipped 10-fold CV set of the full model (163 motifs, families of similar ones)."""
    fold0 = REPO / "trained_models" / "cv_full" / "fold_0"
    if not (fold0 / "config.json").exists():
        pytest.skip("the shipped CV runs are absent")
    monkeypatch.setenv("TISFM_RUNS", str(REPO / "trained_models"))
    monkeypatch.setenv("TISFM_HOME", str(tmp_path / "home"))
    return fold0


def _pooled(W, groups, how):
    """Final-layer weights pooled per group by hand: sum, or the member weight of largest |w|."""
    label = groups.loc[W.index].to_numpy()
    rows = {}
    for g in dict.fromkeys(label):
        block = W.to_numpy()[label == g]
        rows[g] = block.sum(0) if how == "sum" else block[np.abs(block).argmax(0), np.arange(W.shape[1])]
    return pd.DataFrame(rows, index=W.columns).T


def _top_union(W, k):
    top = []
    for output in W.columns:
        col = np.abs(W[output].to_numpy())
        top += [W.index[i] for i in np.argsort(-col, kind="stable")[:k] if col[i] > 0]
    return list(dict.fromkeys(top))


def test_final_layer_rows_can_be_similarity_clusters(shipped_cv):
    """Rows = motif-similarity clusters: a cluster's weights pooled (sum, or largest |w|),
    normalised per output, the top 5 per output; the inclusion heatmap ranks the same rows."""
    from tisfm_core.analysis.groups import motif_groups

    at = page("pages/2_Final_layer.py", shipped_cv)
    at.radio(key="weight_scale").set_value("raw").run()
    at.radio(key="order").set_value("fixed").run()
    at.checkbox(key="with_planted").uncheck().run()
    # the first Tomtom of a fresh environment compiles memelite's numba kernels (a minute or more)
    at.radio(key="rows_by").set_value("cluster").run(timeout=600)
    assert not at.exception and not at.error, (at.exception, texts(at.error))
    W, _ = weights(shipped_cv)
    groups = motif_groups(read_meme(shipped_cv / "motifs.meme"), by="cluster")
    assert groups.value_counts().max() >= 2            # some cluster holds several motifs
    for how in ("sum", "max_abs"):
        if how == "max_abs":
            at.radio(key="rows_pool").set_value("max_abs").run(timeout=300)
        heat = charts(at)[0]["data"][0]
        pooled = _pooled(W, groups, how)
        top = _top_union(pooled, 5)
        assert [c[0][0] for c in heat["customdata"]] == top
        assert np.allclose(arr(heat["z"]), (pooled / pooled.abs().max(axis=0)).loc[top].to_numpy(), atol=1e-6)
    assert charts(at)[0]["layout"]["yaxis"]["title"]["text"] == "cluster"
    assert any("pools the weights of its motifs (largest |w|)" in c for c in texts(at.caption))
    at.slider(key="incl_threshold").set_value(0.0).run(timeout=300)
    incl = charts(at)[1]["data"][0]
    folds = sorted(shipped_cv.parent.glob("fold_*"), key=lambda p: int(p.name.split("_")[1]))
    ratio = 0
    for fold in folds:
        pooled = _pooled(weights(fold)[0], groups, "max_abs")
        hit = np.zeros(pooled.shape)
        for j in range(pooled.shape[1]):
            col = np.abs(pooled.iloc[:, j].to_numpy())
            best = np.argsort(-col, kind="stable")[:10]
            hit[best[col[best] > 0], j] = 1
        ratio = ratio + hit / len(folds)
    ratio = pd.DataFrame(ratio, index=pooled.index, columns=pooled.columns)
    kept = ratio.loc[(ratio > 0).any(axis=1)]
    assert [c[0][0] for c in incl["customdata"]] == list(kept.index)
    assert np.allclose(arr(incl["z"]), kept.to_numpy())


# -- pooling and interaction --------------------------------------------------------------------

def test_pooling_vs_information_content(env):
    from scipy import stats

    run_dir = env / "lineages_full"
    at = page("pages/3_Pooling_vs_information.py", run_dir)
    scatter = charts(at)[0]["data"][0]
    run = load_run(run_dir)
    motifs = read_meme(run_dir / "motifs.meme")
    ic = np.array([np.sum(2 + np.sum(np.where(m > 0, m * np.log2(np.where(m > 0, m, 1)), 0), axis=1))
                   for m in motifs.matrices])
    pooling = run.model.pool_weight.detach().numpy()[:len(motifs)]
    assert np.allclose(arr(scatter["x"]), ic, atol=1e-6)
    assert np.allclose(arr(scatter["y"]), pooling, atol=1e-6)
    colour = run.model.final.weight.detach().numpy()[0, :len(motifs)]  # first output
    assert np.allclose(arr(scatter["marker"]["color"]), colour, atol=1e-6)
    r = {m.label: m.value for m in at.metric}
    assert r["Pearson r"] == f"{stats.pearsonr(ic, pooling).statistic:.3f}"
    assert r["Spearman ρ"] == f"{stats.spearmanr(ic, pooling).statistic:.3f}"
    inter = charts(at)[1]["data"][0]
    A = run.model.interaction.weight.detach().numpy()[:len(motifs), :len(motifs)]
    assert np.allclose(arr(inter["y"]), np.abs(A).sum(axis=0), atol=1e-5)
    # a variant without the interaction layer says so instead of drawing
    at = page("pages/3_Pooling_vs_information.py", env / "treediff_base")
    assert len(charts(at)) == 1
    assert any("no TF-TF interaction layer" in i.replace("\\", "") for i in texts(at.info))


def _boxes_overlap(a, b):
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def test_pooling_scatter_reads_at_a_glance(env, fixture_root):
    """The trend line of the caption, hover text in words, planted regulators ringed, labels that
    do not collide, and a searched TF (from the URL) ringed and labelled."""
    from tisfm_core.plots import LABEL_PLOT_WIDTH

    run_dir = env / "lineages_full"
    run = load_run(run_dir)
    motifs = read_meme(run_dir / "motifs.meme")
    truth = json.loads((fixture_root / "data" / "demo" / "truth.json").read_text())
    planted = {e["motif"] for table in ("per_lineage", "per_edge") for rows in truth[table].values()
               for e in rows} & set(run.motif_ids)
    quiet = next(m for m in run.motif_ids if m not in planted)
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "pages/3_Pooling_vs_information.py"), default_timeout=60)
    at.session_state["active_run"] = str(run_dir)
    at.query_params["tf"] = [quiet, "not-a-motif"]
    at.run()
    assert not at.exception
    fig = charts(at)[0]
    data = fig["data"]
    x, y = arr(data[0]["x"]), arr(data[0]["y"])
    slope, intercept = np.polyfit(x, y, 1)
    trend = next(t for t in data if t.get("name", "").startswith("linear trend"))
    assert np.allclose(arr(trend["y"]), slope * arr(trend["x"]) + intercept, atol=1e-6)
    template = data[0]["hovertemplate"]
    assert "final-layer weight for" in template and "distance from the trend" in template
    assert "coef" not in template and "residual_z" not in template
    rings = next(t for t in data if t.get("name") == "planted regulator")
    assert {c[0] for c in rings["customdata"]} == planted
    searched = next(t for t in data if t.get("name") == "searched TF")
    assert [c[0] for c in searched["customdata"]] == [quiet]
    assert at.multiselect(key="_tf_search_pooling").value == [quiet]
    notes = fig["layout"]["annotations"]
    names = dict(zip(motifs.ids, motifs.names))
    assert names[quiet] in [n["text"] for n in notes]
    # label boxes (0.6 em per character, 1.2 em high) in the narrowest plot the page is laid out
    # for: none overlaps another
    layout = fig["layout"]
    (x0, x1), (y0, y1) = layout["xaxis"]["range"], layout["yaxis"]["range"]
    height = layout["height"] - layout["margin"]["t"] - layout["margin"]["b"]
    boxes = []
    for n in notes:
        size = n["font"]["size"]
        cx = (n["x"] - x0) / (x1 - x0) * LABEL_PLOT_WIDTH + n.get("ax", 0)
        cy = (y1 - n["y"]) / (y1 - y0) * height + n["ay"]
        w, h = 0.6 * size * len(n["text"]), 1.2 * size
        boxes.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
    assert len(boxes) >= 10
    assert not any(_boxes_overlap(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    # the table of outliers links each motif to its database entry
    table = at.dataframe[0].value
    assert list(table.columns[:3]) == ["motif", "database", "name"]
    assert all(url == f"https://jaspar.elixir.no/matrix/{m}/" for m, url in zip(table["motif"], table["database"]))


def test_final_layer_search_hover_and_url(env):
    """A TF found by the search box is added and highlighted; a ringed cell's hover still shows
    its weights; the URL sets the run and every choice, and a bad value is ignored."""
    from streamlit.testing.v1 import AppTest

    run_dir = env / "cv_lineages" / "fold_1"
    W, run = weights(run_dir)
    outputs = list(W.columns)
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.switch_page("pages/2_Final_layer.py")
    at.query_params.update({"run": "cv_lineages/fold_1", "k": "2", "by": "positive", "order": "fixed",
                            "outputs": outputs[:2], "motif": run.motif_ids[3], "scale": "raw"})
    at.run()
    assert not at.exception
    assert at.session_state["active_run"] == str(run_dir)
    assert at.slider(key="topk").value == 2 and at.radio(key="rank_by").value == "positive"
    assert at.radio(key="order").value == "fixed" and at.multiselect(key="outputs_shown").value == outputs[:2]
    assert at.selectbox(key="logo_motif").value == run.motif_ids[3]
    at.checkbox(key="with_planted").uncheck().run()
    heat = charts(at)[0]["data"][0]
    assert list(heat["x"]) == outputs[:2]
    top = []
    for output in outputs[:2]:
        col = W[output].to_numpy()
        top += [W.index[i] for i in np.argsort(-col, kind="stable")[:2] if col[i] > 0 and W.index[i] not in top]
    assert [c[0][0] for c in heat["customdata"]] == top
    assert at.query_params["run"] == "cv_lineages/fold_1" and at.query_params["k"] == "2"
    # search a TF that is not among the top k: it is added as a row and marked in the labels
    extra = next(m for m in W.index if m not in top)
    at.multiselect(key="_tf_search_final").set_value([extra]).run()
    fig = charts(at)[0]
    heat = fig["data"][0]
    assert [c[0][0] for c in heat["customdata"]][-1] == extra
    marked = [t for t in fig["layout"]["yaxis"]["ticktext"] if t.startswith("<b>▶")]
    assert len(marked) == 1 and extra in marked[0]
    assert at.query_params["tf"] == extra
    # the searched TF follows to the other pages that show TFs
    at.switch_page("pages/3_Pooling_vs_information.py").run()
    assert at.multiselect(key="_tf_search_pooling").value == [extra]
    assert at.query_params["tf"] == extra and at.query_params["run"] == "cv_lineages/fold_1"
    # values a URL may not set are ignored
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.switch_page("pages/2_Final_layer.py")
    at.query_params.update({"run": "../../etc", "k": "999", "by": "sideways", "outputs": "nope"})
    at.run()
    assert not at.exception
    assert at.session_state["active_run"] != "../../etc" and at.slider(key="topk").value == 5
    assert at.radio(key="rank_by").value == "abs"


def test_final_layer_ring_hover_shows_the_weight(env):
    run_dir = env / "lineages_full"
    at = page("pages/2_Final_layer.py", run_dir)
    heat, rings = charts(at)[0]["data"][:2]
    W, _ = weights(run_dir)
    assert "raw weight" in rings["hovertemplate"] and "normalised weight" in rings["hovertemplate"]
    labels = list(heat["y"])
    z = arr(heat["z"])
    for (motif, name, raw, norm), x, y in zip(rings["customdata"], rings["x"], rings["y"]):
        assert abs(raw - W.loc[motif, x]) < 1e-6
        assert abs(norm - z[labels.index(y), list(heat["x"]).index(x)]) < 1e-9


def test_path_page_reads_a_path_once(env, monkeypatch):
    """The path page keeps the loaded path between reruns (st.cache_resource on cached_path):
    without the cache every rerun would read path.npz again."""
    import streamlit as st

    import tisfm_core.path as path_module

    calls = []
    real = path_module.load_path
    monkeypatch.setattr(path_module, "load_path", lambda folder: calls.append(folder) or real(folder))
    st.cache_resource.clear()
    at = page("pages/4_Regularization_path.py", env / "lineages_full")
    at.multiselect(key="path_outputs").set_value(at.multiselect(key="path_outputs").value[:1]).run()
    at.selectbox(key="path_output").set_value(at.selectbox(key="path_output").options[1]).run()
    assert not at.exception
    assert len(calls) == 1 and Path(calls[0]) == env / "paths" / "lineages_mcp"


# -- regularization path ------------------------------------------------------------------------

def test_regularization_path_views(env):
    path_dir = env / "paths" / "lineages_mcp"
    with np.load(path_dir / "path.npz", allow_pickle=False) as npz:
        lambdas, val_mse, coefs, best = npz["lambdas"], npz["val_mse"], npz["coefs"], npz["best_index"]
        ids = npz["motif_ids"].tolist()
    at = page("pages/4_Regularization_path.py", env / "lineages_full")
    mse, coef_fig, layer = charts(at)
    # a log-spaced grid (0, 1e-3, 1e-2, 1e-1) is drawn on a log axis; lambda 0 two grid steps left
    assert lambdas[0] == 0 and mse["layout"]["xaxis"]["type"] == "log"
    where = np.r_[lambdas[1] * (lambdas[1] / lambdas[2]) ** 2, lambdas[1:]]
    lines = [t for t in mse["data"] if t["mode"] == "lines+markers"]
    for r, trace in enumerate(lines):
        assert np.allclose(arr(trace["x"]), where) and np.allclose(arr(trace["y"]), val_mse[:, r])
        assert np.allclose(arr(trace["customdata"]), lambdas)   # the hover shows the true lambda
    assert mse["layout"]["xaxis"]["ticktext"][0] == "0"
    stars = next(t for t in mse["data"] if t["name"] == "best λ of each output")
    rows = np.arange(len(lines))
    assert np.allclose(arr(stars["x"]), where[best[rows]]) and np.allclose(arr(stars["y"]), val_mse[best[rows], rows])
    assert coef_fig["layout"]["xaxis"]["type"] == "log"
    # coefficient paths of the first output: every non-zero motif drawn, the top 9 in colour
    drawn = {t["name"]: arr(t["y"]) for t in coef_fig["data"]}
    assert len(drawn) == int((np.abs(coefs[:, 0, :]) > 0).any(axis=0).sum())
    # the final layer at the chosen lambda (default: the first output's best)
    z = arr(layer["data"][0]["z"])
    shown = [c[0][0] for c in layer["data"][0]["customdata"]]
    at_best = coefs[best[0]].T
    assert np.allclose(z, at_best[[ids.index(m) for m in shown]], atol=1e-6)
    at.select_slider(key="path_lambda").set_value(at.select_slider(key="path_lambda").options[-1]).run()
    layer = charts(at)[2]["data"][0]
    shown = [c[0][0] for c in layer["customdata"]]
    assert np.allclose(arr(layer["z"]), coefs[-1].T[[ids.index(m) for m in shown]], atol=1e-6)
    assert at.query_params["lambda"] == str(len(lambdas) - 1)
    # the toggle switches to a linear axis with the lambdas as they are
    at.toggle(key="path_log_axis").set_value(False).run()
    mse = charts(at)[0]
    assert mse["layout"]["xaxis"]["type"] == "linear"
    assert np.allclose(arr(mse["data"][0]["x"]), lambdas)
    assert at.query_params["log"] == "0"


def test_regularization_path_linear_grid_and_url(env, fixture_root, tmp_path, monkeypatch):
    """A linear lambda grid starts on a linear axis; the URL picks the path, the output, the
    lambda and the axis, and a URL value that is not on offer is ignored."""
    from tisfm_core.path import load_path

    result = load_path(env / "paths" / "lineages_mcp")
    result.lambdas = np.array([0.0, 0.05, 0.1, 0.15])
    result.run = str(env / "lineages_full")
    result.save(tmp_path / "extra" / "linear")
    monkeypatch.setenv("TISFM_RUNS", f"{env}{os.pathsep}{tmp_path / 'extra'}")
    at = page("pages/4_Regularization_path.py", env / "lineages_full")
    assert len(at.selectbox(key="path_dir").options) == 2
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "pages/4_Regularization_path.py"), default_timeout=60)
    at.session_state["active_run"] = str(env / "lineages_full")
    outputs = result.outputs
    at.query_params.update({"path": "extra/linear", "output": outputs[1], "lambda": "2", "log": "maybe"})
    at.run()
    assert not at.exception
    assert at.selectbox(key="path_dir").value == tmp_path / "extra" / "linear"
    assert at.selectbox(key="path_output").value == outputs[1]
    assert at.select_slider(key="path_lambda").value.startswith("2: ")
    mse = charts(at)[0]
    assert mse["layout"]["xaxis"]["type"] == "linear"   # "maybe" is no boolean: the grid decides
    assert np.allclose(arr(mse["data"][0]["x"]), result.lambdas)


def test_regularization_path_missing_offers_a_job(env, monkeypatch):
    calls, calls_hidden = [], []
    monkeypatch.setattr(jobs, "launch", lambda kind, args, jobs_dir, label="", spec=None, hide_contents=False:
                        calls.append((kind, args, spec)) or calls_hidden.append(hide_contents) or jobs.Job(path=Path(jobs_dir), id="fake", kind=kind))
    at = page("pages/4_Regularization_path.py", env / "treediff_base")
    assert any("No regularization path" in i for i in texts(at.info))
    at.button(key="start_path").click().run()
    kind, args, spec = calls[0]
    parsed = build_parser().parse_args([kind, *map(str, args)])
    assert parsed.run == str(env / "treediff_base") and spec.penalty == "mcp" and spec.log_grid
    assert np.allclose(spec.lambdas, np.r_[0, np.geomspace(1e-4, 1e-1, 12)])
    assert calls_hidden == [True]   # it reads the run's recorded data: no contents in its messages


# -- lineage tree -------------------------------------------------------------------------------

def _label_boxes(trace):
    """Boxes (x0, y0, x1, y1) in pixels of the node labels of the tree figure, estimated here from
    each label's longest line and line count (0.6 em per character, 1.2 em per line)."""
    size = trace["textfont"]["size"]
    boxes = []
    for x, y, text in zip(arr(trace["x"]), arr(trace["y"]), trace["text"]):
        lines = text.split("<br>")
        w, h = 0.6 * size * max(map(len, lines)), 1.2 * size * len(lines)
        boxes.append((x - w / 2, y - h / 2, x + w / 2, y + h / 2))
    return boxes


def test_lineage_tree(env):
    run_dir = env / "treediff_base"
    config = json.loads((run_dir / "config.json").read_text())
    at = page("pages/5_Lineage_tree.py", run_dir)
    at.slider(key="tree_threshold").set_value(-0.5).run()
    tree, heat = charts(at)
    mids = next(t for t in tree["data"] if t.get("name") == "edges")
    assert sorted(c[0] for c in mids["customdata"]) == sorted(config["outputs"])
    r2 = dict(zip(config["metrics"]["test"]["outputs"], config["metrics"]["test"]["r2"]))
    assert all(abs(c[2] - r2[c[0]]) < 1e-9 for c in mids["customdata"])
    # root at the top: the root node has the smallest y and the axis is reversed
    nodes = next(t for t in tree["data"] if t.get("name") == "cell types")
    low, high = tree["layout"]["yaxis"]["range"]
    assert low > high
    ys = arr(nodes["y"])
    assert ys[0] == ys.min()
    # every cell type once, and no two labels overlap at the figure's own size (pixels: the axes
    # span exactly the plot area)
    parents = {c: p for c, p in config["transform"]["edges"]}
    assert sorted(c[0] for c in nodes["customdata"]) == sorted(set(parents) | set(parents.values()))
    assert len(nodes["customdata"]) == 81
    layout = tree["layout"]
    margin = layout["margin"]
    x0, x1 = layout["xaxis"]["range"]
    assert abs((layout["width"] - margin["l"] - margin["r"]) - (x1 - x0)) < 1.5
    assert abs((layout["height"] - margin["t"] - margin["b"]) - (low - high)) < 1.5
    boxes = _label_boxes(nodes)
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert min(a[2], b[2]) <= max(a[0], b[0]) or min(a[3], b[3]) <= max(a[1], b[1]), (a, b)
    assert layout["width"] <= 820   # fits the main column of a 1280 px window with the sidebar open
    # edges: width in proportion to R² and one colour per transition
    lines = [t for t in tree["data"] if t.get("mode") == "lines" and t["x"][0] is not None
             and t.get("name") not in ("selected edge",)]
    kept = [t for t in lines if t["line"].get("dash") is None]
    top = max(v for v in r2.values() if v is not None)
    for trace in kept:
        assert trace["line"]["width"] <= 10.0 + 1e-9
    by_name = {}
    for trace in kept:
        by_name.setdefault(trace["name"], set()).add(trace["line"]["color"])
    assert all(len(c) == 1 for c in by_name.values()) and len({c.pop() for c in by_name.values()}) == len(by_name)
    best = max((e for e in r2 if r2[e] is not None), key=lambda e: r2[e])
    widest = max(kept, key=lambda t: t["line"]["width"])
    assert abs(widest["line"]["width"] - 10.0) < 1e-9 and top == r2[best]
    kept_edges = [e for e in config["outputs"] if r2[e] is not None and r2[e] > -0.5]
    assert len(heat["data"][0]["x"]) == len(kept_edges)
    W, _ = weights(run_dir)
    top = set()
    for edge in kept_edges:
        col = np.abs(W[edge].to_numpy())
        top |= {W.index[i] for i in np.argsort(-col, kind="stable")[:5] if col[i] > 0}
    assert {c[0][0] for c in heat["data"][0]["customdata"]} == top
    # the heatmap's bottom margin holds its slanted edge labels
    longest = max(len(x) for x in heat["data"][0]["x"])
    assert heat["layout"]["xaxis"]["tickangle"] == -45
    assert heat["layout"]["margin"]["b"] >= 0.7 * 0.6 * 12 * longest
    assert heat["layout"]["margin"]["l"] >= 0.7 * 0.6 * 12 * longest   # slanted labels reach left too
    edge_table = at.dataframe[-1].value
    first = at.selectbox(key="tree_edge").value
    col = W[first].to_numpy()
    assert list(edge_table["motif"]) == [W.index[i] for i in np.argsort(-np.abs(col), kind="stable")[:10]]
    assert edge_table["database"].str.startswith("https://jaspar.elixir.no/matrix/").all()
    # another edge chosen: its TFs are listed, the tree outlines it and the URL names it
    other = config["outputs"][3]
    at.selectbox(key="tree_edge").set_value(other).run()
    col = W[other].to_numpy()
    assert list(at.dataframe[-1].value["motif"]) == [W.index[i] for i in np.argsort(-np.abs(col), kind="stable")[:10]]
    assert at.query_params["edge"] == other
    outline = next(t for t in charts(at)[0]["data"] if t.get("name") == "selected edge")
    child, parent = next((c, p) for c, p in config["transform"]["edges"] if f"{c}-{p}" == other)
    centres = dict(zip([c[0] for c in nodes["customdata"]], zip(arr(nodes["x"]), arr(nodes["y"]))))
    assert abs(outline["x"][0] - centres[parent][0]) < 1e-6 and abs(outline["x"][1] - centres[child][0]) < 1e-6


def test_lineage_tree_offers_the_tree_diff_run(env):
    at = page("pages/5_Lineage_tree.py", env / "lineages_full")
    assert any("not trained on tree-diff targets" in i for i in texts(at.info))
    assert len(charts(at)) == 2   # the listed tree-diff run is drawn right away
    at.button(key="use_tree_run").click().run()
    assert at.session_state["active_run"] == str(env / "treediff_base")
    assert not any("not trained on tree-diff" in i for i in texts(at.info))
    assert at.query_params["run"] == "treediff_base"


# -- TISM logos ---------------------------------------------------------------------------------

def _seq(fixture_root, k=0):
    lines = (fixture_root / "data" / "demo" / "sequences.fa").read_text().split("\n")
    return lines[2 * k + 1]


def test_tism_page_explains_a_pasted_sequence(env, fixture_root):
    run_dir = env / "lineages_full"
    seq = _seq(fixture_root)
    at = page("pages/6_TISM_logos.py", run_dir)
    at.text_area(key="tism_text").input(f">mine\n{seq}").run()
    assert not texts(at.error)
    assert any("Mean TISM effect at the reference base" in c for c in texts(at.caption))
    # variant table: predictions against the model run here
    at.number_input(key="variant_pos").set_value(10).run()
    table = at.dataframe[-1].value
    model = load_run(run_dir).model
    idx = encode([seq])
    with torch.no_grad():
        ref = model(torch.from_numpy(one_hot(idx))).numpy()[0]
        for row in table.itertuples():
            mutated = idx.copy()
            mutated[0, 9] = "ACGT".index(row.alt)
            alt = model(torch.from_numpy(one_hot(mutated))).numpy()[0]
            k = model_outputs(run_dir).index(row.output)
            assert row.position == 10 and row.ref == seq[9]
            assert abs(row.ref_pred - ref[k]) < 1e-5 and abs(row.exact_delta - (alt[k] - ref[k])) < 1e-5
    # exact ISM check: Pearson of TISM (autograd) and brute-force ISM for the first output
    at.button(key="ism_button").click().run()
    shown = float(at.metric[0].value)
    x = torch.from_numpy(one_hot(idx)).requires_grad_(True)
    model(x)[0, 0].backward()
    g = x.grad.numpy()[0]
    ref_base = idx[0]
    sites = [(pos, b) for pos in range(len(seq)) for b in range(4) if b != ref_base[pos]]
    t_vals = [g[b, pos] - g[ref_base[pos], pos] for pos, b in sites]
    mutants = np.repeat(idx, len(sites), axis=0)
    mutants[np.arange(len(sites)), [pos for pos, _ in sites]] = [b for _, b in sites]
    with torch.no_grad():
        base_pred = model(torch.from_numpy(one_hot(idx))).numpy()[0, 0]
        i_vals = model(torch.from_numpy(one_hot(mutants))).numpy()[:, 0] - base_pred
    assert abs(shown - np.corrcoef(t_vals, i_vals)[0, 1]) < 2e-3


def model_outputs(run_dir):
    return json.loads((run_dir / "config.json").read_text())["outputs"]


def test_tism_page_names_bad_letters_and_lengths(env, fixture_root):
    seq = _seq(fixture_root)
    at = page("pages/6_TISM_logos.py", env / "lineages_full")
    at.text_area(key="tism_text").input(">good\n" + seq + "\n>bad\n" + seq[:41] + "Z" + seq[42:]).run()
    assert texts(at.error) == ["sequence 'bad' has invalid character 'Z' at position 42 (1-based); expected "
                               "A, C, G, T or an IUPAC code"]
    at.text_area(key="tism_text").input(seq[:60]).run()
    assert "60 bp long; expected 100 bp" in texts(at.error)[0]
    assert not charts(at)


def test_tism_page_example_and_url(env, fixture_root):
    from streamlit.testing.v1 import AppTest

    at = page("pages/6_TISM_logos.py", env / "lineages_full")
    at.button(key="tism_example").click().run()
    assert at.text_area(key="tism_text").value == ">syn_00000\n" + _seq(fixture_root)
    assert any("Mean TISM effect" in c for c in texts(at.caption))
    at = AppTest.from_file(str(REPO / "pages/6_TISM_logos.py"), default_timeout=60)
    at.session_state["active_run"] = str(env / "lineages_full")
    at.query_params["mode"] = "Region of the run's data"
    at.run()
    assert at.radio(key="tism_mode").value == "Region of the run's data"
    assert at.multiselect(key="tism_regions").value == ["syn_00000"]


def test_tism_page_region_of_the_run_data(env):
    at = page("pages/6_TISM_logos.py", env / "lineages_full")
    at.radio(key="tism_mode").set_value("Region of the run's data").run()
    assert not texts(at.error)
    assert at.multiselect(key="tism_regions").value == ["syn_00000"]
    assert any("Mean TISM effect" in c for c in texts(at.caption))


# -- models and training ------------------------------------------------------------------------

def _zip(entries, links=()):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
        for name in links:
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777 << 16)
            archive.writestr(info, "/etc/passwd")
    return buffer.getvalue()


def _run_files(run_dir, prefix=""):
    return {prefix + p.name: p.read_bytes() for p in run_dir.iterdir() if p.name in RUN_FILES}


def test_upload_run_zip(env, tmp_path):
    at = page("pages/1_Models_and_training.py")
    assert len(at.dataframe[0].value) == 5
    good = _zip(_run_files(env / "lineages_full", "my_run/"))
    at.file_uploader(key="run_zip").set_value(("my_run.zip", good, "application/zip")).run()
    at.button(key="add_run_zip").click().run()
    assert not texts(at.error)
    added = list((tmp_path / "home" / "runs").iterdir())
    assert len(added) == 1 and added[0].name.startswith("uploaded_") and "my_run" not in added[0].name
    assert (added[0] / "model.safetensors").read_bytes() == (env / "lineages_full" / "model.safetensors").read_bytes()
    assert at.session_state["active_run"] == str(added[0])
    assert len(at.dataframe[0].value) == 6


@pytest.mark.parametrize("entries, links, message", [
    ({"../evil/config.json": b"{}", "model.safetensors": b""}, (), "leaves its folder"),
    ({"/abs/config.json": b"{}", "model.safetensors": b""}, (), "absolute"),
    ({"config.json": b"{}", "model.safetensors": b"", "run.sh": b"rm -rf /"}, (), "may only contain"),
    ({"config.json": b"{}", "model.safetensors": b""}, ("motifs.meme",), "link"),
    ({"a/config.json": b"{}", "b/model.safetensors": b""}, (), "several folders"),
    ({"config.json": b"{}"}, (), "no model.safetensors"),
])
def test_bad_run_zips_are_refused(env, tmp_path, entries, links, message):
    at = page("pages/1_Models_and_training.py")
    at.file_uploader(key="run_zip").set_value(("x.zip", _zip(entries, links), "application/zip")).run()
    at.button(key="add_run_zip").click().run()
    assert any(message in e for e in texts(at.error)), texts(at.error)
    assert not (tmp_path / "home" / "runs").exists() or not any((tmp_path / "home" / "runs").iterdir())


def test_zip_size_limit_and_invalid_run(env, tmp_path):
    files = _run_files(env / "lineages_full")
    with pytest.raises(TisfmError, match="more than"):
        extract_run_zip(_zip(files), tmp_path / "runs", max_bytes=1000)
    broken = dict(files, **{"config.json": b'{"format": "tisfm-run", "format_version": 1}'})
    with pytest.raises(TisfmError, match="the uploaded run is not valid"):
        extract_run_zip(_zip(broken), tmp_path / "runs")
    assert not any((tmp_path / "runs").iterdir())
    with pytest.raises(TisfmError, match="not a zip"):
        extract_run_zip(b"plain text", tmp_path / "runs")


def test_training_form_builds_a_valid_job(env, fixture_root, monkeypatch):

    calls = []

    def fake_launch(kind, args, jobs_dir, label="", spec=None, hide_contents=False):
        calls.append((kind, [str(a) for a in args], label, spec, hide_contents))
        return jobs.Job(path=Path(jobs_dir), id="fake", kind=kind)

    monkeypatch.setattr(jobs, "launch", fake_launch)
    demo = fixture_root / "data" / "demo"
    at = page("pages/1_Models_and_training.py")
    at.radio(key="data_source").set_value("Files on this server").run()
    at.text_input(key="srv_seq").input(str(demo / "sequences.fa"))
    at.text_input(key="srv_targets").input(str(demo / "targets_celltypes.tsv"))
    at.selectbox(key="transform").set_value("tree-diff").run()
    at.text_input(key="transform_table").input(str(demo / "parents.tsv"))
    at.radio(key="motif_source").set_value("JASPAR release").run()
    at.selectbox(key="variant").set_value("base")
    at.number_input(key="epochs").set_value(3)
    at.number_input(key="finetune").set_value(2)
    at.text_input(key="run_name").input("my tree run!").run()
    at.button(key="start_training").click().run()
    assert not texts(at.error), texts(at.error)
    kind, args, label, task, hidden = calls[0]
    parsed = build_parser().parse_args([kind, *args])
    assert kind == "train" and parsed.out.endswith("/runs/my_tree_run")
    assert hidden is True   # typed server files: the job's messages hide their contents
    # the job's task survives its JSON round trip (what the job process reads)
    task = TrainTask.from_dict(json.loads(json.dumps(task.to_dict(base=REPO))), base=REPO)
    assert task.model.variant == "base" and task.training.epochs == 3 and task.training.finetune_epochs == 2
    assert task.data.transform == f"tree-diff:{demo / 'parents.tsv'}" and task.model.motifs == "jaspar:2024"
    assert task.data.sequences == str(demo / "sequences.fa")
    # a missing server file is refused before any job starts
    at.text_input(key="srv_targets").input(str(demo / "nope.tsv")).run()
    at.button(key="start_training").click().run()
    assert any("does not exist on this server" in e for e in texts(at.error)) and len(calls) == 1


def test_training_form_makes_the_demo_atlas(env, tmp_path, monkeypatch):

    calls = []
    monkeypatch.setattr(jobs, "launch", lambda kind, args, jobs_dir, label="", spec=None, hide_contents=False:
                        calls.append((kind, spec)) or jobs.Job(path=Path(jobs_dir), id="f", kind=kind))
    at = page("pages/1_Models_and_training.py")
    at.number_input(key="demo_regions").set_value(200)
    at.selectbox(key="demo_targets").set_value("tree edges (80 outputs: child minus parent)")
    at.radio(key="job_mode").set_value("Cross-validation (one run per fold)").run()
    at.button(key="start_training").click().run()
    assert not texts(at.error), texts(at.error)
    kind, task = calls[0]
    demo = tmp_path / "home" / "data" / "demo_200_seed0"
    assert kind == "cv" and task.data.sequences == str(demo / "sequences.fa")
    assert task.data.transform == f"tree-diff:{demo / 'parents.tsv'}" and task.model.motifs == str(demo / "motifs.meme")
    assert len((demo / "sequences.fa").read_text().split(">")) == 201
    assert json.loads((demo / "truth.json").read_text())["synthetic"] is True


def test_jobs_panel_shows_progress_loss_and_failures(env, tmp_path):
    home_jobs = tmp_path / "home" / "jobs"
    history = [{"stage": "frozen", "epoch": i, "train_loss": 1.0 / i, "val_loss": 1.5 / i} for i in (1, 2, 3)]
    for name, status in (("a_failed", {"state": "failed", "message": "targets file x.tsv does not exist",
                                       "fraction": 0.0}),
                         ("b_done", {"state": "done", "message": "run written", "fraction": 1.0,
                                     "history": history})):
        folder = home_jobs / name
        folder.mkdir(parents=True)
        job = jobs.Job(path=folder, id=name, kind="train", created=1.0 if name == "a_failed" else 2.0,
                       label=name)
        (folder / "job.json").write_text(json.dumps(job.to_dict()))
        (folder / "status.json").write_text(json.dumps(status))
        (folder / "log.txt").write_text(f"log of {name}\n")
    at = page("pages/1_Models_and_training.py")
    table = at.dataframe[1].value
    assert list(table["job"]) == ["b_done", "a_failed"] and list(table["state"]) == ["done", "failed"]
    assert list(table["progress"]) == [100, 0]
    assert any("targets file x.tsv does not exist" in e for e in texts(at.error))
    loss = charts(at)[0]["data"]
    assert np.allclose(arr(loss[0]["y"]), [1.0, 0.5, 1 / 3]) and np.allclose(arr(loss[1]["y"]), [1.5, 0.75, 0.5])
    assert "log of a_failed" in [c.value for c in at.code][1]


# -- helpers --------------------------------------------------------------------------------------

def test_parse_sequences_fasta_raw_and_wrapped():
    seqs = parse_sequence_text(">a x\nACGT\nAC\n\n>b\nTTTTNN\n", length=6)
    assert list(seqs.ids) == ["a", "b"] and seqs.indices.tolist() == [[0, 1, 2, 3, 0, 1], [3, 3, 3, 3, 4, 4]]
    seqs = parse_sequence_text("ACG\nTAC\n\nGGG\nCCC", length=6)  # blocks of wrapped lines
    assert list(seqs.ids) == ["seq1", "seq2"] and seqs.indices.tolist() == [[0, 1, 2, 3, 0, 1], [2, 2, 2, 1, 1, 1]]
    seqs = parse_sequence_text("ACG\nTAC", length=3)  # one sequence per line
    assert list(seqs.ids) == ["seq1", "seq2"]
    with pytest.raises(TisfmError, match="line 1: text before the first"):
        parse_sequence_text("ACGT\n>a\nACGT")
    with pytest.raises(TisfmError, match="'b' appears twice"):
        parse_sequence_text(">b\nAC\n>b\nAC")


def test_figure_downloads_are_valid_images():
    from tisfm_core.plots import figure_image, weight_heatmap

    W = pd.DataFrame([[1.0, -0.5], [0.2, 0.0]], index=["M1", "M2"], columns=["o1", "o2"])
    fig = weight_heatmap(W, names={"M1": "Pax5"}, marks=[("M1", "o1")])
    svg = figure_image(fig, "svg")
    assert svg.lstrip().startswith(b"<?xml") and b"<svg" in svg and b"Pax5 (M1)" in svg
    assert figure_image(fig, "png").startswith(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(TisfmError, match="image format"):
        figure_image(fig, "gif")


def test_tism_page_genome_coordinates(env, tmp_path):
    rng = np.random.default_rng(1)
    contig = "".join(rng.choice(list("ACGT"), size=500))
    genome = tmp_path / "genome.fa"
    genome.write_text(">chr1\n" + "\n".join(contig[i:i + 60] for i in range(0, 500, 60)) + "\n")
    at = page("pages/6_TISM_logos.py", env / "lineages_full")
    at.radio(key="tism_mode").set_value("Genome coordinates").run()
    at.text_input(key="tism_genome").input(str(genome))
    at.text_input(key="tism_region").input("chr1:201-300").run()
    assert not texts(at.error), texts(at.error)
    at.number_input(key="variant_pos").set_value(7).run()
    table = at.dataframe[-1].value
    assert set(table["ref"]) == {contig[200 + 6]}  # window chr1:201-300 = contig[200:300]
    at.text_input(key="tism_region").input("chrX:1-100").run()
    assert any("chrX" in e for e in texts(at.error))


def test_import_reference_state_dict(env, tmp_path):
    from conftest import CISBP, REFERENCE, need

    root = need(REFERENCE / "base_head")
    at = page("pages/1_Models_and_training.py")
    at.file_uploader(key="ref_pt").set_value(("sd.pt", (root / "state_dict.pt").read_bytes(), "application/octet-stream"))
    at.file_uploader(key="ref_motifs").set_value(("cisbp.meme", need(CISBP).read_bytes(), "text/plain"))
    at.selectbox(key="ref_variant").set_value("full")
    at.selectbox(key="ref_era").set_value("head").run()
    at.button(key="ref_import").click().run()
    assert any("not 'full'" in e or "is a" in e for e in texts(at.error)), texts(at.error)
    assert not list((tmp_path / "home" / "runs").glob("imported_*"))
    at.selectbox(key="ref_variant").set_value("base").run()
    at.button(key="ref_import").click().run()
    assert not texts(at.error), texts(at.error)
    (imported,) = (tmp_path / "home" / "runs").glob("imported_*")
    model = load_run(imported).model
    with torch.no_grad():
        got = model(torch.from_numpy(np.load(root / "inputs.npy"))).numpy()
    assert np.abs(got - np.load(root / "outputs.npy")).max() < 1e-4
    assert at.session_state["active_run"] == str(imported)
    # the Home card says in words where the weights come from
    body = "\n".join(texts(page("app.py", imported).markdown)).replace("\\", "")
    n_out = len(json.loads((imported / "config.json").read_text())["outputs"])
    assert f"imported reference checkpoint (state_dict.pt), {n_out} outputs, trained elsewhere" in body
    assert "no training data: the weights were trained elsewhere" in body


SCRIPTS = ("app.py",) + tuple(f"pages/{p.name}" for p in sorted((REPO / "pages").glob("*.py")))


def _gone(value, old):
    """A JSON value with every path under ``old`` moved under a folder that does not exist."""
    if isinstance(value, dict):
        return {k: _gone(v, old) for k, v in value.items()}
    if isinstance(value, list):
        return [_gone(v, old) for v in value]
    if isinstance(value, str) and old in value:
        return value.replace(old, "/gone/old-checkout")
    return value


def _run_script(folder, script, run, runs):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(folder / script), default_timeout=120)
    at.session_state["active_run"] = str(run)
    at.run()
    assert not at.exception, (script, run, at.exception)
    assert not texts(at.error), (script, run, texts(at.error))
    return at


def test_a_moved_checkout_renders_every_page_and_run(tmp_path, monkeypatch):
    """app.py, pages/ and trained_models/ copied to another folder, every absolute path they store
    pointing into a folder that is gone (the old checkout removed): every page renders every
    shipped run as the checkout does, the path page finds the shipped path, the TISM page its
    example sequence and the Home page its data files."""
    import shutil

    from tisfm_core.runs import list_runs

    moved = tmp_path / "elsewhere" / "checkout"
    shutil.copytree(REPO / "pages", moved / "pages")
    shutil.copy(REPO / "app.py", moved / "app.py")
    shutil.copytree(REPO / "trained_models", moved / "trained_models")
    old = set()
    for file in (moved / "trained_models").rglob("*.json"):
        content = json.loads(file.read_text())
        text = json.dumps(content)
        for prefix in ("/work/main/", str(REPO) + "/"):
            if prefix in text:
                old.add(prefix)
                content = _gone(content, prefix.rstrip("/"))
        file.write_text(json.dumps(content))
    assert old, "the shipped artifacts record the folder they were made in"
    assert not any(p in f.read_text() for f in (moved / "trained_models").rglob("*.json") for p in old)
    monkeypatch.setenv("TISFM_RUNS", str(moved / "trained_models"))
    monkeypatch.setenv("TISFM_HOME", str(tmp_path / "home"))
    runs = [r for r in list_runs([moved / "trained_models"])]
    shipped = list((moved / "trained_models").rglob("config.json"))
    assert len(runs) == len(shipped) >= 16 and not any("error" in r for r in runs)
    drawn = {"tisfm": ("pages/2", "pages/3", "pages/5"), "linear": ("pages/2",)}
    for row in runs:
        for script in SCRIPTS:
            at = _run_script(moved, script, row["path"], runs)
            if script.startswith(drawn.get(row["kind"], ())):
                assert charts(at), (script, row["display"])
    default = moved / "trained_models" / "cv_full" / "fold_0"
    # the same figures as the checkout itself draws
    monkeypatch.setenv("TISFM_RUNS", str(REPO / "trained_models"))
    here = {s: charts(_run_script(REPO, s, REPO / "trained_models" / "cv_full" / "fold_0", None)) for s in SCRIPTS}
    monkeypatch.setenv("TISFM_RUNS", str(moved / "trained_models"))
    for script in SCRIPTS:
        assert charts(_run_script(moved, script, default, None)) == here[script], script
    at = _run_script(moved, "pages/4_Regularization_path.py", default, None)
    assert at.selectbox(key="path_dir").value == moved / "trained_models" / "path_mcp_fold0"
    assert len(charts(at)) == 3
    at = _run_script(moved, "app.py", default, None)
    body = "\n".join(texts(at.markdown)).replace("\\", "")
    assert "sequences: ../../demo_atlas/sequences.fa" in body and "(missing)" not in body
    assert any("Synthetic demo" in w for w in texts(at.warning))   # truth.json found next to the data
    at = _run_script(moved, "pages/6_TISM_logos.py", default, None)
    at.button(key="tism_example").click().run()
    assert not texts(at.error) and at.text_area(key="tism_text").value.startswith(">syn_")
    assert any("Mean TISM effect" in c for c in texts(at.caption))
