"""Sequence encoding and readers, checked against naive per-character computations."""

from pathlib import Path

import numpy as np
import pytest
import torch

from tisfm_core import sequences as seqmod
from tisfm_core.errors import TisfmError
from tisfm_core.sequences import (
    SequenceSet,
    decode,
    encode,
    one_hot,
    one_hot_torch,
    read_bed_windows,
    read_fasta,
    read_sequence_tsv,
    read_sequences,
)

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "immgen_sample"
LETTERS = list("ACGTacgtNnRYSWKMBDHVrysw")


def naive_index(seq):
    return [{"A": 0, "C": 1, "G": 2, "T": 3}.get(ch.upper(), 4) for ch in seq]


def naive_one_hot(seq):
    out = np.zeros((4, len(seq)), dtype=np.float32)
    for pos, ch in enumerate(seq.upper()):
        if ch in "ACGT":
            out["ACGT".index(ch), pos] = 1.0
    return out


@pytest.fixture
def random_seqs():
    rng = np.random.default_rng(7)
    return ["".join(rng.choice(LETTERS, 37)) for _ in range(25)]


def test_encode_matches_naive_loop(random_seqs):
    got = encode(random_seqs)
    assert got.dtype == np.uint8 and got.shape == (25, 37)
    np.testing.assert_array_equal(got, np.array([naive_index(s) for s in random_seqs]))


def test_one_hot_matches_naive_and_torch(random_seqs):
    indices = encode(random_seqs)
    expected = np.stack([naive_one_hot(s) for s in random_seqs])
    got = one_hot(indices)
    assert got.dtype == np.float32 and got.shape == (25, 4, 37)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(one_hot_torch(torch.from_numpy(indices)).numpy(), expected)
    half = one_hot_torch(torch.from_numpy(indices).long(), dtype=torch.float16)
    assert half.dtype == torch.float16
    np.testing.assert_array_equal(half.float().numpy(), expected)
    # Channels sum to 1 exactly where the base is A/C/G/T.
    np.testing.assert_array_equal(got.sum(axis=1), (indices < 4).astype(np.float32))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_one_hot_torch_on_gpu(random_seqs):
    indices = torch.from_numpy(encode(random_seqs))
    got = one_hot_torch(indices.cuda())
    assert got.device.type == "cuda"
    np.testing.assert_array_equal(got.cpu().numpy(), one_hot(indices.numpy()))


def test_decode_round_trip(random_seqs):
    expected = ["".join("ACGTN"[i] for i in naive_index(s)) for s in random_seqs]
    assert decode(encode(random_seqs)) == expected
    assert encode(decode(encode(random_seqs))).tolist() == encode(random_seqs).tolist()


@pytest.mark.parametrize("bad, shown", [("-", "'-'"), ("5", "'5'"), ("*", "'*'"), ("é", "'é'"),
                                        (" ", "' '"), ("X", "'X'")])
def test_invalid_character_names_id_and_position(bad, shown):
    seqs = ["ACGTACGTACGTACGTACGT", "ACGTACGTACGTACGT" + bad + "CGT"]
    with pytest.raises(TisfmError) as info:
        encode(seqs, ids=["ok", "peak_9"])
    message = str(info.value)
    assert "'peak_9'" in message and "position 17 (1-based)" in message and shown in message


def test_invalid_character_beyond_first_block(monkeypatch):
    monkeypatch.setattr(seqmod, "_ENCODE_BLOCK", 4)
    seqs = ["ACGT"] * 10
    seqs[9] = "AC?T"
    with pytest.raises(TisfmError, match=r"sequence #10 has invalid character '\?' at position 3"):
        encode(seqs)
    seqs[9] = "acgn"
    np.testing.assert_array_equal(encode(seqs)[9], [0, 1, 2, 4])


