"""What the TISM page draws for scans and variants: hit rows that never overlap (checked on the
rendered text), logos with hits on their own axis, the scan-track figure, the scan's progress and
per-base table, typed variant lines, VCF display names and the aligned ref/alt difference."""

import numpy as np
import pandas as pd
import pytest
from conftest import sensitive_tisfm
from matplotlib.backends.backend_agg import FigureCanvasAgg

from tisfm_core.attribution import motif_hits, tism
from tisfm_core.errors import TisfmError
from tisfm_core.plots import hit_rows, logo_panels, scan_tracks, variant_logos
from tisfm_core.scan import scan_region
from tisfm_core.sequences import encode
from tisfm_core.variants import Variant, VariantWindows, aligned_difference, parse_variant_lines, read_vcf


def _dna(n, seed):
    return "".join(np.random.default_rng(seed).choice(list("ACGT"), n))


# -- hit rows -------------------------------------------------------------------------------------------

def test_hit_rows_known_layouts():
    assert hit_rows([0, 5, 20], [10, 15, 30], [0, 0, 0]).tolist() == [0, 1, 0]
    # a label wider than its hit pushes its neighbour down; touching extents share a row
    assert hit_rows([0, 12, 20], [10, 14, 30], [30, 0, 0]).tolist() == [0, 1, 0]
    assert hit_rows([0, 12], [10, 14], [0, 0], gap=1.5).tolist() == [0, 1]
    # priority: the best hit is placed first; what fits in no row is left out
    assert hit_rows([0, 0, 0], [10, 10, 10], [0, 0, 0], priority=[0.1, 0.9, 0.5], max_rows=2).tolist() == [-1, 0, 1]
    with pytest.raises(TisfmError, match="1-D of one length"):
        hit_rows([0, 1], [2], [0, 0])


def test_hit_rows_never_overlap_in_a_row():
    rng = np.random.default_rng(3)
    starts = rng.integers(0, 1000, 300).astype(float)
    ends = starts + rng.integers(5, 25, 300)
    widths = rng.uniform(0, 60, 300)
    rows = hit_rows(starts, ends, widths, gap=2.0, max_rows=12, priority=rng.uniform(size=300))
    assert rows.max() <= 11 and (rows >= 0).sum() > 100
    centre = (starts + ends) / 2
    lo, hi = np.minimum(starts, centre - widths / 2) - 2, np.maximum(ends, centre + widths / 2) + 2
    for r in range(rows.max() + 1):
        mine = np.flatnonzero(rows == r)
        for i in mine:
            for j in mine:
                assert i == j or hi[i] <= lo[j] or hi[j] <= lo[i]


# -- logos ----------------------------------------------------------------------------------------------

def _crowded_hits(n, length, seed):
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, length - 12, n)
    names = [f"{'LongFactorName' if k % 3 == 0 else 'TF'}{k}" for k in range(n)]
    return pd.DataFrame({"start": starts, "end": starts + rng.integers(6, 12, n), "name": names,
                         "strand": rng.choice(["+", "-"], n), "relative": rng.uniform(0.8, 1.0, n)})


def test_logo_hits_are_on_their_own_axis_and_their_labels_never_overlap():
    heights = np.zeros((4, 300))
    heights[np.arange(300) % 4, np.arange(300)] = np.sin(np.arange(300) / 7) * 0.3
    hits = _crowded_hits(59, 300, 1)
    edge = pd.DataFrame({"start": [296], "end": [306], "name": ["EdgeFactorWithALongName"], "strand": ["+"],
                         "relative": [1.0]})        # runs past the logo's last column (300)
    hits = pd.concat([hits, edge], ignore_index=True)
    fig = logo_panels([{"heights": heights, "start": 1, "hits": hits, "title": "t"}], max_hit_rows=6)
    logo, track = fig.axes
    low, high = logo.get_ylim()
    assert -0.4 < low < -0.29 and 0.29 < high < 0.4          # the effects' range, not the hits'
    fig.set_dpi(200)                  # as st.pyplot renders it
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    labels = [t.get_window_extent(renderer) for t in track.texts]
    bars = [line.get_window_extent(renderer) for line in track.lines]
    assert len(labels) == len(bars) and 6 < len(labels) < 60
    assert "of 60" in track.get_ylabel()
    for i, a in enumerate(labels):
        assert not any(a.overlaps(b) for b in labels[i + 1:])
        assert not any(a.overlaps(b) for k, b in enumerate(bars) if k != i)
    assert len({round(line.get_ydata()[0]) for line in track.lines}) <= 6
    frame = track.get_window_extent(renderer)
    assert all(frame.x0 - 1 <= a.x0 and a.x1 <= frame.x1 + 1 for a in labels)    # inside the axis
    assert "EdgeFactorWithALongName (+)" in [t.get_text() for t in track.texts]


