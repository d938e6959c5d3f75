"""Figures of the app: Plotly charts (interactive) and sequence logos (matplotlib).

Every builder takes the tables that :mod:`tisfm_core.analysis`, :mod:`tisfm_core.path` and
:mod:`tisfm_core.attribution` return and only draws them (no model math here). Bases are always
in A, C, G, T order. :func:`figure_image` turns any figure into SVG or PNG bytes: Plotly
figures go through kaleido when it is installed, else through a small matplotlib renderer of
the trace types used here (heatmaps, scatter/line traces, bars, lines and text annotations).

Matplotlib figures are plain :class:`matplotlib.figure.Figure` objects (no pyplot state), so a
server can make them from any thread without leaking them. Nothing here imports Streamlit.
"""

from __future__ import annotations

import io
import re

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from matplotlib import colormaps
from matplotlib.colors import LinearSegmentedColormap, Normalize, TwoSlopeNorm, to_rgba
from matplotlib.figure import Figure

from .analysis.tree_diff import kept_mask
from .errors import TisfmError

BASES = "ACGT"
#: Base colours of every logo and 4 x L heatmap (the usual A green, C blue, G orange, T red).
BASE_COLORS = {"A": "#109648", "C": "#255C99", "G": "#F7B32B", "T": "#D62839"}
DIVERGING = "RdBu_r"
SEQUENTIAL = "Viridis"
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
FORMATS = ("svg", "png")


def _label(motif, name):
    """Row label of a motif: 'TF name (motif id)', or the id alone when they coincide."""
    return str(motif) if not name or str(name) == str(motif) else f"{name} ({motif})"


def _colour(i):
    return PALETTE[i % len(PALETTE)]


# -- home and training -------------------------------------------------------------------------