def test_length_and_empty_errors():
    with pytest.raises(TisfmError, match=r"'b' is 3 bp long; expected 4 bp"):
        encode(["ACGT", "ACG"], ids=["a", "b"])
    with pytest.raises(TisfmError, match=r"'a' is 4 bp long; expected 5 bp \(length=5\)"):
        encode(["ACGT", "ACGT"], ids=["a", "b"], length=5)
    with pytest.raises(TisfmError, match="no sequences"):
        encode([])
    with pytest.raises(TisfmError, match="'b' is empty"):
        encode(["ACGT", ""], ids=["a", "b"])
    with pytest.raises(TisfmError, match="0..4"):
        one_hot(np.array([[0, 5]]))


def test_sequence_set_subset():
    s = SequenceSet(["a", "b", "c"], encode(["AAAA", "CCCC", "GGGT"]))
    assert len(s) == 3 and s.length == 4
    sub = s.subset(np.array([2, 0]))
    assert sub.ids.tolist() == ["c", "a"]
    assert decode(sub.indices) == ["GGGT", "AAAA"]
    np.testing.assert_array_equal(sub.one_hot(), np.stack([naive_one_hot("GGGT"),
                                                           naive_one_hot("AAAA")]))
    assert s.subset(np.array([False, True, False])).ids.tolist() == ["b"]
    with pytest.raises(TisfmError, match="row indices"):
        s.subset([3])


def write(path, text, newline="\n"):
    path.write_bytes(text.replace("\n", newline).encode("utf-8"))
    return path


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_read_fasta_multiline(tmp_path, newline):
    rng = np.random.default_rng(3)
    records = {f"r{i}": "".join(rng.choice(LETTERS, 130)) for i in range(4)}
    text = "\n".join(f">{name} some description\n" + "\n".join(seq[k:k + 60]
                                                               for k in range(0, 130, 60))
                     + "\n" for name, seq in records.items())
    path = write(tmp_path / "x.fa", "\n" + text + "\n\n", newline)
    got = read_fasta(path)
    assert got.ids.tolist() == list(records)
    np.testing.assert_array_equal(got.indices, [naive_index(s) for s in records.values()])
    assert read_sequences(path).ids.tolist() == list(records)


@pytest.mark.parametrize("text, pattern", [
    (">a\nACGT\n>b\nACGT\n>a\nACGT\n", r"'a' appears twice \(lines 1 and 5\)"),
    (">a\nACGT\n>b\n>c\nACGT\n", r"record 'b' \(line 3\) has an empty sequence"),
    (">a\nACGT\n>b\n", r"record 'b' \(line 3\) has an empty sequence"),
    ("ACGT\n>a\nACGT\n", "line 1: text before the first '>'"),
    ("\n\n", "no FASTA records"),
    (">a\nACGT\n>b x\nAC\nG#\n", r"sequence 'b' has invalid character '#' at position 4"),
    (">a\nACGT\n>b\nACG\n", r"sequence 'b' is 3 bp long"),
])
def test_read_fasta_errors(tmp_path, text, pattern):
    path = write(tmp_path / "bad.fa", text)
    with pytest.raises(TisfmError, match=pattern) as info:
        read_fasta(path)
    assert "bad.fa" in str(info.value)


def test_read_sequence_tsv(tmp_path):
    body = "p1\tACGTN\np2\tacgtr\n\np3\tTTTTT\n"
    for text in (body, "id\tsequence\n" + body):
        got = read_sequence_tsv(write(tmp_path / "s.tsv", text, "\r\n"))
        assert got.ids.tolist() == ["p1", "p2", "p3"]
        np.testing.assert_array_equal(got.indices, [naive_index(s) for s in
                                                    ("ACGTN", "acgtr", "TTTTT")])
    assert read_sequences(tmp_path / "s.tsv").ids.tolist() == ["p1", "p2", "p3"]
    with pytest.raises(TisfmError, match="line 3: found 3 tab-separated fields"):
        read_sequence_tsv(write(tmp_path / "b.tsv", "p1\tACGT\np2\tACGT\np3\tAC\tGT\n"))
    with pytest.raises(TisfmError, match=r"'p1' appears twice \(lines 1 and 3\)"):
        read_sequence_tsv(write(tmp_path / "d.tsv", "p1\tACGT\np2\tACGT\np1\tACGT\n"))
    with pytest.raises(TisfmError, match="does not exist"):
        read_sequences(tmp_path / "missing.fa")


