"""Final layer: which TF drives which output (paper Fig. 2A), how stable that is across CV folds
(Fig. 2B), and the logo of any motif."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from tisfm_app import ui
from tisfm_core.analysis.drift import (
    drift_summary,
    kernel_drift,
    kernels_moved,
    lineage_drift,
)
from tisfm_core.analysis.final_layer import (
    DEFAULT_SCALE,
    SCALES,
    cluster_order,
    final_layer,
    final_layer_difference,
    normalise_rows,
    top_k_union,
)
from tisfm_core.analysis.groups import grouped_final_layer
from tisfm_core.analysis.inclusion import cv_siblings, inclusion_filter, inclusion_ratio
from tisfm_core.demo import planted_marks
from tisfm_core.errors import TisfmError
from tisfm_core.finetune import parent_path
from tisfm_core.motifs import motif_url
from tisfm_core.plots import SEQUENTIAL, motif_logo, weight_heatmap
from tisfm_core.runs import read_run_config
from tisfm_core.server import cache_dir
from tisfm_core.specs import BASELINE_NOTES
from tisfm_core.workflows import kernel_motifs

INTRO = ("Each cell is the final-layer weight of a TF (row) for an output (column), by default times "
         "the standard deviation of the TF's motif feature over the training sequences (how far the "
         "output moves when the motif's activation moves by one standard deviation), divided by the "
         "largest |value| of that output, so every output spans -1 to 1 (red: the TF raises the "
         "output, blue: lowers it). Rows are the union of each output's top-k TFs.")
#: What a heatmap row is: one motif, or the motifs of one TF name or of one similarity cluster,
#: their weights pooled, as the paper pools the coefficients of the motifs of one TF.
ROWS = {"motif": "motifs", "tf": "TFs", "cluster": "similarity clusters"}
POOLS = {"sum": "sum", "max_abs": "largest |w|"}
SCALE_NAMES = {"sd": "per s.d. of the motif's feature", "raw": "raw"}


@st.cache_data(max_entries=32, show_spinner="Reading the final layer ...")
def weights(path, stamp, scale="raw"):
    run = ui.get_run(path)
    return final_layer(run, scale=scale), dict(zip(run.motif_ids, run.motif_names))


@st.cache_data(max_entries=16, show_spinner="Grouping the motifs ...")
def grouped(path, stamp, by, how, scale="raw"):
    """Final layer pooled per group, the group of every motif, and each group's motifs."""
    W, groups = grouped_final_layer(ui.get_run(path), by=by, how=how, scale=scale,
                                    cache_dir=cache_dir() / "similarity")
    return W, groups, W.attrs["members"]


@st.cache_data(max_entries=16, show_spinner="Reading the cross-validation runs ...")
def inclusion(paths, stamps, k, by="motif", how="sum", scale="raw"):
    runs = [ui.get_run(p) for p in paths]
    groups = None if by == "motif" else grouped(paths[0], stamps[0], by, how)[1]
    return inclusion_ratio(runs, k=k, groups=groups, how=how, scale=scale)


def weight_scale(path):
    """The page's weight scale: per standard deviation of each motif's feature (default) or as
    trained; per s.d. falls back to raw, saying why, for a run that cannot provide the scale."""
    scale = st.radio("Weights", SCALES, horizontal=True, format_func=SCALE_NAMES.get,
                     key=ui.url_key("weight_scale", "scale", DEFAULT_SCALE, valid=SCALES),
                     help="per s.d.: each motif's weight times the standard deviation of its feature "
                          "over the training sequences, the change of the output when the motif's "
                          "activation moves by one standard deviation; raw: the weights as trained. "
                          "A motif whose feature hardly varies can carry a large raw weight that "
                          "moves no prediction.")
    ui.to_url("scale", scale)
    if scale == "sd":
        try:
            weights(str(path), ui.run_stamp(path), "sd")
        except TisfmError as exc:
            st.info(f"Raw weights shown: {ui.md_escape(exc)}")
            return "raw"
    return scale


