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
from plotly.colors import qualitative

from .analysis.tree_diff import kept_mask, tree_layout
from .errors import TisfmError, check_outputs

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


#: Font of figures whose layout is computed from label sizes (widths estimated per character).
LABEL_FONT = "Arial, Helvetica, 'Liberation Sans', sans-serif"
#: Estimated width of one character in ``LABEL_FONT``, as a fraction of the font size (an upper
#: bound for most characters of cell-type and TF names; Arial's average is about 0.5).
CHAR_EM = 0.62
LINE_EM = 1.25
#: The narrowest plot area (px) a figure is laid out for: the main column at 1280 px with the
#: sidebar open, less axes and colour bar. Wider screens only spread labels further apart.
LABEL_PLOT_WIDTH = 600


def text_size(text, size):
    """Estimated (width, height) in pixels of a label drawn at font ``size`` (``<br>`` = new line)."""
    lines = str(text).split("<br>")
    return CHAR_EM * size * max(len(line) for line in lines), LINE_EM * size * len(lines)


def wrap_label(text, width=10):
    """A label broken into lines of at most ``width`` characters (``<br>`` between lines) after
    '.', '-', '+' or '_' where it can; a longer unbreakable part keeps its own line."""
    parts = re.findall(r"[^.+_-]*[.+_-]?", str(text))
    lines = [""]
    for part in filter(None, parts):
        if lines[-1] and len(lines[-1]) + len(part) > width:
            lines.append("")
        lines[-1] += part
    return "<br>".join(lines)


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
                   zmax=1.0, colorscale=DIVERGING, marks=None, mark_label="planted",
                   highlight=(), xaxis="output", rows="motif", clickable=False):
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
        Cells to mark with a ring (the planted regulators of synthetic demo data); their hover
        still shows the cell's weights.
    highlight : iterable of motif ids, optional
        Rows whose label is drawn bold with a marker (the TFs the user searched for).
    xaxis : str, default "output"
        Title of the column axis.
    rows : str, default "motif"
        What a row is. Rows other than motifs (motif groups: "TF", "cluster") are labelled by
        their index alone and ``names`` gives the hover's second line (the group's motifs).
    clickable : bool, default False
        Make every cell selectable by a click: Plotly selects points of scatter traces only,
        so a transparent square marker sits on each cell (the last trace; its hover is the
        cell's).

    The margins are sized from the longest row and column labels (columns are slanted when
    they would not fit side by side), so no label is cut off.
    """
    names = dict(names or {})
    motifs = [str(m) for m in values.index]
    outputs = [str(o) for o in values.columns]
    labels = [_label(m, names.get(m, "") if rows == "motif" else "") for m in motifs]
    second = "TF" if rows == "motif" else "motifs"
    hot = {str(m) for m in highlight}
    raw_values = (raw.loc[values.index, values.columns] if raw is not None else values).to_numpy(
        dtype=np.float64)
    z = values.to_numpy(dtype=np.float64)
    custom = np.empty(values.shape + (3,), dtype=object)
    custom[..., 0] = np.array(motifs, dtype=object)[:, None]
    custom[..., 1] = np.array([names.get(m, "") for m in motifs], dtype=object)[:, None]
    custom[..., 2] = raw_values
    template = (f"{rows} %{{customdata[0]}}<br>{second} %{{customdata[1]}}<br>" + xaxis + " %{x}<br>"
                f"raw weight %{{customdata[2]:.4g}}<br>{colorbar} %{{z:.3f}}")
    fig = go.Figure(go.Heatmap(
        z=z, x=outputs, y=labels, zmin=zmin, zmax=zmax,
        colorscale=colorscale, colorbar=dict(title=colorbar), customdata=custom,
        hovertemplate=template + "<extra></extra>", xgap=1, ygap=1))
    marks = [(str(m), str(o)) for m, o in (marks or []) if str(m) in motifs and str(o) in outputs]
    if marks:
        at = [motifs.index(m) for m, _ in marks]
        cols = [outputs.index(o) for _, o in marks]
        fig.add_trace(go.Scatter(
            x=[outputs[c] for c in cols], y=[labels[r] for r in at], mode="markers",
            marker=dict(symbol="circle-open", size=14, color="black", line=dict(width=2)),
            name=mark_label, customdata=[[motifs[r], names.get(motifs[r], ""), raw_values[r, c], z[r, c]]
                                         for r, c in zip(at, cols)],
            hovertemplate=(f"{mark_label}<br>{rows} %{{customdata[0]}}<br>{second} %{{customdata[1]}}<br>{xaxis} "
                           f"%{{x}}<br>raw weight %{{customdata[2]:.4g}}<br>{colorbar} "
                           "%{customdata[3]:.3f}<extra></extra>")))
    if clickable:
        rr, cc = np.meshgrid(np.arange(len(motifs)), np.arange(len(outputs)), indexing="ij")
        fig.add_trace(go.Scatter(
            x=[outputs[c] for c in cc.ravel()], y=[labels[r] for r in rr.ravel()], mode="markers",
            marker=dict(symbol="square", size=18, color="rgba(0,0,0,0)"), showlegend=False,
            name="cells", customdata=[[motifs[r], names.get(motifs[r], ""), raw_values[r, c], z[r, c]]
                                      for r, c in zip(rr.ravel(), cc.ravel())],
            hovertemplate=template.replace("%{z:.3f}", "%{customdata[3]:.3f}") + "<extra></extra>"))
    ticks = [f"<b>▶ {label}</b>" if m in hot else label for m, label in zip(motifs, labels)]
    tick = 12
    left = CHAR_EM * tick * max((len(t) for t in labels), default=1) + (24 if hot else 12)
    longest = CHAR_EM * tick * max((len(o) for o in outputs), default=1)
    # slant the column labels when they do not fit side by side in a nominal plot width; a
    # slanted label reaches left of its column as far as it reaches down
    slant = longest + 4 > LABEL_PLOT_WIDTH / max(len(outputs), 1)
    bottom = (longest * 0.71 + tick + 30 if slant else tick + 30) + 24
    left = max(left, longest * 0.71 + 10 if slant else 0)
    top = 50 + (24 if marks else 0)
    fig.update_layout(title=title, xaxis_title=xaxis, yaxis_title=rows,
                      yaxis=dict(autorange="reversed", type="category", tickmode="array",
                                 tickvals=labels, ticktext=ticks, automargin=True),
                      xaxis=dict(type="category", tickangle=-45 if slant else 0, automargin=True),
                      height=int(22 * len(motifs) + top + bottom + 20),
                      margin=dict(t=top, b=int(bottom), l=int(left)),
                      legend=dict(orientation="h", x=1, xanchor="right", y=1.0, yanchor="bottom"))
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
                     colorbar="", hover=None, trend=None, marks=(), mark_label="planted regulator",
                     highlight=(), height=480):
    """Scatter of one point per motif, optionally coloured by a signed value, some labelled.

    Parameters
    ----------
    df : pandas.DataFrame
        Needs ``motif``, ``name`` and the ``x`` / ``y`` (and ``color``) columns.
    labels : iterable of int
        Row positions whose TF name is written next to the point. Labels are placed straight
        above or below their point, as close as they can be without covering another label in
        a plot :data:`LABEL_PLOT_WIDTH` pixels wide (wider plots only move them apart), with a
        thin leader line; the axis ranges are fixed so that this holds.
    hover : mapping column -> words, optional
        Extra columns shown in the hover, each with the words that say what it is.
    trend : (slope, intercept), optional
        A straight line y = slope * x + intercept drawn across the plot (the least-squares trend).
    marks : iterable of motif ids
        Points ringed as the planted regulators of a synthetic demo (in the legend as
        ``mark_label``).
    highlight : iterable of motif ids
        Points ringed in black and labelled (the TFs the user searched for).
    """
    hover = {h: words for h, words in (hover or {}).items() if h in df.columns}
    cols = ["motif", "name", *hover]
    custom = df[cols].to_numpy(dtype=object)
    template = "%{customdata[1]} (%{customdata[0]})<br>" + f"{xaxis or x} %{{x:.3f}}<br>{yaxis or y} %{{y:.3f}}"
    for i, words in enumerate(hover.values(), start=2):
        template += f"<br>{words} %{{customdata[{i}]:.4g}}"
    marker = dict(size=8, line=dict(width=0.5, color="#333"))
    if color is not None:
        c = df[color].to_numpy(dtype=np.float64)
        bound = float(np.nanmax(np.abs(c))) if len(c) and np.isfinite(c).any() else 1.0
        marker.update(color=c, colorscale=DIVERGING, cmin=-(bound or 1.0), cmax=bound or 1.0,
                      colorbar=dict(title=colorbar or color), showscale=True)
    else:
        marker.update(color=PALETTE[0])
    xs, ys = df[x].to_numpy(dtype=np.float64), df[y].to_numpy(dtype=np.float64)
    fig = go.Figure(go.Scatter(x=xs, y=ys, mode="markers", marker=marker, customdata=custom,
                               hovertemplate=template + "<extra></extra>", name="motifs",
                               showlegend=False))
    xr, yr = _padded_range(xs), _padded_range(ys, top=0.12)
    if trend is not None:
        slope, intercept = map(float, trend)
        fig.add_trace(go.Scatter(x=list(xr), y=[slope * v + intercept for v in xr], mode="lines",
                                 line=dict(color="#444", dash="dash", width=1.5), hoverinfo="skip",
                                 name=f"linear trend (y = {slope:.3g} x + {intercept:.3g})"))
    motifs = df["motif"].astype(str).tolist()
    for ids, name, style in ((marks, mark_label, dict(color="#2ca02c", width=2.5)),
                             (highlight, "searched TF", dict(color="black", width=2))):
        rows = [k for k, m in enumerate(motifs) if m in {str(v) for v in ids}]
        if rows:
            fig.add_trace(go.Scatter(x=xs[rows], y=ys[rows], mode="markers", name=name,
                                     marker=dict(symbol="circle-open", size=16, line=style, color=style["color"]),
                                     customdata=custom[rows],
                                     hovertemplate=name + "<br>" + template + "<extra></extra>"))
    hot = {str(v) for v in highlight}
    labels = sorted(set(int(i) for i in labels) | {k for k, m in enumerate(motifs) if m in hot})
    margin = dict(t=50, b=50, l=60, r=20)
    plot_h = height - margin["t"] - margin["b"]
    names = df["name"].astype(str).tolist()
    def to_px(rows):
        return ((xs[rows] - xr[0]) / (xr[1] - xr[0]) * LABEL_PLOT_WIDTH,
                (yr[1] - ys[rows]) / (yr[1] - yr[0]) * plot_h)

    ringed = sorted(set(labels) | {k for k, m in enumerate(motifs) if m in {str(v) for v in marks}})
    rx, ry = to_px(ringed)
    offsets = place_labels(*to_px(labels), [names[k] for k in labels], size=11, height=plot_h,
                           avoid=[(a - 9, b - 9, a + 9, b + 9) for a, b in zip(rx, ry)])
    fig.update_layout(annotations=[dict(x=xs[k], y=ys[k], xref="x", yref="y", text=names[k], ax=0, ay=dy,
                                        showarrow=True, arrowhead=0, arrowwidth=0.8, arrowcolor="#666",
                                        standoff=4, font=dict(size=11, family=LABEL_FONT),
                                        bgcolor="rgba(255,255,255,0.75)", borderpad=0)
                                   for k, dy in zip(labels, offsets)])
    fig.update_layout(title=title, xaxis_title=xaxis or x, yaxis_title=yaxis or y, height=height,
                      margin=margin, xaxis=dict(range=list(xr)), yaxis=dict(range=list(yr)),
                      legend=dict(orientation="h", x=0, y=1.0, yanchor="bottom"))
    return fig


def _padded_range(values, pad=0.06, top=None):
    """An axis range around finite ``values`` with a margin (``top`` for the upper end)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    lo, hi = (float(v.min()), float(v.max())) if len(v) else (0.0, 1.0)
    span = hi - lo or max(abs(hi), 1.0)
    return lo - pad * span, hi + (pad if top is None else top) * span


def place_labels(px, py, texts, *, size=11, height=None, step=None, tries=8, avoid=()):
    """Vertical offsets (px, negative = up) that keep labels centred over their points apart.

    Greedy, in the order given: each label takes the first of 'just above', 'just below', then
    ever farther above or below, whose box (:func:`text_size`) overlaps no label placed before
    (nor, if it can, a box of ``avoid``) and stays inside ``0 <= y <= height``; when none is
    free, the one with the least overlap.

    Parameters
    ----------
    px, py : array-like, shape (n,)
        Points in pixels (y down).
    texts : sequence of str, length n
    avoid : sequence of (x0, y0, x1, y1)
        Boxes (px) better left uncovered, such as the marked points; a label never takes a
        place that overlaps another label to spare them.
    """
    step = LINE_EM * size + 2 if step is None else step
    placed, offsets = [], []
    spare = 1e-3 / max(1, len(avoid))   # any label overlap costs more than every obstacle together
    for x0, y0, text in zip(np.asarray(px, float), np.asarray(py, float), texts):
        w, h = text_size(text, size)
        best, best_cost = None, np.inf
        for k in range(1, tries + 1):
            for sign in (-1, 1):
                dy = sign * (k * step)
                cy = y0 + dy
                box = (x0 - w / 2, cy - h / 2, x0 + w / 2, cy + h / 2)
                if height is not None and (box[1] < 0 or box[3] > height):
                    continue
                clash = sum(_overlap(box, other) for other in placed)
                covered = sum(min(1.0, _overlap(box, other)) for other in avoid)
                cost = (1.0 + clash if clash > 0 else 0.0) + spare * covered
                if cost < best_cost:
                    best, best_cost = (dy, box), cost
                if cost == 0:
                    break
            if best_cost == 0:
                break
        if best is None:   # no room inside the plot: just above the point
            best = (-step, (x0 - w / 2, y0 - step - h / 2, x0 + w / 2, y0 - step + h / 2))
        offsets.append(float(best[0]))
        placed.append(best[1])
    return offsets


def _overlap(a, b):
    """Area shared by two boxes (x0, y0, x1, y1)."""
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


# -- regularization path -------------------------------------------------------------------------

def lambda_positions(lambdas, log):
    """Where each lambda sits on the x axis, and the axis settings.

    On a log axis lambda 0 (the unpenalised fit, always first) cannot be drawn: it is put one
    grid step left of the smallest positive lambda and labelled "0".

    Returns
    -------
    positions : numpy.ndarray, shape (L,)
    axis : dict
        Plotly axis settings (type, and for a log axis the tick values and texts).
    """
    lam = np.asarray(lambdas, dtype=np.float64)
    positive = lam[lam > 0]
    if not log or len(positive) < 2:
        return lam, dict(type="linear")
    ratio = float(np.exp(np.mean(np.diff(np.log(positive)))))
    zero = float(positive[0] / ratio ** 2)
    pos = np.where(lam > 0, lam, zero)
    decades = np.arange(np.floor(np.log10(positive[0])), np.ceil(np.log10(positive[-1])) + 1)
    ticks = [int(d) for d in decades if positive[0] / 1.001 <= 10.0 ** d <= positive[-1] * 1.001]
    has_zero = bool((lam == 0).any())
    vals = ([zero] if has_zero else []) + [10.0 ** d for d in ticks]
    text = (["0"] if has_zero else []) + [f"10<sup>{d}</sup>" if d not in (0, 1) else str(10 ** d)
                                          for d in ticks]
    return pos, dict(type="log", tickmode="array", tickvals=vals, ticktext=text)


def _vline(fig, x, text, *, log, dash, colour, side="right"):
    """A vertical line at ``x`` with a label at its top (on a log axis Plotly places
    annotations by log10 of the value, shapes by the value itself)."""
    fig.add_vline(x=x, line=dict(color=colour, dash=dash, width=1.5 if dash == "dot" else 1))
    fig.add_annotation(x=float(np.log10(x)) if log else x, xref="x", y=1.0, yref="paper", text=text,
                       showarrow=False, yanchor="bottom", xanchor="left" if side == "right" else "right",
                       font=dict(size=11, color="#444"))


def path_mse(lambdas, mse, outputs, best_index, *, log=False, shown=None,
             title="Validation MSE along the path"):
    """Validation MSE against lambda, one line per output, a star at each output's best lambda.

    Parameters
    ----------
    log : bool, default False
        Log-scaled lambda axis (see :func:`lambda_positions`).
    shown : int, optional
        Index of the lambda whose final layer the page shows (a grey dotted line).
    """
    lam = np.asarray(lambdas, dtype=np.float64)
    x, axis = lambda_positions(lam, log)
    fig = go.Figure()
    for r, output in enumerate(outputs):
        fig.add_trace(go.Scatter(x=x, y=mse[:, r], mode="lines+markers", name=str(output),
                                 line=dict(color=_colour(r)), customdata=lam, legendgroup=str(output),
                                 hovertemplate=f"{output}<br>λ %{{customdata:.3g}}<br>"
                                               "validation MSE %{y:.4f}<extra></extra>"))
    best = np.asarray(best_index, dtype=np.int64)
    rows = np.arange(len(outputs))
    fig.add_trace(go.Scatter(
        x=x[best], y=mse[best, rows], mode="markers", name="best λ of each output",
        marker=dict(symbol="star", size=15, color=[_colour(r) for r in rows], line=dict(width=1, color="#222")),
        customdata=np.c_[lam[best], rows].tolist(), text=[str(o) for o in outputs],
        hovertemplate="best λ for %{text}: %{customdata[0]:.3g}<br>validation MSE %{y:.4f}<extra></extra>"))
    if shown is not None:
        _vline(fig, float(x[shown]), "shown below", log=axis["type"] == "log", dash="dot", colour="#888")
    fig.update_layout(title=title, xaxis_title="λ (penalty strength)", yaxis_title="validation MSE",
                      xaxis=axis, height=440, margin=dict(t=70, b=50))
    return fig


def path_coefficients(lambdas, coefs, motif_ids, motif_names, highlight, best_lambda, *, log=False,
                      shown=None, title="Coefficient paths"):
    """Coefficient of every motif against lambda for one output.

    Parameters
    ----------
    coefs : array-like, shape (L, n_motifs)
        One output's coefficients along the path.
    highlight : list of motif ids
        Drawn in colour and named in the legend (the top 9 at the best lambda, and searched
        TFs); others grey.
    log : bool, default False
        Log-scaled lambda axis (see :func:`lambda_positions`).
    shown : int, optional
        Index of the lambda whose final layer the page shows (a grey dotted line).
    """
    lam = np.asarray(lambdas, dtype=np.float64)
    x, axis = lambda_positions(lam, log)
    coefs = np.asarray(coefs, dtype=np.float64)
    index = {m: i for i, m in enumerate(motif_ids)}
    fig = go.Figure()
    hot = set(highlight)
    for i, m in enumerate(motif_ids):
        if m in hot or not coefs[:, i].any():
            continue
        fig.add_trace(go.Scatter(x=x, y=coefs[:, i], mode="lines", line=dict(color="#c8c8c8", width=1),
                                 name=_label(m, motif_names[i]), showlegend=False, customdata=lam,
                                 hovertemplate=f"{_label(m, motif_names[i])}<br>λ %{{customdata:.3g}}<br>"
                                               "weight %{y:.4f}<extra></extra>"))
    for j, m in enumerate(highlight):
        i = index[m]
        fig.add_trace(go.Scatter(x=x, y=coefs[:, i], mode="lines", line=dict(color=_colour(j), width=2.5),
                                 name=_label(m, motif_names[i]), customdata=lam,
                                 hovertemplate=f"{_label(m, motif_names[i])}<br>λ %{{customdata:.3g}}<br>"
                                               "weight %{y:.4f}<extra></extra>"))
    best = int(np.argmin(np.abs(lam - float(best_lambda))))
    log = axis["type"] == "log"
    same = shown is not None and int(shown) == best
    _vline(fig, float(x[best]), f"best λ {float(best_lambda):.3g}" + (", shown below" if same else ""),
           log=log, dash="dash", colour="black", side="left" if shown is not None and shown > best else "right")
    if shown is not None and not same:
        _vline(fig, float(x[shown]), "shown below", log=log, dash="dot", colour="#888",
               side="right" if shown > best else "left")
    fig.update_layout(title=title, xaxis_title="λ (penalty strength)", yaxis_title="final-layer weight",
                      xaxis=axis, height=480, margin=dict(t=70, b=50))
    return fig


# -- lineage tree --------------------------------------------------------------------------------

#: Colours of lineage transitions and of lineages in the tree (no greys: grey is a dropped edge).
TREE_COLORS = tuple(dict.fromkeys(c for c in qualitative.D3 + qualitative.Dark2 + qualitative.Set1
                                  if c.upper() not in ("#7F7F7F", "#666666", "#999999")))
#: Fill colours of the cell-type boxes, one per lineage.
LINEAGE_FILLS = tuple(qualitative.Pastel1 + qualitative.Pastel2)
TREE_FONT_SIZE = 9
TREE_WRAP = 9
_BOX_PAD = (4.0, 3.0)          # horizontal, vertical padding of a node's label in its box (px)
_BOX_GAP = 8.0                 # smallest distance between two boxes of a level (px)
_LEVEL_GAP = 34.0              # vertical room for the edges between two levels (px)
_TREE_MARGIN = dict(l=4, r=4, t=60)


def tree_boxes(nodes, *, size=TREE_FONT_SIZE, wrap=TREE_WRAP):
    """The label and box size (px) of each node of the lineage tree: {node: (label, w, h)}."""
    out = {}
    for node in nodes:
        label = wrap_label(node, wrap)
        w, h = text_size(label, size)
        out[node] = (label, w + 2 * _BOX_PAD[0], h + 2 * _BOX_PAD[1])
    return out


def tree_figure(edges, *, threshold=0.05, title="Lineage tree", selected=None):
    """The cell-type tree drawn top-down as labelled boxes, edges scaled by test R².

    The layout is :func:`tisfm_core.analysis.tree_diff.tree_layout` on the boxes of
    :func:`tree_boxes`, in pixels: the figure is exactly as wide and tall as the drawing (draw
    it at its own width), so no two labels overlap.

    Parameters
    ----------
    edges : pandas.DataFrame
        From :func:`~tisfm_core.analysis.tree_diff.edge_metrics` (edge, child, parent,
        child_lineage, parent_lineage, test_r2).
    threshold : float
        Edges with R² at or below it are drawn thin, dotted and grey.
    selected : str, optional
        An edge drawn with a dark outline (the one whose TFs are listed).

    Every edge is a line coloured by its transition (parent lineage -> child lineage, listed
    in the legend) with width from 1 px to 10 px in proportion to its test R²; a diamond at its
    midpoint carries the hover and the click selection (``customdata[0]`` = edge name). Boxes
    are filled with their cell type's lineage colour; the trace "cell types" holds their
    centres (x, y) and labels.
    """
    lineage = dict(zip(edges["parent"].astype(str), edges["parent_lineage"].fillna("").astype(str)))
    lineage.update(zip(edges["child"].astype(str), edges["child_lineage"].fillna("").astype(str)))
    boxes = tree_boxes(lineage)
    layout = tree_layout(edges, widths={n: b[1] for n, b in boxes.items()}, gap=_BOX_GAP)
    tall = max((b[2] for b in boxes.values()), default=0.0)
    pitch = tall + _LEVEL_GAP
    pos = {n: (float(x), float(d) * pitch + tall / 2) for n, x, d in
           zip(layout["node"], layout["x"], layout["depth"])}
    span = float((layout["x"] + layout["width"] / 2).max()) if len(layout) else 0.0
    depth = int(layout["depth"].max()) if len(layout) else 0
    bottom = depth * pitch + tall
    lineages = sorted(set(lineage.values()))
    fill = {name: LINEAGE_FILLS[i % len(LINEAGE_FILLS)] for i, name in enumerate(lineages)}
    r2 = edges["test_r2"].to_numpy(dtype=np.float64)
    top = float(np.nanmax(r2)) if np.isfinite(r2).any() and np.nanmax(r2) > 0 else 1.0
    transitions = []
    fig = go.Figure()
    mid = {"x": [], "y": [], "custom": [], "color": []}
    for row in edges.itertuples(index=False):
        child, parent = str(row.child), str(row.parent)
        (x0, y0), (x1, y1) = pos[parent], pos[child]
        y0, y1 = y0 + boxes[parent][2] / 2, y1 - boxes[child][2] / 2
        transition = f"{row.parent_lineage or '?'} → {row.child_lineage or '?'}"
        kept = bool(kept_mask(row.test_r2, threshold))
        if kept and transition not in transitions:
            transitions.append(transition)
        colour = TREE_COLORS[transitions.index(transition) % len(TREE_COLORS)] if kept else "#bdbdbd"
        width = 1.0 + 9.0 * max(float(row.test_r2), 0.0) / top if kept else 1.0
        if row.edge == selected:
            fig.add_trace(go.Scatter(x=[x0, x1], y=[y0, y1], mode="lines", hoverinfo="skip",
                                     line=dict(color="#111", width=width + 5), showlegend=False,
                                     name="selected edge"))
        fig.add_trace(go.Scatter(x=[x0, x1], y=[y0, y1], mode="lines", hoverinfo="skip",
                                 line=dict(color=colour, width=width, dash=None if kept else "dot"),
                                 name=transition if kept else "R² ≤ threshold", showlegend=False))
        mid["x"].append((x0 + x1) / 2)
        mid["y"].append((y0 + y1) / 2)
        mid["custom"].append([row.edge, transition, float(row.test_r2), parent, child])
        mid["color"].append(colour)
    for i, transition in enumerate(transitions):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=transition,
                                 line=dict(color=TREE_COLORS[i % len(TREE_COLORS)], width=4),
                                 showlegend=True))
    if not kept_mask(edges["test_r2"], threshold).all():
        transitions.append("R² ≤ threshold")
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name="R² ≤ threshold",
                                 line=dict(color="#bdbdbd", width=1.5, dash="dot"), showlegend=True))
    fig.add_trace(go.Scatter(x=mid["x"], y=mid["y"], mode="markers", name="edges",
                             marker=dict(size=12, color=mid["color"], symbol="diamond",
                                         line=dict(width=1, color="#fff")),
                             customdata=mid["custom"], showlegend=False,
                             hovertemplate="%{customdata[3]} → %{customdata[4]}<br>%{customdata[1]}"
                                           "<br>test R² %{customdata[2]:.3f}<br>click to list its TFs"
                                           "<extra></extra>"))
    nodes = list(layout["node"])
    fig.add_trace(go.Scatter(
        x=[pos[n][0] for n in nodes], y=[pos[n][1] for n in nodes], mode="text", name="cell types",
        text=[boxes[n][0] for n in nodes], textposition="middle center", showlegend=False,
        textfont=dict(size=TREE_FONT_SIZE, family=LABEL_FONT, color="#111"),
        customdata=[[n, lineage[n] or "?"] for n in nodes],
        hovertemplate="%{customdata[0]}<br>lineage %{customdata[1]}<extra></extra>"))
    fig.update_layout(shapes=[dict(type="rect", layer="below", x0=pos[n][0] - boxes[n][1] / 2,
                                   x1=pos[n][0] + boxes[n][1] / 2, y0=pos[n][1] - boxes[n][2] / 2,
                                   y1=pos[n][1] + boxes[n][2] / 2, line=dict(color="#777", width=0.5),
                                   fillcolor=fill[lineage[n]]) for n in nodes])
    for name in lineages:
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=f"lineage {name or '?'}",
                                 marker=dict(symbol="square", size=12, color=fill[name],
                                             line=dict(color="#777", width=0.5)), showlegend=True))
    # the legend sits under the drawing, in a bottom margin sized for its rows
    plot_width = span + 2 * _BOX_GAP
    entry = [CHAR_EM * 11 * len(t) + 50 for t in transitions] + \
        [CHAR_EM * 11 * (len(n) + 8) + 40 for n in lineages]
    rows, used = 1, 0.0
    for w in entry:
        if used and used + w > plot_width:
            rows, used = rows + 1, 0.0
        used += w
    margin = dict(_TREE_MARGIN, b=40 + 24 * rows, autoexpand=False)
    fig.update_layout(
        title=title, width=int(round(plot_width + margin["l"] + margin["r"])),
        height=int(round(bottom + 2 * _BOX_GAP + margin["t"] + margin["b"])), margin=margin,
        xaxis=dict(visible=False, range=[-_BOX_GAP, span + _BOX_GAP]),
        yaxis=dict(visible=False, range=[bottom + _BOX_GAP, -_BOX_GAP]),
        legend=dict(title=dict(text="edges: transition (width ∝ test R²); boxes: lineage", side="top"),
                    orientation="h", traceorder="normal",
                    x=0, xanchor="left", y=-0.01, yanchor="top", font=dict(size=11)),
        hoverlabel=dict(font=dict(family=LABEL_FONT)))
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


