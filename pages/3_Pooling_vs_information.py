"""Pooling weight against information content (paper Fig. 3A) and TF-TF interaction influence
against final-layer importance (Fig. 3B)."""

from __future__ import annotations

import numpy as np
import streamlit as st

from tisfm_app import ui
from tisfm_core.analysis.interaction import interaction_influence
from tisfm_core.analysis.pooling_ic import correlations, outliers, pooling_vs_ic
from tisfm_core.demo import planted_marks
from tisfm_core.errors import TisfmError
from tisfm_core.plots import labelled_scatter

INTRO = ("Every motif learns a **pooling weight**: near 0 its matches are averaged over the sequence, "
         "large values approach max pooling. The paper found that informative (high-IC) motifs learn "
         "larger pooling weights. Colour: the chosen output's final-layer weight.")


@st.cache_data(max_entries=32, show_spinner=False)
def pooling_table(path, stamp, output):
    return pooling_vs_ic(ui.get_run(path), output)


@st.cache_data(max_entries=16, show_spinner=False)
def influence_table(path, stamp):
    return interaction_influence(ui.get_run(path))


def _planted(truth):
    """Motif ids planted as regulators of any output of the synthetic demo."""
    truth = truth or {}
    return {m for m, *_ in planted_marks(truth, list(truth.get("per_lineage", {})) +
                                         list(truth.get("per_edge", {})))}


def _planted_column(df, planted):
    return df.assign(planted=df["motif"].isin(planted)) if planted else df


def pooling_section(path, truth, searched):
    run = ui.get_run(str(path))
    output = st.selectbox("Colour by the weights of output", run.outputs,
                          key=ui.url_key("pool_output", "output", run.outputs[0], valid=run.outputs))
    ui.to_url("output", output)
    try:
        df = pooling_table(str(path), ui.run_stamp(path), output)
    except TisfmError as exc:
        st.info(ui.md_escape(exc))
        return
    top = np.argsort(-np.abs(df["coef"].to_numpy()), kind="stable")[:5]
    far = outliers(df, 5)
    labels = sorted(set(top.tolist()) | {df.index.get_loc(i) for i in far.index})
    stats = correlations(df)
    planted = _planted(truth)
    fig = labelled_scatter(df, x="ic", y="pooling", color="coef", labels=labels,
                           xaxis="information content (bits)", yaxis="pooling weight",
                           colorbar=f"weight ({output})",
                           hover={"coef": f"final-layer weight for {output}", "width": "motif width (bp)",
                                  "residual_z": "distance from the trend (standard deviations)"},
                           trend=(df.attrs["slope"], df.attrs["intercept"]), marks=planted,
                           highlight=searched,
                           title=f"Pooling weight against information content (colour: {output})")
    data = _planted_column(df, planted)
    ui.show_plotly(fig, key="pool_scatter", name=f"{path.name}_pooling_vs_ic_{output}", data=data,
                   caption=f"One point per motif: information content of its PWM (x) and its learned "
                           f"pooling weight (y), coloured by its final-layer weight for {output}; dashed: the "
                           "least-squares line; labelled: the 5 largest |weights| and the 5 farthest from that "
                           "line" + ("; green rings: planted regulators" if planted else "")
                           + ("; black rings: the TFs you searched for" if searched else "") + ".")
    c = st.columns(4)
    c[0].metric("Pearson r", f"{stats['pearson_r']:.3f}", help=f"p = {stats['pearson_p']:.2g}")
    c[1].metric("Pearson p", f"{stats['pearson_p']:.2g}")
    c[2].metric("Spearman ρ", f"{stats['spearman_rho']:.3f}", help=f"p = {stats['spearman_p']:.2g}")
    c[3].metric("Spearman p", f"{stats['spearman_p']:.2g}")
    st.caption(f"Correlation of information content and pooling weight over {stats['n']} motifs.")
    st.markdown("**Farthest from the trend** (|residual| largest)")
    far = _planted_column(far, planted)
    ui.motif_table(far[[c for c in ("motif", "name", "ic", "width", "pooling", "residual_z", "planted")
                        if c in far.columns]].rename(columns={
        "ic": "information content (bits)", "width": "width (bp)", "pooling": "pooling weight",
        "residual_z": "distance from the trend (SD)"}))


def interaction_section(path, truth, searched):
    st.subheader("TF-TF interaction")
    try:
        df = influence_table(str(path), ui.run_stamp(path))
    except TisfmError as exc:
        st.info(f"{ui.md_escape(exc)}. The interaction view needs the full, interaction or maxpool variant.")
        return
    top = set(np.argsort(-df["influence"].to_numpy(), kind="stable")[:5].tolist())
    top |= set(np.argsort(-df["importance"].to_numpy(), kind="stable")[:5].tolist())
    planted = _planted(truth)
    fig = labelled_scatter(df, x="importance", y="influence", labels=sorted(top),
                           xaxis="final-layer importance (max |w| / overall max)",
                           yaxis="interaction influence (Σ |A| over targets)",
                           hover={"max_abs_weight": "largest |final-layer weight|"}, marks=planted,
                           highlight=searched, title="Interaction influence against final-layer importance")
    ui.show_plotly(fig, key="interaction_scatter", name=f"{path.name}_interaction_influence",
                   data=_planted_column(df, planted),
                   caption="One point per motif: how strongly it gates the other TFs (sum of |weights| "
                           "it sends through the interaction layer, y) against its largest final-layer "
                           "|weight| relative to the top motif (x); labelled: the top 5 of each"
                           + ("; green rings: planted regulators" if planted else "") + ".")


def main():
    row = ui.setup("Pooling vs information content", INTRO)
    path = ui.require_run(row)
    truth = ui.synthetic_note(path)
    run = ui.get_run(str(path))
    searched = ui.tf_search(run.motif_ids, dict(zip(run.motif_ids, run.motif_names)), key="pooling")
    ui.guarded(pooling_section, path, truth, searched)
    ui.guarded(interaction_section, path, truth, searched)


ui.guarded(main)
