"""Figures of the app: Plotly charts (interactive) and logomaker logos (matplotlib).

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
                   highlight=(), xaxis="output"):
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

    The margins are sized from the longest row and column labels (columns are slanted when
    they would not fit side by side), so no label is cut off.
    """
    names = dict(names or {})
    motifs = [str(m) for m in values.index]
    outputs = [str(o) for o in values.columns]
    labels = [_label(m, names.get(m, "")) for m in motifs]
    hot = {str(m) for m in highlight}
    raw_values = (raw.loc[values.index, values.columns] if raw is not None else values).to_numpy(
        dtype=np.float64)
    z = values.to_numpy(dtype=np.float64)
    custom = np.empty(values.shape + (3,), dtype=object)
    custom[..., 0] = np.array(motifs, dtype=object)[:, None]
    custom[..., 1] = np.array([names.get(m, "") for m in motifs], dtype=object)[:, None]
    custom[..., 2] = raw_values
    template = ("motif %{customdata[0]}<br>TF %{customdata[1]}<br>" + xaxis + " %{x}<br>"
                f"raw weight %{{customdata[2]:.4g}}<br>{colorbar} %{{z:.3f}}")
    fig = go.Figure(go.Heatmap(
        z=z, x=outputs, y=labels, zmin=zmin, zmax=zmax,
        colorscale=colorscale, colorbar=dict(title=colorbar), customdata=custom,
        hovertemplate=template + "<extra></extra>", xgap=1, ygap=1))
    marks = [(str(m), str(o)) for m, o in (marks or []) if str(m) in motifs and str(o) in outputs]
    if marks:
        rows = [motifs.index(m) for m, _ in marks]
        cols = [outputs.index(o) for _, o in marks]
        fig.add_trace(go.Scatter(
            x=[outputs[c] for c in cols], y=[labels[r] for r in rows], mode="markers",
            marker=dict(symbol="circle-open", size=14, color="black", line=dict(width=2)),
            name=mark_label, customdata=[[motifs[r], names.get(motifs[r], ""), raw_values[r, c], z[r, c]]
                                         for r, c in zip(rows, cols)],
            hovertemplate=(f"{mark_label}<br>motif %{{customdata[0]}}<br>TF %{{customdata[1]}}<br>{xaxis} "
                           f"%{{x}}<br>raw weight %{{customdata[2]:.4g}}<br>{colorbar} "
                           "%{customdata[3]:.3f}<extra></extra>")))
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
    fig.update_layout(title=title, xaxis_title=xaxis, yaxis_title="motif",
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
    """Sequence logo of a PWM (information content) with logomaker.

    Parameters
    ----------
    matrix : array-like, shape (w, 4)
        Probabilities (rows A, C, G, T), e.g. ``MotifSet.matrices[k]``.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import logomaker

    heights = information_matrix(matrix)
    fig = Figure(figsize=(max(3.0, 0.45 * len(heights) + 1.0), height))
    ax = fig.subplots()
    logomaker.Logo(heights, ax=ax, color_scheme=BASE_COLORS, show_spines=False)
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
    import logomaker

    values = np.asarray(heights, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] != 4:
        raise TisfmError(f"attribution heights must be shaped (4, L), got {values.shape}")
    length = values.shape[1]
    frame = pd.DataFrame(values.T, columns=list(BASES), index=np.arange(start, start + length))
    fig = Figure(figsize=(min(24.0, max(6.0, 0.11 * length + 2.0)), 2.8))
    ax = fig.subplots()
    logomaker.Logo(frame, ax=ax, color_scheme=BASE_COLORS, flip_below=False, show_spines=False)
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