#: Font size (points) of hit labels in logos, and the logo and hit-row heights (inches).
_HIT_FONT = 8.0
_LOGO_IN = 1.9
_HIT_ROW_IN = 0.3
#: Margins of logo figures (inches): room for the y label and ticks, the title, the x label.
_LEFT_IN, _RIGHT_IN, _TITLE_IN, _XLABEL_IN, _GAP_IN = 0.85, 0.25, 0.32, 0.5, 0.12


def hit_rows(starts, ends, label_widths, *, centres=None, gap=0.0, max_rows=None, priority=None):
    """Rows of a motif-hit track such that no two hits or their labels share space in a row.

    Every hit occupies its own span ``[start, end)`` and its label's width around the label's
    centre; hits are placed in priority order, each in the first row where that extent (plus
    ``gap`` on both sides) overlaps nothing already placed.

    Parameters
    ----------
    starts, ends : array-like, shape (N,)
        Hit spans in axis units (end exclusive).
    label_widths : array-like, shape (N,)
        Width of each hit's label in the same units (0 for unlabelled hits).
    centres : array-like, shape (N,), optional
        Where each label is centred; default the middle of its hit.
    gap : float, default 0.0
        Extra free space required between neighbours in a row.
    max_rows : int, optional
        Hits that fit in none of the first ``max_rows`` rows get row -1 (not drawn).
    priority : array-like, shape (N,), optional
        Higher first (e.g. the relative score); default the given order.

    Returns
    -------
    np.ndarray, int64, shape (N,)
        Row of every hit (0 = first row), -1 for hits left out.
    """
    import bisect

    starts, ends = np.asarray(starts, np.float64), np.asarray(ends, np.float64)
    widths = np.asarray(label_widths, np.float64)
    if not starts.shape == ends.shape == widths.shape or starts.ndim != 1:
        raise TisfmError(f"hit starts, ends and label widths must be 1-D of one length, got {starts.shape}, "
                         f"{ends.shape} and {widths.shape}")
    centre = (starts + ends) / 2 if centres is None else np.asarray(centres, np.float64)
    if centre.shape != starts.shape:
        raise TisfmError(f"expected {len(starts)} label centres, got {centre.shape}")
    lo = np.minimum(starts, centre - widths / 2) - gap
    hi = np.maximum(ends, centre + widths / 2) + gap
    order = np.arange(len(starts)) if priority is None else np.argsort(-np.asarray(priority, np.float64),
                                                                         kind="stable")
    rows = np.full(len(starts), -1, dtype=np.int64)
    placed = []    # per row: sorted starts and the matching ends of the extents placed there
    for i in order:
        for r, (row_lo, row_hi) in enumerate(placed):
            k = bisect.bisect_left(row_lo, lo[i])
            if (k == 0 or row_hi[k - 1] <= lo[i]) and (k == len(row_lo) or row_lo[k] >= hi[i]):
                row_lo.insert(k, lo[i])
                row_hi.insert(k, hi[i])
                rows[i] = r
                break
        else:
            if max_rows is None or len(placed) < max_rows:
                placed.append(([lo[i]], [hi[i]]))
                rows[i] = len(placed) - 1
    return rows