def grouping():
    """The page's row choice (motifs, TFs or similarity clusters) and pooling, kept in the URL."""
    c1, c2 = st.columns([2, 1])
    by = c1.radio("Rows", tuple(ROWS), horizontal=True, format_func=ROWS.get,
                  key=ui.url_key("rows_by", "rows", "motif", valid=tuple(ROWS)),
                  help="TFs: the motifs of one TF name (Cebpb, Cebpb_2) in one row; similarity "
                       "clusters: motifs whose Tomtom p-value is below 1e-5 on average (the ETS or "
                       "bZIP families), between which a model may split one effect.")
    how = "sum"
    if by != "motif":
        how = c2.radio("Pool a group's weights by", tuple(POOLS), horizontal=True, format_func=POOLS.get,
                       key=ui.url_key("rows_pool", "pool", "sum", valid=tuple(POOLS)))
        ui.to_url("pool", how)
    ui.to_url("rows", by)
    return by, how


def table_weights(path, by, how, scale="raw"):
    """Weights (rows = motifs or groups), the row names for labels and hovers, the group of
    every motif (None for motifs) and each row's motifs."""
    W, names = weights(str(path), ui.run_stamp(path), scale)
    if by == "motif":
        return W, names, None, {m: [m] for m in W.index}
    G, groups, members = grouped(str(path), ui.run_stamp(path), by, how, scale)
    labels = {g: ", ".join(ui.tf_label(m, names) for m in ms[:4]) + (f" +{len(ms) - 4}" if len(ms) > 4 else "")
              for g, ms in members.items()}
    return G, labels, groups, members


