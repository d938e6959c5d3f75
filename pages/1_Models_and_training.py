"""Models and training: the runs, uploads and imports, and background training jobs."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pandas as pd
import streamlit as st

from tisfm_app import ui
from tisfm_core import jobs
from tisfm_core.errors import TisfmError
from tisfm_core.plots import history_table, loss_curve
from tisfm_core.runs import list_runs
from tisfm_core.server import data_dir, home_dir, jobs_dir, server_path, user_runs_dir
from tisfm_core.specs import MODEL_VARIANTS, VARIANTS, DataSpec, ModelSpec, TrainTask
from tisfm_core.training import TrainSettings
from tisfm_core.uploads import UploadBatch, extract_run_zip
from tisfm_core.workflows import check_training_inputs

RELEASES = ("2024", "2026", "2022", "2020")
DEMO_TARGETS = {
    "lineages (7 outputs)": ("lineages", "none"),
    "cell types (81 outputs, z-scored per region)": ("celltypes", "zscore"),
    "tree edges (80 outputs: child minus parent)": ("celltypes", "tree-diff"),
}
ACTIVE_STATES = ("starting", "running")


# -- runs -------------------------------------------------------------------------------------

def runs_table():
    rows = list_runs(ui.runs_folders())
    st.subheader("Runs")
    if not rows:
        st.info("No runs yet in " + ", ".join(str(f) for f in ui.runs_folders()) + ".")
        return
    table = pd.DataFrame([{
        "run": r["display"], "variant": r.get("variant", ""), "outputs": r.get("outputs"),
        "motifs": r.get("motifs"), "length": r.get("length"), "mean test R²": r.get("mean_test_r2"),
        "CV set": r.get("group", ""), "data": ui.SYNTHETIC if r.get("synthetic") else "",
        "created": r.get("created", ""), "problem": r.get("error", ""), "folder": r["path"],
    } for r in rows])
    st.dataframe(table, hide_index=True, width="stretch")
    st.caption(f"{len(table)} run(s) in {', '.join(str(f) for f in ui.runs_folders())}; broken runs are "
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
            motif_path = uploads.save(motifs, folder, "motifs" + _suffix(motifs.name))
            out = uploads.folder(user_runs_dir(), "imported")   # removed again on failure
            out.rmdir()  # import_reference_run creates it and refuses a non-empty one
            with st.spinner("Importing ..."):
                import_reference_run(pt, motifs=motif_path, variant=variant, era=era, outputs=names,
                                     out=out, length=int(length))
        st.session_state[ui.ACTIVE_RUN] = str(out)
        st.session_state["_page_notice"] = f"Imported as {out.name} and made the active run."
        st.rerun()


def _suffix(name):
    suffix = Path(str(name)).suffix.lower()
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,8}", suffix) else ".txt"


# -- training jobs ------------------------------------------------------------------------------

def _demo_folder(n_regions, seed, home):
    """The synthetic demo atlas of this size and seed in the user's data folder (made when missing)."""
    from tisfm_core.demo import make_demo_atlas

    out = Path(home) / "data" / f"demo_{n_regions}_seed{seed}"
    if not (out / "truth.json").exists():
        make_demo_atlas(out, n_regions=n_regions, random_state=seed)
    return str(out)


def _safe_name(text, default):
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", text.strip()).strip("._")
    return name or default


def data_inputs():
    """Widgets for the training data; returns (args, label, demo_folder or None, transform)."""
    source = st.radio("Data", ("Synthetic demo atlas", "Files on this server", "Upload files"),
                      horizontal=True, key="data_source")
    if source == "Synthetic demo atlas":
        c1, c2, c3 = st.columns(3)
        n = c1.number_input("Regions", 200, 20000, 2000, step=200, key="demo_regions",
                            help="Generated once (a few seconds per 1000 regions) and reused.")
        seed = c2.number_input("Seed", 0, 10_000, 0, key="demo_seed")
        target = c3.selectbox("Targets", list(DEMO_TARGETS), key="demo_targets")
        return {"kind": "demo", "n": int(n), "seed": int(seed), "target": target}
    if source == "Files on this server":
        kind = st.radio("Sequences from", ("FASTA / TSV", "BED + genome FASTA"), horizontal=True,
                        key="seq_kind")
        spec = {"kind": "server"}
        if kind == "FASTA / TSV":
            spec["sequences"] = st.text_input("Sequence file (FASTA or id<TAB>sequence)", key="srv_seq")
        else:
            c1, c2 = st.columns(2)
            spec["bed"] = c1.text_input("BED / narrowPeak file", key="srv_bed")
            spec["genome"] = c2.text_input("Genome FASTA", key="srv_genome")
        spec["targets"] = st.text_input("Targets TSV (header; first column = region ids)", key="srv_targets")
        return spec
    c1, c2 = st.columns(2)
    seq = c1.file_uploader("Sequences (FASTA or id<TAB>sequence)", key="up_seq")
    targets = c2.file_uploader("Targets TSV", key="up_targets")
    return {"kind": "upload", "sequences": seq, "targets": targets}