def r2_bar(outputs, r2, *, title="Test R² per output"):
    """Bar chart of one value per output (test R²)."""
    values = [np.nan if v is None else float(v) for v in r2]
    fig = go.Figure(go.Bar(x=list(map(str, outputs)), y=values, marker_color=PALETTE[0],
                           hovertemplate="%{x}<br>R² = %{y:.3f}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="output", yaxis_title="test R²", height=360,
                      margin=dict(t=50, b=40))
    return fig


def loss_curve(history, *, title="Loss per epoch"):
    """Training and validation loss per epoch (one line each; stages continue the epoch axis).

    Parameters
    ----------
    history : list of dict
        Rows with ``epoch``, ``train_loss``, ``val_loss`` and optionally ``stage`` / ``fold``
        (the ``history`` of a run's config.json or a job's status.json).
    """
    table = history_table(history)
    fig = go.Figure()
    for column, colour in (("train_loss", PALETTE[0]), ("val_loss", PALETTE[1])):
        if column in table and table[column].notna().any():
            fig.add_trace(go.Scatter(x=table["step"], y=table[column], mode="lines+markers",
                                     name=column.replace("_", " "), line=dict(color=colour),
                                     customdata=table[["stage", "epoch"]].to_numpy(),
                                     hovertemplate="%{customdata[0]} epoch %{customdata[1]}<br>"
                                                   "%{y:.4f}<extra>%{fullData.name}</extra>"))
    fig.update_layout(title=title, xaxis_title="epoch (all stages)", yaxis_title="MSE loss",
                      height=320, margin=dict(t=50, b=40))
    return fig


def history_table(history):
    """A run's or job's per-epoch history as a DataFrame with a running ``step`` column."""
    table = pd.DataFrame([row for row in history or [] if isinstance(row, dict)])
    if table.empty:
        return pd.DataFrame(columns=["step", "stage", "epoch", "train_loss", "val_loss"])
    for column in ("stage", "epoch", "train_loss", "val_loss"):
        if column not in table:
            table[column] = np.nan
    table["stage"] = table["stage"].fillna("").astype(str)
    table.insert(0, "step", np.arange(1, len(table) + 1))
    return table


# -- final layer -------------------------------------------------------------------------------

def weight_heatmap(values, *, raw=None, names=None, title="", colorbar="weight", zmin=-1.0,
                   zmax=1.0, colorscale=DIVERGING, marks=None, mark_label="planted"):
    """Motif x output heatmap (rows top to bottom in the given order).

    Parameters
    ----------
    values : pandas.DataFrame, shape (n_motifs, n_outputs)
        The coloured values (e.g. normalised weights); index = motif ids, columns = outputs.
    raw : pandas.DataFrame, optional
        Same shape; shown in the hover as the raw weight.
    names : mapping motif id -> TF name, optional
    colorbar : str
        Colour bar title, also the hover name of ``values``.
    zmin, zmax : float
        Colour range; a diverging scale is centred on 0.
    marks : iterable of (motif, output), optional
        Cells to mark with a ring (the planted regulators of synthetic demo data).
    """
    names = dict(names or {})
    motifs = [str(m) for m in values.index]
    outputs = [str(o) for o in values.columns]
    labels = [_label(m, names.get(m, "")) for m in motifs]
    raw_values = (raw.loc[values.index, values.columns] if raw is not None else values).to_numpy(
        dtype=np.float64)
    custom = np.empty(values.shape + (3,), dtype=object)
    custom[..., 0] = np.array(motifs, dtype=object)[:, None]
    custom[..., 1] = np.array([names.get(m, "") for m in motifs], dtype=object)[:, None]
    custom[..., 2] = raw_values
    fig = go.Figure(go.Heatmap(
        z=values.to_numpy(dtype=np.float64), x=outputs, y=labels, zmin=zmin, zmax=zmax,
        colorscale=colorscale, colorbar=dict(title=colorbar), customdata=custom,
        hovertemplate=("motif %{customdata[0]}<br>TF %{customdata[1]}<br>output %{x}<br>"
                       f"raw weight %{{customdata[2]:.4g}}<br>{colorbar} %{{z:.3f}}<extra></extra>"),
        xgap=1, ygap=1))
    marks = [(str(m), str(o)) for m, o in (marks or []) if str(m) in motifs and str(o) in outputs]
    if marks:
        fig.add_trace(go.Scatter(
            x=[o for _, o in marks], y=[labels[motifs.index(m)] for m, _ in marks], mode="markers",
            marker=dict(symbol="circle-open", size=14, color="black", line=dict(width=2)),
            name=mark_label, hovertemplate=f"{mark_label}: %{{y}} in %{{x}}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="output", yaxis_title="motif",
                      yaxis=dict(autorange="reversed", type="category"),
                      xaxis=dict(type="category"), height=max(320, 22 * len(motifs) + 140),
                      margin=dict(t=50, b=60), legend=dict(orientation="h", y=-0.15))
    return fig


def information_matrix(matrix):
    """Logo heights in bits: probability times information content (uniform background).

    Parameters
    ----------
    matrix : array-like, shape (w, 4)
        Rows are positions, columns A, C, G, T; rows are renormalised to sum to 1.

    Returns
    -------
    pandas.DataFrame, shape (w, 4), columns A, C, G, T
    """
    p = np.clip(np.asarray(matrix, dtype=np.float64), 0, None)
    if p.ndim != 2 or p.shape[1] != 4:
        raise TisfmError(f"a motif matrix must be shaped (width, 4), got {p.shape}")
    sums = p.sum(axis=1, keepdims=True)
    p = np.where(sums > 0, p / np.where(sums > 0, sums, 1), 0.25)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.nansum(np.where(p > 0, p * np.log2(p), 0.0), axis=1)
    return pd.DataFrame(p * (2.0 - entropy)[:, None], columns=list(BASES))


def motif_logo(matrix, *, title="", ylabel="bits", height=2.2):
    """Sequence logo of a PWM (information content), drawn as logomaker draws it (:func:`draw_letters`).

    Parameters
    ----------
    matrix : array-like, shape (w, 4)
        Probabilities (rows A, C, G, T), e.g. ``MotifSet.matrices[k]``.

    Returns
    -------
    matplotlib.figure.Figure
    """
    heights = information_matrix(matrix)
    fig = Figure(figsize=(max(3.0, 0.45 * len(heights) + 1.0), height))
    ax = fig.subplots()
    draw_letters(ax, heights.to_numpy(), np.arange(len(heights)))
    ax.set_ylim(0, 2)
    ax.set_ylabel(ylabel)
    ax.set_xlabel("position")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


# -- pooling vs information content, interaction --------------------------------------------------

def labelled_scatter(df, *, x, y, color=None, labels=(), title="", xaxis="", yaxis="",
                     colorbar="", hover=()):
    """Scatter of one point per motif, optionally coloured by a signed value, some labelled.

    Parameters
    ----------
    df : pandas.DataFrame
        Needs ``motif``, ``name`` and the ``x`` / ``y`` (and ``color``) columns.
    labels : iterable of int
        Row positions whose TF name is written next to the point.
    hover : iterable of str
        Extra columns shown in the hover.
    """
    hover = [h for h in hover if h in df.columns]
    cols = ["motif", "name", *hover]
    custom = df[cols].to_numpy(dtype=object)
    template = "%{customdata[1]} (%{customdata[0]})<br>" + f"{xaxis or x} %{{x:.3f}}<br>{yaxis or y} %{{y:.3f}}"
    for i, h in enumerate(hover, start=2):
        template += f"<br>{h} %{{customdata[{i}]:.4g}}"
    marker = dict(size=8, line=dict(width=0.5, color="#333"))
    if color is not None:
        c = df[color].to_numpy(dtype=np.float64)
        bound = float(np.nanmax(np.abs(c))) if len(c) and np.isfinite(c).any() else 1.0
        marker.update(color=c, colorscale=DIVERGING, cmin=-(bound or 1.0), cmax=bound or 1.0,
                      colorbar=dict(title=colorbar or color), showscale=True)
    else:
        marker.update(color=PALETTE[0])
    fig = go.Figure(go.Scatter(x=df[x], y=df[y], mode="markers", marker=marker, customdata=custom,
                               hovertemplate=template + "<extra></extra>", name="motifs",
                               showlegend=False))
    labels = sorted(set(int(i) for i in labels))
    if labels:
        sub = df.iloc[labels]
        fig.add_trace(go.Scatter(x=sub[x], y=sub[y], mode="text", text=sub["name"].astype(str),
                                 textposition="top center", hoverinfo="skip", showlegend=False,
                                 textfont=dict(size=11)))
    fig.update_layout(title=title, xaxis_title=xaxis or x, yaxis_title=yaxis or y, height=460,
                      margin=dict(t=50, b=50))
    return fig


# -- regularization path -------------------------------------------------------------------------

def _log_axis(lambdas):
    """Plot lambdas on a log axis when all are positive, else on a symlog-like linear axis."""
    lam = np.asarray(lambdas, dtype=np.float64)
    return "log" if (lam > 0).all() else "linear"


def path_mse(lambdas, mse, outputs, best_index, *, title="Validation MSE along the path"):
    """Validation MSE against lambda, one line per output, dashed lines at each best lambda."""
    lam = np.asarray(lambdas, dtype=np.float64)
    fig = go.Figure()
    for r, output in enumerate(outputs):
        fig.add_trace(go.Scatter(x=lam, y=mse[:, r], mode="lines+markers", name=str(output),
                                 line=dict(color=_colour(r)),
                                 hovertemplate=f"{output}<br>λ %{{x:.3g}}<br>MSE %{{y:.4f}}<extra></extra>"))
        fig.add_vline(x=float(lam[best_index[r]]), line=dict(color=_colour(r), dash="dash", width=1))
    fig.update_layout(title=title, xaxis_title="λ (penalty strength)", yaxis_title="validation MSE",
                      xaxis_type=_log_axis(lam), height=420, margin=dict(t=50, b=50))
    return fig


def path_coefficients(lambdas, coefs, motif_ids, motif_names, highlight, best_lambda, *,
                      title="Coefficient paths"):
    """Coefficient of every motif against lambda for one output.

    Parameters
    ----------
    coefs : array-like, shape (L, n_motifs)
        One output's coefficients along the path.
    highlight : list of motif ids
        Drawn in colour and named in the legend (the top 9 at the best lambda); others grey.
    """
    lam = np.asarray(lambdas, dtype=np.float64)
    coefs = np.asarray(coefs, dtype=np.float64)
    index = {m: i for i, m in enumerate(motif_ids)}
    fig = go.Figure()
    hot = set(highlight)
    for i, m in enumerate(motif_ids):
        if m in hot or not coefs[:, i].any():
            continue
        fig.add_trace(go.Scatter(x=lam, y=coefs[:, i], mode="lines", line=dict(color="#c8c8c8", width=1),
                                 name=_label(m, motif_names[i]), showlegend=False,
                                 hovertemplate=f"{_label(m, motif_names[i])}<br>λ %{{x:.3g}}<br>"
                                               "w %{y:.4f}<extra></extra>"))
    for j, m in enumerate(highlight):
        i = index[m]
        fig.add_trace(go.Scatter(x=lam, y=coefs[:, i], mode="lines", line=dict(color=_colour(j), width=2.5),
                                 name=_label(m, motif_names[i]),
                                 hovertemplate=f"{_label(m, motif_names[i])}<br>λ %{{x:.3g}}<br>"
                                               "w %{y:.4f}<extra></extra>"))
    fig.add_vline(x=float(best_lambda), line=dict(color="black", dash="dash", width=1))
    fig.update_layout(title=title, xaxis_title="λ (penalty strength)", yaxis_title="final-layer weight",
                      xaxis_type=_log_axis(lam), height=460, margin=dict(t=50, b=50))
    return fig


# -- lineage tree --------------------------------------------------------------------------------

def tree_figure(layout, edges, *, threshold=0.05, title="Lineage tree"):
    """The tree drawn top-down: edges as lines with width proportional to test R².

    Parameters
    ----------
    layout : pandas.DataFrame
        From :func:`tisfm_core.analysis.tree_diff.tree_layout` (node, x, y, parent).
    edges : pandas.DataFrame
        From :func:`~tisfm_core.analysis.tree_diff.edge_metrics` (edge, child, parent,
        child_lineage, parent_lineage, test_r2).
    threshold : float
        Edges with R² at or below it are drawn thin, dotted and grey.

    Every edge is one line trace named by its transition (parent lineage -> child lineage, one
    colour per transition); a marker at each edge's midpoint carries the hover and the click
    selection (``customdata[0]`` = edge name).
    """
    pos = {n: (float(x), float(y)) for n, x, y in zip(layout["node"], layout["x"], layout["y"])}
    r2 = edges["test_r2"].to_numpy(dtype=np.float64)
    top = float(np.nanmax(r2)) if np.isfinite(r2).any() and np.nanmax(r2) > 0 else 1.0
    transitions = []
    fig = go.Figure()
    mid = {"x": [], "y": [], "custom": [], "color": []}
    for row in edges.itertuples(index=False):
        if row.child not in pos or row.parent not in pos:
            continue
        (x0, y0), (x1, y1) = pos[row.parent], pos[row.child]
        transition = f"{row.parent_lineage or '?'} → {row.child_lineage or '?'}"
        kept = bool(kept_mask(row.test_r2, threshold))
        if kept and transition not in transitions:
            transitions.append(transition)
        colour = _colour(transitions.index(transition)) if kept else "#bdbdbd"
        width = 1.0 + 9.0 * max(float(row.test_r2), 0.0) / top if kept else 1.0
        fig.add_trace(go.Scatter(x=[x0, x1], y=[y0, y1], mode="lines", hoverinfo="skip",
                                 line=dict(color=colour, width=width, dash=None if kept else "dot"),
                                 name=transition if kept else "R² ≤ threshold",
                                 legendgroup=transition if kept else "dropped", showlegend=False))
        mid["x"].append((x0 + x1) / 2)
        mid["y"].append((y0 + y1) / 2)
        mid["custom"].append([row.edge, transition, float(row.test_r2), row.parent, row.child])
        mid["color"].append(colour)
    for i, transition in enumerate(transitions):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=transition,
                                 line=dict(color=_colour(i), width=4), showlegend=True))
    fig.add_trace(go.Scatter(x=mid["x"], y=mid["y"], mode="markers", name="edges",
                             marker=dict(size=10, color=mid["color"], symbol="diamond"),
                             customdata=mid["custom"], showlegend=False,
                             hovertemplate="%{customdata[3]} → %{customdata[4]}<br>%{customdata[1]}"
                                           "<br>test R² %{customdata[2]:.3f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=layout["x"], y=layout["y"], mode="markers+text", name="cell types",
                             text=layout["node"], textposition="bottom center", showlegend=False,
                             textfont=dict(size=9), marker=dict(size=7, color="#333"),
                             hovertemplate="%{text}<extra></extra>"))
    depth = int(layout["y"].max()) if len(layout) else 0
    fig.update_layout(title=title, height=max(420, 110 * (depth + 1)), margin=dict(t=50, b=30),
                      xaxis=dict(visible=False), yaxis=dict(visible=False, autorange="reversed"),
                      legend=dict(title="transition (width ∝ test R²)"))
    return fig


