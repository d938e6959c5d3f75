"""Models and training: the runs, uploads and imports, and background training and fine-tuning
jobs."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import streamlit as st

from tisfm_app import forms, jobs_panel, ui
from tisfm_core import jobs
from tisfm_core.errors import TisfmError
from tisfm_core.finetune import check_finetune_inputs, describe_outputs, recorded_data
from tisfm_core.runs import list_runs
from tisfm_core.server import contents_hidden, data_dir, jobs_dir, server_path, user_runs_dir
from tisfm_core.specs import (
    MODEL_VARIANTS,
    VARIANTS,
    FinetuneTask,
    ModelSpec,
    TrainTask,
)
from tisfm_core.training import TrainSettings
from tisfm_core.uploads import UploadBatch, extract_run_zip
from tisfm_core.workflows import check_training_inputs

# -- runs -------------------------------------------------------------------------------------

def runs_table():
    rows = list_runs(ui.runs_folders())
    st.subheader("Runs")
    if not rows:
        st.info("No runs yet in " + ui.md_escape(", ".join(str(f) for f in ui.runs_folders())) + ".")
        return
    table = pd.DataFrame([{
        "run": r["display"], "variant": r.get("variant", ""), "outputs": r.get("outputs"),
        "motifs": r.get("motifs"), "length": r.get("length"), "mean test R²": r.get("mean_test_r2"),
        "CV set": r.get("group", ""), "data": ui.SYNTHETIC if r.get("synthetic") else "",
        "created": r.get("created", ""), "problem": r.get("error", ""), "folder": r["path"],
    } for r in rows])
    st.dataframe(table, hide_index=True, width="stretch")
    st.caption(f"{len(table)} run(s) in {ui.md_escape(', '.join(str(f) for f in ui.runs_folders()))}; broken runs are "
               "listed with the problem.")


# -- uploads and imports ------------------------------------------------------------------------

def upload_run():
    st.markdown("Upload a **zip of a run folder** (`model.safetensors`, `config.json`, `motifs.meme`, "
                "`split.json`). It is checked before anything is unpacked and loaded before it is listed.")
    upload = st.file_uploader("Run zip", type=["zip"], key="run_zip")
    if upload is not None and st.button("Add this run", key="add_run_zip"):
        dest = extract_run_zip(upload.getvalue(), user_runs_dir())
        st.session_state[ui.ACTIVE_RUN] = str(dest)
        st.session_state["_page_notice"] = f"Run added as {dest.name} and made the active run."
        st.rerun()


def import_reference():
    from tisfm_core.workflows import import_reference_run

    st.markdown("Import a **state dict of the reference implementation** (`.pt`, read with "
                "`weights_only=True`: no code is run) together with the motif file it was built from.")
    c1, c2 = st.columns(2)
    state = c1.file_uploader("State dict (.pt)", type=["pt", "pth"], key="ref_pt")
    motifs = c2.file_uploader("Motif file (MEME, JASPAR, TRANSFAC, HOMER)", key="ref_motifs")
    c1, c2, c3, c4 = st.columns(4)
    variant = c1.selectbox("Variant", VARIANTS, key="ref_variant")
    era = c2.selectbox("Era", ("paper", "head"), key="ref_era",
                       help="paper: left-aligned kernels without attention biases (the published model)")
    length = c3.number_input("Sequence length", 60, 5000, 300, key="ref_length")
    outputs = c4.text_input("Output names (comma-separated, optional)", key="ref_outputs")
    if st.button("Import", key="ref_import", disabled=state is None or motifs is None):
        names = [o.strip() for o in outputs.split(",") if o.strip()] or None
        with UploadBatch() as uploads:
            folder = uploads.folder(data_dir() / "imports", "import")
            pt = uploads.save(state, folder, "state_dict.pt")
            motif_path = uploads.save(motifs, folder, "motifs" + forms.suffix(motifs.name))
            out = uploads.folder(user_runs_dir(), "imported")   # removed again on failure
            out.rmdir()  # import_reference_run creates it and refuses a non-empty one
            with st.spinner("Importing ..."):
                import_reference_run(pt, motifs=motif_path, variant=variant, era=era, outputs=names,
                                     out=out, length=int(length))
        st.session_state[ui.ACTIVE_RUN] = str(out)
        st.session_state["_page_notice"] = f"Imported as {out.name} and made the active run."
        st.rerun()


def training_form():
    st.markdown("Training runs as a **background job** (a separate process): you can leave the page "
                "or close the browser; the run appears in the list when it is done.")
    mode = st.radio("Job", ("Train one model", "Cross-validation (one run per fold)"), horizontal=True,
                    key="job_mode")
    data = forms.data_inputs()
    transform = forms.transform_input(data)
    motifs = forms.motif_inputs(data["kind"] == "demo")
    c1, c2, c3, c4 = st.columns(4)
    variant = c1.selectbox("Variant", MODEL_VARIANTS, key="variant",
                           help="full: attention + interaction + programmable pooling; base: pooling only; "
                                "maxpool: max pooling; aitac: the AI-TAC CNN baseline")
    epochs = c2.number_input("Epochs (frozen PWMs)", 1, 1000, 20, key="epochs")
    finetune = c3.number_input("Fine-tune epochs (PWMs trainable)", 0, 200, 0, key="finetune",
                               help="The paper fine-tunes the motif kernels for 10 epochs after stage 1.")
    batch = c4.number_input("Batch size", 8, 4096, 256, key="batch")
    c1, c2, c3, c4 = st.columns(4)
    penalty = c1.selectbox("Final-layer penalty", ("none", "l1", "mcp"), key="penalty")
    lam = c2.number_input("λ", 0.0, 10.0, 0.0 if penalty == "none" else 0.01, format="%.5f", key="lam",
                          disabled=penalty == "none")
    folds = c3.number_input("Folds", 3, 20, 10, key="folds")
    device = c4.selectbox("Device", ("auto", "cpu", "cuda"), key="device")
    name = st.text_input("Run name (folder in your runs folder)", key="run_name",
                         placeholder=f"{variant}_{time.strftime('%Y%m%d-%H%M%S')}")
    if st.button("Start training job", type="primary", key="start_training"):
        out = user_runs_dir() / forms.safe_name(name, f"{variant}_{time.strftime('%Y%m%d-%H%M%S')}")
        if out.exists():
            raise TisfmError(f"a run folder named {out.name} already exists in {out.parent}; choose another name")
        with UploadBatch() as uploads:
            data_spec, data_label, demo_folder = forms.resolve_data(data, transform, uploads, folds=int(folds))
            motif_spec, motif_label = forms.resolve_motifs(motifs, demo_folder, uploads)
            task = TrainTask(data=data_spec, model=ModelSpec(variant=variant, motifs=motif_spec),
                             training=TrainSettings(epochs=int(epochs), finetune_epochs=int(finetune),
                                                    batch_size=int(batch), penalty=penalty, lam=float(lam),
                                                    device=None if device == "auto" else device))
            with st.spinner("Checking the inputs (reading and matching every file) ..."), \
                    contents_hidden(forms.reads_server_files(data, motifs, transform)):
                summary = check_training_inputs(task)
        kind = "cv" if mode.startswith("Cross") else "train"
        label = (f"{out.name}: {variant} on {data_label} with {motif_label}"
                 + (f", {int(folds)}-fold CV" if kind == "cv" else ""))
        job = jobs.launch(kind, ["--out", str(out)], jobs_dir(), label=label, spec=task,
                          hide_contents=forms.reads_server_files(data, motifs, transform))
        st.session_state["_page_notice"] = (
            f"Started job {job.id}: {label} ({summary['n_regions']:,} regions x "
            f"{summary['n_outputs']} outputs, {summary['length']} bp"
            + (f", {summary['n_motifs']} motifs" if summary["n_motifs"] else "") + ").")
        st.rerun()  # so that the jobs panel starts polling


# -- fine-tuning --------------------------------------------------------------------------------

TRAIN_LABELS = {
    "final": "final layer only",
    "calibration": "motif calibration + final layer",
    "all-but-kernels": "everything but the PWM kernels",
    "all": "everything, PWM kernels included",
}
TRAIN_HELP = ("final: the TF x output weights. calibration: also each motif's sigmoid scale and bias "
              "(its sensitivity). everything but the PWM kernels: also the positional table, attention, "
              "pooling and interactions (the paper's first stage). everything: the PWM kernels drift too "
              "(the paper's second stage; see the kernel drift on *Final layer*). AI-TAC: final layer "
              "or all its layers.")


def finetune_form(row):
    if row is None or "error" in row:
        st.info("Pick a usable run in the sidebar to fine-tune it.")
        return
    if row.get("kind") == "linear":
        st.info(f"{ui.md_escape(row['display'])} is a linear baseline, fitted in closed form: there is no "
                "training to continue. Train a new linear run on other data with the form on the Train tab "
                "(model variant *linear*).")
        return
    parent = Path(row["path"])
    st.markdown(f"Fine-tune the active run **{ui.md_escape(row['display'])}**: a new run starts from its weights and "
                "trains the parameters you choose on the data you give, as a **background job**. The "
                "active run itself is never changed. Outputs it has keep their final-layer weights; new "
                "outputs (other target columns) get weights fitted to the run's motif features first; "
                "its other outputs are dropped.")
    own = recorded_data(parent)
    options = (["The run's own training data"] if own else []) + ["Other data"]
    source = st.radio("Fine-tune on", options, horizontal=True, key="ft_source",
                      help="The run's own data keeps its split (same folds and seed), so the test "
                           "regions stay unseen.")
    data = transform = None
    if source == "Other data":
        data = forms.data_inputs("ft_")
        transform = forms.transform_input(data, "ft_")
    choices = ("final", "all-but-kernels") if row.get("kind") == "aitac" else tuple(TRAIN_LABELS)
    train = st.radio("What trains", choices, index=choices.index("all-but-kernels"), horizontal=True,
                     format_func=TRAIN_LABELS.get, key="ft_train", help=TRAIN_HELP)
    c1, c2, c3, c4 = st.columns(4)
    epochs = c1.number_input("Epochs", 1, 1000, 5, key="ft_epochs")
    lr = c2.number_input("Learning rate", 1e-6, 1.0, 1e-3, format="%.5f", key="ft_lr",
                         help="1e-3 is the paper's learning rate for fine-tuning the kernels.")
    batch = c3.number_input("Sequences per batch", 8, 4096, 128, key="ft_batch")
    device = c4.selectbox("Train on", ("auto", "cpu", "cuda"), key="ft_device",
                          help="auto: the GPU when there is one")
    default = f"{parent.name}_ft_{time.strftime('%Y%m%d-%H%M%S')}"
    name = st.text_input("Name of the new run (folder in your runs folder)", key="ft_name", placeholder=default)
    if st.button("Start fine-tuning job", type="primary", key="start_finetune"):
        out = user_runs_dir() / forms.safe_name(name, default)
        if out.exists():
            raise TisfmError(f"a run folder named {out.name} already exists in {out.parent}; choose another name")
        with UploadBatch() as uploads:
            if data is None:
                data_spec, seed, data_label = *own, "its own training data"
                for what, value in (("sequence file", data_spec.sequences), ("BED file", data_spec.bed),
                                    ("genome", data_spec.genome), ("targets", data_spec.targets),
                                    ("transform table", data_spec.transform_table)):
                    if value:   # a run's config may come from an upload: read only allowed folders
                        server_path(value, f"the run's {what}")
            else:
                data_spec, data_label, _ = forms.resolve_data(data, transform, uploads)
                seed = 0
            task = FinetuneTask(data=data_spec, train=train, training=TrainSettings(
                epochs=int(epochs), lr=float(lr), batch_size=int(batch), random_state=seed,
                device=None if device == "auto" else device))
            with st.spinner("Checking the inputs against the run (reading and matching every file) ..."), \
                    contents_hidden(data is None or forms.reads_server_files(data, {"kind": None}, transform)):
                summary = check_finetune_inputs(task, parent)
        label = f"{out.name}: fine-tune {parent.name} ({TRAIN_LABELS[train]}) on {data_label}"
        job = jobs.launch("finetune", [str(parent), "--out", str(out)], jobs_dir(), label=label, spec=task,
                          hide_contents=data is None or forms.reads_server_files(data, {"kind": None}, transform))
        st.session_state["_page_notice"] = (
            f"Started job {job.id}: {label} ({summary['n_regions']:,} regions, {summary['length']} bp, "
            f"{summary['n_parameters']:,} parameters train; {describe_outputs(summary['outputs'])}).")
        st.rerun()  # so that the jobs panel starts polling


# -- job table ----------------------------------------------------------------------------------

def _notice():
    notice = st.session_state.pop("_page_notice", None)
    if notice:
        st.success(ui.md_escape(notice))


def main():
    row = ui.setup("Models and training")
    _notice()
    ui.guarded(runs_table)
    tabs = st.tabs(["Train", "Fine-tune this model", "Upload a run", "Import a reference model"])
    with tabs[0]:
        ui.guarded(training_form)
    with tabs[1]:
        ui.guarded(finetune_form, row)
    with tabs[2]:
        ui.guarded(upload_run)
    with tabs[3]:
        ui.guarded(import_reference)
    st.subheader("Jobs")
    jobs_panel.show()


main()