def test_variant_logos_share_the_y_range_of_ref_and_alt():
    ref = np.zeros((4, 20))
    ref[0] = np.linspace(-0.1, 0.2, 20)
    alt = ref * 2
    diff = alt - ref
    fig = variant_logos(ref, alt, diff, ref_start=-10, alt_start=-10, diff_start=-10, span=(0, 1),
                        ref_hits=pd.DataFrame({"start": [-3], "end": [4], "name": ["Spi1"], "strand": ["+"],
                                               "relative": [0.9]}))
    ref_ax, ref_hits, alt_ax, diff_ax = fig.axes
    assert ref_ax.get_ylim() == alt_ax.get_ylim() and ref_ax.get_ylim()[1] >= 0.4
    assert diff_ax.get_ylim() != ref_ax.get_ylim()
    assert [t.get_text() for t in ref_hits.texts] == ["Spi1 (+)"]
    assert ref_ax.get_xlim() == (-10.5, 9.5)


# -- scans ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model_and_motifs():
    return sensitive_tisfm()


def test_scan_tracks_figure(model_and_motifs):
    model, motifs = model_and_motifs
    seq = _dna(400, 2)
    events = []
    result = scan_region(model, seq, stride=30, progress=lambda *e: events.append(e))
    assert events[0] == ("predicting", 0, len(result.starts)) and events[-1][0] == "attributing"
    assert events[-1][1] == events[-1][2] == len(result.starts)
    hits = motif_hits(motifs, result.indices[None], threshold=0.7)
    fig = scan_tracks(result, 1, hits=hits, selected=2, max_hit_rows=4)
    pred = fig.data[0]
    assert np.allclose(pred.y, result.predictions[:, 1]) and [c[0] for c in pred.customdata] == list(range(len(pred.y)))
    assert np.allclose(pred.x, result.starts + 1 + (48 - 1) / 2)
    bars = [t for t in fig.data if t.yaxis == "y2"]
    heights = np.zeros(400)
    for t in bars:
        heights[np.asarray(t.x) - 1] = t.y
    # the logo height: minus the mean change over the three substitutions at the reference base
    values = result.attribution[1]
    ref = encode([seq])[0]
    hand = -(values.sum(axis=0) - values[ref, np.arange(400)]) / 3
    assert np.allclose(heights, hand, atol=1e-6)
    hit_bars = [t for t in fig.data if t.type == "bar" and t.yaxis == "y3"]
    text = next(t for t in fig.data if t.type == "scatter" and t.mode == "text")
    drawn = sum(len(t.x) for t in hit_bars)
    assert text.yaxis == "y3" and text.name == f"motif hits ({drawn} of {len(hits)} drawn)"
    assert max(max(t.y) for t in hit_bars) <= 3
    shade = fig.layout.shapes[0]
    assert (shade.x0, shade.x1) == (result.starts[2] + 0.5, result.starts[2] + 48 + 0.5)


