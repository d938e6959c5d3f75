"""Form pieces shared by the pages that start jobs: data sources, motif sources, run names.

Widgets only; the data and motif choices become specs (:mod:`tisfm_core.specs`) and files are
checked by :mod:`tisfm_core`.
"""

from __future__ import annotations

import re
from pathlib import Path

import streamlit as st

from tisfm_app import ui
from tisfm_core.errors import TisfmError
from tisfm_core.server import data_dir, home_dir, server_path
from tisfm_core.specs import DataSpec

RELEASES = ("2024", "2026", "2022", "2020")
DEMO_TARGETS = {
    "lineages (7 outputs)": ("lineages", "none"),
    "cell types (81 outputs, z-scored per region)": ("celltypes", "zscore"),
    "tree edges (80 outputs: child minus parent)": ("celltypes", "tree-diff"),
}

def suffix(name):
    suffix = Path(str(name)).suffix.lower()
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,8}", suffix) else ".txt"


# -- training jobs ------------------------------------------------------------------------------

def demo_folder(n_regions, seed, home):
    """The synthetic demo atlas of this size and seed in the user's data folder (made when missing)."""
    from tisfm_core.demo import make_demo_atlas

    out = Path(home) / "data" / f"demo_{n_regions}_seed{seed}"
    if not (out / "truth.json").exists():
        make_demo_atlas(out, n_regions=n_regions, random_state=seed)
    return str(out)


def safe_name(text, default):
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", text.strip()).strip("._")
    return name or default


def data_inputs(prefix=""):
    """Widgets for the training data (keys start with ``prefix``, so that two forms can share a
    page); returns the choice as a dict for :func:`resolve_data`."""
    source = st.radio("Data", ("Synthetic demo atlas", "Files on this server", "Upload files"),
                      horizontal=True, key=prefix + "data_source")
    if source == "Synthetic demo atlas":
        c1, c2, c3 = st.columns(3)
        n = c1.number_input("Regions", 200, 20000, 2000, step=200, key=prefix + "demo_regions",
                            help="Generated once (a few seconds per 1000 regions) and reused.")
        seed = c2.number_input("Seed", 0, 10_000, 0, key=prefix + "demo_seed")
        target = c3.selectbox("Targets", list(DEMO_TARGETS), key=prefix + "demo_targets")
        return {"kind": "demo", "n": int(n), "seed": int(seed), "target": target}
    if source == "Files on this server":
        kind = st.radio("Sequences from", ("FASTA / TSV", "BED + genome FASTA"), horizontal=True,
                        key=prefix + "seq_kind")
        spec = {"kind": "server"}
        if kind == "FASTA / TSV":
            spec["sequences"] = st.text_input("Sequence file (FASTA or id<TAB>sequence)", key=prefix + "srv_seq")
        else:
            c1, c2 = st.columns(2)
            spec["bed"] = c1.text_input("BED / narrowPeak file", key=prefix + "srv_bed")
            spec["genome"] = c2.text_input("Genome FASTA", key=prefix + "srv_genome")
        spec["targets"] = st.text_input("Targets TSV (header; first column = region ids)", key=prefix + "srv_targets")
        return spec
    c1, c2 = st.columns(2)
    seq = c1.file_uploader("Sequences (FASTA or id<TAB>sequence)", key=prefix + "up_seq")
    targets = c2.file_uploader("Targets TSV", key=prefix + "up_targets")
    return {"kind": "upload", "sequences": seq, "targets": targets}


def transform_input(spec, prefix=""):
    if spec["kind"] == "demo":
        return None
    c1, c2 = st.columns([1, 2])
    kind = c1.selectbox("Target transform", ("none", "zscore", "lineage", "tree-diff"), key=prefix + "transform",
                        help="zscore: per region across outputs; lineage: mean per lineage (needs a "
                             "cell type -> lineage TSV); tree-diff: child minus parent per tree edge "
                             "(needs a child/parent TSV)")
    if kind in ("lineage", "tree-diff"):
        table = c2.text_input("Lineage map TSV" if kind == "lineage" else "Parent table TSV (child, parent)",
                              key=prefix + "transform_table")
        return f"{kind}:{table.strip()}"
    return kind


def resolve_data(spec, transform, uploads, *, folds=10):
    """The DataSpec of the form's data choice, a description and the demo folder (or None);
    uploads are saved through ``uploads``, an :class:`tisfm_core.uploads.UploadBatch`."""
    if spec["kind"] == "demo":
        with st.spinner(f"Making the synthetic demo atlas ({spec['n']} regions) ..."):
            folder = Path(demo_folder(spec["n"], spec["seed"], str(home_dir())))
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
    data = DataSpec(sequences=uploads.save(spec["sequences"], folder, "sequences" + suffix(spec["sequences"].name)),
                    targets=uploads.save(spec["targets"], folder, "targets.tsv"), transform=transform,
                    folds=folds)
    return data, f"uploaded {spec['sequences'].name}", None


def reads_server_files(data, motifs, transform):
    """Whether the form's choice reads files the user did not upload (typed server paths): then
    error messages must not show what those files hold (tisfm_core.server.contents_hidden)."""
    return "server" in (data["kind"], motifs["kind"]) or ":" in str(transform or "")


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
    return uploads.save(spec["file"], folder, "motifs" + suffix(spec["file"].name)), spec["file"].name
