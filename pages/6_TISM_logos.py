"""TISM logos: which bases of a sequence the model uses, by Taylor in-silico mutagenesis."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from tisfm_app import ui
from tisfm_core.attribution import (
    agreement,
    attribution_table,
    ism,
    ism_method,
    logo_values,
    motif_hits,
    tism,
    variant_effects,
)
from tisfm_core.dataset import load_sequences
from tisfm_core.errors import TisfmError
from tisfm_core.genome import centred_window, parse_region, read_region
from tisfm_core.plots import agreement_scatter, attribution_logo, base_heatmap, scan_tracks, variant_logos
from tisfm_core.runs import resolve_run_data
from tisfm_core.scan import MAX_REGION, scan_region, window_starts
from tisfm_core.sequences import decode, parse_sequence_text
from tisfm_core.server import contents_hidden, data_dir, server_path
from tisfm_core.textfiles import check_input_file, decode_text
from tisfm_core.uploads import UploadBatch
from tisfm_core.variants import aligned_difference, describe, parse_variant_lines, read_vcf, score_variants, \
    variant_windows

INTRO = ("TISM (Taylor in-silico mutagenesis) estimates, from one gradient, how much each output would "
         "change if any base were mutated. The logo shows, at every position, the reference base with "
         "height = minus the mean change over its three substitutions: tall letters above zero are bases "
         "the output depends on, letters below zero are bases that hold it down.")
MAX_SEQUENCES = 50
#: Largest pasted or uploaded (decompressed) text: about 50,000 records of 300 bp.
MAX_TEXT = 16 * 2**20
CHUNK = 8
BASES = "ACGT"
EXAMPLE = ">my_region\nACGT... (one sequence of the run's length per FASTA record, or raw DNA)"
TASKS = ("Sequences (one window each)", "Scan a longer region", "Variant effects")
#: Exact ISM of a scan runs the model 3 L times per window: above this many evaluations the page
#: asks for TISM, a larger stride or a shorter region instead of keeping the server busy.
MAX_SCAN_ISM = 300_000
#: Scans of more windows than this wait for a button press (they take a while on a CPU).
AUTO_SCAN_WINDOWS = 200
PHASES = {"predicting": "Predicting the windows", "attributing": "Attributing the windows"}
#: Refused variants listed on the page (all of them are in the table's message column).
SHOWN_PROBLEMS = 20


@st.cache_data(max_entries=8, show_spinner="Reading the run's sequences ...")
def run_sequences(path, stamp):
    run = ui.get_run(path)
    # the paths come from the run's config (maybe an upload): only allowed folders, no contents shown
    with contents_hidden():
        data = resolve_run_data(run)   # run-relative paths when the run was moved
        if not (data.get("sequences") or data.get("bed")):
            raise TisfmError(f"run {Path(path).name} records no training sequences")
        seqs = load_sequences(data.get("sequences"), bed=data.get("bed"), genome=data.get("genome"),
                              length=int(run.config["model"]["config"]["length"]))
    return list(seqs.ids), seqs.indices


@st.cache_data(max_entries=64, show_spinner=False)
def tism_chunk(path, stamp, indices, outputs):
    return tism(ui.get_run(path).model, indices, outputs=list(outputs))


@st.cache_data(max_entries=64, show_spinner=False)
def hits_for(path, stamp, indices, threshold):
    return motif_hits(ui.get_run(path).motifs, indices, threshold=threshold)


def sequence_input(path, length):
    """The sequences to explain: (ids, uint8 indices (N, L)) or None while there are none."""
    modes = ("Paste", "Upload FASTA", "Region of the run's data", "Genome coordinates")
    mode = st.radio("Sequences", modes, horizontal=True, key=ui.url_key("tism_mode", "mode", modes[0], valid=modes))
    ui.to_url("mode", mode)
    if mode == "Paste":
        st.button("Use an example: the first region of the run's data", key="tism_example",
                  on_click=_fill_example, args=(path,))
        if st.session_state.get("_tism_example_error"):
            st.info(ui.md_escape(st.session_state.pop("_tism_example_error")))
        text = st.text_area(f"DNA sequences, FASTA or raw ({length} bp each; A, C, G, T, N or IUPAC codes)",
                            key="tism_text", height=140, placeholder=EXAMPLE)
        if not text.strip():
            st.info(f"Paste one or more sequences of {length} bp, or choose another source.")
            return None
        if len(text) > MAX_TEXT:
            raise TisfmError(f"the pasted text is longer than {MAX_TEXT // 2**20} Mi characters; refused")
        return _pair(parse_sequence_text(text, length=length, what="the pasted sequences"))
    if mode == "Upload FASTA":
        upload = st.file_uploader("FASTA file (plain or gzip)", type=["fa", "fasta", "fna", "txt", "gz"],
                                  key="tism_fasta")
        if upload is None:
            return None
        text = decode_text(upload.getvalue(), upload.name, max_bytes=MAX_TEXT)
        return _pair(parse_sequence_text(text, length=length, what=upload.name))
    if mode == "Region of the run's data":
        ids, indices = run_sequences(str(path), ui.run_stamp(path))
        chosen = st.multiselect("Regions (up to 20)", ids, default=ids[:1], max_selections=20, key="tism_regions")
        if not chosen:
            return None
        where = {name: i for i, name in enumerate(ids)}
        return chosen, indices[[where[c] for c in chosen]]
    c1, c2 = st.columns([2, 1])
    fasta = c1.text_input("Genome FASTA on this server (indexed with pyfaidx)", key="tism_genome")
    region = c2.text_input("Region chrom:start-end (1-based, inclusive)", key="tism_region",
                           placeholder="chr1:3000001-3000300")
    if not fasta.strip() or not region.strip():
        st.info(f"Give the genome FASTA and a region; the {length}-bp window centred on the region is used.")
        return None
    parse_region(region.strip())   # the user's own text: its errors may quote it
    with contents_hidden():
        return genome_window(str(server_path(fasta, "genome FASTA")), region.strip(), length)


def _fill_example(path):
    """Button callback: paste the first sequence of the run's data into the text box."""
    try:
        ids, indices = run_sequences(str(path), ui.run_stamp(path))
    except TisfmError as exc:
        st.session_state["_tism_example_error"] = f"No example: {exc}"
        return
    st.session_state["tism_text"] = f">{ids[0]}\n{decode(indices[:1])[0]}"


