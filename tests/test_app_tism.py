"""The TISM page's region scan and variant modes with AppTest, against numbers computed here.

Window predictions come from the model run on windows cut by hand, attribution tracks from TISM of
every window averaged by hand, variant effects from windows built by hand from the genome string.
The figures the page draws are read from the Plotly spec it sends, or captured from the figure
builders (the logos are images).
"""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest
import torch
from app_fixtures import app_runs_folder
from matplotlib.backends.backend_agg import FigureCanvasAgg
from test_app import arr, charts, page, texts

from tisfm_core import plots
from tisfm_core.attribution import tism
from tisfm_core.runs import load_run
from tisfm_core.sequences import encode, one_hot

pytestmark = pytest.mark.slow

LENGTH = 100          # the fixture runs' window
TISM_PAGE = "pages/6_TISM_logos.py"


@pytest.fixture(scope="session")
def fixture_root():
    return app_runs_folder()


@pytest.fixture
def env(fixture_root, tmp_path, monkeypatch):
    monkeypatch.setenv("TISFM_RUNS", str(fixture_root / "runs"))
    monkeypatch.setenv("TISFM_HOME", str(tmp_path / "home"))
    return fixture_root / "runs"


@pytest.fixture(scope="module")
def run(fixture_root):
    return load_run(fixture_root / "runs" / "lineages_full")


def _dna(n, seed):
    return "".join(np.random.default_rng(seed).choice(list("ACGT"), n))


def _predict(model, seqs):
    with torch.no_grad():
        return model(torch.from_numpy(one_hot(encode(seqs)))).numpy().astype(np.float64)


def _hand_starts(n, window, stride):
    starts = list(range(0, n - window + 1, stride))
    return starts if starts[-1] == n - window else starts + [n - window]


def _logo_heights(values, seq):
    """-(mean over the three substitutions) at the reference base, per position: (L,)."""
    ref = np.array(["ACGT".index(c) for c in seq])
    return -(values.sum(axis=0) - values[ref, np.arange(len(seq))]) / 3.0


class Captured:
    """Wraps a figure builder of tisfm_core.plots: records its arguments and figures."""

    def __init__(self, monkeypatch, name):
        self.calls = []
        original = getattr(plots, name)

        def wrapper(*args, **kwargs):
            fig = original(*args, **kwargs)
            self.calls.append((args, kwargs, fig))
            return fig
        monkeypatch.setattr(plots, name, wrapper)


def _scan_page(env, text, stride):
    at = page(TISM_PAGE, env / "lineages_full")
    at.radio(key="tism_task").set_value("Scan a longer region").run()
    at.text_area(key="scan_text").input(text).run()
    at.number_input(key="scan_stride").set_value(stride).run()
    assert not at.exception, at.exception
    return at


# -- scan ---------------------------------------------------------------------------------------------

def test_scan_of_a_pasted_2kb_region_draws_both_tracks_and_a_window_logo(env, run, monkeypatch):
    logos = Captured(monkeypatch, "attribution_logo")
    seq = _dna(2000, 1)
    at = _scan_page(env, ">locus\n" + "\n".join(seq[i:i + 60] for i in range(0, 2000, 60)), 40)
    assert not texts(at.error), texts(at.error)
    starts = _hand_starts(2000, LENGTH, 40)
    windows = [seq[s:s + LENGTH] for s in starts]
    output = at.selectbox(key="scan_output").value
    k = run.outputs.index(output)
    expected = _predict(run.model, windows)[:, k]
    spec = charts(at)[0]
    track = spec["data"][0]
    assert np.allclose(arr(track["x"]), np.array(starts) + 1 + (LENGTH - 1) / 2)
    assert np.allclose(arr(track["y"]), expected, atol=1e-5)
    # attribution track: per-window TISM averaged over the covering windows, by hand
    per_window = tism(run.model, encode(windows), outputs=[k])[:, 0].astype(np.float64)
    total, count = np.zeros((4, 2000)), np.zeros(2000)
    for w, s in enumerate(starts):
        total[:, s:s + LENGTH] += per_window[w]
        count[s:s + LENGTH] += 1
    heights = _logo_heights(total / count, seq)
    bars = [t for t in spec["data"] if t["type"] == "bar" and t.get("yaxis") == "y2"]
    assert sorted(t["name"] for t in bars) == list("ACGT")
    drawn = np.full(2000, np.nan)
    for t in bars:
        x = arr(t["x"]).astype(int) - 1
        assert {seq[i] for i in x} == {t["name"]}            # coloured by the reference base
        drawn[x] = arr(t["y"])
    assert np.allclose(drawn, heights, atol=1e-5)
    # motif hits on their own axis, never on the attribution's
    hit_traces = [t for t in spec["data"] if t["name"].startswith(("hits", "motif hits"))]
    assert hit_traces and all(t["yaxis"] == "y3" for t in hit_traces)
    # the window with the top prediction is shaded and its logo is shown below
    best = int(np.argmax(expected))
    shade = spec["layout"]["shapes"][0]
    assert (shade["x0"], shade["x1"]) == (starts[best] + 0.5, starts[best] + LENGTH + 0.5)
    at.select_slider(key="scan_window").set_value(7).run()
    args, kwargs, fig = logos.calls[-1]
    window = seq[starts[7]:starts[7] + LENGTH]
    own = tism(run.model, encode([window]), outputs=[k])[0, 0].astype(np.float64)
    assert kwargs["start"] == starts[7] + 1
    assert np.allclose(np.asarray(args[0]).sum(axis=0), _logo_heights(own, window), atol=1e-5)
    assert any("logo of this window alone" in c for c in texts(at.caption))
    assert charts(at)[0]["layout"]["shapes"][0]["x0"] == starts[7] + 0.5


