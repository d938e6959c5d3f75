"""The linear baseline in the app: its coefficients in the final-layer view, what it is on Home,
and pages with nothing to show for it saying so (AppTest on the shipped linear run)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from test_app import REPO, arr, charts, page, texts

from tisfm_core.runs import load_run
from tisfm_core.specs import BASELINE_NOTES

SHIPPED = REPO / "trained_models" / "ablations" / "linear"


@pytest.fixture
def linear_run(tmp_path, monkeypatch):
    if not (SHIPPED / "config.json").exists():
        pytest.skip("the shipped linear run is absent")
    run = tmp_path / "runs" / "linear"
    shutil.copytree(SHIPPED, run)
    shutil.copytree(REPO / "trained_models" / "demo_atlas", tmp_path / "demo_atlas")   # its data, run-relative
    monkeypatch.setenv("TISFM_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("TISFM_HOME", str(tmp_path / "home"))
    return run


def test_final_layer_page_shows_the_linear_coefficients(linear_run):
    at = page("pages/2_Final_layer.py", linear_run)
    assert not texts(at.error), texts(at.error)
    at.radio(key="order").set_value("fixed").run()
    heat = charts(at)[0]["data"][0]
    model = load_run(linear_run).model
    n = model.config.n_motifs
    # independent of the analysis code: one weight per motif = max-score + site-count coefficients
    w = model.final.weight.detach().double().numpy()
    W = (w[:, :n] + w[:, n:2 * n]).T                        # (motifs, outputs)
    ids = list(load_run(linear_run).motif_ids)
    rows = [ids.index(c[0][0].rsplit("(", 1)[1].rstrip(")")) if "(" in c[0][0] else ids.index(c[0][0])
            for c in heat["customdata"]]
    expected = W[rows] / np.abs(W).max(axis=0)
    assert np.allclose(arr(heat["z"]), expected, atol=1e-5)
    assert BASELINE_NOTES["linear"] in texts(at.caption)
    assert any("log-odds of the PWM as is" in c for c in texts(at.caption))


def test_home_says_what_the_linear_baseline_is(linear_run):
    at = page("app.py", linear_run)
    assert not texts(at.error), texts(at.error)
    assert BASELINE_NOTES["linear"] in texts(at.caption)
    training = "\n".join(texts(at.markdown))
    alpha = load_run(linear_run).config["training"]["best"]["alpha"]
    assert f"fitted in closed form: ridge, strength {alpha:.3f}" in training


@pytest.mark.parametrize("script, words", [
    ("pages/3_Pooling_vs_information.py", "is a linear baseline: it has no motif layer, pooling or attention"),
    ("pages/5_Lineage_tree.py", "is a linear baseline"),
])
def test_pages_without_a_linear_view_say_why(linear_run, script, words):
    at = page(script, linear_run)
    assert not texts(at.error)
    assert any(words in m for m in texts(at.info)), texts(at.info)


def test_fine_tune_tab_refuses_a_linear_parent(linear_run):
    at = page("pages/1_Models_and_training.py", linear_run)
    assert any("is a linear baseline, fitted in closed form" in m for m in texts(at.info))
    assert "ft_source" not in [r.key for r in at.radio]