def _hit_label(hit):
    return f"{hit.name} ({hit.strand})"


def _logo_axis(ax, heights, start, *, ylim=None, highlight=None):
    draw_letters(ax, heights.T, np.arange(start, start + heights.shape[1]))
    ax.axhline(0, color="#555", lw=0.6)
    if highlight is not None:
        ax.axvspan(highlight[0] - 0.5, highlight[1] - 0.5, color="#ffd54f", alpha=0.35, lw=0, zorder=0)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.ticklabel_format(axis="x", style="plain", useOffset=False)


def _label_centres(a, b, widths, lo, hi):
    """Label centres: the middle of each hit [a, b) (axis columns), moved inside the axis."""
    centre = (a + b - 1) / 2
    return np.minimum(np.maximum(centre, lo - 0.5 + widths / 2), hi - 0.5 - widths / 2)


def _hit_axis(ax, hits, rows, centres, lo, hi, scale):
    """Hits as bars in their rows (row 0 on top), each labelled under its bar."""
    for row, centre, hit in zip(rows, centres, hits.itertuples(index=False)):
        a, b = max(int(hit.start), lo), min(int(hit.end), hi)
        if row < 0 or b <= a:
            continue
        colour = "#37474f" if hit.strand == "+" else "#8d6e63"
        ax.plot([a - 0.45, b - 0.55], [row, row], color=colour, lw=3 * scale, solid_capstyle="butt")
        ax.text(centre, row + 0.12, _hit_label(hit), ha="center", va="top", fontsize=_HIT_FONT * scale,
                color="#222")
    n_rows = int(rows.max()) + 1 if len(rows) and rows.max() >= 0 else 1
    ax.set_ylim(n_rows - 0.2, -0.5)
    ax.set_yticks([])
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    shown = int((rows >= 0).sum())
    ax.set_ylabel("motif hits" if shown == len(rows) else f"motif hits\n({shown} of {len(rows)})",
                  fontsize=8 * scale, rotation=0, ha="right", va="center")