# -- attribution ---------------------------------------------------------------------------------

#: the glyph outlines of draw_letters: letter -> (vertices, codes, extents), and the extents of "E"
_GLYPHS = {}


def _glyph(letter):
    """Outline of a bold sans letter at size 1 (logomaker's default font), cached per process."""
    if not _GLYPHS:
        from matplotlib.font_manager import FontProperties
        from matplotlib.textpath import TextPath

        prop = FontProperties(family="sans", weight="bold")
        for c in BASES + "E":
            path = TextPath((0, 0), c, size=1, prop=prop)
            _GLYPHS[c] = (path.vertices.copy(), path.codes.copy(), path.get_extents())
    return _GLYPHS[letter]


def draw_letters(ax, values, positions, *, colors=BASE_COLORS, width=0.95):
    """Draw a sequence logo as logomaker does, with one patch per base instead of one per letter.

    The same geometry as ``logomaker.Logo(frame, flip_below=False, show_spines=False)``: at each
    position the letters are stacked by value (negative ones below 0, the largest on top), each
    stretched to fill ``width`` by its height, never wider than a stretched "E", in bold sans.
    logomaker builds a font path, a transform and an artist per letter (about 1 s for a 300-bp
    attribution logo, 4 s when every cell is non-zero); here the outlines of all letters of one
    base are transformed at once and drawn as a single compound path.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
    values : array-like, shape (L, 4)
        Heights of A, C, G, T at each position; zeros draw nothing.
    positions : array-like, shape (L,)
        x coordinate of each position.
    """
    from matplotlib.patches import PathPatch
    from matplotlib.path import Path

    values = np.asarray(values, dtype=np.float64)
    positions = np.asarray(positions, dtype=np.float64)
    order = np.argsort(values, axis=1)
    ranked = np.take_along_axis(values, order, axis=1)
    size = np.abs(ranked)
    top = np.where(ranked < 0, ranked, 0).sum(axis=1, keepdims=True) + np.cumsum(size, axis=1)
    bottom = top - size
    e_box = _glyph("E")[2]
    for k, base in enumerate(BASES):
        at, slot = np.nonzero((order == k) & (size > 0))
        if not len(at):
            continue
        vertices, codes, box = _glyph(base)
        stretch = min(width / box.width, width / e_box.width)
        left = positions[at] - width / 2 + (width - stretch * box.width) / 2
        scale = np.stack([np.full(len(at), stretch), size[at, slot] / box.height], axis=1)
        offset = np.stack([left, bottom[at, slot]], axis=1)
        placed = (vertices - [box.xmin, box.ymin])[None] * scale[:, None] + offset[:, None]
        patch = PathPatch(Path(placed.reshape(-1, 2), np.tile(codes, len(at))),
                          facecolor=colors[base], edgecolor="none", linewidth=0, zorder=0)
        # the letters lie inside the axes: measuring their curves for tight layouts (the
        # extrema of every Bezier segment) would cost more than drawing them
        patch.set_in_layout(False)
        ax.add_patch(patch)
    ax.axhline(0, zorder=-1, color="black", linewidth=0.5)
    if len(positions):
        ax.set_xlim(positions.min() - width / 2, positions.max() + width / 2)
        low, high = min(0.0, float(bottom.min())), max(0.0, float(top.max()))
        if high > low:
            ax.set_ylim(low, high)
    for spine in ax.spines.values():
        spine.set_visible(False)


