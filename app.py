"""tiSFM Explorer: the entry point (navigation) and the home page (what tiSFM is, the active
run's card, links to every view).

Start with ``streamlit run app.py``. The other views are the scripts in ``pages/``, registered
with ``st.navigation`` below.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from tisfm_app import ui
from tisfm_core.metrics import format_metric
from tisfm_core.plots import r2_bar
from tisfm_core.runs import resolve_run_data
from tisfm_core.specs import stored_path
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


def fmt_seconds(seconds):
    if seconds is None:
        return "unknown"
    seconds = float(seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def card(row):
    path = ui.require_run(row, tisfm=False)
    info = run_card(str(path), ui.run_stamp(path))
    config = info["config"]
    e = ui.md_escape   # everything below comes from the run's config.json: maybe an upload
    ui.synthetic_note(path)
    st.subheader(f"Active run: {e(row['display'])}")
    files = resolve_run_data(path, config, allowed_only=False)   # shown, not read
    transform = config.get("transform", {})
    training = config.get("training", {})
    left, right = st.columns(2)
    with left:
        st.markdown("**Data**")
        if config.get("data"):
            source = files["sequences"] or f"{files['bed']} on {files['genome']}"
            st.markdown(f"- sequences: {e(source)}\n- targets: {e(files['targets'])}\n"
                        f"- {e(config['data'].get('n_regions', '?'))} regions of {info['length']} bp, "
                        f"transform **{e(transform.get('kind') or transform.get('spec') or 'none')}**")
        elif config.get("imported"):
            imported = stored_path(config["imported"].get("state_dict"), path)
            st.markdown(f"- imported from {e(imported)} (no training data recorded)")
        else:
            st.markdown("- no training data recorded")
        st.markdown("**Model**")
        lines = [f"- variant **{e(info['variant'])}** ({e(info['kind'])})"]
        if info["kind"] == "tisfm":
            lines.append(f"- motif set: {info['motifs']} motifs from {e(info['motif_source'])}")
            lines.append(f"- layers: attention {info['attention']}, interaction {info['interaction']}, "
                         f"pooling {info['pooling']}, era {info['era']}")
        lines.append(f"- parameters: **{info['parameters_total']:,}** total, "
                     f"**{info['parameters_trainable']:,}** trainable")
        st.markdown("\n".join(lines))
    with right:
        st.markdown("**Training**")
        where = training.get("device") or "unknown device"
        finished = training.get("finished") or config.get("created", "")
        split = config.get("split", {})
        st.markdown(f"- trained on **{e(where)}** in **{fmt_seconds(training.get('seconds'))}**"
                    f"{f', finished {e(finished)}' if finished else ''}\n"
                    f"- epochs: {e(training.get('epochs', '?'))} (+ {e(training.get('finetune_epochs', 0))} "
                    f"fine-tuning), penalty {e(training.get('penalty', 'none'))}\n"
                    + (f"- split: fold {e(split.get('fold'))} of {e(split.get('n_folds'))} "
                       f"({e(split.get('n_train'))} train / {e(split.get('n_val'))} val / "
                       f"{e(split.get('n_test'))} test)" if split else "- no split recorded"))
        if config.get("group"):
            st.markdown(f"- part of the cross-validation set **{e(config['group'])}**")
        st.markdown(f"**Outputs** ({len(info['outputs'])}): " + e(", ".join(info["outputs"][:30]))
                    + (" ..." if len(info["outputs"]) > 30 else ""))
    test = info["metrics"].get("test")
    if test and test.get("r2"):
        table = pd.DataFrame({"output": test.get("outputs") or info["outputs"], "test_r2": test["r2"],
                              "test_pearson": test.get("pearson"), "test_mse": test.get("mse")})
        st.markdown(f"**Test accuracy** (n = {e(test.get('n'))} regions, mean R² "
                    f"{format_metric(test.get('mean_r2'))})")
        c1, c2 = st.columns([2, 3])
        with c1:
            shown = table.assign(**{c: table[c].map(format_metric) for c in table.columns[1:]})
            st.dataframe(shown, hide_index=True, width="stretch")
        with c2:
            ui.show_plotly(r2_bar(table["output"], table["test_r2"]), key="home_r2", name="test_r2",
                           data=table, caption="Test R² of each output on the run's held-out test regions "
                                               "(n/a: undefined, the output is constant).")
    else:
        st.info("This run has no test metrics (imported or evaluated elsewhere).")


def home():
    row = ui.setup("tiSFM Explorer", INTRO)
    st.markdown("Pick the **active run** in the sidebar; every page shows that run. "
                "Open a view:")
    cols = st.columns(3)
    for i, (script, label, icon) in enumerate(ui.PAGES[1:]):
        with cols[i % 3]:
            st.page_link(script, label=label, icon=icon)
    ui.guarded(card, row)


pages = [st.Page(home, title=ui.PAGES[0][1], icon=ui.PAGES[0][2], default=True)]
pages += [st.Page(script, title=label, icon=icon) for script, label, icon in ui.PAGES[1:]]
st.navigation(pages).run()