def test_scan_output_and_downloads(env, run):
    seq = _dna(450, 2)
    at = _scan_page(env, seq, 50)
    at.selectbox(key="scan_output").set_value(run.outputs[2]).run()
    track = charts(at)[0]["data"][0]
    starts = _hand_starts(450, LENGTH, 50)
    assert np.allclose(arr(track["y"]), _predict(run.model, [seq[s:s + LENGTH] for s in starts])[:, 2], atol=1e-5)
    labels = [b.label for b in at.get("download_button")]
    assert "Window predictions (TSV)" in labels and f"Attribution of {run.outputs[2]} (CSV)" in labels


def test_long_scans_wait_for_the_button(env, run):
    seq = _dna(20_100, 9)
    at = _scan_page(env, seq, 100)
    assert any("This region makes 201 windows" in i for i in texts(at.info)) and not charts(at)
    at.button(key="scan_start").click().run()
    track = charts(at)[0]["data"][0]
    assert len(arr(track["y"])) == 201
    last = _predict(run.model, [seq[-LENGTH:]])[0, 0]           # the last window, flush with the end
    assert abs(arr(track["y"])[-1] - last) < 1e-5
    at.selectbox(key="scan_output").set_value(run.outputs[1]).run()   # the scan is kept: no button again
    assert len(charts(at)) == 1 and not any("windows; the scan" in i for i in texts(at.info))


def test_scan_refusals_are_error_boxes(env, tmp_path):
    # a short sequence with "Refuse"
    at = _scan_page(env, _dna(60, 3), 25)
    assert any("padded with N" in i for i in texts(at.info))       # the default pads
    assert arr(charts(at)[0]["data"][0]["x"]).tolist() == [(1 - 20 + 80) / 2]   # one window, 20 N on the left
    at.radio(key="scan_pad").set_value("Refuse").run()
    assert any("60 bp, shorter than the model's 100-bp window" in e for e in texts(at.error))
    assert not charts(at)
    # exact ISM of too many windows
    at = _scan_page(env, _dna(2000, 4), 1)
    at.radio(key="scan_method").set_value("Exact ISM").run()
    assert any("Exact ISM of 1,901 windows" in e for e in texts(at.error)) and not charts(at)
    # a region longer than the cap, in the user's coordinates
    genome = tmp_path / "genome" / "g.fa"
    genome.parent.mkdir()
    genome.write_text(">chr1\n" + _dna(500, 5) + "\n")
    at = page(TISM_PAGE, env / "lineages_full")
    at.radio(key="tism_task").set_value("Scan a longer region").run()
    at.radio(key="scan_source").set_value("Genome coordinates").run()
    at.text_input(key="scan_genome").input(str(genome))
    at.text_input(key="scan_region").input("chr1:1-100,001").run()
    assert texts(at.error) == ["region chr1:1-100001 is 100,001 bp long; the limit is 100,000 bp"]
    at.text_input(key="scan_region").input("chr1:401-520").run()
    assert texts(at.error) == ["region chr1:401-520 runs past the end of chr1 (500 bp, last position 500)"]