def attribution_logo(heights, *, start=0, hits=None, title="", ylabel="mean effect",
                     xlabel="position"):
    """Logo of per-base attribution heights (one non-zero letter per position) with motif hits.

    Parameters
    ----------
    heights : array-like, shape (4, L)
        A, C, G, T rows (e.g. one sequence and output of
        :func:`tisfm_core.attribution.logo_values`).
    start : int, default 0
        Position of the first column on the axis (the hits use the same numbering).
    hits : pandas.DataFrame, optional
        Motif hits (``start``, ``end``, ``name``, ``strand``; end exclusive, numbered like the
        axis) drawn as labelled bars under the logo.

    Returns
    -------
    matplotlib.figure.Figure
    """
    values = np.asarray(heights, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] != 4:
        raise TisfmError(f"attribution heights must be shaped (4, L), got {values.shape}")
    length = values.shape[1]
    fig = Figure(figsize=(min(24.0, max(6.0, 0.11 * length + 2.0)), 2.8))
    ax = fig.subplots()
    draw_letters(ax, values.T, np.arange(start, start + length))
    ax.axhline(0, color="#555", lw=0.6)
    ax.set_xlim(start - 0.5, start + length - 0.5)
    ax.set_ylabel(ylabel)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    if hits is not None and len(hits):
        low = min(0.0, float(values.min()))
        span = (float(values.max()) - low) or 1.0
        rows = _hit_rows(hits)
        for (row, hit) in zip(rows, hits.itertuples(index=False)):
            y = low - span * (0.12 + 0.14 * row)
            a, b = max(int(hit.start), start), min(int(hit.end), start + length)
            if b <= a:
                continue
            ax.plot([a - 0.4, b - 0.6], [y, y], color="#444", lw=3, solid_capstyle="butt")
            ax.text((a + b - 1) / 2, y - span * 0.03, f"{hit.name} ({hit.strand})", ha="center",
                    va="top", fontsize=7)
        ax.set_ylim(low - span * (0.2 + 0.14 * (max(rows) + 1)), ax.get_ylim()[1])
    fig.tight_layout()
    return fig


