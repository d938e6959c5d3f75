"""Region scans against windows cut by hand: predictions, TISM / ISM tracks averaged by hand,
N padding, genome regions in 1-based coordinates, the scan file and the CLI handler."""

import os

import numpy as np
import pandas as pd
import pytest
from conftest import sensitive_tisfm

from tisfm_core.attribution import ism, load_attribution, tism
from tisfm_core.cli import build_parser
from tisfm_core.errors import TisfmError
from tisfm_core.genome import Region, open_genome, parse_region, read_region
from tisfm_core.runs import load_run, save_run
from tisfm_core.scan import MAX_REGION, load_scan, save_scan, scan_region, window_starts
from tisfm_core.sequences import decode, encode
from tisfm_core.training import predict_batches

L = 48


@pytest.fixture(scope="module")
def model():
    return sensitive_tisfm()[0]


def _random_dna(n, random_state=0):
    return "".join(np.random.default_rng(random_state).choice(list("ACGT"), n))


def _hand_track(per_window, starts, n):
    """Mean over covering windows, one base at a time (per_window: (W, R, 4, L))."""
    out = np.zeros(per_window.shape[1:3] + (n,))
    count = np.zeros(n, dtype=int)
    for i in range(n):
        for w, s in enumerate(starts):
            if s <= i < s + per_window.shape[-1]:
                out[:, :, i] += per_window[w, :, :, i - s]
                count[i] += 1
    return out / count, count


def test_window_starts_last_window_flush_with_the_end():
    assert window_starts(130, 48, 20).tolist() == [0, 20, 40, 60, 80, 82]
    assert window_starts(120, 48, 24).tolist() == [0, 24, 48, 72]
    assert window_starts(48, 48, 7).tolist() == [0]
    assert window_starts(100, 48, 48).tolist() == [0, 48, 52]


def _aitac():
    import torch

    from tisfm_core.aitac import AITAC

    torch.manual_seed(0)
    return AITAC(n_outputs=3, length=L, n_filters=8).eval()


def test_aitac_scan_equals_predict_and_tism_on_hand_cut_windows():
    aitac = _aitac()
    seq = _random_dna(70, random_state=4)
    result = scan_region(aitac, seq, stride=11, device="cpu")
    starts = [0, 11, 22]
    windows = encode([seq[s:s + L] for s in starts])
    np.testing.assert_allclose(result.predictions, predict_batches(aitac, windows), atol=1e-6)
    expected, _ = _hand_track(tism(aitac, windows), starts, len(seq))
    np.testing.assert_allclose(result.attribution, expected, atol=1e-5 * np.abs(expected).max())


def test_predictions_equal_predict_on_windows_cut_by_hand(model):
    seq = _random_dna(157)
    result = scan_region(model, seq, stride=23, attribution=None, device="cpu")
    starts = [0, 23, 46, 69, 92, 109]
    assert result.starts.tolist() == starts and result.attribution is None
    expected = predict_batches(model, encode([seq[s:s + L] for s in starts]), device="cpu")
    np.testing.assert_allclose(result.predictions, expected, atol=1e-6, rtol=1e-5)
    assert result.predictions.shape == (6, 3) and np.ptp(result.predictions[:, 0]) > 0
    assert result.outputs == ["0", "1", "2"]
    hand = [sum(s <= i < s + L for s in starts) for i in range(157)]
    assert result.coverage.tolist() == hand and min(hand) == 1 and max(hand) == 3
    np.testing.assert_array_equal(result.windows(), encode([seq[s:s + L] for s in starts]))


def test_tism_track_is_the_mean_of_per_window_tism(model):
    seq = list(_random_dna(131, random_state=1))
    seq[60] = "N"
    seq = "".join(seq)
    result = scan_region(model, seq, stride=17, outputs=[2, 0], device="cpu")
    starts = result.starts.tolist()
    assert starts == [0, 17, 34, 51, 68, 83]
    per_window = np.stack([tism(model, encode(seq[s:s + L]), outputs=[2, 0])[0] for s in starts])
    expected, count = _hand_track(per_window, starts, len(seq))
    np.testing.assert_array_equal(result.coverage, count)
    assert result.attribution.shape == (2, 4, 131) and result.attribution.dtype == np.float32
    scale = np.abs(expected).max()
    assert scale > 0
    np.testing.assert_allclose(result.attribution, expected, atol=1e-5 * scale)
    assert np.all(result.attribution[:, :, 60] == 0)                       # N: no reference base
    np.testing.assert_allclose(result.predictions,
                               predict_batches(model, encode([seq[s:s + L] for s in starts]))[:, [2, 0]],
                               atol=1e-6)