def heatmap_section(path, truth, by, how, scale):
    W, names, groups, members = table_weights(path, by, how, scale)
    trained = W if scale == "raw" else table_weights(path, by, how, "raw")[0]   # hovers show these
    motif_weights, motif_names = weights(str(path), ui.run_stamp(path))   # the motif rows, for the search
    motif_ids = motif_weights.index
    row = "motif" if by == "motif" else {"tf": "TF", "cluster": "cluster"}[by]
    outputs = list(W.columns)
    searched = ui.tf_search(motif_ids, motif_names, key="final")
    if groups is not None:   # a searched motif shows as its group
        searched = list(dict.fromkeys(groups[m] for m in searched))
    c1, c2, c3, c4 = st.columns([1, 1, 1, 2])
    most = min(30, len(W))
    k = c1.slider("Top k per output", 1, most, key=ui.url_key("topk", "k", min(5, most), kind=int,
                                                           valid=lambda v: 1 <= v <= most))
    by_sign = c2.radio("Rank by", ("abs", "positive"), horizontal=True,
                       key=ui.url_key("rank_by", "by", "abs", valid=("abs", "positive")),
                       format_func=lambda b: "|weight|" if b == "abs" else "weight > 0")
    order = c3.radio("Order", ("clustered", "fixed"), horizontal=True,
                     key=ui.url_key("order", "order", "clustered", valid=("clustered", "fixed")),
                     help="clustered: rows and columns by average-linkage clustering (correlation); "
                          "fixed: motif-file and output order")
    default = outputs if len(outputs) <= 20 else outputs[:20]
    shown = c4.multiselect("Outputs", outputs, key=ui.url_key("outputs_shown", "outputs", default, valid=outputs,
                                                             many=True))
    for param, key in (("k", "topk"), ("by", "rank_by"), ("order", "order"), ("outputs", "outputs_shown")):
        ui.to_url(param, st.session_state[key])
    if not shown:
        st.info("Choose at least one output.")
        return None
    norm = normalise_rows(W)
    rows = top_k_union(W[shown], k=k, by=by_sign)
    marks = [m for m in planted_marks(truth, shown) if m[0] in motif_names]
    if groups is not None:
        marks = [(groups[m], o, sign, name) for m, o, sign, name in marks]
    if marks and st.checkbox("Also show the planted regulators of the synthetic demo", value=True,
                             key="with_planted"):
        rows += [m for m in dict.fromkeys(m[0] for m in marks) if m not in rows]
    rows += [m for m in searched if m not in rows]
    if not rows:
        st.info("Every weight of these outputs is zero (or none is positive).")
        return None
    values = norm.loc[rows, shown]
    if order == "clustered":
        r, c = cluster_order(values)
        values = values.iloc[r, c]
    raw = trained.loc[values.index, values.columns]
    what = "TFs" if by == "motif" else ROWS[by]
    fig = weight_heatmap(values, raw=raw, names=names, colorbar="normalised weight", rows=row, clickable=True,
                         title=f"Final layer: top {k} {what} per output ({len(values)} {what})",
                         marks=[(m, o) for m, o, _, _ in marks], highlight=searched)
    data = values.copy()
    data.insert(0, "tf" if by == "motif" else "motifs", [names.get(m, "") for m in data.index])
    pooled = "" if by == "motif" else f"; each row pools the weights of its motifs ({POOLS[how]})"
    pooled += "; weights per standard deviation of each motif's feature" if scale == "sd" else ""
    event = ui.show_plotly(fig, key="final_heatmap", name=f"{path.name}_final_layer_normalised", data=data,
                           select=True,
                           caption="Final-layer weights divided by each output's max |weight| "
                                   f"(top {k} by {'|w|' if by_sign == 'abs' else 'w > 0'} per output"
                                   + pooled
                                   + ("; circles: planted regulators" if marks else "")
                                   + ("; ▶: the TFs you searched for" if searched else "") + "). Click a cell "
                                   "to see the TF's logo.")
    with st.expander("Table of the shown weights (raw and normalised)"):
        if by == "motif":
            table = pd.DataFrame({"motif": values.index, "tf": [names.get(m, "") for m in values.index]})
        else:
            table = pd.DataFrame({row: values.index, "motifs": [", ".join(members[g]) for g in values.index]})
        if marks:
            planted = {(m, o) for m, o, _, _ in marks}
            table["planted in"] = [", ".join(o for o in values.columns if (m, o) in planted) for m in values.index]
        for kind, frame in (("normalised", values), ("raw", raw)):
            for output in values.columns:
                table[f"{output} ({kind})"] = frame[output].to_numpy()
        if by == "motif":
            ui.motif_table(table)
        else:
            st.dataframe(table, hide_index=True, width="stretch")
    labels = {ui.tf_label(m, names) if by == "motif" else str(m): m for m in values.index}
    clicked = [labels.get(p.get("y")) for p in ui.selected_points(event) if p.get("y") in labels]
    # the logo section offers the motifs of the shown rows first; a clicked group shows its first motif
    shown_motifs = list(dict.fromkeys(m for g in values.index for m in members[g]))
    return shown_motifs, [members[g][0] for g in clicked[:1]]


def inclusion_section(path, by, how, scale):
    st.subheader("Stability across cross-validation folds")
    config = read_run_config(path)
    if not config.get("group"):
        st.info("This run is not part of a cross-validation set, so there is nothing to compare. Start a "
                "*Cross-validation* job on *Models and training* to see how often each TF is among an "
                "output's top k across folds.")
        return
    siblings = cv_siblings(path)
    c1, c2 = st.columns(2)
    k = c1.slider("Top k for inclusion", 1, 30, 10, key="incl_k")
    what = "TFs" if by == "motif" else ROWS[by]
    threshold = c2.slider(f"Show {what} included in more than this fraction of folds (any output)", 0.0, 1.0,
                          0.5, 0.05, key="incl_threshold")
    try:
        ratio = inclusion(tuple(str(p) for p in siblings), tuple(ui.run_stamp(p) for p in siblings), k, by,
                          how, scale)
    except TisfmError as exc:   # a fold without its feature scale: rank every fold as trained
        if scale == "raw":
            raise
        st.info(f"Raw weights ranked: {ui.md_escape(exc)}")
        scale = "raw"
        ratio = inclusion(tuple(str(p) for p in siblings), tuple(ui.run_stamp(p) for p in siblings), k, by, how)
    kept = inclusion_filter(ratio, threshold)
    _, names, _, members = table_weights(path, by, how)
    st.markdown(f"CV set **{ui.md_escape(config['group'])}**: {len(siblings)} fold run(s); {len(kept)} of {len(ratio)} "
                f"{what} pass the threshold.")
    if kept.empty:
        st.info(f"No {what[:-1] if what.endswith('s') else what} passes this threshold; lower it.")
        return
    row = "motif" if by == "motif" else {"tf": "TF", "cluster": "cluster"}[by]
    fig = weight_heatmap(kept, names=names, colorbar="inclusion ratio", zmin=0.0, zmax=1.0, rows=row,
                         colorscale=SEQUENTIAL, title=f"Inclusion ratio over {len(siblings)} folds (top {k})")
    data = kept.copy()
    data.insert(0, "tf" if by == "motif" else "motifs",
                [names.get(m, "") if by == "motif" else ", ".join(members[m]) for m in data.index])
    pooled = "" if by == "motif" else f" (a row's weights pooled by {POOLS[how]} before ranking)"
    pooled += ", weights per standard deviation of each motif's feature" if scale == "sd" else ""
    ui.show_plotly(fig, key="inclusion_heatmap", name=f"{config['group']}_inclusion_ratio", data=data,
                   caption=f"Fraction of the {len(siblings)} fold runs in which the row is among the output's "
                           f"top {k} by |weight|{pooled}; rows above {threshold:.2f} for at least one output.")