def _hit_rows(hits):
    """Stack overlapping hits on separate rows (greedy interval packing)."""
    ends, rows = [], []
    for hit in hits.itertuples(index=False):
        for r, end in enumerate(ends):
            if int(hit.start) >= end:
                ends[r] = int(hit.end)
                rows.append(r)
                break
        else:
            ends.append(int(hit.end))
            rows.append(len(ends) - 1)
    return rows


def base_heatmap(values, *, start=0, title="", colorbar="effect", xlabel="position"):
    """4 x L heatmap of attribution values (rows A, C, G, T), symmetric colour range around 0."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] != 4:
        raise TisfmError(f"attribution values must be shaped (4, L), got {values.shape}")
    bound = float(np.abs(values).max()) or 1.0
    fig = go.Figure(go.Heatmap(
        z=values, x=np.arange(start, start + values.shape[1]), y=list(BASES), zmin=-bound, zmax=bound,
        colorscale=DIVERGING, colorbar=dict(title=colorbar),
        hovertemplate="position %{x}<br>base %{y}<br>" + colorbar + " %{z:.4f}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title=xlabel, height=260,
                      yaxis=dict(autorange="reversed", type="category"), margin=dict(t=50, b=40))
    return fig


def agreement_scatter(a, b, *, title="TISM against exact ISM"):
    """Scatter of two attributions entry by entry (entries that are 0 in both are left out)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    keep = ~((a == 0) & (b == 0))
    fig = go.Figure(go.Scatter(x=b[keep], y=a[keep], mode="markers", marker=dict(size=4, opacity=0.6),
                               hovertemplate="ISM %{x:.4f}<br>TISM %{y:.4f}<extra></extra>"))
    lo = float(min(a[keep].min(initial=0), b[keep].min(initial=0)))
    hi = float(max(a[keep].max(initial=0), b[keep].max(initial=0)))
    fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", line=dict(color="#888", dash="dash"),
                             hoverinfo="skip", showlegend=False))
    fig.update_layout(title=title, xaxis_title="exact ISM effect", yaxis_title="TISM effect",
                      height=380, showlegend=False, margin=dict(t=50, b=50))
    return fig