def test_scan_attribution_table(model_and_motifs):
    model, _ = model_and_motifs
    seq = _dna(100, 4)
    result = scan_region(model, seq, stride=26)
    table = result.attribution_table("2")
    assert list(table.columns) == ["position", "ref", "coverage", "A", "C", "G", "T", "logo_height"]
    assert table["position"].tolist() == list(range(1, 101)) and "".join(table["ref"]) == seq
    starts = [0, 26, 52]
    assert table["coverage"].tolist() == [sum(s <= i < s + 48 for s in starts) for i in range(100)]
    per_window = tism(model, encode([seq[s:s + 48] for s in starts]), outputs=[2])[:, 0]
    total = np.zeros((4, 100))
    for w, s in enumerate(starts):
        total[:, s:s + 48] += per_window[w]
    mean = total / table["coverage"].to_numpy()
    assert np.allclose(table[list("ACGT")].to_numpy().T, mean, atol=1e-6)
    with pytest.raises(TisfmError, match="no attribution"):
        scan_region(model, seq, stride=26, attribution=None).attribution_table(0)


# -- variants -------------------------------------------------------------------------------------------

def test_parse_variant_lines_keeps_going_after_a_bad_line():
    variants, problems = parse_variant_lines("# my SNPs\nchr1:100:a:g,T\n\nchr1:x:A:G\nchr2:5:C:T\r\n")
    assert [(str(v), v.source) for v in variants] == [("chr1:100:A:G", "line 2"), ("chr1:100:A:T", "line 2"),
                                                      ("chr2:5:C:T", "line 5")]
    assert problems == ["line 4: variant 'chr1:x:A:G' is not of the form chrom:pos:ref:alt (1-based pos; e.g. "
                        "chr1:3000123:A:G)"]


def test_read_vcf_names_records_after_the_users_file(tmp_path):
    path = tmp_path / "stored_name.vcf"
    path.write_text("##fileformat=VCFv4.2\n##contig=<ID=chr1,length=100>\n"
                    "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\nchr1\t5\trs1\tA\tC,G\t.\t.\t.\n")
    assert [v.source for v in read_vcf(path, name="my_snps.vcf")] == ["my_snps.vcf record 1"] * 2
    assert read_vcf(path)[0].source == "stored_name.vcf record 1"


def _hand_difference(pos, ref, alt, length, ref_values, alt_values):
    """alt - ref at every genome base both windows hold, by walking both windows' coordinates."""
    p = pos - 1
    ref_lo = p + len(ref) // 2 - length // 2
    alt_lo = p + len(alt) // 2 - length // 2
    alt_genome = {}
    for j in range(length):
        g = alt_lo + j
        if g < p:
            alt_genome[g] = j
        elif g >= p + len(alt):
            alt_genome[g - len(alt) + len(ref)] = j
        elif len(ref) == len(alt):
            alt_genome[g] = j
    out = np.zeros((4, length))
    for i in range(length):
        g = ref_lo + i
        in_allele = p <= g < p + len(ref)
        if g in alt_genome and (len(ref) == len(alt) or not in_allele):
            out[:, i] = alt_values[:, alt_genome[g]] - ref_values[:, i]
    return ref_lo - p, out


@pytest.mark.parametrize("ref, alt", [("A", "G"), ("AC", "GT"), ("ACGTA", "A"), ("A", "ATTGC")])
def test_aligned_difference_matches_genome_coordinates(ref, alt):
    length, pos = 20, 30
    p = pos - 1
    windows = VariantWindows(ref=np.zeros(length, np.uint8), alt=np.zeros(length, np.uint8),
                             ref_offset=p - (p + len(ref) // 2 - length // 2),
                             alt_offset=p - (p + len(alt) // 2 - length // 2))
    rng = np.random.default_rng(len(ref) * 10 + len(alt))
    ref_values, alt_values = rng.normal(size=(4, length)), rng.normal(size=(4, length))
    start, diff, compared = aligned_difference(windows, Variant("chr1", pos, ref, alt), ref_values, alt_values)
    hand_start, hand = _hand_difference(pos, ref, alt, length, ref_values, alt_values)
    assert start == hand_start
    assert np.allclose(diff, hand, atol=1e-6)
    assert compared.sum() == (hand != 0).any(axis=0).sum()
    if len(ref) == len(alt):
        assert compared.all()