def test_scan_of_genome_coordinates_is_in_genome_positions(env, run, tmp_path):
    contig = _dna(1500, 6)
    genome = tmp_path / "genome" / "g.fa"
    genome.parent.mkdir()
    genome.write_text(">chr2\n" + "\n".join(contig[i:i + 70] for i in range(0, 1500, 70)) + "\n")
    at = page(TISM_PAGE, env / "lineages_full")
    at.radio(key="tism_task").set_value("Scan a longer region").run()
    at.radio(key="scan_source").set_value("Genome coordinates").run()
    at.text_input(key="scan_genome").input(str(genome))
    at.text_input(key="scan_region").input("chr2:201-1,000").run()
    at.number_input(key="scan_stride").set_value(100).run()
    assert not texts(at.error), texts(at.error)
    track = charts(at)[0]["data"][0]
    starts = _hand_starts(800, LENGTH, 100)
    assert [c[1] for c in track["customdata"]] == [f"chr2:{201 + s}-{300 + s}" for s in starts]
    region = contig[200:1000]
    assert np.allclose(arr(track["y"]), _predict(run.model, [region[s:s + LENGTH] for s in starts])[:, 0], atol=1e-5)
    assert os.listdir(genome.parent) == ["g.fa"]                   # no index next to the user's genome


# -- variants -----------------------------------------------------------------------------------------

@pytest.fixture
def genome(tmp_path):
    chroms = {"chr1": _dna(3000, 7), "chr2": _dna(800, 8)}
    path = tmp_path / "genome" / "mm_test.fa"
    path.parent.mkdir()
    path.write_text("".join(f">{c}\n" + "\n".join(s[i:i + 60] for i in range(0, len(s), 60)) + "\n"
                            for c, s in chroms.items()))
    return path, chroms


def _other(base, k=1):
    return "ACGT"[("ACGT".index(base) + k) % 4]


def _vcf(chroms):
    c1 = chroms["chr1"]
    rows = [("chr1", 500, "snp1", c1[499], _other(c1[499])),
            ("chr1", 900, "multi", c1[899], f"{_other(c1[899])},{_other(c1[899], 2)}"),
            ("chr1", 1500, "ins", c1[1499], c1[1499] + "GA"),
            ("chr1", 2000, "badref", _other(c1[1999]), c1[1999]),
            ("chrZ", 100, "nowhere", "A", "C"),
            ("chr1", 2500, "snp2", c1[2499], _other(c1[2499], 3))]
    return ("##fileformat=VCFv4.2\n##contig=<ID=chr1,length=3000>\n##contig=<ID=chr2,length=800>\n"
            "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
            + "".join(f"{c}\t{p}\t{i}\t{r}\t{a}\t.\t.\t.\n" for c, p, i, r, a in rows))


def _hand_pair(seq, pos, ref, alt):
    p = pos - 1
    lo = p + len(ref) // 2 - LENGTH // 2
    applied = seq[:p] + alt + seq[p + len(ref):]
    alo = p + len(alt) // 2 - LENGTH // 2
    return seq[lo:lo + LENGTH], applied[alo:alo + LENGTH], p - lo, p - alo


def _variant_page(env, genome_path):
    at = page(TISM_PAGE, env / "lineages_full")
    at.radio(key="tism_task").set_value("Variant effects").run()
    at.text_input(key="var_genome").input(str(genome_path)).run()
    return at