# -- static export -------------------------------------------------------------------------------

def figure_image(fig, fmt="svg", *, dpi=150):
    """SVG or PNG bytes of a Plotly or matplotlib figure.

    Plotly figures use kaleido when it is installed and otherwise :func:`plotly_to_matplotlib`.

    Parameters
    ----------
    fig : plotly.graph_objects.Figure or matplotlib.figure.Figure
    fmt : {"svg", "png"}, default "svg"
    dpi : int, default 150
        Resolution of PNGs drawn with matplotlib.

    Returns
    -------
    bytes
    """
    if fmt not in FORMATS:
        raise TisfmError(f"image format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if isinstance(fig, go.Figure):
        try:
            import kaleido  # noqa: F401
        except ImportError:
            kaleido = None
        if kaleido is not None:
            try:
                return fig.to_image(format=fmt)
            except Exception:  # kaleido present but no browser to drive: use matplotlib instead
                pass
        return _savefig(plotly_to_matplotlib(fig), fmt, dpi)
    return _savefig(fig, fmt, dpi)


def _savefig(fig, fmt, dpi):
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def _css_colour(value, default="#1f77b4"):
    """A Plotly colour string ('rgb(..)', 'rgba(..)', '#hex', a name) as a matplotlib RGBA tuple."""
    if value is None:
        return to_rgba(default)
    text = str(value).strip()
    match = re.fullmatch(r"rgba?\(([^)]*)\)", text)
    if match:
        parts = [float(p) for p in match.group(1).split(",")]
        rgb = [min(max(p / 255.0, 0), 1) for p in parts[:3]]
        return (*rgb, parts[3] if len(parts) > 3 else 1.0)
    try:
        return to_rgba(text)
    except ValueError:
        return to_rgba(default)


def _colormap(scale):
    """A matplotlib colormap from a validated Plotly colour scale ((position, colour) pairs)."""
    if not scale:
        return colormaps["viridis"]
    return LinearSegmentedColormap.from_list("plotly", [(float(p), _css_colour(c)) for p, c in scale])


def _text(value):
    return "" if value is None else re.sub(r"<[^>]+>", " ", str(value))


def _axis_positions(values, categories):
    """Numeric positions of axis values; strings become positions on a category axis."""
    out = []
    for v in values:
        if v is None:
            out.append(np.nan)
        elif isinstance(v, str):
            if v not in categories:
                categories[v] = len(categories)
            out.append(categories[v])
        else:
            out.append(float(v))
    return np.array(out, dtype=np.float64)


def plotly_to_matplotlib(fig):
    """Redraw a Plotly figure with matplotlib (heatmap, scatter/line/text, bar traces; lines
    and annotations of the layout; titles, log and reversed axes, colour bars, legend).

    Returns
    -------
    matplotlib.figure.Figure
    """
    layout = fig.layout
    width = (layout.width or 900) / 100
    height = (layout.height or 450) / 100
    mfig = Figure(figsize=(max(4.0, width), max(2.5, height)))
    ax = mfig.subplots()
    xcat, ycat = {}, {}
    legend = False
    for trace in fig.data:
        if isinstance(trace, go.Heatmap):
            z = np.asarray(trace.z, dtype=np.float64)
            xs = list(trace.x) if trace.x is not None else list(range(z.shape[1]))
            ys = list(trace.y) if trace.y is not None else list(range(z.shape[0]))
            xpos = _axis_positions(xs, xcat)
            ypos = _axis_positions(ys, ycat)
            norm = Normalize(vmin=trace.zmin if trace.zmin is not None else np.nanmin(z),
                             vmax=trace.zmax if trace.zmax is not None else np.nanmax(z))
            if norm.vmin < 0 < norm.vmax:
                norm = TwoSlopeNorm(0.0, norm.vmin, norm.vmax)
            mesh = ax.pcolormesh(_edges(xpos), _edges(ypos), z, cmap=_colormap(trace.colorscale), norm=norm)
            bar = mfig.colorbar(mesh, ax=ax)
            if trace.colorbar and trace.colorbar.title and trace.colorbar.title.text:
                bar.set_label(_text(trace.colorbar.title.text))
        elif isinstance(trace, go.Bar):
            x = _axis_positions(list(trace.x), xcat)
            colour = trace.marker.color if trace.marker and isinstance(trace.marker.color, str) else None
            ax.bar(x, np.asarray(trace.y, dtype=np.float64), color=_css_colour(colour), label=trace.name)
        elif isinstance(trace, go.Scatter):
            if trace.x is None or trace.y is None:
                continue
            x = _axis_positions(list(trace.x), xcat)
            y = _axis_positions(list(trace.y), ycat)
            if not np.isfinite(x).any():
                # a legend-only trace (x = [None])
                if trace.showlegend:
                    ax.plot([], [], color=_css_colour(trace.line.color), lw=2, label=_text(trace.name))
                    legend = True
                continue
            mode = trace.mode or "lines+markers"
            named = trace.showlegend is not False and bool(trace.name) and len(fig.data) > 1
            if "lines" in mode:
                dash = {"dash": "--", "dot": ":", "dashdot": "-."}.get(trace.line.dash, "-")
                ax.plot(x, y, color=_css_colour(trace.line.color), lw=(trace.line.width or 2) * 0.6,
                        ls=dash, label=_text(trace.name) if named else None)
                legend = legend or named
            if "markers" in mode:
                marker = trace.marker
                colour = marker.color
                size = (marker.size if isinstance(marker.size, (int, float)) else 6) ** 2 * 0.5
                hollow = isinstance(marker.symbol, str) and "open" in marker.symbol
                if colour is not None and not isinstance(colour, str) and np.ndim(colour) == 1 and \
                        len(colour) and not isinstance(colour[0], str):
                    c = np.asarray(colour, dtype=np.float64)
                    norm = Normalize(marker.cmin if marker.cmin is not None else np.nanmin(c),
                                     marker.cmax if marker.cmax is not None else np.nanmax(c))
                    points = ax.scatter(x, y, c=c, cmap=_colormap(marker.colorscale), norm=norm, s=size,
                                        edgecolors="#333", linewidths=0.4, zorder=3)
                    if marker.showscale:
                        bar = mfig.colorbar(points, ax=ax)
                        if marker.colorbar and marker.colorbar.title and marker.colorbar.title.text:
                            bar.set_label(_text(marker.colorbar.title.text))
                else:
                    colours = ([_css_colour(c) for c in colour] if colour is not None and
                               not isinstance(colour, str) else _css_colour(colour))
                    ax.scatter(x, y, s=size, zorder=3, label=_text(trace.name) if named and "lines" not in mode else None,
                               facecolors="none" if hollow else colours,
                               edgecolors=colours if hollow else "#333", linewidths=1.2 if hollow else 0.4)
                    legend = legend or (named and "lines" not in mode)
            if "text" in mode and trace.text is not None:
                texts = [trace.text] * len(x) if isinstance(trace.text, str) else list(trace.text)
                below = "bottom" in (trace.textposition or "")
                for xi, yi, t in zip(x, y, texts):
                    ax.annotate(_text(t), (xi, yi), textcoords="offset points", xytext=(0, -9 if below else 5),
                                ha="center", va="top" if below else "bottom", fontsize=7)
    for shape in layout.shapes or ():
        if shape.type != "line":
            continue
        colour = _css_colour(shape.line.color if shape.line else None, "#000")
        dash = "--" if shape.line and shape.line.dash in ("dash", "dot") else "-"
        if str(shape.yref).endswith("domain") or shape.yref == "paper":
            ax.axvline(float(shape.x0), color=colour, ls=dash, lw=1)
        elif str(shape.xref).endswith("domain") or shape.xref == "paper":
            ax.axhline(float(shape.y0), color=colour, ls=dash, lw=1)
        else:
            ax.plot([shape.x0, shape.x1], [shape.y0, shape.y1], color=colour, ls=dash, lw=1)
    for note in layout.annotations or ():
        if note.xref in (None, "x") and note.yref in (None, "y") and note.x is not None:
            ax.annotate(_text(note.text), (float(note.x), float(note.y)), fontsize=8)
    for cats, set_ticks, set_lim in ((xcat, ax.set_xticks, ax.set_xlim), (ycat, ax.set_yticks, ax.set_ylim)):
        if cats:
            set_ticks(list(cats.values()), labels=list(cats.keys()))
            set_lim(-0.5, len(cats) - 0.5)
    if xcat:
        ax.tick_params(axis="x", labelrotation=90 if len(xcat) > 6 else 0, labelsize=8)
    if ycat:
        ax.tick_params(axis="y", labelsize=8)
    if layout.xaxis.type == "log":
        ax.set_xscale("log")
    if layout.yaxis.type == "log":
        ax.set_yscale("log")
    if layout.yaxis.autorange == "reversed":
        ax.invert_yaxis()
    if layout.xaxis.visible is False:
        ax.get_xaxis().set_visible(False)
    if layout.yaxis.visible is False:
        ax.get_yaxis().set_visible(False)
    ax.set_title(_text(layout.title.text), fontsize=11)
    ax.set_xlabel(_text(layout.xaxis.title.text))
    ax.set_ylabel(_text(layout.yaxis.title.text))
    if legend:
        ax.legend(fontsize=8, loc="best")
    mfig.tight_layout()
    return mfig


def _edges(centres):
    """Cell edges around sorted-or-not cell centres (pcolormesh needs n + 1 edges)."""
    c = np.asarray(centres, dtype=np.float64)
    if len(c) == 1:
        return np.array([c[0] - 0.5, c[0] + 0.5])
    mids = (c[1:] + c[:-1]) / 2
    return np.concatenate([[c[0] - (mids[0] - c[0])], mids, [c[-1] + (c[-1] - mids[-1])]])