def logo_panels(panels, *, xlabel="position", max_hit_rows=8):
    """Logos stacked on one x axis, each with its motif hits in a track of its own underneath.

    Parameters
    ----------
    panels : list of dict
        Each with ``heights`` (4, K) (A, C, G, T rows, e.g. from
        :func:`tisfm_core.attribution.logo_values`), ``start`` (position of the first column),
        and optionally ``title``, ``ylabel``, ``ylim`` (a (low, high) pair), ``highlight`` (a
        [first, last + 1) span shaded on the logo) and ``hits`` (a DataFrame with ``start``,
        ``end`` (exclusive, numbered like the axis), ``name``, ``strand`` and, to choose which
        hits win a crowded track, ``relative``).
    xlabel : str
    max_hit_rows : int, default 8
        Rows of a hit track; hits that fit in none (best relative score first) are left out,
        and the track's label says how many are shown.

    Returns
    -------
    matplotlib.figure.Figure
        Axes in order: for each panel its logo, then its hit track when it has hits. Hit labels
        never overlap each other or another hit's bar (their widths are measured in the font).
        Long logos get a wider figure (room for every letter); its text and margins grow with
        it, so that it reads the same when shown at a page's width.
    """
    from matplotlib import rc_context
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextToPath

    lo = min(int(p["start"]) for p in panels)
    hi = max(int(p["start"]) + np.asarray(p["heights"]).shape[1] for p in panels)
    width = min(24.0, max(6.0, 0.11 * (hi - lo) + 2.0))
    scale = max(1.0, width / 12.0)      # drawn as a 12-inch figure, zoomed
    inch = {name: value * scale for name, value in (("left", _LEFT_IN), ("right", _RIGHT_IN), ("title", _TITLE_IN),
                                                     ("xlabel", _XLABEL_IN), ("gap", _GAP_IN), ("logo", _LOGO_IN),
                                                     ("row", _HIT_ROW_IN), ("track", 0.2))}
    axis_pt = (width - inch["left"] - inch["right"]) * 72.0
    measure, font = TextToPath(), FontProperties(size=_HIT_FONT * scale)
    layout = []
    for p in panels:
        values = np.asarray(p["heights"], dtype=np.float64)
        if values.ndim != 2 or values.shape[0] != 4:
            raise TisfmError(f"attribution heights must be shaped (4, L), got {values.shape}")
        hits = p.get("hits")
        rows = centres = None
        if hits is not None and len(hits):
            hits = hits[(hits["end"] > lo) & (hits["start"] < hi)]
        if hits is not None and len(hits):
            per_unit = (hi - lo) / axis_pt          # axis units per point
            widths = np.array([measure.get_text_width_height_descent(_hit_label(h), font, ismath=False)[0]
                               for h in hits.itertuples(index=False)]) * per_unit
            a = np.maximum(hits["start"].to_numpy(), lo)
            b = np.minimum(hits["end"].to_numpy(), hi)
            margin = 2 * scale * per_unit           # 2 pt from the edges
            centres = _label_centres(a, b, widths + 2 * margin, lo, hi)
            rows = hit_rows(a - 0.5, b - 0.5, widths, centres=centres, gap=1.5 * margin, max_rows=max_hit_rows,
                            priority=hits["relative"] if "relative" in hits else None)
        n_rows = 0 if rows is None else max(1, int(rows.max()) + 1)
        layout.append((p, values, hits, rows, centres, n_rows))
    height = inch["xlabel"] + sum(inch["title"] + inch["logo"] + inch["gap"] +
                                  (n * inch["row"] + inch["track"] if n else 0) for *_, n in layout)
    with rc_context({"font.size": 10 * scale}):
        fig = Figure(figsize=(width, height))
        left, right = inch["left"] / width, 1 - inch["right"] / width
        top = height
        logo_axes = []
        for p, values, hits, rows, centres, n_rows in layout:
            top -= inch["title"]
            ax = fig.add_axes((left, (top - inch["logo"]) / height, right - left, inch["logo"] / height),
                              sharex=logo_axes[0] if logo_axes else None)
            top -= inch["logo"]
            _logo_axis(ax, values, int(p["start"]), ylim=p.get("ylim"), highlight=p.get("highlight"))
            ax.set_ylabel(p.get("ylabel", "mean effect"))
            ax.set_title(p.get("title", ""))
            logo_axes.append(ax)
            if n_rows:
                track = n_rows * inch["row"] + inch["track"]
                hax = fig.add_axes((left, (top - track) / height, right - left, track / height), sharex=ax)
                top -= track
                _hit_axis(hax, hits, rows, centres, lo, hi, scale)
            top -= inch["gap"]
        logo_axes[0].set_xlim(lo - 0.5, hi - 0.5)
        for ax in fig.axes[:-1]:    # one set of position labels, at the bottom
            ax.tick_params(axis="x", labelbottom=False)
        fig.axes[-1].set_xlabel(xlabel)
    return fig