def transform_input(spec):
    if spec["kind"] == "demo":
        return None
    c1, c2 = st.columns([1, 2])
    kind = c1.selectbox("Target transform", ("none", "zscore", "lineage", "tree-diff"), key="transform",
                        help="zscore: per region across outputs; lineage: mean per lineage (needs a "
                             "cell type -> lineage TSV); tree-diff: child minus parent per tree edge "
                             "(needs a child/parent TSV)")
    if kind in ("lineage", "tree-diff"):
        table = c2.text_input("Lineage map TSV" if kind == "lineage" else "Parent table TSV (child, parent)",
                              key="transform_table")
        return f"{kind}:{table.strip()}"
    return kind


def resolve_data(spec, transform, uploads, *, folds=10):
    """The DataSpec of the form's data choice, a description and the demo folder (or None);
    uploads are saved through ``uploads``, an :class:`tisfm_core.uploads.UploadBatch`."""
    if spec["kind"] == "demo":
        with st.spinner(f"Making the synthetic demo atlas ({spec['n']} regions) ..."):
            folder = Path(_demo_folder(spec["n"], spec["seed"], str(home_dir())))
        table, kind = DEMO_TARGETS[spec["target"]]
        data = DataSpec(sequences=str(folder / "sequences.fa"), targets=str(folder / f"targets_{table}.tsv"),
                        transform=kind if kind != "tree-diff" else f"tree-diff:{folder / 'parents.tsv'}",
                        folds=folds)
        return data, f"{ui.SYNTHETIC} {spec['n']} regions, {spec['target'].split(' (')[0]}", folder
    if ":" in transform:
        server_path(transform.split(":", 1)[1], "transform table")
    if spec["kind"] == "server":
        files = {key: spec.get(key, "").strip() or None for key in ("targets", "sequences", "bed", "genome")}
        if not files["targets"]:
            raise TisfmError("give the path of the targets TSV")
        if "sequences" in spec and not files["sequences"]:
            raise TisfmError("give the path of the sequence file")
        if "bed" in spec and not (files["bed"] and files["genome"]):
            raise TisfmError("give both the BED file and the genome FASTA")
        for key, value in files.items():
            if value and not server_path(value, key).exists():
                raise TisfmError(f"{value} does not exist on this server")
        data = DataSpec(**files, transform=transform, folds=folds)
        return data, f"files {Path(files['sequences'] or files['bed']).name}", None
    if spec["sequences"] is None or spec["targets"] is None:
        raise TisfmError("upload both the sequence file and the targets TSV")
    folder = uploads.folder(data_dir() / "uploads", "data")
    data = DataSpec(sequences=uploads.save(spec["sequences"], folder, "sequences" + _suffix(spec["sequences"].name)),
                    targets=uploads.save(spec["targets"], folder, "targets.tsv"), transform=transform,
                    folds=folds)
    return data, f"uploaded {spec['sequences'].name}", None


def motif_inputs(demo):
    options = (["demo atlas motifs"] if demo else []) + ["JASPAR release", "file on this server", "upload"]
    choice = st.radio("Motifs", options, horizontal=True, key="motif_source")
    if choice == "JASPAR release":
        release = st.selectbox("JASPAR release (CORE vertebrates, offline)", RELEASES, key="jaspar_release")
        return {"kind": "jaspar", "release": release}
    if choice == "file on this server":
        return {"kind": "server", "path": st.text_input("Motif file", key="motif_path")}
    if choice == "upload":
        return {"kind": "upload", "file": st.file_uploader("Motif file (MEME, JASPAR, TRANSFAC, HOMER)",
                                                          key="motif_upload")}
    return {"kind": "demo"}


def resolve_motifs(spec, demo_folder, uploads):
    if spec["kind"] == "jaspar":
        return f"jaspar:{spec['release']}", f"JASPAR {spec['release']}"
    if spec["kind"] == "demo":
        return str(Path(demo_folder) / "motifs.meme"), "demo motifs"
    if spec["kind"] == "server":
        path = spec["path"].strip()
        if not path or not server_path(path, "motif file").is_file():
            raise TisfmError(f"motif file {path or '(empty)'} does not exist on this server")
        return path, Path(path).name
    if spec["file"] is None:
        raise TisfmError("upload a motif file")
    folder = uploads.folder(data_dir() / "uploads", "motifs")
    return uploads.save(spec["file"], folder, "motifs" + _suffix(spec["file"].name)), spec["file"].name