def logo_section(path, shown, clicked):
    st.subheader("Motif logo")
    run = ui.get_run(str(path))
    if run.motifs is None:
        st.info("This run has no motifs.meme, so its motif logos are unknown.")
        return
    ids = list(run.motifs.ids)
    first = [m for m in shown if m in ids] + [m for m in ids if m not in shown]
    names = dict(zip(run.motifs.ids, run.motifs.names))
    ui.from_url("logo_motif", "motif", first[0], valid=ids)
    if clicked and clicked[0] != st.session_state.get("_logo_click"):
        st.session_state["_logo_click"] = clicked[0]
        st.session_state["logo_motif"] = clicked[0]
    motif = st.selectbox("Motif", first, key="logo_motif", format_func=lambda m: ui.tf_label(m, names))
    ui.to_url("motif", motif)
    url = motif_url(motif)
    if url:
        st.markdown(f"[{ui.md_escape(motif)} in {'JASPAR' if 'jaspar' in url else 'CIS-BP'}]({url})")
    k = ids.index(motif)
    pwm = np.asarray(run.motifs.matrices[k])
    cols = st.columns(2)
    with cols[0]:
        fig = motif_logo(pwm, title=f"{names[motif]} ({motif}): PWM")
        ui.show_matplotlib(fig, key="logo_pwm", name=f"{motif}_pwm", data=pd.DataFrame(pwm, columns=list("ACGT")),
                           caption="The motif's position weight matrix as a logo (information content in bits).")
    if run.kind != "tisfm":   # a linear baseline scans with fixed log-odds of the PWMs
        cols[1].caption("A linear baseline scans with the log-odds of the PWM as is (never trained).")
        return
    tuned = np.asarray(kernel_motifs(run).matrices[k])
    if np.abs(tuned - pwm).max() > 1e-4:
        with cols[1]:
            fig = motif_logo(tuned, title=f"{names[motif]} ({motif}): fine-tuned kernel")
            ui.show_matplotlib(fig, key="logo_tuned", name=f"{motif}_tuned_kernel",
                               data=pd.DataFrame(tuned, columns=list("ACGT")),
                               caption="The kernel after fine-tuning (negative values clipped, rows "
                                       f"renormalised); mean squared change {np.mean((tuned - pwm) ** 2):.4f}.")
    else:
        cols[1].caption("The kernels of this run were not fine-tuned: the model scans with the PWM as is.")


def _parent_stamp(path):
    parent = parent_path(path)
    return None if parent is None else ui.run_stamp(parent)


@st.cache_data(max_entries=16, show_spinner="Comparing with the parent run ...")
def parent_difference(path, stamp, parent_stamp):
    run = ui.get_run(path)
    return final_layer_difference(run), dict(zip(run.motif_ids, run.motif_names))


