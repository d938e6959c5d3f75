"""Lineage tree: a model of accessibility changes along the edges of a cell-type tree (paper Fig. 5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from tisfm_app import ui
from tisfm_core.analysis.final_layer import final_layer, normalise_rows
from tisfm_core.analysis.tree_diff import edge_metrics, edge_top_motifs, mark_kept
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


def tree_run(row):
    """The run this page shows: the active run when it is a tree-diff run, else a listed
    tree-diff run (offered in one click), else None (after saying what the page needs)."""
    path = ui.require_run(row)
    transform = read_run_config(path).get("transform") or {}
    if transform.get("kind") == "tree-diff":
        return path
    others = [r for r in ui.listed_runs() if r.get("transform") == "tree-diff" and "error" not in r
              and r.get("kind") == "tisfm"]
    if not others:
        st.info(NEEDS.format(name=ui.md_escape(row["display"]),
                             kind=ui.md_escape(transform.get("kind") or transform.get("spec") or "none")))
        return None
    by_path = {r["path"]: r for r in others}
    choice = others[0]["path"]
    if len(others) > 1:
        choice = st.selectbox("Tree-diff run", list(by_path), format_func=lambda p: by_path[p]["display"],
                              key="tree_run")
    name = ui.md_escape(by_path[choice]["display"])
    st.info(f"The active run {ui.md_escape(row['display'])} was not trained on tree-diff targets (one output "
            f"per edge of the cell-type tree). Shown here: **{name}**, a tree-diff run of your runs folders.")
    st.button(f"Make {name} the active run", key="use_tree_run", type="primary",
              on_click=ui.set_active_run, args=(choice,))
    return Path(choice)


def main():
    row = ui.setup("Lineage tree", INTRO)
    path = tree_run(row)
    if path is None:
        return
    truth = ui.synthetic_note(path)
    stamp = ui.run_stamp(path)
    table = metrics(str(path), stamp)
    W, names = weights(str(path), stamp)
    r2 = table["test_r2"].to_numpy(dtype=np.float64)
    top_r2 = max(0.5, round(float(np.nanmax(r2)), 2) if np.isfinite(r2).any() else 0.0)
    c1, c2, c3 = st.columns([2, 2, 3])
    threshold = c1.slider("Keep edges with test R² above", -0.5, top_r2, step=0.01,
                          key=ui.url_key("tree_threshold", "threshold", 0.05, kind=float,
                                         valid=lambda v: -0.5 <= v <= top_r2))
    k = c2.slider("Top TFs per kept edge", 1, 15, key=ui.url_key("tree_k", "k", 5, kind=int,
                                                               valid=range(1, 16)))
    with c3:
        searched = ui.tf_search(W.index, names, key="tree")
    table = mark_kept(table, threshold)   # the exported table's 'kept' follows the slider
    kept = table.loc[table["kept"]]
    edge = selected_edge(table, kept)
    for param, value in (("threshold", threshold), ("k", k), ("edge", edge)):
        ui.to_url(param, value)
    fig = tree_figure(table, threshold=threshold, selected=edge,
                      title=f"Lineage tree: {len(kept)} of {len(table)} edges with test R² > {threshold:.2f}")
    ui.show_plotly(fig, key="tree", name=f"{path.name}_tree_edges", data=table, select=True, width="content",
                   caption="The cell-type tree, root at the top; each edge's width is proportional to its "
                           "test R² and its colour is the lineage transition; grey dotted edges are below "
                           "the threshold. Click an edge's diamond to list its TFs (outlined: the edge listed "
                           "below).")
    if kept.empty:
        st.warning(f"No edge has a test R² above {threshold:.2f}; lower the threshold.")
    else:
        ui.guarded(edge_heatmap, path, stamp, kept, k, truth, searched)
    ui.guarded(edge_detail, path, stamp, table, kept, truth)


def _edges_in_order(table, kept):
    return list(kept["edge"]) + [e for e in table["edge"] if e not in set(kept["edge"])]


def selected_edge(table, kept):
    """The edge listed under the tree: the last one clicked, else the chosen (or URL's) one."""
    edges = _edges_in_order(table, kept)
    clicked = [p["customdata"][0] for p in ui.selected_points(st.session_state.get("tree"))
               if isinstance(p.get("customdata"), (list, tuple)) and p["customdata"]]
    ui.from_url("tree_edge", "edge", edges[0], valid=edges)
    if clicked and clicked[0] in edges and clicked[0] != st.session_state.get("_edge_click"):
        st.session_state["_edge_click"] = clicked[0]
        st.session_state["tree_edge"] = clicked[0]
    return st.session_state["tree_edge"]


def edge_heatmap(path, stamp, kept, k, truth, searched):
    st.subheader("Top TFs of the kept edges")
    W, names = weights(str(path), stamp)
    edges = list(kept["edge"])
    long = top_motifs(str(path), stamp, tuple(edges), k)
    rows = list(dict.fromkeys(list(long["motif"]) + list(searched)))
    norm = normalise_rows(W[edges]).loc[rows]
    labels = {e: edge_label(r) for e, r in zip(edges, kept.itertuples(index=False))}
    values = norm.rename(columns=labels)
    marks = [(m, labels[o]) for m, o, _, _ in planted_marks(truth, edges) if m in rows]
    fig = weight_heatmap(values, raw=W.loc[rows, edges].rename(columns=labels), names=names,
                         colorbar="normalised weight", marks=marks, highlight=searched,
                         xaxis="edge: parent→child (parent lineage→child lineage)",
                         title=f"Top {k} TFs of each kept edge")
    data = values.copy()
    data.insert(0, "tf", [names.get(m, "") for m in data.index])
    ui.show_plotly(fig, key="tree_heatmap", name=f"{path.name}_kept_edge_tfs", data=data,
                   caption=f"Final-layer weights of the union of each kept edge's top {k} TFs"
                           + (" and the TFs you searched for" if searched else "") + ", divided by "
                           "each edge's max |weight|" + ("; circles: regulators planted on that edge" if marks else "")
                           + ".")


def edge_detail(path, stamp, table, kept, truth):
    st.subheader("One edge")
    edges = _edges_in_order(table, kept)
    labels = {r.edge: edge_label(r) for r in table.itertuples(index=False)}
    edge = st.selectbox("Edge (or click its diamond in the tree)", edges, key="tree_edge",
                        format_func=lambda e: labels[e])
    info = table.set_index("edge").loc[edge]
    st.markdown(f"**{ui.md_escape(info['parent'])} → {ui.md_escape(info['child'])}** "
                f"({ui.md_escape(info['parent_lineage'] or '?')} → {ui.md_escape(info['child_lineage'] or '?')}): "
                f"test R² {info['test_r2']:.3f}, Pearson {info['test_pearson']:.3f}")
    tfs = top_motifs(str(path), stamp, (edge,), 10).drop(columns="edge")
    planted = {m: s for m, o, s, _ in planted_marks(truth, [edge])}
    if planted:
        tfs["planted (sign)"] = [("+" if planted[m] > 0 else "−") if m in planted else "" for m in tfs["motif"]]
    ui.motif_table(tfs)
    st.caption("The 10 TFs with the largest |final-layer weight| for this edge: positive weights open "
               "chromatin from parent to child, negative ones close it.")
    st.download_button("CSV", pd.DataFrame(tfs).to_csv(index=False), file_name=f"edge_{edge}_tfs.csv",
                       mime="text/csv", key="edge_csv", on_click="ignore")


ui.guarded(main)
