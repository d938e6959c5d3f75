"""tiSFM Explorer: the entry point (navigation) and the home page (what tiSFM is, the active
run's card, links to every view).

Start with ``streamlit run app.py``. The other views are the scripts in ``pages/``, registered
with ``st.navigation`` below.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from tisfm_app import ui
from tisfm_core.finetune import describe_outputs, lineage
from tisfm_core.metrics import format_metric
from tisfm_core.plots import r2_bar
from tisfm_core.runs import data_paths, run_origin
from tisfm_core.specs import BASELINE_NOTES
from tisfm_core.workflows import summary

INTRO = (
    "**tiSFM** (totally interpretable sequence-to-function model) predicts chromatin accessibility "
    "in each cell type or lineage from a DNA sequence. Its first layer scans the sequence with "
    "known transcription-factor motifs (PWMs), so every later weight belongs to a named TF: how "
    "its matches are pooled, how TFs gate each other and, in the final layer, how much each TF "
    "drives each output. This app shows those weights, how stable and sparse they are, and which "
    "bases of your own sequences the model uses (TISM logos)."
)


@st.cache_data(max_entries=16, show_spinner=False)
def run_card(path, stamp):
    """Plain-data summary of a run (parameter counts need the loaded model)."""
    run = ui.get_run(path)
    info = summary(run)
    info["config"] = run.config
    return info


@st.cache_data(max_entries=16, show_spinner=False)
def run_lineage(path, stamp):
    return lineage(path)


def lineage_card(path, config):
    """The chain parent -> child of a fine-tuned run, with what trained (nothing for other runs)."""
    if not config.get("lineage"):
        return
    rows = run_lineage(str(path), ui.run_stamp(path))
    e = ui.md_escape   # names and records come from config.json files: maybe uploads
    st.markdown("**Lineage** (oldest first): " + " → ".join(f"{e(r['name'])} ({e(r['made'])})" for r in rows))
    record = config.get("finetune") or {}
    if record:
        st.markdown(f"- this run trained **{e(record.get('train'))}** ({record.get('n_parameters', 0):,} "
                    f"parameters) starting from {e(rows[-2]['name'])}\n- "
                    + e(describe_outputs(record.get("outputs") or {"kept": [], "new": [], "dropped": []})))
    for r in rows[:-1]:
        if not r["present"]:
            st.warning(f"Ancestor {e(r['name'])} is no longer at {e(r['path'])}.")
        elif r["unchanged"] is False:
            st.warning(f"Ancestor {e(r['name'])} at {e(r['path'])} has other weights than when it was "
                       "fine-tuned from (retrained or replaced).")


def card(row):
    path = ui.require_run(row, tisfm=False)
    info = run_card(str(path), ui.run_stamp(path))
    config = info["config"]
    ui.synthetic_note(path)
    st.subheader(f"Active run: {ui.md_escape(row['display'])}")
    training = config.get("training", {})
    left, right = st.columns(2)
    with left:
        st.markdown("**Data**")
        st.markdown(data_lines(path, config, info))
        st.markdown("**Model**")
        lines = [f"- variant **{info['variant']}** ({info['kind']})"]
        if info["kind"] in ("tisfm", "linear"):
            lines.append(f"- motif set: {info['motifs']} motifs from {ui.md_escape(info['motif_source'])}")
        if info["kind"] == "tisfm":
            lines.append(f"- layers: attention {info['attention']}, interaction {info['interaction']}, "
                         f"pooling {info['pooling']}, era {info['era']}")
        lines.append(f"- parameters: **{info['parameters_total']:,}** total, "
                     f"**{info['parameters_trainable']:,}** trainable")
        st.markdown("\n".join(lines))
        if info["kind"] in BASELINE_NOTES:   # what the baseline is and is not, next to its numbers
            st.caption(BASELINE_NOTES[info["kind"]])
    with right:
        st.markdown("**Training**")
        split = config.get("split", {})
        e = ui.md_escape
        lines = [f"- {e(run_origin(config))}"]
        best = training.get("best") or {}
        if info["kind"] == "linear":
            lines.append(f"- fitted in closed form: ridge, strength {e(format_metric(best.get('alpha')))} chosen "
                         "on the validation split")
        elif not config.get("imported"):
            lines.append(f"- epochs: {e(training.get('epochs', '?'))} (+ {e(training.get('finetune_epochs', 0))} "
                         f"fine-tuning), penalty {e(training.get('penalty', 'none'))}")
        if not config.get("imported"):
            lines.append(f"- split: fold {e(split.get('fold'))} of {e(split.get('n_folds'))} "
                         f"({e(split.get('n_train'))} train / {e(split.get('n_val'))} val / "
                         f"{e(split.get('n_test'))} test)" if split else "- no split recorded")
        if config.get("group"):
            lines.append(f"- part of the cross-validation set **{ui.md_escape(config['group'])}**")
        st.markdown("\n".join(lines))
        st.markdown(f"**Outputs** ({len(info['outputs'])}): " + ui.md_escape(", ".join(info["outputs"][:30]))
                    + (" ..." if len(info["outputs"]) > 30 else ""))
    lineage_card(path, config)
    test = info["metrics"].get("test")
    if test and test.get("r2"):
        table = pd.DataFrame({"output": test.get("outputs") or info["outputs"], "test_r2": test["r2"],
                              "test_pearson": test.get("pearson"), "test_mse": test.get("mse")})
        st.markdown(f"**Test accuracy** (n = {ui.md_escape(test.get('n'))} regions, mean R² "
                    f"{format_metric(test.get('mean_r2'))})")
        c1, c2 = st.columns([2, 3])
        with c1:   # shown with 3 decimals, "n/a" where a metric is undefined (a constant output)
            shown = table.assign(**{c: table[c].map(format_metric) for c in table.columns[1:]})
            st.dataframe(shown, hide_index=True, width="stretch")
        with c2:
            ui.show_plotly(r2_bar(table["output"], table["test_r2"]), key="home_r2", name="test_r2",
                           data=table, caption="Test R² of each output on the run's held-out test regions "
                                               "(n/a: undefined, the output is constant).")
    else:
        st.info("This run has no test metrics (imported or evaluated elsewhere).")


def data_lines(path, config, info):
    """The Data block of the card: each data file relative to the run folder, in words."""
    data = config.get("data") or {}
    transform = config.get("transform") or {}
    if not data:
        if config.get("imported"):
            return "- no training data: the weights were trained elsewhere"
        return "- no training data recorded"
    files = data_paths(path, config)
    lines = []
    for key, what in (("sequences", "sequences"), ("bed", "regions"), ("genome", "genome"),
                      ("targets", "targets"), ("transform_table", "transform table")):
        if key in files:
            rel, exists = files[key]
            lines.append(f"- {what}: {ui.md_escape(rel)}" + ("" if exists else " (missing)"))
    lines.append(f"- {ui.md_escape(data.get('n_regions', '?'))} regions of {info['length']} bp, transform "
                 f"**{ui.md_escape(transform.get('kind') or 'none')}**")
    return "\n".join(lines) + "\n\nPaths are relative to the run folder."


def home():
    row = ui.setup("tiSFM Explorer", INTRO)
    st.markdown("Pick the **active run** in the sidebar; every page shows that run. "
                "Open a view:")
    cols = st.columns(3)
    for i, (script, label, icon) in enumerate(ui.PAGES[1:]):
        with cols[i % 3]:
            st.page_link(script, label=label, icon=icon,
                         query_params={ui.RUN_PARAM: ui.run_param(row)} if row else None)
    ui.guarded(card, row)


pages = [st.Page(home, title=ui.PAGES[0][1], icon=ui.PAGES[0][2], default=True)]
pages += [st.Page(script, title=label, icon=icon) for script, label, icon in ui.PAGES[1:]]
st.navigation(pages).run()