@st.cache_data(max_entries=32, show_spinner=False)
def genome_window(fasta, region, length):
    """The window centred on a typed region; cached, so reruns do not read the genome again."""
    return _pair(centred_window(fasta, region, length))


def _pair(seqs):
    return list(seqs.ids), seqs.indices


def compute_tism(path, stamp, indices, outputs):
    """TISM of all sequences and chosen outputs, in chunks, with a progress bar for many sequences."""
    parts = []
    bar = st.progress(0.0, text="Computing TISM ...") if len(indices) > CHUNK else None
    for start in range(0, len(indices), CHUNK):
        parts.append(tism_chunk(str(path), stamp, indices[start:start + CHUNK], tuple(outputs)))
        if bar is not None:
            bar.progress(min(1.0, (start + CHUNK) / len(indices)), text="Computing TISM ...")
    if bar is not None:
        bar.empty()
    return np.concatenate(parts)


def main():
    row = ui.setup("TISM logos", INTRO)
    path = ui.require_run(row, tisfm=False)
    ui.synthetic_note(path)
    run = ui.get_run(str(path))
    stamp = ui.run_stamp(path)
    length = int(run.config["model"]["config"]["length"])
    task = st.radio("What to explain", TASKS, horizontal=True, key="tism_task",
                    help=f"One or more {length}-bp sequences; a region of any length tiled in {length}-bp "
                         "windows; or variants from a VCF or typed, each in the window centred on it.")
    if task == TASKS[1]:
        ui.guarded(scan_section, run, path, stamp, length)
        return
    if task == TASKS[2]:
        ui.guarded(variants_section, run, path, stamp, length)
        return
    got = ui.guarded(sequence_input, path, length)
    if not got:
        return
    ids, indices = got
    if len(ids) > MAX_SEQUENCES:
        st.warning(f"{len(ids)} sequences given; the first {MAX_SEQUENCES} are explained.")
        ids, indices = ids[:MAX_SEQUENCES], indices[:MAX_SEQUENCES]
    outputs = st.multiselect("Outputs", run.outputs, default=run.outputs[:min(3, len(run.outputs))],
                             key="tism_outputs")
    if not outputs:
        st.info("Choose at least one output.")
        return
    out_index = [run.outputs.index(o) for o in outputs]
    values = compute_tism(path, stamp, indices, out_index)
    heights = logo_values(values, indices)
    st.download_button("All TISM values (CSV)", lambda: attribution_table(values, ids, outputs, indices).to_csv(index=False),
                       file_name="tism_values.csv", mime="text/csv", key="tism_all_csv", on_click="ignore")

    c1, c2, c3 = st.columns([2, 2, 3])
    name = c1.selectbox("Sequence", ids, key="tism_seq")
    output = c2.selectbox("Output", outputs, key="tism_output")
    default = (1, length) if length <= 120 else (length // 2 - 49, length // 2 + 50)
    lo, hi = c3.slider("Window (1-based positions)", 1, length, default, key="tism_window")
    n, r = ids.index(name), outputs.index(output)
    window = slice(lo - 1, hi)
    seq = decode(indices[n:n + 1])[0]

    hits = pd.DataFrame()
    if run.motifs is not None:
        threshold = st.slider("Motif hits: minimum relative score", 0.5, 1.0, 0.85, 0.01, key="tism_hit_threshold")
        hits = hits_for(str(path), stamp, indices[n:n + 1], threshold)
        hits = hits.assign(start=hits["start"] + 1)  # 1-based inclusive start, end stays inclusive
    shown_hits = hits[(hits["end"] >= lo) & (hits["start"] <= hi)] if len(hits) else hits
    fig = attribution_logo(heights[n, r][:, window], start=lo, xlabel="position (1-based)",
                           hits=shown_hits.assign(end=shown_hits["end"] + 1) if len(shown_hits) else None,
                           title=f"{name}: mean TISM effect on {output}")
    data = pd.DataFrame({"position": np.arange(lo, hi + 1), "ref": list(seq[lo - 1:hi]),
                         "logo_height": heights[n, r][:, window].sum(axis=0),
                         **{f"effect_{b}": values[n, r, k, window] for k, b in enumerate(BASES)}})
    ui.show_matplotlib(fig, key="tism_logo", name=f"tism_logo_{name}_{output}", data=data,
                       caption=f"Mean TISM effect at the reference base for {output}: height = −(mean predicted "
                               "change over the three substitutions); the track underneath: motif matches "
                               "(relative score ≥ threshold; + or − strand).")
    if run.motifs is not None:
        with st.expander(f"Motif hits in {ui.md_escape(name)} ({len(hits)})"):
            st.dataframe(hits.drop(columns="sequence").rename(columns={"start": "start (1-based)",
                                                                       "end": "end (inclusive)"}),
                         hide_index=True, width="stretch")
    if st.checkbox("Show all four bases (4 × L heatmap)", key="tism_heatmap"):
        hm = base_heatmap(values[n, r][:, window], start=lo, colorbar="TISM effect", xlabel="position (1-based)",
                          title=f"{name}: TISM effect of every substitution on {output}")
        ui.show_plotly(hm, key="tism_hm", name=f"tism_heatmap_{name}_{output}",
                       data=pd.DataFrame(values[n, r][:, window].T, columns=list(BASES),
                                         index=pd.Index(np.arange(lo, hi + 1), name="position")),
                       caption="Predicted change of the output when the base in the row replaces the reference "
                               "base (0 at the reference base).")
    ui.guarded(ism_check, run, indices, n, name, out_index[r], output, values[n:n + 1, r:r + 1])
    ui.guarded(variant_table, run, indices, n, name, out_index, seq)


def ism_check(run, indices, n, name, out, output, tism_values):
    st.subheader("Check with exact ISM")
    digest = hashlib.sha1(indices[n].tobytes()).hexdigest()[:12]
    key = (str(run.path), digest, out)
    store = st.session_state.setdefault("_ism_results", {})
    # models without input attention have an incremental exact ISM (tens of milliseconds for a
    # 300-bp sequence): it is shown at once; the attention models' naive loop waits for a click
    quick = ism_method(run.model) == "incremental"
    asked = not quick and st.button(f"Check with exact ISM ({3 * indices.shape[1]} model evaluations)",
                                    key="ism_button")
    if key not in store and (quick or asked):
        with st.spinner("Running exact in-silico mutagenesis ..."):
            store[key] = ism(run.model, indices[n:n + 1], outputs=[out])
    if key not in store:
        st.caption("Exact ISM runs the model on every single-base mutant; its Pearson correlation with TISM "
                   "tells how far the first-order estimate can be trusted for this sequence.")
        return
    if quick:
        st.caption("Exact ISM computed incrementally (only the motif windows a substitution reaches are "
                   "recomputed), so it is shown without asking.")
    exact = store[key]
    r = float(agreement(tism_values, exact, indices=indices[n:n + 1])[0, 0])
    st.metric(f"Pearson r, TISM vs exact ISM ({ui.md_escape(name)}, {ui.md_escape(output)})", f"{r:.3f}")
    fig = agreement_scatter(tism_values[0, 0], exact[0, 0])
    data = pd.DataFrame({"position": np.repeat(np.arange(1, exact.shape[-1] + 1), 4),
                         "base": list(BASES) * exact.shape[-1],
                         "tism": tism_values[0, 0].T.reshape(-1), "ism": exact[0, 0].T.reshape(-1)})
    ui.show_plotly(fig, key="ism_scatter", name=f"tism_vs_ism_{name}_{output}", data=data,
                   caption="Every substitution's effect on the output: exact ISM (x) against TISM (y); the dashed "
                           "line is y = x.")


def variant_table(run, indices, n, name, out_index, seq):
    st.subheader("Variant effects at one position")
    length = indices.shape[1]
    position = st.number_input("Position (1-based)", 1, length, length // 2, key="variant_pos")
    ref = seq[position - 1]
    parts = [variant_effects(run.model, indices[n:n + 1], position - 1, alt, outputs=out_index,
                             output_names=run.outputs) for alt in BASES if alt != ref]
    table = pd.concat(parts, ignore_index=True).drop(columns="sequence")
    table["position"] = table["position"] + 1
    st.dataframe(table, hide_index=True, width="stretch")
    st.caption(f"Predicted outputs of {ui.md_escape(name)} with the reference base {ref} at position {position} and with "
               "each alternative base: the exact change and the TISM estimate.")
    st.download_button("CSV", table.to_csv(index=False), file_name=f"variants_{name}_{position}.csv",
                       mime="text/csv", key="variant_csv", on_click="ignore")



# -- scan a longer region ---------------------------------------------------------------------------

def region_input(length):
    """The region to scan: bases (uint8 (L_region,)) or a genome RegionSequence; None while there is none."""
    source = st.radio("Region", ("Paste", "Upload FASTA", "Genome coordinates"), horizontal=True,
                      key="scan_source")
    if source == "Paste":
        text = st.text_area(f"One DNA sequence of any length (FASTA or raw; up to {MAX_REGION:,} bp)",
                            key="scan_text", height=140, placeholder=">my_locus\nACGT...")
        if not text.strip():
            st.info(f"Paste one region; it is cut into {length}-bp windows.")
            return None
        return _one_region(parse_sequence_text(text, what="the pasted region"), "the pasted text")
    if source == "Upload FASTA":
        upload = st.file_uploader("FASTA file with one sequence (plain or gzip)",
                                  type=["fa", "fasta", "fna", "txt", "gz"], key="scan_fasta")
        if upload is None:
            return None
        return _one_region(parse_sequence_text(decode_text(upload.getvalue(), upload.name), what=upload.name),
                           upload.name)
    c1, c2 = st.columns([2, 1])
    fasta = c1.text_input("Genome FASTA on this server (plain or bgzip)", key="scan_genome")
    region = c2.text_input("Region chrom:start-end (1-based, inclusive)", key="scan_region",
                           placeholder="chr1:3000001-3002000")
    if not fasta.strip() or not region.strip():
        st.info("Give the genome FASTA and a region; its index is kept in your tiSFM folder, never next to "
                "the FASTA.")
        return None
    genome = server_path(fasta, "genome FASTA")
    return genome_region(str(genome), genome.stat().st_mtime_ns if genome.exists() else 0, region.strip())


def _one_region(seqs, where):
    if len(seqs) != 1:
        raise TisfmError(f"{where} holds {len(seqs)} sequences; scan one region at a time")
    return seqs.indices[0]


@st.cache_data(max_entries=16, show_spinner="Reading the region from the genome ...")
def genome_region(fasta, stamp, region):
    return read_region(fasta, region, max_length=MAX_REGION)


def _digest(array):
    return hashlib.sha1(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


def _remember(store, key, value, keep=3):
    while len(store) >= keep:
        store.pop(next(iter(store)))
    store[key] = value
    return value


def scanned(run, path, stamp, sequence, stride, method, pad, n_windows):
    """The scan of a region (all outputs), kept in the session; a progress bar while it runs, and
    a button first when it is long. None until that button is pressed."""
    bases = getattr(sequence, "indices", sequence)
    key = (str(path), stamp, _digest(bases), str(getattr(sequence, "region", "")), stride, method, pad)
    store = st.session_state.setdefault("_scan_results", {})
    if key in store:
        return store[key]
    if n_windows > AUTO_SCAN_WINDOWS and not st.button(f"Scan {n_windows:,} windows", key="scan_start",
                                                       type="primary"):
        st.info(f"This region makes {n_windows:,} windows; the scan may take minutes. Choose the stride (a "
                "larger one makes fewer windows), then press the button.")
        return None
    bar = st.progress(0.0, text="Predicting the windows ...")

    def report(phase, done, total):
        bar.progress(done / total if total else 1.0, text=f"{PHASES[phase]}: {done:,} of {total:,}")
    try:
        result = scan_region(run, sequence, stride=stride, attribution=method, pad=pad, progress=report)
    finally:
        bar.empty()
    return _remember(store, key, result)


def _pick_window():
    """Clicking a point of the prediction track (trace 0) picks its window for the logo."""
    points = [p for p in ui.selected_points(st.session_state.get("scan_tracks"))
              if p.get("curve_number") == 0 and "point_index" in p]
    if points:
        st.session_state["scan_window"] = int(points[0]["point_index"])


def scan_section(run, path, stamp, length):
    st.markdown(f"A region of any length is cut into {length}-bp windows (the last one flush with the "
                "region's end). Every window is predicted; each base's attribution is the mean over the "
                "windows that cover it. Click a window on the prediction track (or pick it below) to see its "
                "logo.")
    sequence = ui.guarded(region_input, length)
    if sequence is None:
        return
    n = len(getattr(sequence, "indices", sequence))
    c1, c2, c3 = st.columns(3)
    stride = int(c1.number_input(f"Stride (bases between window starts, 1-{length})", 1, length,
                                 max(1, length // 4), key="scan_stride"))
    method = c2.radio("Attribution", ("TISM", "Exact ISM"), horizontal=True, key="scan_method",
                      help="TISM: one gradient per window. Exact ISM: 3 × window length model runs per window.")
    pad = c3.radio(f"A region shorter than {length} bp", ("Pad with N (centred)", "Refuse"), horizontal=True,
                   key="scan_pad")
    n_windows = len(window_starts(n, length, stride)) if n >= length else 1
    if method == "Exact ISM" and n_windows * 3 * length > MAX_SCAN_ISM:
        st.error(f"Exact ISM of {n_windows:,} windows needs {n_windows * 3 * length:,} model runs, more than "
                 f"this page does at once ({MAX_SCAN_ISM:,}): use TISM, a larger stride or a shorter region.")
        return
    result = scanned(run, path, stamp, sequence, stride, "tism" if method == "TISM" else "ism",
                     "center" if pad.startswith("Pad") else "refuse", n_windows)
    if result is None:
        return
    if n < length:
        st.info(f"The region is {n} bp, shorter than the model's {length}-bp window: it is explained in one "
                f"window padded with N on both sides (the window's positions ≤ 0 and > {n} are N).")
    c1, c2 = st.columns([1, 2])
    output = c1.selectbox("Output", result.outputs, key="scan_output")
    k = result.outputs.index(output)
    hits = None
    if run.motifs is not None:
        threshold = c2.slider("Motif hits: minimum relative score", 0.5, 1.0, 0.85, 0.01, key="scan_hit_threshold")
        hits = hits_for(str(path), stamp, result.indices[None], threshold)
    windows = list(range(len(result.starts)))
    if st.session_state.get("scan_window") not in windows:
        st.session_state["scan_window"] = int(np.argmax(result.predictions[:, k]))
    chosen = st.session_state["scan_window"]
    fig = scan_tracks(result, output, hits=hits, selected=chosen)
    st.plotly_chart(fig, key="scan_tracks", on_select=_pick_window, selection_mode="points",
                    config={"displaylogo": False})
    where = str(result.region) if result.region is not None else f"{n:,} bp"
    st.caption(f"{where}: {len(windows):,} windows of {length} bp, stride {stride}. Top: the prediction of "
               f"{output} for every window (at its centre). Middle: the {method} attribution of each base "
               "(letters' heights as in the logo: −mean change over the three substitutions, coloured by the "
               "reference base). Bottom: motif matches. The shaded band is the window shown below; drag on a "
               "track to zoom, double-click to zoom out.")
    ui.downloads(fig, result.prediction_table(), f"scan_tracks_{output}", "scan_tracks")
    d1, d2, _ = st.columns([1, 1, 3])
    d1.download_button("Window predictions (TSV)", lambda: result.prediction_table().to_csv(sep="\t", index=False),
                       file_name="scan_windows.tsv", mime="text/tab-separated-values", key="scan_windows_tsv",
                       on_click="ignore")
    d2.download_button(f"Attribution of {output} (CSV)", lambda: result.attribution_table(output).to_csv(index=False),
                       file_name=f"scan_attribution_{output}.csv", mime="text/csv",
                       key="scan_attribution_csv", on_click="ignore")
    st.subheader("One window")
    i = st.select_slider("Window", windows, format_func=result.window_label, key="scan_window")
    window_logo(run, path, stamp, result, i, k, method, hits)


@st.cache_data(max_entries=64, show_spinner=False)
def window_values(path, stamp, window, out, method):
    run = ui.get_run(path)
    explain = tism if method == "TISM" else ism
    return explain(run.model, window[None], outputs=[out])


def window_logo(run, path, stamp, result, i, k, method, hits):
    """The logo of scan window ``i`` (its own attribution, not the average) with its motif hits."""
    window = result.window(i)
    lo = int(result.starts_1based[i])
    values = window_values(str(path), stamp, window, run.outputs.index(result.outputs[k]), method)
    heights = logo_values(values, window[None])[0, 0]
    shown = None
    if hits is not None and len(hits):
        start = int(result.starts[i])
        shown = hits[(hits["end"] > start) & (hits["start"] < start + result.window_length)]
        shown = shown.assign(start=shown["start"] + result.origin, end=shown["end"] + result.origin)
    output = result.outputs[k]
    fig = attribution_logo(heights, start=lo, hits=shown, xlabel="position (1-based)",
                           title=f"window {result.window_label(i)}: {output} predicted "
                                 f"{result.predictions[i, k]:.3f}; {method} effect")
    positions = np.arange(lo, lo + result.window_length)
    data = pd.DataFrame({"position": positions, "ref": list(decode(window[None])[0]),
                         "logo_height": heights.sum(axis=0),
                         **{f"effect_{b}": values[0, 0, j] for j, b in enumerate(BASES)}})
    matches = ("the track underneath: motif matches" if shown is not None and len(shown) else
               "no motif matches this window at the chosen minimum score" if hits is not None else
               "the run has no motifs to match")
    ui.show_matplotlib(fig, key="scan_logo", name=f"scan_logo_{result.window_label(i)}_{output}", data=data,
                       caption=f"The {method} logo of this window alone (the model's view of these "
                               f"{result.window_length} bp); {matches}.")


# -- variant effects --------------------------------------------------------------------------------

def _vcf_name(name):
    lower = name.lower()
    return "variants.bcf" if lower.endswith(".bcf") else \
        "variants.vcf.gz" if lower.endswith((".gz", ".bgz")) else "variants.vcf"


def uploaded_variants(upload):
    """The variants of an uploaded VCF, read once per file content (saved under an app-chosen name;
    removed again when it is refused)."""
    data = upload.getvalue()
    key = hashlib.sha1(data).hexdigest()
    store = st.session_state.setdefault("_vcf_variants", {})
    if key not in store:
        with UploadBatch() as batch:
            folder = batch.folder(data_dir() / "uploads", "vcf")
            saved = batch.save(upload, folder, _vcf_name(upload.name))
            _remember(store, key, read_vcf(saved, name=upload.name))
    return store[key]


def scored(run, path, stamp, variants, genome):
    key = (str(path), stamp, str(genome), genome.stat().st_mtime_ns, hash(tuple(variants)))
    store = st.session_state.setdefault("_variant_scores", {})
    if key not in store:
        with st.spinner(f"Scoring {len(variants):,} variants (reference and alternative windows) ..."):
            _remember(store, key, score_variants(run, variants, genome))
    return store[key]


def _pick_variant():
    """Selecting a table row picks its variant for the logos."""
    state = st.session_state.get("var_table")
    try:
        rows = list(state.selection.rows)
    except AttributeError:
        rows = list((state or {}).get("selection", {}).get("rows", []))
    order = st.session_state.get("_var_order", [])
    if rows and rows[0] < len(order):
        st.session_state["var_pick"] = order[rows[0]]


def variants_section(run, path, stamp, length):
    st.markdown(f"Every variant is scored in the {length}-bp window centred on it: the reference window from "
                "the genome and the alternative window with ALT in place of REF (indels keep the window length, "
                "re-centred). Multi-allelic sites give one row per ALT allele; variants that cannot be scored are "
                "listed with the reason, the others are still scored.")
    source = st.radio("Variants", ("Upload a VCF", "Type variants"), horizontal=True, key="var_source")
    fasta = st.text_input("Genome FASTA on this server (plain or bgzip; its index is kept in your tiSFM folder)",
                          key="var_genome")
    problems = []
    if source == "Upload a VCF":
        upload = st.file_uploader("VCF file (plain or bgzip), or BCF", type=["vcf", "gz", "bgz", "bcf"],
                                  key="var_vcf")
        variants = uploaded_variants(upload) if upload is not None else []
    else:
        text = st.text_area("One variant per line: chrom:pos:ref:alt (1-based pos; several ALTs separated by commas)",
                            key="var_text", height=120, placeholder="chr1:3000123:A:G\nchr1:3000500:C:T,G")
        variants, problems = parse_variant_lines(text)
    if not variants and not problems:
        st.info("Upload a VCF or type variants, and give the genome FASTA they refer to.")
        return
    if not fasta.strip():
        st.info("Give the genome FASTA the variants refer to.")
        return
    if not variants:
        raise TisfmError("no variant could be read: " + "; ".join(problems[:3]))
    genome = check_input_file(server_path(fasta, "genome FASTA"), "genome FASTA")
    scores = scored(run, path, stamp, variants, genome)
    problems += scores.problems
    table = scores.table
    n_scored = int((table["status"] == "scored").sum())
    if problems:
        lines = "\n".join(f"- {p}" for p in problems[:SHOWN_PROBLEMS])
        more = (f"\n\n... and {len(problems) - SHOWN_PROBLEMS} more (every reason is in the table's message "
                "column)") if len(problems) > SHOWN_PROBLEMS else ""
        (st.error if not n_scored else st.warning)(
            f"{len(problems)} of {len(table) + len(problems) - len(scores.problems)} variants could not be "
            f"scored{' (the others are in the table below)' if n_scored else ''}:\n{lines}{more}")
    if not n_scored:
        return
    c1, c2, c3 = st.columns([1, 2, 1])
    output = c1.selectbox("Output", scores.outputs, key="var_output")
    order = c2.selectbox("Sort by", (f"largest |change| of {output}", "largest |change| of any output",
                                      "genome position", "input order"), key="var_sort")
    every = c3.checkbox("All outputs' columns", key="var_all_columns")
    if order.startswith("largest |change| of any"):
        table = table.sort_values("max_abs_diff", ascending=False, na_position="last", kind="stable")
    elif order.startswith("largest"):
        table = table.sort_values(f"diff:{output}", key=abs, ascending=False, na_position="last", kind="stable")
    elif order == "genome position":
        table = table.sort_values(["chrom", "pos"], kind="stable")
    columns = list(table.columns) if every else [
        "id", "chrom", "pos", "ref", "alt", "status", f"ref:{output}", f"alt:{output}", f"diff:{output}",
        f"rank:{output}", "top_output", "max_abs_diff", "message"]
    st.session_state["_var_order"] = list(table.index)
    st.dataframe(table[columns], hide_index=True, width="stretch", key="var_table", on_select=_pick_variant,
                 selection_mode="single-row")
    st.caption(f"{n_scored:,} of {len(table):,} variants scored. ref / alt: predictions of the two windows; diff = "
               "alt − ref; rank: that output's place among the variant's outputs by |diff| (1 = largest). Click "
               "a column header to sort, a row to see its logos.")
    d1, d2, _ = st.columns([1, 1, 3])
    d1.download_button("Table (TSV)", lambda: scores.table.to_csv(sep="\t", index=False), file_name="variants.tsv",
                       mime="text/tab-separated-values", key="var_tsv", on_click="ignore")
    d2.download_button("Table (CSV)", lambda: scores.table.to_csv(index=False), file_name="variants.csv",
                       mime="text/csv", key="var_csv", on_click="ignore")
    choices = [i for i in table.index if table.at[i, "status"] == "scored"]
    if st.session_state.get("var_pick") not in choices:
        st.session_state["var_pick"] = choices[0]
    st.subheader("One variant: reference and alternative logos")
    pick = st.selectbox("Variant", choices, key="var_pick",
                        format_func=lambda i: f"{describe(variants[i])}: {output} "
                                              f"{table.at[i, f'diff:{output}']:+.4f}")
    ui.guarded(variant_pair, run, path, stamp, variants[pick], genome, output, table.loc[pick], length)


def variant_pair(run, path, stamp, variant, genome, output, row, length):
    """Ref-vs-alt TISM logos of one variant, aligned on it, and their difference."""
    windows = variant_windows(length, variant, genome)
    pair = np.stack([windows.ref, windows.alt])
    out = run.outputs.index(output)
    values = tism_chunk(str(path), stamp, pair, (out,))
    heights = logo_values(values, pair)[:, 0]
    start, diff, compared = aligned_difference(windows, variant, heights[0], heights[1])
    r, a = len(variant.ref), len(variant.alt)
    c1, c2 = st.columns(2)
    span = c1.slider("Bases shown on each side of the variant", 5, length // 2, min(40, length // 2),
                     key="var_span")
    threshold = c2.slider("Motif hits: minimum relative score", 0.5, 1.0, 0.85, 0.01, key="var_hit_threshold",
                          disabled=run.motifs is None)
    lo = -span

    def part(values, offset, allele):
        first, last = max(0, offset + lo), min(length, offset + allele + span)
        return values[:, first:last], first - offset

    ref_h, ref_start = part(heights[0], windows.ref_offset, r)
    alt_h, alt_start = part(heights[1], windows.alt_offset, a)
    diff_h, diff_start = part(diff, -start, r)
    hits = {}
    if run.motifs is not None:
        found = hits_for(str(path), stamp, pair, threshold)
        for n, offset in ((0, windows.ref_offset), (1, windows.alt_offset)):
            mine = found[found["sequence"] == n]
            hits[n] = mine.assign(start=mine["start"] - offset, end=mine["end"] - offset)
    fig = variant_logos(ref_h, alt_h, diff_h, ref_start=ref_start, alt_start=alt_start, diff_start=diff_start,
                        span=(0, max(r, a)), ref_hits=hits.get(0), alt_hits=hits.get(1),
                        ref_label=f"{describe(variant)}. Reference window (REF {variant.ref}): {output} predicted "
                                  f"{row[f'ref:{output}']:.4f}",
                        alt_label=f"Alternative window (ALT {variant.alt}): {output} predicted "
                                  f"{row[f'alt:{output}']:.4f}, change {row[f'diff:{output}']:+.4f}",
                        xlabel="position relative to the variant (0 = its first base)")
    data = pd.concat([
        pd.DataFrame({"panel": name, "position": np.arange(first, first + h.shape[1]),
                      **{b: h[j] for j, b in enumerate(BASES)}})
        for name, h, first in (("reference", ref_h, ref_start), ("alternative", alt_h, alt_start),
                               ("alternative - reference", diff_h, diff_start))], ignore_index=True)
    note = "" if r == a else (" For an indel the flank right of the allele is shifted by the length difference, "
                              "and the allele's own bases are left out of the difference.")
    ui.show_matplotlib(fig, key="var_logos", name=f"variant_{variant}_{output}", data=data,
                       caption=f"TISM logos of {output} in the reference and alternative windows, aligned on the "
                               f"variant (shaded), with motif matches (relative score ≥ {threshold:.2f}) under "
                               "each; the bottom logo is alternative − reference at every base both windows share."
                               + note)
    if not compared.any():
        st.caption("The windows share no genome base to compare.")


ui.guarded(main)