def test_ism_track_is_the_mean_of_per_window_ism(model):
    seq = _random_dna(80, random_state=2)
    result = scan_region(model, seq, stride=16, attribution="ism", device="cpu", batch_size=7)
    starts = result.starts.tolist()
    assert starts == [0, 16, 32] and result.method == "ism"
    per_window = np.stack([ism(model, encode(seq[s:s + L]))[0] for s in starts])
    expected, _ = _hand_track(per_window, starts, len(seq))
    np.testing.assert_allclose(result.attribution, expected, atol=1e-5 * np.abs(expected).max())


def test_short_region_refused_or_padded_with_n_centred(model):
    seq = _random_dna(29, random_state=3)
    with pytest.raises(TisfmError, match="29 bp, shorter than the model's 48-bp window; pad it with N"):
        scan_region(model, seq, stride=10)
    result = scan_region(model, seq, stride=10, pad="center", device="cpu")
    padded = "N" * 9 + seq + "N" * 10
    assert result.starts.tolist() == [-9] and result.coverage.tolist() == [1] * 29
    assert decode(result.window(0)) == [padded]
    np.testing.assert_allclose(result.predictions, predict_batches(model, encode(padded)), atol=1e-6)
    np.testing.assert_allclose(result.attribution, tism(model, encode(padded))[0][:, :, 9:38], atol=1e-6)
    assert result.window_label(0) == "-8-39"                 # 1-based, starting before the sequence


def test_bad_scan_arguments(model):
    seq = _random_dna(100)
    with pytest.raises(TisfmError, match="stride must be a positive integer, got 0"):
        scan_region(model, seq, stride=0)
    with pytest.raises(TisfmError, match="stride 49 is longer than the model's 48-bp window"):
        scan_region(model, seq, stride=49)
    with pytest.raises(TisfmError, match=f"100,001 bp long; scans are limited to {MAX_REGION:,} bp"):
        scan_region(model, "A" * (MAX_REGION + 1), stride=48)
    with pytest.raises(TisfmError, match="attribution must be 'tism', 'ism' or None"):
        scan_region(model, seq, stride=10, attribution="grad")
    with pytest.raises(TisfmError, match="pad must be 'refuse' or 'center'"):
        scan_region(model, seq, stride=10, pad="N")
    with pytest.raises(TisfmError, match="'Mono' is not an output of this model; valid outputs: 0, 1, 2"):
        scan_region(model, seq, stride=10, outputs=["Mono"])
    with pytest.raises(TisfmError, match="invalid character 'X' at position 3"):
        scan_region(model, "ACXT" * 20, stride=10)
    with pytest.raises(TisfmError, match="give one sequence, got 2"):
        scan_region(model, encode([seq, seq]), stride=10)


# -- genome regions ------------------------------------------------------------------------------

@pytest.fixture()
def genome(tmp_path):
    chroms = {"chr1": _random_dna(400, random_state=10), "chr2": _random_dna(130, random_state=11)}
    folder = tmp_path / "genome"
    folder.mkdir()
    path = folder / "g.fa"
    path.write_text("".join(f">{c} some description\n" + "\n".join(s[i:i + 60] for i in range(0, len(s), 60))
                            + "\n" for c, s in chroms.items()))
    return path, chroms


def test_parse_region_in_users_coordinates():
    assert parse_region(" chr1:3,000,001-3,002,000 ") == Region("chr1", 3000001, 3002000)
    assert parse_region("HLA-A*01:01:5-9") == Region("HLA-A*01:01", 5, 9)
    assert len(parse_region("chr2:10-10")) == 1 and str(parse_region("chr2:1,000-2000")) == "chr2:1000-2000"
    with pytest.raises(TisfmError, match="is not of the form chrom:start-end"):
        parse_region("chr1:100")
    with pytest.raises(TisfmError, match="is not of the form chrom:start-end"):
        parse_region("chr1:1,00-200")
    with pytest.raises(TisfmError, match="1-based, so the start must be >= 1"):
        parse_region("chr1:0-10")
    with pytest.raises(TisfmError, match="the start 20 lies after the end 10"):
        parse_region("chr1:20-10")