def parent_section(path):
    """The change of the final layer from the parent, for fine-tuned runs (a toggle)."""
    parent = parent_path(path)
    if parent is None:
        return
    if not st.toggle(f"Show the change from the parent run {parent.name} (this run minus the parent, "
                     "for the outputs both have)", key="vs_parent"):
        return
    diff, names = parent_difference(str(path), ui.run_stamp(path), _parent_stamp(path))
    k = st.slider("Top k changes per output", 1, min(30, len(diff)), min(5, len(diff)), key="diff_k")
    rows = top_k_union(diff, k=k)
    if not rows:
        st.info("The final layer is the parent's for every shared output (other parameters trained).")
        return
    values = diff.loc[rows]
    scale = float(np.abs(values.to_numpy()).max())
    fig = weight_heatmap(values, names=names, colorbar="change in weight", zmin=-scale, zmax=scale,
                         title=f"Final layer: this run minus {parent.name} (top {k} changes per output)")
    data = values.copy()
    data.insert(0, "tf", [names.get(m, "") for m in data.index])
    ui.show_plotly(fig, key="parent_diff_heatmap", name=f"{path.name}_minus_{parent.name}", data=data,
                   caption=f"Final-layer weight of this run minus that of its parent {parent.name} (raw, "
                           f"not normalised) for the {diff.shape[1]} shared output(s): the top {k} TFs by "
                           "|change| per output.")


@st.cache_data(max_entries=16, show_spinner="Comparing the kernels with the PWMs ...")
def drift_table(path, stamp, parent_stamp):
    run = ui.get_run(path)
    if parent_path(run) is None:
        return kernel_drift(run), None
    try:
        return lineage_drift(run), None
    except TisfmError as exc:
        return kernel_drift(run), str(exc)


def drift_section(path):
    """How far fine-tuned kernels moved from the PWMs (and from the parent's kernels)."""
    run = ui.get_run(str(path))
    if run.kind != "tisfm" or run.motifs is None or not kernels_moved(run):
        return
    st.subheader("Kernel drift")
    df, problem = drift_table(str(path), ui.run_stamp(path), _parent_stamp(path))
    s = drift_summary(df)
    cols = st.columns(4)
    cols[0].metric("Kernels nearest to their own PWM", f"{s['fraction_self_nearest']:.1%}",
                   help="Share of kernels whose most similar original PWM is still their own (paper: 92 %).")
    cols[1].metric("Mean MSE to the PWMs", f"{s['mean_mse']:.4f}", help="Paper: 0.04.")
    if "parent_mse" in df.columns:
        cols[2].metric("Nearest to their own parent kernel", f"{s['parent_fraction_self_nearest']:.1%}")
        cols[3].metric("Mean MSE to the parent's kernels", f"{s['parent_mean_mse']:.4f}")
    if problem:
        st.info(f"Not compared with the parent: {ui.md_escape(problem)}")
    table = df.sort_values("mse", ascending=False).head(20)
    st.dataframe(table, hide_index=True, width="stretch")
    st.caption("The 20 kernels that moved most from their PWM: mean squared difference (mse), the most "
               "similar original PWM (best-alignment Pearson r, both strands)"
               + (" and the same against the parent's kernels (parent_ columns)." if "parent_mse" in df.columns
                  else "."))


def main():
    row = ui.setup("Final layer", INTRO)
    path = ui.require_run(row, kinds=("tisfm", "linear"))   # a linear run's coefficients, like any run's
    truth = ui.synthetic_note(path)
    if row.get("kind") in BASELINE_NOTES:
        st.caption(BASELINE_NOTES[row["kind"]])
    by, how = ui.guarded(grouping) or ("motif", "sum")
    scale = ui.guarded(weight_scale, path) or "raw"
    result = ui.guarded(heatmap_section, path, truth, by, how, scale)
    ui.guarded(parent_section, path)
    ui.guarded(inclusion_section, path, by, how, scale)
    shown, clicked = result if result else ([], [])
    ui.guarded(logo_section, path, shown, clicked)
    ui.guarded(drift_section, path)


ui.guarded(main)