def test_vcf_upload_table_sorting_and_ref_alt_logos(env, run, genome, tmp_path, monkeypatch):
    logos = Captured(monkeypatch, "variant_logos")
    path, chroms = genome
    at = _variant_page(env, path)
    at.file_uploader(key="var_vcf").set_value(("my_calls.vcf", _vcf(chroms).encode(), "text/vcf")).run()
    assert not at.exception and not texts(at.error), texts(at.error)
    # one row per ALT allele; the two refused variants listed with their reasons and the user's file name
    (warning,) = texts(at.warning)[-1:]
    assert warning.startswith("2 of 7 variants could not be scored (the others are in the table below):")
    assert "my_calls.vcf record 4 (badref), chr1:2000" in warning and "does not match the genome" in warning
    assert "my_calls.vcf record 5 (nowhere), chrZ:100 A>C: contig chrZ is not in mm_test.fa" in warning
    saved = list((tmp_path / "home" / "data" / "uploads").glob("*/*"))
    assert [p.name for p in saved] == ["variants.vcf"]             # an app-chosen name
    table = at.dataframe[0].value
    assert sorted(table["id"]) == sorted(["snp1", "multi", "multi", "ins", "badref", "nowhere", "snp2"])
    output = at.selectbox(key="var_output").value
    k = run.outputs.index(output)
    c1 = chroms["chr1"]
    scored = table[table["status"] == "scored"]
    assert len(scored) == 5
    for _, row in scored.iterrows():
        r, a, _, _ = _hand_pair(c1, row["pos"], row["ref"], row["alt"])
        pred = _predict(run.model, [r, a])
        assert abs(row[f"ref:{output}"] - pred[0, k]) < 1e-5
        assert abs(row[f"diff:{output}"] - (pred[1, k] - pred[0, k])) < 1e-5
    # default order: the largest |change| of the chosen output first, refused rows last
    shown = table[f"diff:{output}"].to_numpy()
    magnitude = np.abs(shown[:5])
    assert (np.diff(magnitude) <= 1e-9).all() and table["status"].iloc[5:].eq("refused").all()
    at.selectbox(key="var_sort").set_value("genome position").run()
    table = at.dataframe[0].value
    assert list(zip(table["chrom"], table["pos"])) == sorted(zip(table["chrom"], table["pos"]))
    # pick the insertion: ref/alt TISM logos of the hand-built windows, aligned on the variant
    at.selectbox(key="var_pick").set_value(3).run()      # the 4th variant of the file: the insertion
    assert "record 3 (ins), chr1:1500" in at.selectbox(key="var_pick").options[at.selectbox(key="var_pick").index]
    args, kwargs, fig = logos.calls[-1]
    r, a, r_off, a_off = _hand_pair(c1, 1500, c1[1499], c1[1499] + "GA")
    span = at.slider(key="var_span").value
    for heights, start, seq, off in ((args[0], kwargs["ref_start"], r, r_off),
                                     (args[1], kwargs["alt_start"], a, a_off)):
        values = tism(run.model, encode([seq]), outputs=[k])[0, 0].astype(np.float64)
        full = _logo_heights(values, seq)
        first = off + start
        assert start == -span
        assert np.allclose(np.asarray(heights).sum(axis=0), full[first:first + np.asarray(heights).shape[1]], atol=1e-5)
    assert kwargs["span"] == (0, 3)
    assert any("aligned on the variant" in c for c in texts(at.caption))


def test_bgzipped_vcf_and_refused_uploads(env, genome, tmp_path):
    import pysam

    path, chroms = genome
    plain = tmp_path / "calls.vcf"
    plain.write_text(_vcf(chroms))
    pysam.tabix_compress(str(plain), str(tmp_path / "calls.vcf.gz"))
    at = _variant_page(env, path)
    at.file_uploader(key="var_vcf").set_value(("calls.vcf.gz", (tmp_path / "calls.vcf.gz").read_bytes(),
                                               "application/gzip")).run()
    assert not texts(at.error), texts(at.error)
    assert len(at.dataframe[0].value) == 7
    # a VCF without records: one error naming the user's file, and the saved copy removed again
    empty = _vcf(chroms).split("#CHROM")[0] + "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
    at.file_uploader(key="var_vcf").set_value(("empty.vcf", empty.encode(), "text/vcf")).run()
    assert texts(at.error) == ["VCF file 'empty.vcf' (uploaded) has no records: there are no variants to score"]
    assert len(list((tmp_path / "home" / "data" / "uploads").iterdir())) == 1
    # plain gzip is refused with the advice to use bgzip
    one = gzip.compress(empty.encode() + b"chr1\t5\t.\tA\tC\t.\t.\t.\n")
    at.file_uploader(key="var_vcf").set_value(("calls2.vcf.gz", one, "application/gzip")).run()
    assert any("plain gzip" in e and "'calls2.vcf.gz' (uploaded)" in e for e in texts(at.error)), texts(at.error)
    assert os.listdir(path.parent) == ["mm_test.fa"]


def test_typed_variants_with_a_bad_line(env, run, genome):
    path, chroms = genome
    c2 = chroms["chr2"]
    at = _variant_page(env, path)
    at.radio(key="var_source").set_value("Type variants").run()
    at.text_area(key="var_text").input(f"chr2:400:{c2[399]}:{_other(c2[399])}\nchr2:400\n"
                                       f"chr2:790:{c2[789]}:{_other(c2[789])}\n").run()
    warning = texts(at.warning)[-1]
    assert "line 2: variant 'chr2:400' is not of the form chrom:pos:ref:alt" in warning
    assert "line 3, chr2:790" in warning and "past the end of chr2" in warning
    table = at.dataframe[0].value
    assert list(table["status"]) == ["scored", "refused"]
    r, a, _, _ = _hand_pair(c2, 400, c2[399], _other(c2[399]))
    pred = _predict(run.model, [r, a])
    output = at.selectbox(key="var_output").value
    k = run.outputs.index(output)
    assert abs(table[f"diff:{output}"].iloc[0] - (pred[1, k] - pred[0, k])) < 1e-5
    at.text_input(key="var_genome").input(str(path.parent / "nope.fa")).run()
    assert texts(at.error) == [f"genome FASTA {path.parent / 'nope.fa'} does not exist"]


