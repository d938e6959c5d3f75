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
    logo_values,
    motif_hits,
    tism,
    variant_effects,
)
from tisfm_core.dataset import load_sequences
from tisfm_core.errors import TisfmError
from tisfm_core.plots import agreement_scatter, attribution_logo, base_heatmap
from tisfm_core.runs import resolve_run_data
from tisfm_core.genome import centred_window
from tisfm_core.sequences import decode, parse_sequence_text
from tisfm_core.server import contents_hidden, server_path
from tisfm_core.textfiles import decode_text

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
                               "change over the three substitutions); bars below: motif matches "
                               "(relative score ≥ threshold).")
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
    if st.button(f"Check with exact ISM ({3 * indices.shape[1]} model evaluations)", key="ism_button"):
        with st.spinner("Running exact in-silico mutagenesis ..."):
            exact = ism(run.model, indices[n:n + 1], outputs=[out])
        store[key] = exact
    if key not in store:
        st.caption("Exact ISM runs the model on every single-base mutant; its Pearson correlation with TISM "
                   "tells how far the first-order estimate can be trusted for this sequence.")
        return
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


ui.guarded(main)