def training_form():
    st.markdown("Training runs as a **background job** (a separate process): you can leave the page "
                "or close the browser; the run appears in the list when it is done.")
    mode = st.radio("Job", ("Train one model", "Cross-validation (one run per fold)"), horizontal=True,
                    key="job_mode")
    data = data_inputs()
    transform = transform_input(data)
    motifs = motif_inputs(data["kind"] == "demo")
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
        out = user_runs_dir() / _safe_name(name, f"{variant}_{time.strftime('%Y%m%d-%H%M%S')}")
        if out.exists():
            raise TisfmError(f"a run folder named {out.name} already exists in {out.parent}; choose another name")
        with UploadBatch() as uploads:
            data_spec, data_label, demo_folder = resolve_data(data, transform, uploads, folds=int(folds))
            motif_spec, motif_label = resolve_motifs(motifs, demo_folder, uploads)
            task = TrainTask(data=data_spec, model=ModelSpec(variant=variant, motifs=motif_spec),
                             training=TrainSettings(epochs=int(epochs), finetune_epochs=int(finetune),
                                                    batch_size=int(batch), penalty=penalty, lam=float(lam),
                                                    device=None if device == "auto" else device))
            with st.spinner("Checking the inputs (reading and matching every file) ..."):
                summary = check_training_inputs(task)
        kind = "cv" if mode.startswith("Cross") else "train"
        label = (f"{out.name}: {variant} on {data_label} with {motif_label}"
                 + (f", {int(folds)}-fold CV" if kind == "cv" else ""))
        job = jobs.launch(kind, ["--out", str(out)], jobs_dir(), label=label, spec=task)
        st.session_state["_page_notice"] = (
            f"Started job {job.id}: {label} ({summary['n_regions']:,} regions x "
            f"{summary['n_outputs']} outputs, {summary['length']} bp"
            + (f", {summary['n_motifs']} motifs" if summary["n_motifs"] else "") + ").")
        st.rerun()  # so that the jobs panel starts polling


# -- job table ----------------------------------------------------------------------------------

def _cancel(path):
    try:
        jobs.cancel(jobs.load_job(path))
        st.session_state["_job_notice"] = ("success", f"Cancelled job {Path(path).name}.")
    except TisfmError as exc:
        st.session_state["_job_notice"] = ("error", str(exc))


def job_details(row):
    job = row["job"]
    state = row["state"]
    icon = {"done": ":material/check_circle:", "failed": ":material/error:", "died": ":material/error:",
            "cancelled": ":material/cancel:"}.get(state, ":material/hourglass_top:")
    title = f"{row['label'] or row['id']} · {state}"
    with st.expander(title, expanded=state in ACTIVE_STATES, icon=icon):
        st.progress(min(max(row["fraction"], 0.0), 1.0),
                    text=f"{row['fraction'] * 100:.0f}% · {row['message'] or state}")
        if state in ("died", "failed"):
            st.error(f"Job {row['id']} {'died' if state == 'died' else 'failed'}: {row['message']}")
        history = row.get("history") or []
        if history:
            ui.show_plotly(loss_curve(history, title="Loss per epoch"), key=f"loss_{row['id']}",
                           name=f"loss_{row['id']}", data=history_table(history),
                           caption="Training and validation loss (MSE) after every epoch of this job.")
        if job is not None:
            st.code(jobs.log_tail(job, 40) or "(no output yet)", language=None)
            if state in ACTIVE_STATES:
                st.button("Cancel job", key=f"cancel_{row['id']}", on_click=_cancel, args=(str(job.path),))
        if row.get("out"):
            st.caption(f"Output: {row['out']}")


def jobs_panel():
    rows = jobs.list_jobs(jobs_dir())
    notice = st.session_state.pop("_job_notice", None)
    if notice:
        getattr(st, notice[0])(notice[1])
    if not rows:
        st.info("No jobs yet.")
        return
    previous = st.session_state.get("_job_states", {})
    st.session_state["_job_states"] = {r["id"]: r["state"] for r in rows}
    table = pd.DataFrame([{"job": r["id"], "kind": r["kind"], "what": r["label"], "state": r["state"],
                           "progress": round(100 * r["fraction"]), "message": r["message"],
                           "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(r["created"]))}
                          for r in rows])
    st.dataframe(table, hide_index=True, width="stretch",
                 column_config={"progress": st.column_config.ProgressColumn("progress", min_value=0,
                                                                            max_value=100, format="%d%%")})
    for row in rows[:8]:
        job_details(row)
    finished = [i for i, s in previous.items() if s in ACTIVE_STATES and
                st.session_state["_job_states"].get(i) not in ACTIVE_STATES]
    if finished:
        st.rerun()  # a job ended: refresh the whole page so its run shows up in the lists


def jobs_fragment():
    ui.guarded(jobs_panel)


def _notice():
    notice = st.session_state.pop("_page_notice", None)
    if notice:
        st.success(notice)


def main():
    ui.setup("Models and training")
    _notice()
    ui.guarded(runs_table)
    tabs = st.tabs(["Train", "Upload a run", "Import a reference model"])
    with tabs[0]:
        ui.guarded(training_form)
    with tabs[1]:
        ui.guarded(upload_run)
    with tabs[2]:
        ui.guarded(import_reference)
    st.subheader("Jobs")
    active = any(r["state"] in ACTIVE_STATES for r in jobs.list_jobs(jobs_dir()))
    # poll every 2 s only while something runs; the panel reruns alone, not the whole page
    st.fragment(run_every=2 if active else None)(jobs_fragment)()
    if not active:
        st.button("Refresh jobs", key="refresh_jobs")


main()