# -- the single-window logo ------------------------------------------------------------------------------

def test_sequence_logo_draws_hits_on_their_own_axis(env, fixture_root, run, monkeypatch):
    logos = Captured(monkeypatch, "attribution_logo")
    seq = (fixture_root / "data" / "demo" / "sequences.fa").read_text().split("\n")[1]
    at = page(TISM_PAGE, env / "lineages_full")
    at.text_area(key="tism_text").input(f">mine\n{seq}").run()
    at.slider(key="tism_hit_threshold").set_value(0.7).run()
    at.slider(key="tism_window").set_value((1, LENGTH)).run()
    args, kwargs, fig = logos.calls[-1]
    assert kwargs["hits"] is not None and len(kwargs["hits"]) > 0
    logo, track = fig.axes
    heights = np.asarray(args[0])
    low, high = logo.get_ylim()
    # the logo's y axis spans the effects only (the hits no longer stretch it)
    assert low <= heights.min() and high >= heights.max()
    assert low > heights.min() - 0.2 * (heights.max() - heights.min())
    assert len(track.lines) == len(kwargs["hits"]) and not logo.get_shared_y_axes().joined(logo, track)
    fig.set_dpi(200)                  # as st.pyplot renders it, on a canvas of its own
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    boxes = [t.get_window_extent(canvas.get_renderer()) for t in track.texts]
    assert len(boxes) == len(kwargs["hits"])
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def test_sequence_mode_genome_errors_are_in_the_users_coordinates(env, tmp_path):
    genome = tmp_path / "genome" / "g.fa"
    genome.parent.mkdir()
    genome.write_text(">chr1\n" + _dna(500, 10) + "\n")
    at = page(TISM_PAGE, env / "lineages_full")
    at.radio(key="tism_mode").set_value("Genome coordinates").run()
    at.text_input(key="tism_genome").input(str(genome))
    for region, message in (("chr1:451-520", "region chr1:451-520 runs past the end of chr1 (500 bp, last "
                                             "position 500)"),
                            ("chr1:0-10", "region 'chr1:0-10': positions are 1-based, so the start must be >= 1"),
                            ("chrX:1-100", "contig chrX is not in g.fa (its contigs: '…')")):   # its names are contents
        at.text_input(key="tism_region").input(region).run()
        assert texts(at.error) == [message]       # no temporary BED, index or app folder named
    at.text_input(key="tism_region").input("chr1:201-300").run()
    assert not texts(at.error) and os.listdir(genome.parent) == ["g.fa"]


def test_exact_ism_is_shown_without_asking_where_it_is_incremental(env):
    """A base run (no input attention) gets exact ISM at once, equal to ism() computed here; the
    full run (attention: the naive loop) keeps the button."""
    from tisfm_core.attribution import agreement, ism

    seq = _dna(LENGTH, 3)
    base = env / "cv_lineages" / "fold_0"
    at = page(TISM_PAGE, base)
    at.text_area(key="tism_text").input(f">s\n{seq}\n").run()
    assert not texts(at.error), texts(at.error)
    assert not [b for b in at.button if b.key == "ism_button"]
    model = load_run(base).model
    idx = encode([seq])
    output = at.selectbox(key="tism_output").value
    out = load_run(base).outputs.index(output)
    expected = float(agreement(tism(model, idx, outputs=[out]), ism(model, idx, outputs=[out], method="naive"),
                               indices=idx)[0, 0])
    shown = next(m for m in at.metric if "TISM vs exact ISM" in m.label)
    assert float(shown.value) == pytest.approx(expected, abs=1e-3)

    at = page(TISM_PAGE, env / "lineages_full")
    at.text_area(key="tism_text").input(f">s\n{seq}\n").run()
    assert [b for b in at.button if b.key == "ism_button"]
    assert not [m for m in at.metric if "TISM vs exact ISM" in m.label]
