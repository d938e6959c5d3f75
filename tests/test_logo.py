"""The fast logo renderer draws the letters logomaker draws, where logomaker draws them."""

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure

from tisfm_core.plots import BASE_COLORS, BASES, attribution_logo, draw_letters, information_matrix, motif_logo

logomaker = pytest.importorskip("logomaker")


def _logomaker_outlines(values, positions):
    """Per base, the vertices of logomaker's letters in position order, and its axis limits."""
    ax = Figure().subplots()
    frame = pd.DataFrame(values, columns=list(BASES), index=positions)
    logo = logomaker.Logo(frame, ax=ax, color_scheme=BASE_COLORS, flip_below=False, show_spines=False)
    outlines = {b: [] for b in BASES}
    for glyph in logo.glyph_list:
        if glyph.patch is not None:
            outlines[glyph.c].append(glyph.patch.get_path().vertices)
    return ({b: np.concatenate(v) for b, v in outlines.items() if v}, ax.get_xlim(), ax.get_ylim())


def _assert_same_letters(ax, expected):
    """One patch per base, holding exactly logomaker's letter outlines of that base."""
    patches = {tuple(np.round(p.get_facecolor()[:3], 4)): p for p in ax.patches}
    assert len(patches) == len(ax.patches) == len(expected)
    for base, vertices in expected.items():
        patch = patches[tuple(np.round(to_rgb(BASE_COLORS[base]), 4))]
        np.testing.assert_allclose(patch.get_path().vertices, vertices, atol=1e-9)


@pytest.mark.parametrize("kind", ["one-hot", "dense"])
def test_draw_letters_matches_logomaker(kind):
    rng = np.random.default_rng(0)
    values = rng.normal(size=(12, 4))
    if kind == "one-hot":   # attribution logos: one signed letter per position, some zero
        values = values * np.eye(4)[rng.integers(0, 4, 12)]
        values[3] = 0
    positions = np.arange(40, 52)
    expected, xlim, ylim = _logomaker_outlines(values, positions)
    ax = Figure().subplots()
    draw_letters(ax, values, positions)
    _assert_same_letters(ax, expected)
    np.testing.assert_allclose(ax.get_xlim(), xlim)
    np.testing.assert_allclose(ax.get_ylim(), ylim)
    assert not any(spine.get_visible() for spine in ax.spines.values())


def test_attribution_logo_draws_one_patch_per_base_and_the_hits():
    heights = np.zeros((4, 30))
    heights[np.arange(30) % 4, np.arange(30)] = np.linspace(-1, 2, 30)
    hits = pd.DataFrame({"start": [5, 12], "end": [11, 20], "name": ["TF1", "TF2"], "strand": ["+", "-"]})
    fig = attribution_logo(heights, start=1, hits=hits, title="t")
    ax, track = fig.axes[0], fig.axes[1]
    assert len(ax.patches) == 4                      # one compound patch per base
    assert not ax.texts                              # the hits have their own track
    assert sorted(t.get_text() for t in track.texts) == ["TF1 (+)", "TF2 (-)"]
    np.testing.assert_allclose(ax.get_xlim(), (0.5, 30.5), atol=0.05)


def test_motif_logo_is_logomakers_information_logo():
    pwm = np.random.default_rng(1).dirichlet(np.full(4, 0.4), size=9)
    expected, xlim, _ = _logomaker_outlines(information_matrix(pwm).to_numpy(), np.arange(9))
    ax = motif_logo(pwm, title="m").axes[0]
    _assert_same_letters(ax, expected)
    np.testing.assert_allclose(ax.get_xlim(), xlim)
    assert ax.get_ylim() == (0, 2)