def test_read_region_never_writes_next_to_the_genome(genome, tmp_path):
    path, chroms = genome
    cache = tmp_path / "cache"
    got = read_region(path, "chr1:61-190", index_dir=cache)
    assert got.region == Region("chr1", 61, 190)
    assert decode(got.indices) == [chroms["chr1"][60:190]]
    assert sorted(os.listdir(path.parent)) == ["g.fa"]
    assert [p.suffix for p in cache.iterdir()] == [".fai"]
    with open_genome(path, index_dir=cache) as g:
        assert g.contigs == {"chr1": 400, "chr2": 130} and g.index_path.parent == cache
        assert read_region(g, "chr2:1-130").indices.shape == (130,)
    with pytest.raises(TisfmError, match=r"contig chr3 is not in g.fa \(its contigs: 'chr1', 'chr2'\)"):
        read_region(path, "chr3:1-10", index_dir=cache)
    with pytest.raises(TisfmError, match=r"region chr2:100-131 runs past the end of chr2 \(130 bp, last "
                                         "position 130\\)"):
        read_region(path, "chr2:100-131", index_dir=cache)
    with pytest.raises(TisfmError, match="region chr1:1-101 is 101 bp long; the limit is 100 bp"):
        read_region(path, "chr1:1-101", max_length=100, index_dir=cache)
    with pytest.raises(TisfmError, match="genome FASTA .*nothere.fa does not exist"):
        read_region(tmp_path / "nothere.fa", "chr1:1-10", index_dir=cache)
    ragged = tmp_path / "ragged.fa"
    ragged.write_text(">chr1\nACGTACGT\nACG\nACGTACGT\n")
    with pytest.raises(TisfmError, match="cannot index genome FASTA .*ragged.fa"):
        read_region(ragged, "chr1:1-10", index_dir=cache)


def test_an_index_next_to_the_genome_is_used_and_a_stale_one_is_not_rewritten(genome, tmp_path):
    import pyfaidx

    path, chroms = genome
    pyfaidx.Faidx(str(path)).close()                    # the user's own index
    fai = path.parent / "g.fa.fai"
    with open_genome(path, index_dir=tmp_path / "cache") as g:
        assert g.index_path == fai
    assert not (tmp_path / "cache").exists()
    old = fai.read_bytes()
    os.utime(fai, (1, 1))                               # older than the FASTA: stale
    with open_genome(path, index_dir=tmp_path / "cache") as g:
        assert g.index_path.parent == tmp_path / "cache"
        assert decode(g.fetch("chr2", 0, 130)) == [chroms["chr2"]]
    assert fai.read_bytes() == old and fai.stat().st_mtime == 1


def test_bgzip_genome_with_its_index_in_the_cache(genome, tmp_path):
    import pysam

    path, chroms = genome
    gz = path.parent / "g.fa.gz"
    pysam.tabix_compress(str(path), str(gz))
    got = read_region(gz, "chr1:300-400", index_dir=tmp_path / "cache")
    assert decode(got.indices) == [chroms["chr1"][299:400]]
    assert sorted(p.suffix for p in (tmp_path / "cache").iterdir()) == [".fai", ".gzi"]
    assert sorted(os.listdir(path.parent)) == ["g.fa", "g.fa.gz"]


def test_scan_of_a_genome_region_in_genome_coordinates(genome, tmp_path, model):
    path, chroms = genome
    region = read_region(path, "chr1:11-110", index_dir=tmp_path / "cache")
    result = scan_region(model, region, stride=30, device="cpu")
    assert result.starts.tolist() == [0, 30, 52]
    assert result.starts_1based.tolist() == [11, 41, 63] and result.ends_1based.tolist() == [58, 88, 110]
    assert result.positions_1based[[0, -1]].tolist() == [11, 110]
    table = result.prediction_table()
    assert table["window"].tolist() == ["chr1:11-58", "chr1:41-88", "chr1:63-110"]
    hand = predict_batches(model, encode([chroms["chr1"][s - 1:s + L - 1] for s in (11, 41, 63)]))
    np.testing.assert_allclose(table[["0", "1", "2"]].to_numpy(), hand, atol=1e-6)