def attribution_logo(heights, *, start=0, hits=None, title="", ylabel="mean effect",
                     xlabel="position", highlight=None):
    """Logo of per-base attribution heights (one non-zero letter per position) with motif hits
    in their own track under it (not on the logo's y axis).

    Parameters
    ----------
    heights : array-like, shape (4, L)
        A, C, G, T rows (e.g. one sequence and output of
        :func:`tisfm_core.attribution.logo_values`).
    start : int, default 0
        Position of the first column on the axis (the hits use the same numbering).
    hits : pandas.DataFrame, optional
        Motif hits (``start``, ``end``, ``name``, ``strand``, optionally ``relative``; end
        exclusive, numbered like the axis), see :func:`logo_panels`.
    highlight : (int, int), optional
        A [first, last + 1) span shaded on the logo.

    Returns
    -------
    matplotlib.figure.Figure
        The logo's axes first, then the hit track's (when there are hits).
    """
    return logo_panels([{"heights": heights, "start": start, "hits": hits, "title": title, "ylabel": ylabel,
                         "highlight": highlight}], xlabel=xlabel)


def variant_logos(ref, alt, difference, *, ref_start, alt_start, diff_start, span, ref_hits=None,
                  alt_hits=None, ref_label="reference", alt_label="alternative", xlabel="position"):
    """Reference and alternative logos of a variant on one axis, and their difference.

    Parameters
    ----------
    ref, alt, difference : array-like, shape (4, K_ref), (4, K_alt), (4, K_diff)
        Logo heights of the two windows and alt - ref (several letters per column where the
        bases differ); columns start at ``ref_start``, ``alt_start``, ``diff_start``.
    span : (int, int)
        The allele, a [first, last + 1) span shaded on every logo.
    ref_hits, alt_hits : pandas.DataFrame, optional
        Motif hits of each window, numbered like the axis (see :func:`logo_panels`).

    The two logos share their y range, so their bars compare directly.
    """
    ref, alt = np.asarray(ref, np.float64), np.asarray(alt, np.float64)
    low = min(0.0, ref.min(initial=0), alt.min(initial=0))
    high = max(0.0, ref.max(initial=0), alt.max(initial=0))
    pad = 0.05 * ((high - low) or 1.0)
    ylim = (low - pad, high + pad)
    return logo_panels([
        {"heights": ref, "start": ref_start, "hits": ref_hits, "title": ref_label, "ylim": ylim,
         "highlight": span},
        {"heights": alt, "start": alt_start, "hits": alt_hits, "title": alt_label, "ylim": ylim,
         "highlight": span},
        {"heights": difference, "start": diff_start, "title": "alternative − reference",
         "ylabel": "difference", "highlight": span},
    ], xlabel=xlabel)