# ---------------------------------------------------------------------------------------------
# BED + genome

CONTIGS = {"chr1": 1000, "chr2": 250, "chrM": 73}


@pytest.fixture
def genome(tmp_path):
    rng = np.random.default_rng(11)
    seqs = {name: "".join(rng.choice(list("ACGTacgtNRY"), size)) for name, size in CONTIGS.items()}
    lines = []
    for name, seq in seqs.items():
        lines.append(f">{name} assembled")
        lines += [seq[k:k + 60] for k in range(0, len(seq), 60)]
    path = tmp_path / "genome.fa"
    path.write_text("\n".join(lines) + "\n")
    return path, seqs


def manual_window(seq, centre, length):
    start = centre - length // 2
    text = "".join(seq[p] if 0 <= p < len(seq) else "N" for p in range(start, start + length))
    return naive_index(text)


def test_bed_windows_match_manual_slicing(tmp_path, genome, monkeypatch):
    path, seqs = genome
    rng = np.random.default_rng(5)
    regions = []
    for k in range(60):
        chrom = list(CONTIGS)[k % 3]
        start = int(rng.integers(0, CONTIGS[chrom] - 1))
        end = int(rng.integers(start + 1, CONTIGS[chrom] + 1))
        regions.append((chrom, start, end))
    regions += [("chr1", 0, 10), ("chr1", 990, 1000), ("chrM", 0, 73)]  # windows hang over ends
    bed = tmp_path / "r.bed"
    bed.write_text("track name=test\nbrowser position chr1\n# comment\n"
                   + "".join(f"{c}\t{s}\t{e}\n" for c, s, e in regions))
    expected = np.array([manual_window(seqs[c], (s + e) // 2, 101) for c, s, e in regions])
    got = read_bed_windows(bed, path, length=101)
    assert got.ids.tolist() == [f"{c}:{s}-{e}" for c, s, e in regions]
    np.testing.assert_array_equal(got.indices, expected)
    # Tiny chunks: windows straddle chunk boundaries and each contig is read in many pieces.
    monkeypatch.setattr(seqmod, "_GENOME_CHUNK", 64)
    np.testing.assert_array_equal(read_bed_windows(bed, path, length=101).indices, expected)
    np.testing.assert_array_equal(read_sequences(bed=bed, genome=path, length=101).indices,
                                  expected)


def test_narrowpeak_summit_and_names(tmp_path, genome):
    path, seqs = genome
    rows = [("chr2", 100, 200, "peakA", 10), ("chr1", 500, 900, ".", 399),
            ("chr1", 20, 60, "peakC", -1), ("chrM", 10, 70, "peakD", 0)]
    bed = tmp_path / "p.narrowPeak"
    bed.write_text("chrom\tstart\tend\tname\tscore\tstrand\tsignal\tp\tq\tpeak\n" + "".join(
        f"{c}\t{s}\t{e}\t{n}\t0\t.\t1.0\t2.0\t3.0\t{summit}\n" for c, s, e, n, summit in rows))
    got = read_bed_windows(bed, path, length=40)
    centres = [s + summit if summit >= 0 else (s + e) // 2 for c, s, e, n, summit in rows]
    expected = [manual_window(seqs[c], ctr, 40) for (c, *_), ctr in zip(rows, centres)]
    np.testing.assert_array_equal(got.indices, expected)
    assert got.ids.tolist() == ["peakA", "chr1:500-900", "peakC", "peakD"]


@pytest.mark.parametrize("line, pattern", [
    ("chrX\t1\t5", r"line 2: contig 'chrX' is not in .*genome.fa \(its contigs: 'chr1', 'chr2', 'chrM'\)"),
    ("chr2\t240\t260", r"line 2: interval 'chr2:240-260' runs past the end of 'chr2' \(250 bp\)"),
    ("chr1\t1.5\t9", r"line 2 \(contig 'chr1'\): start '1.5' is not an integer"),
    ("chr1\t1\tten", r"line 2 \(contig 'chr1'\): end 'ten' is not an integer"),
    ("chr1\t5", r"line 2: found 2 column\(s\)"),
    ("chr1\t50\t50", r"line 2: interval 'chr1:50-50' has start >= end"),
    ("chr1\t-5\t50", r"line 2: interval 'chr1:-5-50' starts before 0"),
    ("chr1\t0\t5\tp2", r"region id 'p2' appears twice \(lines 1 and 2\)"),
])
def test_bed_errors(tmp_path, genome, line, pattern):
    path, _ = genome
    bed = tmp_path / "bad.bed"
    bed.write_text("chr1\t1\t5\tp2\n" + line + "\n")
    with pytest.raises(TisfmError, match=pattern) as info:
        read_bed_windows(bed, path, length=20)
    assert "bad.bed" in str(info.value)


def test_read_sequences_arguments(tmp_path, genome):
    path, _ = genome
    with pytest.raises(TisfmError, match="both bed= .* and genome="):
        read_sequences(bed=tmp_path / "r.bed")
    with pytest.raises(TisfmError, match="genome FASTA .* does not exist"):
        read_bed_windows(path, tmp_path / "nope.fa")
    with pytest.raises(TisfmError, match="no sequence input"):
        read_sequences()


def test_aitac_sample_fasta_matches_one_hot_npy():
    if not (SAMPLE / "sequences.fa").is_file():
        pytest.skip("shared ImmGen sample not available")
    got = read_sequences(SAMPLE / "sequences.fa")
    reference = np.load(SAMPLE / "one_hot_seqs.npy", allow_pickle=False)
    assert reference.shape == (100, 4, 251)
    np.testing.assert_array_equal(got.one_hot(), reference.astype(np.float32))
    names = np.load(SAMPLE / "peak_names.npy", allow_pickle=False)
    assert got.ids.tolist() == np.char.decode(names, "utf-8").tolist()


def test_genome_characters_outside_iupac_become_n(tmp_path):
    genome = tmp_path / "odd.fa"
    genome.write_text(">c1\nACGTX-*.acgtnRy\n")
    bed = tmp_path / "one.bed"
    bed.write_text("c1\t0\t15\n")
    got = read_bed_windows(bed, genome, length=15)
    np.testing.assert_array_equal(got.indices[0], [0, 1, 2, 3, 4, 4, 4, 4, 0, 1, 2, 3, 4, 4, 4])


def test_one_hot_torch_rejects_bad_input_on_cpu():
    with pytest.raises(TisfmError, match="0..4"):
        one_hot_torch(torch.tensor([[0, 1, 9]]))
    with pytest.raises(TisfmError, match="integers"):
        one_hot_torch(torch.zeros(2, 3))


def test_forty_thousand_pasted_records_parse_to_the_same_sequences():
    """What the TISM page accepts at once (16 MiB): every record read back in order, ids kept."""
    rng = np.random.default_rng(3)
    indices = rng.integers(0, 4, (40_000, 300)).astype(np.uint8)
    text = "".join(f">s{i} some description\n{s[:150]}\n{s[150:]}\n"
                   for i, s in enumerate(seqmod.decode(indices)))
    got = seqmod.parse_sequence_text(text, length=300)
    assert got.ids[0] == "s0" and got.ids[-1] == "s39999" and len(set(got.ids)) == 40_000
    assert np.array_equal(got.indices, indices)