def test_scan_file_round_trip_and_attribution_reader(genome, tmp_path, model):
    path, _ = genome
    result = scan_region(model, read_region(path, "chr1:5-90", index_dir=tmp_path / "c"), stride=12,
                         device="cpu")
    save_scan(tmp_path / "s.npz", result)
    back = load_scan(tmp_path / "s.npz")
    assert back.region == Region("chr1", 5, 90) and back.method == "tism" and back.outputs == ["0", "1", "2"]
    np.testing.assert_array_equal(back.starts, result.starts)
    np.testing.assert_array_equal(back.indices, result.indices)
    np.testing.assert_array_equal(back.attribution, result.attribution)
    np.testing.assert_array_equal(back.predictions, result.predictions)
    as_attribution = load_attribution(tmp_path / "s.npz")     # the logo pages can read it too
    assert as_attribution.ids == ["chr1:5-90"] and as_attribution.values.shape == (1, 3, 4, 86)
    plain = scan_region(model, _random_dna(60), stride=12, attribution=None, device="cpu")
    save_scan(tmp_path / "p.npz", plain)
    back = load_scan(tmp_path / "p.npz")
    assert back.region is None and back.attribution is None and back.method is None
    np.save(tmp_path / "x.npy", np.zeros(3))
    with pytest.raises(TisfmError, match="is not a scan file"):
        load_scan(tmp_path / "x.npy")


# -- command line ---------------------------------------------------------------------------------

def _parser():
    parser = build_parser()
    return parser


def test_cli_scan_handler(genome, tmp_path, capsys):
    model, motifs = sensitive_tisfm()
    run = save_run(tmp_path / "run", model, outputs=["B", "T", "NK"], motifs=motifs)
    path, chroms = genome
    seq = chroms["chr1"][:100]
    fasta = tmp_path / "one.fa"
    fasta.write_text(f">locus\n{seq}\n")
    parser = _parser()
    args = parser.parse_args(["scan", str(run), "--sequences", str(fasta), "--stride", "20", "--outputs",
                              "NK,B", "--out", str(tmp_path / "s.npz"), "--device", "cpu"])
    args.func(args)
    assert capsys.readouterr().out.startswith(f"scan: {fasta} (100 bp): 4 windows of 48 bp, stride 20, 2 outputs")
    saved = load_scan(tmp_path / "s.npz")
    expected = scan_region(load_run(run).model, seq, stride=20, outputs=[2, 0], device="cpu")
    assert saved.outputs == ["NK", "B"]
    np.testing.assert_allclose(saved.attribution, expected.attribution, atol=1e-6)
    table = pd.read_csv(tmp_path / "s.windows.tsv", sep="\t")
    assert table.columns.tolist() == ["window", "start", "end", "NK", "B"]
    assert table["start"].tolist() == [1, 21, 41, 53]
    np.testing.assert_allclose(table[["NK", "B"]].to_numpy(), expected.predictions, atol=1e-5)

    args = parser.parse_args(["scan", str(run), "--region", "chr1:101-160", "--genome", str(path), "--stride",
                              "48", "--attribution", "none", "--out", str(tmp_path / "r"), "--device", "cpu",
                              "--index-dir", str(tmp_path / "cache")])
    args.func(args)
    table = pd.read_csv(tmp_path / "r.windows.tsv", sep="\t")
    assert table["window"].tolist() == ["chr1:101-148", "chr1:113-160"]
    assert load_scan(tmp_path / "r").attribution is None and sorted(os.listdir(path.parent)) == ["g.fa"]

    bad = [(["--region", "chr1:1-100"], "--region needs --genome"),
           (["--sequences", str(fasta), "--genome", str(path)], "--genome is used with --region only"),
           (["--region", "chr1:1-200000", "--genome", str(path)], "is 200,000 bp long; the limit is 100,000 bp"),
           (["--sequences", str(fasta), "--pad", "refuse", "--outputs", "Mono"], "'Mono' is not an output")]
    two = tmp_path / "two.fa"
    two.write_text(f">a\n{seq}\n>b\n{seq[:50]}\n")
    bad.append((["--sequences", str(two)], "holds 2 sequences; tisfm scan takes one region per call"))
    for extra, message in bad:
        args = parser.parse_args(["scan", str(run), "--stride", "10", "--out", str(tmp_path / "x.npz"),
                                  "--index-dir", str(tmp_path / "cache"), *extra])
        with pytest.raises(TisfmError, match=message):
            args.func(args)
    assert not (tmp_path / "x.npz").exists()