def scan_tracks(result, output, *, hits=None, selected=None, max_hit_rows=8, width_px=850):
    """A scanned region in three tracks on one x axis: window predictions, the attribution
    track and motif hits.

    Parameters
    ----------
    result : tisfm_core.scan.ScanResult
    output : str or int
        The output drawn.
    hits : pandas.DataFrame, optional
        Motif hits of the region (``start`` 0-based, ``end`` exclusive, ``name``, ``motif``,
        ``strand``, ``relative``), positions in the region as in
        :func:`tisfm_core.attribution.motif_hits`.
    selected : int, optional
        A window to shade on every track.
    max_hit_rows : int, default 8
        Rows of the hit track; the best-scoring hits that fit are drawn and the trace name
        says how many.
    width_px : int, default 850
        Expected width of the plotting area, to keep hit labels from overlapping (10-px
        font); the figure grows in height with the rows of hits.

    Returns
    -------
    plotly.graph_objects.Figure
        Trace 0 is the window predictions (``customdata[0]`` = window number, for click
        selection) on ``y``; the attribution is on ``y2`` and the hits on ``y3``.
    """
    from plotly.subplots import make_subplots

    k = int(check_outputs([output], len(result.outputs), result.outputs)[0])
    name = result.outputs[k]
    positions = result.positions_1based
    origin = result.origin
    starts, ends = result.starts_1based, result.ends_1based
    has_hits = hits is not None and len(hits)
    if has_hits:      # rows first: the hit track's height follows them
        hit_start = hits["start"].to_numpy(np.int64) + origin
        hit_end = hits["end"].to_numpy(np.int64) + origin             # exclusive
        text = [_hit_label(h) for h in hits.itertuples(index=False)]
        per_px = len(positions) / width_px
        widths = np.array([6.0 * len(t) for t in text]) * per_px
        centres = _label_centres(hit_start, hit_end, widths + 4 * per_px, origin, origin + len(positions))
        rows = hit_rows(hit_start - 0.5, hit_end - 0.5, widths, centres=centres, gap=6 * per_px,
                        max_rows=max_hit_rows, priority=hits["relative"])
        keep = rows >= 0
        top = int(rows[keep].max()) + 1 if keep.any() else 1
    n_rows = 3 if has_hits else 2
    track_px = [200, 170] + ([30 * top + 10] if has_hits else [])       # plotting heights in pixels
    gap_px = 45
    total = sum(track_px) + gap_px * (n_rows - 1)
    fig = make_subplots(rows=n_rows, cols=1, shared_xaxes=True, vertical_spacing=gap_px / total,
                        row_heights=[h / sum(track_px) for h in track_px],
                        subplot_titles=[f"prediction of {name} per window",
                                        f"{'TISM' if result.method == 'tism' else 'exact ISM'}: mean effect "
                                        "per base (averaged over covering windows)", "motif hits"][:n_rows])
    labels = [result.window_label(i) for i in range(len(starts))]
    fig.add_trace(go.Scatter(
        x=(starts + ends) / 2, y=result.predictions[:, k], mode="lines+markers", name="window prediction",
        line=dict(color=PALETTE[0], width=1.5), marker=dict(size=7),
        customdata=[[i, label] for i, label in enumerate(labels)],
        hovertemplate="window %{customdata[1]}<br>" + name + " %{y:.4f}<extra></extra>"), row=1, col=1)
    if result.attribution is not None:
        heights = result.logo_heights(name).sum(axis=0)
        if len(positions) <= 10_000:
            for b, base in enumerate(BASES):
                at = np.flatnonzero(result.indices == b)
                fig.add_trace(go.Bar(x=positions[at], y=heights[at], name=base, width=1.0,
                                     marker=dict(color=BASE_COLORS[base], line=dict(width=0)),
                                     hovertemplate=f"position %{{x}} ({base})<br>mean effect %{{y:.4f}}"
                                                   "<extra></extra>"), row=2, col=1)
        else:   # too many bars for a browser: one line
            fig.add_trace(go.Scattergl(x=positions, y=heights, mode="lines", name="mean effect",
                                       line=dict(color="#444", width=1)), row=2, col=1)
    if has_hits:
        for strand, colour in (("+", "#37474f"), ("-", "#8d6e63")):
            sel = keep & (hits["strand"].to_numpy() == strand)
            if not sel.any():
                continue
            sub = hits[sel]
            fig.add_trace(go.Bar(
                x=(hit_end - hit_start)[sel], base=hit_start[sel] - 0.5, y=rows[sel], orientation="h",
                width=0.28, marker=dict(color=colour), name=f"hits, {strand} strand",
                customdata=np.column_stack([sub["name"], sub["motif"], hit_start[sel], hit_end[sel] - 1,
                                            sub["relative"].round(3)]).tolist(),
                hovertemplate="%{customdata[0]} (%{customdata[1]})<br>%{customdata[2]}-%{customdata[3]} "
                              + strand + "<br>relative score %{customdata[4]}<extra></extra>"),
                row=3, col=1)
        fig.add_trace(go.Scatter(
            x=centres[keep], y=rows[keep] + 0.42, mode="text",
            text=np.asarray(text, dtype=object)[keep].tolist(), textfont=dict(size=10), hoverinfo="skip",
            name=f"motif hits ({int(keep.sum())} of {len(hits)} drawn)", showlegend=False), row=3, col=1)
        fig.update_yaxes(range=[top - 0.1, -0.45], showticklabels=False, showgrid=False, zeroline=False,
                         row=3, col=1)
    if selected is not None:
        fig.add_vrect(x0=float(starts[selected]) - 0.5, x1=float(ends[selected]) + 0.5, fillcolor="#ffd54f",
                      opacity=0.3, line_width=0, row="all", col=1)
    where = "position (1-based)" if result.region is None else f"{result.region.chrom} position (1-based)"
    fig.update_xaxes(title_text=where, row=n_rows, col=1)
    fig.update_yaxes(title_text=name, row=1, col=1)
    fig.update_yaxes(title_text="mean effect", row=2, col=1)
    fig.update_layout(height=total + 40 + 60, barmode="overlay", bargap=0, showlegend=False,
                      margin=dict(t=40, b=60, l=70, r=20), clickmode="event+select")
    return fig


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
