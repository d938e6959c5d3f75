"""Lineage tree: a model of accessibility changes along the edges of a cell-type tree (paper Fig. 5)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from tisfm_app import ui
from tisfm_core.analysis.final_layer import final_layer, normalise_rows
from tisfm_core.analysis.tree_diff import (
    edge_metrics,
    edge_top_motifs,
    mark_kept,
    tree_layout,
)
from tisfm_core.demo import planted_marks
from tisfm_core.plots import tree_figure, weight_heatmap
from tisfm_core.runs import read_run_config

INTRO = ("A tree-diff model predicts, for every edge of the cell-type tree, the change of accessibility "
         "from the parent to the child cell type. Edges the model predicts well (test R² above the "
         "threshold) are drawn thick and coloured by the lineage transition; their top TFs are the "
         "candidate drivers of that step.")
NEEDS = ("This page needs a run trained on **tree-diff targets**: one output per edge of a cell-type "
         "tree (child minus parent), made with `--transform tree-diff:PARENTS.tsv`. The active run "
         "({name}) has transform **{kind}**. On *Models and training*, choose the synthetic demo atlas "
         "with the *tree edges* targets (or your own cell-type table with the tree-diff transform and a "
         "child/parent table) and start a training job.")


@st.cache_data(max_entries=16, show_spinner=False)
def metrics(path, stamp):
    return edge_metrics(ui.get_run(path))


@st.cache_data(max_entries=16, show_spinner=False)
def weights(path, stamp):
    run = ui.get_run(path)
    return final_layer(run), dict(zip(run.motif_ids, run.motif_names))


@st.cache_data(max_entries=32, show_spinner=False)
def top_motifs(path, stamp, edges, k):
    return edge_top_motifs(ui.get_run(path), list(edges), k=k)


def edge_label(row):
    lineage = f" ({row.parent_lineage or '?'}→{row.child_lineage or '?'})"
    return f"{row.parent}→{row.child}{lineage}"


def main():
    row = ui.setup("Lineage tree", INTRO)
    path = ui.require_run(row)
    transform = read_run_config(path).get("transform") or {}
    if transform.get("kind") != "tree-diff":
        st.info(NEEDS.format(name=ui.md_escape(row["display"]),
                             kind=ui.md_escape(transform.get("kind") or transform.get("spec") or "none")))
        return
    truth = ui.synthetic_note(path)
    stamp = ui.run_stamp(path)
    table = metrics(str(path), stamp)
    r2 = table["test_r2"].to_numpy(dtype=np.float64)
    top_r2 = float(np.nanmax(r2)) if np.isfinite(r2).any() else 0.0
    c1, c2 = st.columns(2)
    threshold = c1.slider("Keep edges with test R² above", -0.5, max(0.5, round(top_r2, 2)), 0.05, 0.01,
                          key="tree_threshold")
    k = c2.slider("Top TFs per kept edge", 1, 15, 5, key="tree_k")
    table = mark_kept(table, threshold)   # the exported table's 'kept' follows the slider
    kept = table.loc[table["kept"]]
    layout = tree_layout(table)
    fig = tree_figure(layout, table, threshold=threshold,
                      title=f"Lineage tree: {len(kept)} of {len(table)} edges with test R² > {threshold:.2f}")
    event = ui.show_plotly(fig, key="tree", name=f"{path.name}_tree_edges", data=table, select=True,
                           caption="The cell-type tree, root at the top; each edge's width is proportional to its "
                                   "test R² and its colour is the lineage transition; grey dotted edges are below "
                                   "the threshold. Click an edge's diamond to list its TFs.")
    if kept.empty:
        st.warning(f"No edge has a test R² above {threshold:.2f}; lower the threshold.")
    else:
        ui.guarded(edge_heatmap, path, stamp, kept, k, truth)
    clicked = [p["customdata"][0] for p in ui.selected_points(event)
               if isinstance(p.get("customdata"), (list, tuple)) and p["customdata"]]
    ui.guarded(edge_detail, path, stamp, table, kept, clicked, truth)


def edge_heatmap(path, stamp, kept, k, truth):
    st.subheader("Top TFs of the kept edges")
    W, names = weights(str(path), stamp)
    edges = list(kept["edge"])
    long = top_motifs(str(path), stamp, tuple(edges), k)
    rows = list(dict.fromkeys(long["motif"]))
    norm = normalise_rows(W[edges]).loc[rows]
    labels = {e: edge_label(r) for e, r in zip(edges, kept.itertuples(index=False))}
    values = norm.rename(columns=labels)
    marks = [(m, labels[o]) for m, o, _, _ in planted_marks(truth, edges) if m in rows]
    fig = weight_heatmap(values, raw=W.loc[rows, edges].rename(columns=labels), names=names,
                         colorbar="normalised weight", marks=marks,
                         title=f"Top {k} TFs of each kept edge")
    fig.update_layout(xaxis_title="edge: parent→child (parent lineage→child lineage)")
    data = values.copy()
    data.insert(0, "tf", [names.get(m, "") for m in data.index])
    ui.show_plotly(fig, key="tree_heatmap", name=f"{path.name}_kept_edge_tfs", data=data,
                   caption=f"Final-layer weights of the union of each kept edge's top {k} TFs, divided by "
                           "each edge's max |weight|" + ("; circles: regulators planted on that edge" if marks else "")
                           + ".")


def edge_detail(path, stamp, table, kept, clicked, truth):
    st.subheader("One edge")
    edges = list(kept["edge"]) + [e for e in table["edge"] if e not in set(kept["edge"])]
    if clicked and clicked[0] in edges and clicked[0] != st.session_state.get("_edge_click"):
        st.session_state["_edge_click"] = clicked[0]
        st.session_state["tree_edge"] = clicked[0]
    labels = {r.edge: edge_label(r) for r in table.itertuples(index=False)}
    edge = st.selectbox("Edge", edges, key="tree_edge", format_func=lambda e: labels[e])
    info = table.set_index("edge").loc[edge]
    e = ui.md_escape
    st.markdown(f"**{e(info['parent'])} → {e(info['child'])}** ({e(info['parent_lineage'] or '?')} → "
                f"{e(info['child_lineage'] or '?')}): test R² {info['test_r2']:.3f}, Pearson {info['test_pearson']:.3f}")
    tfs = top_motifs(str(path), stamp, (edge,), 10).drop(columns="edge")
    planted = {m: s for m, o, s, _ in planted_marks(truth, [edge])}
    if planted:
        tfs["planted (sign)"] = [("+" if planted[m] > 0 else "−") if m in planted else "" for m in tfs["motif"]]
    st.dataframe(tfs, hide_index=True, width="stretch")
    st.caption("The 10 TFs with the largest |final-layer weight| for this edge: positive weights open "
               "chromatin from parent to child, negative ones close it.")
    st.download_button("CSV", pd.DataFrame(tfs).to_csv(index=False), file_name=f"edge_{edge}_tfs.csv",
                       mime="text/csv", key="edge_csv", on_click="ignore")


ui.guarded(main)
