"""Tests for tisfm_core.motifs: readers, writer, fingerprint, information content and kernels."""

import collections
import hashlib
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
from Bio import motifs as bio_motifs

from tisfm_core.errors import TisfmError
from tisfm_core.motifs import (
    MotifSet,
    load_motifs,
    read_homer,
    read_jaspar_file,
    read_jaspar_release,
    read_meme,
    read_transfac,
    write_meme,
)

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "data" / "motifs"
SHARED = Path(__file__).resolve().parents[2] / "shared"
CISBP = SHARED / "data" / "motifs" / "cisBP_mouse.meme"
REFERENCE = SHARED / "data" / "reference_tisfm"


@pytest.fixture(scope="module")
def cisbp():
    if not CISBP.is_file():
        pytest.skip(f"{CISBP} is not available")
    return read_meme(CISBP)


def reference_style_matrices(path):
    """The reference code's parse (utils.MEME.parse): split on blank lines, drop the last chunk and the
    4 header chunks, then line 0 = MOTIF, line 1 = header, the rest = rows. Independent of our parser."""
    chunks = path.read_text().split("\n\n")[:-1][4:]
    out = []
    for chunk in chunks:
        lines = chunk.strip("\n").split("\n")
        out.append((lines[0].split()[-1], np.array([[float(x) for x in row.split()] for row in lines[2:]])))
    return out


def independent_kernels(matrices, era, width, n_pad=4):
    out = np.zeros((2 * len(matrices) + n_pad, 4, width))
    for k, matrix in enumerate(matrices):
        w = len(matrix)
        start = 0 if era == "paper" else (width - w) // 2
        for pos in range(w):
            for b, base in enumerate("ACGT"):
                out[2 * k, b, start + pos] = matrix[pos, b]
                # reverse complement: position w-1-pos, complementary base
                out[2 * k + 1, "TGCA".index(base), start + w - 1 - pos] = matrix[pos, b]
    return out


def write(tmp_path, text, name="m.meme"):
    path = tmp_path / name
    path.write_text(text)
    return path


MEME_HEAD = "MEME version 4\n\nALPHABET= ACGT\n\nstrands: + -\n\n"


# ----------------------------------------------------------------------------------------------
# cisBP (the paper's motif file)


def test_cisbp_counts_widths_ids_and_names(cisbp):
    assert len(cisbp) == 862
    assert dict(collections.Counter(cisbp.widths.tolist())) == {
        5: 1, 6: 5, 7: 30, 8: 147, 9: 153, 10: 251, 11: 60, 12: 38, 13: 28, 14: 28, 15: 57, 16: 12,
        17: 16, 18: 15, 19: 3, 20: 5, 21: 8, 22: 2, 30: 3}
    assert cisbp.max_width == 30
    assert cisbp.ids[455] == "Ebf1+M3690_1.02+D"
    assert cisbp.ids[491] == "Pax5+M1848_1.02+I"
    assert cisbp.ids[542].startswith("Ctcf+")
    assert cisbp.names[491] == "Pax5"
    assert cisbp.index("Pax5+M1848_1.02+I") == 491
    assert cisbp.source == "cisBP_mouse.meme"
    widest = {cisbp.ids[k] for k in np.flatnonzero(cisbp.widths == 30)}
    assert widest == {"Rela+M6138_1.02+D", "Bcl6+M6136_1.02+D", "Pax4+M1896_1.02+D"}
    for matrix in cisbp.matrices:
        np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-12)


def test_cisbp_matrices_match_reference_style_parse(cisbp):
    ref = reference_style_matrices(CISBP)
    assert [name for name, _ in ref] == list(cisbp.ids)
    for (_, expected), matrix in zip(ref, cisbp.matrices):
        np.testing.assert_allclose(matrix, expected, atol=1e-6)


def test_cisbp_information_content_known_values(cisbp):
    ic = cisbp.information_content()
    assert ic.shape == (862,)
    assert cisbp.ids[int(np.argmin(ic))].startswith("Atf1+M0294")
    assert cisbp.ids[int(np.argmax(ic))].startswith("Nr1h2+M6383")
    assert ic.min() == pytest.approx(0.86, abs=0.005)
    assert ic.max() == pytest.approx(30.77, abs=0.005)
    assert np.median(ic) == pytest.approx(8.85, abs=0.005)
    # uniform background given explicitly = the default formula
    np.testing.assert_allclose(cisbp.information_content([0.25] * 4), ic, atol=1e-12)


def test_cisbp_kernels_paper_and_head(cisbp):
    ref = [m for _, m in reference_style_matrices(CISBP)]
    paper = cisbp.kernels("paper")
    assert paper.shape == (1728, 4, 30) and paper.dtype == np.float32
    assert not paper[-4:].any()
    assert paper[:-4].any(axis=(1, 2)).all()  # every real channel holds a motif
    # the reverse complement is the forward block flipped on both axes, in the same columns
    # (flipping the whole 30-wide buffer would move a left-aligned block to the right edge)
    for k, w in enumerate(cisbp.widths):
        np.testing.assert_array_equal(paper[2 * k + 1, :, :w], paper[2 * k, ::-1, w - 1::-1])
        assert not paper[2 * k:2 * k + 2, :, w:].any()
    np.testing.assert_allclose(paper, independent_kernels(ref, "paper", 30), atol=1e-6)

    head = cisbp.kernels("head")
    assert head.shape == (1728, 4, 30)
    np.testing.assert_allclose(head, independent_kernels(ref, "head", 30), atol=1e-6)
    k = int(np.flatnonzero(cisbp.widths == 5)[0])  # Prrx2, the only width-5 motif
    assert cisbp.ids[k].startswith("Prrx2")
    for channel in (2 * k, 2 * k + 1):
        occupied = np.flatnonzero(head[channel].any(axis=0))
        assert occupied.tolist() == list(range(12, 17))  # floor((30 - 5) / 2) = 12
        assert np.flatnonzero(paper[channel].any(axis=0)).tolist() == list(range(5))
    np.testing.assert_allclose(head[2 * k, :, 12:17], cisbp.matrices[k].T, atol=1e-7)


@pytest.mark.parametrize("folder, era", [("base_head", "head"), ("full_paper", "paper")])
def test_kernels_equal_reference_conv_weights(cisbp, folder, era):
    torch = pytest.importorskip("torch")
    path = REFERENCE / folder / "state_dict.pt"
    if not path.is_file():
        pytest.skip(f"{path} is not available")
    weight = torch.load(path, weights_only=True)["conv_motif.weight"].numpy().astype(np.float64)
    ours = cisbp.kernels(era)
    other = cisbp.kernels("paper" if era == "head" else "head")
    assert weight.shape == ours.shape == (1728, 4, 30)
    # the reference parses the text into float32; we renormalise rows (deviations up to 4.6e-7)
    np.testing.assert_allclose(ours, weight, atol=1e-6, rtol=0)
    assert np.mean((other - weight) ** 2) > 0.05
    # per channel, of all placements of the motif in the buffer ours fits best (robust to noise)
    width = 30
    for channel in range(2 * len(cisbp)):
        k = channel // 2
        w = int(cisbp.widths[k])
        if w == width:
            continue
        block = cisbp.matrices[k].T if channel % 2 == 0 else cisbp.matrices[k].T[::-1, ::-1]
        errors = []
        for start in range(width - w + 1):
            candidate = np.zeros((4, width))
            candidate[:, start:start + w] = block
            errors.append(np.mean((weight[channel] - candidate) ** 2))
        assert int(np.argmin(errors)) == (0 if era == "paper" else (width - w) // 2)


# ----------------------------------------------------------------------------------------------
# MEME parser robustness (fixture files)


def test_meme_crlf_urls_blank_lines_alt_names():
    path = FIXTURES / "crlf.meme"
    raw = path.read_bytes()
    assert b"\r\n" in raw and not raw.endswith(b"\n")  # the fixture is what the test claims
    m = read_meme(path)
    assert m.ids == ("MA0001.1", "Pax5+M1848_1.02+I", "third")
    assert m.names == ("AGL3", "Pax5", "long alt name")
    np.testing.assert_allclose(m.matrices[0], [[0.5, 0.25, 0.25, 0], [0.1, 0.2, 0.3, 0.4], [0, 0, 0, 1]])
    np.testing.assert_allclose(m.matrices[1], [[0.25] * 4, [0.7, 0.1, 0.1, 0.1]])  # w= absent
    # last row (no trailing newline) sums to 0.99 and is renormalised
    np.testing.assert_allclose(m.matrices[2], [[0.333, 0.333, 0.334, 0], [0.2 / 0.99] * 3 + [0.39 / 0.99]])
    assert m.source == "crlf.meme"
    assert read_meme(path, source="custom").source == "custom"


def test_meme_counts_are_normalised_with_one_warning():
    with pytest.warns(UserWarning, match="2 motif") as record:
        m = read_meme(FIXTURES / "counts.meme")
    assert len([w for w in record if issubclass(w.category, UserWarning)]) == 1
    assert m.ids == ("c1", "p1", "c2") and m.names == ("c1", "p1", "Counted")
    np.testing.assert_allclose(m.matrices[0], [[0.1, 0.2, 0.3, 0.4], [1, 0, 0, 0]])
    np.testing.assert_allclose(m.matrices[1], [[0.1, 0.2, 0.3, 0.4]])
    np.testing.assert_allclose(m.matrices[2], [[0.25] * 4])


def test_meme_without_warning_for_probabilities(tmp_path):
    path = write(tmp_path, MEME_HEAD + "MOTIF a\nletter-probability matrix: w= 1\n0.25 0.25 0.25 0.25")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_meme(path).ids == ("a",)


def test_meme_skips_log_odds_matrices(tmp_path):
    text = (MEME_HEAD + "MOTIF a\nlog-odds matrix: alength= 4 w= 2\n-1 2 -3 4\n5 -6 7 -8\n"
            "letter-probability matrix: alength= 4 w= 2\n1 0 0 0\n0 1 0 0\n")
    np.testing.assert_array_equal(read_meme(write(tmp_path, text)).matrices[0], [[1, 0, 0, 0], [0, 1, 0, 0]])


ONE = "MOTIF m1 Alt\nletter-probability matrix: alength= 4 w= 2 nsites= 20 E= 0\n"


@pytest.mark.parametrize("text, pattern", [
    # rows must have exactly 4 numbers (line 9 is the first row)
    (MEME_HEAD + ONE + "0.5 0.5 0\n0.25 0.25 0.25 0.25\n", r"line 9 \(motif 'm1'\).*exactly 4 numbers.*found 3"),
    (MEME_HEAD + ONE + "0.5 0.5 0 x\n0.25 0.25 0.25 0.25\n", r"line 9 \(motif 'm1'\).*exactly 4 numbers"),
    (MEME_HEAD + ONE + "0.5 0.5 0 nan\n0.25 0.25 0.25 0.25\n", r"line 9 \(motif 'm1'\).*finite"),
    (MEME_HEAD + ONE + "1.5 -0.5 0 0\n0.25 0.25 0.25 0.25\n", r"line 9 \(motif 'm1'\).*negative"),
    # row count must equal w=
    (MEME_HEAD + ONE + "0.25 0.25 0.25 0.25\nURL http://x\n", r"line 10: motif 'm1' has 1 matrix rows.*w= 2"),
    (MEME_HEAD + ONE + "0.25 0.25 0.25 0.25\n\n", r"line 9: motif 'm1' has 1 matrix rows.*w= 2"),
    (MEME_HEAD + ONE + "1 0 0 0\n0 1 0 0\n0 0 1 0\n", r"line 11: motif 'm1' has more matrix rows.*w= 2"),
    # motif with zero rows
    (MEME_HEAD + "MOTIF m1\nletter-probability matrix: alength= 4\nMOTIF m2\n", r"line 8: motif 'm1' has no matrix rows"),
    (MEME_HEAD + "MOTIF m1\nMOTIF m2\n", r"line 7: motif 'm1' has no letter-probability matrix"),
    (MEME_HEAD + "MOTIF m1\nletter-probability matrix: alength= 4 w= 0\n", r"line 8: motif 'm1' has w= 0"),
    # row sums
    (MEME_HEAD + ONE + "0.25 0.25 0.25 0.25\n0.2 0.1 0.1 0.1\n", r"line 10: a row of motif 'm1' sums to 0.5"),
    (MEME_HEAD + ONE + "0 0 0 0\n0.25 0.25 0.25 0.25\n", r"line 9: a row of motif 'm1' sums to 0\b"),
    (MEME_HEAD + ONE + "5 5 5 5\n0.25 0.25 0.25 0.25\n", r"line 10: a row of motif 'm1' sums to 1\b|line 9: a row of motif 'm1' sums to 20"),
    # duplicate ids name both lines
    (MEME_HEAD + ONE + "1 0 0 0\n0 1 0 0\n" + ONE + "1 0 0 0\n0 1 0 0\n", r"line 11: duplicate motif id 'm1' \(first defined on line 7\)"),
    # other structural problems
    (MEME_HEAD + "MOTIF\n", r"line 7: MOTIF line without a motif id"),
    (MEME_HEAD + "letter-probability matrix: w= 1\n1 0 0 0\n", r"line 7: letter-probability matrix before any MOTIF"),
    (MEME_HEAD + "1 0 0 0\n", r"line 7: a row of numbers outside"),
    (MEME_HEAD + "MOTIF m1\nletter-probability matrix: alength= 20 w= 1\n", r"line 8: motif 'm1' has alength= 20"),
    ("MEME version 4\n\nALPHABET= ACDEFGHIKLMNPQRSTVWY\n\n" + ONE + "1 0 0 0\n0 1 0 0\n", r"line 3: only the DNA alphabet"),
    ("MEME version 4\nALPHABET= ACGU\n" + ONE + "1 0 0 0\n0 1 0 0\n", r"line 2: only the DNA alphabet"),
    # empty file, file without motifs
    ("", r"is empty"),
    ("\n  \n", r"is empty"),
    (MEME_HEAD + "Background letter frequencies\nA 0.25 C 0.25 G 0.25 T 0.25\n", r"contains no motifs"),
])
def test_meme_validation_errors(tmp_path, text, pattern):
    path = write(tmp_path, text)
    with pytest.raises(TisfmError, match=pattern) as info:
        read_meme(path)
    assert str(path) in str(info.value)


def test_meme_zero_row_error_names_line_and_motif(tmp_path):
    path = write(tmp_path, MEME_HEAD + ONE + "0.25 0.25 0.25 0.25\n0 0 0 0\n")
    with pytest.raises(TisfmError, match=r"line 10: a row of motif 'm1' sums to 0;"):
        read_meme(path)


def test_missing_file_errors_name_the_path(tmp_path):
    missing = tmp_path / "nope.meme"
    for reader in (read_meme, read_jaspar_file, read_transfac, read_homer, load_motifs):
        with pytest.raises(TisfmError, match="nope.meme does not exist"):
            reader(missing)


# ----------------------------------------------------------------------------------------------
# write_meme and the fingerprint


def test_write_meme_round_trip_ours(tmp_path, cisbp):
    out = tmp_path / "out.meme"
    write_meme(cisbp, out)
    back = read_meme(out)
    assert back.ids == cisbp.ids and back.names == cisbp.names
    for a, b in zip(back.matrices, cisbp.matrices):
        np.testing.assert_allclose(a, b, atol=1e-12)
    assert back.fingerprint == cisbp.fingerprint
    assert "MOTIF Pax5+M1848_1.02+I\n" in out.read_text()  # derived names are not written
    # the reference's blank-line parser (which drops the last chunk) sees every motif
    ref = reference_style_matrices(out)
    assert [name for name, _ in ref] == list(cisbp.ids)
    for (_, matrix), ours in zip(ref, cisbp.matrices):
        np.testing.assert_array_equal(matrix, ours)

    alt = read_meme(FIXTURES / "crlf.meme")
    write_meme(alt, tmp_path / "alt.meme", background=(0.3, 0.2, 0.2, 0.3))
    again = read_meme(tmp_path / "alt.meme")
    assert again.ids == alt.ids and again.names == alt.names and again.fingerprint == alt.fingerprint
    assert "A 0.3 C 0.2 G 0.2 T 0.3" in (tmp_path / "alt.meme").read_text()


def test_write_meme_round_trip_biopython(tmp_path):
    m = read_meme(FIXTURES / "crlf.meme")
    out = tmp_path / "bio.meme"
    write_meme(m, out, nsites=10**7)  # Biopython's reader rounds p * nsites to integer counts
    with open(out) as handle:
        record = bio_motifs.parse(handle, "minimal")
    assert [motif.name for motif in record] == list(m.ids)
    for motif, matrix in zip(record, m.matrices):
        bio = np.array([motif.counts[b] for b in "ACGT"], dtype=float).T
        np.testing.assert_allclose(bio / bio.sum(axis=1, keepdims=True), matrix, atol=1e-6)


def test_write_meme_rejects_bad_arguments(tmp_path, cisbp):
    with pytest.raises(TisfmError, match="background"):
        write_meme(cisbp, tmp_path / "x.meme", background=(0.5, 0.5, 0.5, 0.5))
    with pytest.raises(TisfmError, match="nsites"):
        write_meme(cisbp, tmp_path / "x.meme", nsites=0)
    with pytest.raises(TisfmError, match="MotifSet"):
        write_meme([1, 2], tmp_path / "x.meme")


def recipe_fingerprint(motif_set):
    digest = hashlib.sha256()
    for motif_id, matrix in zip(motif_set.ids, motif_set.matrices):
        digest.update(motif_id.encode("utf-8"))
        digest.update(b"\0")
        digest.update(struct.pack("<I", len(matrix)))
        digest.update(np.round(np.asarray(matrix), 6).astype("<f8").tobytes())
    return "sha256:" + digest.hexdigest()


def test_fingerprint_recipe_and_sensitivity():
    a = read_meme(FIXTURES / "crlf.meme")
    b = read_meme(FIXTURES / "crlf.meme")
    assert a is not b and a.fingerprint == b.fingerprint
    assert a.fingerprint == recipe_fingerprint(a)
    assert a.fingerprint.startswith("sha256:") and len(a.fingerprint) == 7 + 64

    changed = [m.copy() for m in a.matrices]
    changed[0][1] = [0.1, 0.2, 0.31, 0.39]
    assert MotifSet(a.ids, a.names, changed, a.source).fingerprint != a.fingerprint
    renamed_id = ("MA0001.2",) + a.ids[1:]
    assert MotifSet(renamed_id, a.names, a.matrices, a.source).fingerprint != a.fingerprint
    # names and source are not part of the fingerprint; order is
    assert MotifSet(a.ids, ("x", "y", "z"), a.matrices, "other").fingerprint == a.fingerprint
    assert a.subset(list(reversed(a.ids))).fingerprint != a.fingerprint


def test_cisbp_fingerprint_matches_recipe(cisbp):
    assert cisbp.fingerprint == recipe_fingerprint(cisbp)


# ----------------------------------------------------------------------------------------------
# MotifSet methods


def small_set():
    return MotifSet(("a", "b", "c"), ("A", "B", "C"),
                    ([[1, 0, 0, 0], [0, 0.5, 0.5, 0]], [[0.25] * 4] * 3, [[0.1, 0.2, 0.3, 0.4]]), "hand")


def test_information_content_by_hand():
    m = small_set()
    np.testing.assert_allclose(m.information_content(), [2 + 1, 0, 2 + sum(p * np.log2(p) for p in (.1, .2, .3, .4))])
    bg = [0.4, 0.1, 0.1, 0.4]
    expected = [np.log2(1 / 0.4) + 2 * 0.5 * np.log2(0.5 / 0.1),
                3 * sum(0.25 * np.log2(0.25 / q) for q in bg),
                sum(p * np.log2(p / q) for p, q in zip((.1, .2, .3, .4), bg))]
    np.testing.assert_allclose(m.information_content(bg), expected)
    with pytest.raises(TisfmError, match="background"):
        m.information_content([0.25, 0.25, 0.5])


def test_kernels_width_padding_and_errors():
    m = small_set()
    k = m.kernels("head", n_pad_channels=0, width=6)
    assert k.shape == (6, 4, 6)
    # width 2 in 6 columns starts at 2, width 3 at 1, width 1 at 2
    np.testing.assert_array_equal(k[0, :, 2:4], [[1, 0], [0, 0.5], [0, 0.5], [0, 0]])
    np.testing.assert_array_equal(k[1, :, 2:4], [[0, 0], [0.5, 0], [0.5, 0], [0, 1]])
    assert np.flatnonzero(k[2].any(axis=0)).tolist() == [1, 2, 3]
    assert np.flatnonzero(k[5].any(axis=0)).tolist() == [2]
    np.testing.assert_allclose(k[5, :, 2], [0.4, 0.3, 0.2, 0.1], atol=1e-7)
    assert m.kernels("paper", n_pad_channels=2).shape == (8, 4, 3)
    with pytest.raises(TisfmError, match="era"):
        m.kernels("centred")
    with pytest.raises(TisfmError, match="narrower than motif 'b'"):
        m.kernels(width=2)
    with pytest.raises(TisfmError, match="n_pad_channels"):
        m.kernels(n_pad_channels=-1)


def test_subset_index_and_immutability():
    m = small_set()
    sub = m.subset(["c", "a"])
    assert sub.ids == ("c", "a") and sub.names == ("C", "A") and sub.source == "hand"
    np.testing.assert_array_equal(sub.matrices[0], m.matrices[2])
    assert m.index("b") == 1 and len(m) == 3 and m.widths.tolist() == [2, 3, 1] and m.max_width == 3
    with pytest.raises(TisfmError, match="'zz'"):
        m.subset(["a", "zz"])
    with pytest.raises(TisfmError, match="'a' is requested more than once"):
        m.subset(["a", "a"])
    with pytest.raises(TisfmError, match="'zz'"):
        m.index("zz")
    with pytest.raises(ValueError):
        m.matrices[0][0, 0] = 0.5
    with pytest.raises(AttributeError):
        m.ids = ("x",)


@pytest.mark.parametrize("ids, names, matrices, pattern", [
    (("a", "a"), ("A", "B"), ([[1, 0, 0, 0]],) * 2, "occurs twice"),
    (("a b",), ("A",), ([[1, 0, 0, 0]],), "whitespace"),
    (("a",), ("A",), ([[0.5, 0, 0, 0]],), "sum to 1"),
    (("a",), ("",), ([[1, 0, 0, 0]],), "names must be non-empty"),
    (("a",), ("A",), ([[1, 0, 0]],), "shape"),
    (("a",), ("A", "B"), ([[1, 0, 0, 0]],), "one name and one matrix"),
    ((), (), (), "at least one motif"),
])
def test_motifset_validation(ids, names, matrices, pattern):
    with pytest.raises(TisfmError, match=pattern):
        MotifSet(ids, names, matrices, "x")


# ----------------------------------------------------------------------------------------------
# JASPAR, TRANSFAC and HOMER files


ARNT = np.array([[4, 16, 0, 0], [19, 0, 1, 0], [0, 20, 0, 0], [0, 0, 20, 0], [0, 0, 0, 20], [0, 0, 20, 0]]) / 20


def test_read_jaspar_file_by_hand_and_against_biopython():
    path = FIXTURES / "example.jaspar"
    m = read_jaspar_file(path)
    assert m.ids == ("MA0004.1", "MA9999.1", "MA0001.1")
    assert m.names == ("Arnt", "Foo::Bar variant 2", "AGL3")
    np.testing.assert_allclose(m.matrices[0], ARNT)
    # rows given as T, G, C, A
    np.testing.assert_allclose(m.matrices[1], [[0.25] * 4, [0.4, 0.3, 0.2, 0.1]])
    # plain numeric rows, columns sum to 97
    np.testing.assert_allclose(m.matrices[2], np.array([[0, 94, 1, 2], [3, 75, 0, 19], [79, 4, 3, 11]]) / 97)
    with open(path) as handle:
        bio = list(bio_motifs.parse(handle, "jaspar"))
    assert [b.matrix_id for b in bio] == list(m.ids)
    for b, matrix in zip(bio, m.matrices):
        np.testing.assert_allclose(np.array([b.pwm[x] for x in "ACGT"]).T, matrix, atol=1e-12)


def test_read_plain_pfm():
    m = read_jaspar_file(FIXTURES / "example.pfm")
    assert m.ids == ("example",) and m.names == ("example",)
    np.testing.assert_allclose(m.matrices[0], [[0.25] * 4, [0.5, 0, 0, 0.5], [0.75, 0, 0.25, 0]])
    with open(FIXTURES / "example.pfm") as handle:
        bio = bio_motifs.read(handle, "pfm")
    np.testing.assert_allclose(np.array([bio.pwm[x] for x in "ACGT"]).T, m.matrices[0])


@pytest.mark.parametrize("text, pattern", [
    (">m1 X\nA [1 2]\nC [1 2]\nG [1]\nT [1 2]\n", r"line 4: motif 'm1' has rows of different lengths"),
    (">m1 X\nA [1 2]\nC [1 2]\nG [1 2]\n>m2\n", r"line 5: motif 'm1' has 3 matrix rows"),
    (">m1 X\n1 2\n1 2\n1 2\n1 2\n1 2\n", r"line 6: motif 'm1' has more than 4 matrix rows"),
    (">m1 X\nA [1 2]\nC [1 x]\nG [1 2]\nT [1 2]\n", r"line 3 \(motif 'm1'\): expected a matrix row"),
    (">m1 X\nA [1 2]\nC [1 -2]\nG [1 2]\nT [1 2]\n", r"line 3 \(motif 'm1'\): matrix values must not be negative"),
    (">m1 X\nA [1 0]\nC [1 0]\nG [1 0]\nT [1 0]\n", r"line 1: position 2 of motif 'm1' has no counts"),
    (">m1 X\nA [1]\nA [1]\nG [1]\nT [1]\n", r"line 2: motif 'm1' must have one row for each of A, C, G and T"),
    (">m1\n1\n1\n1\n1\n>m1\n1\n1\n1\n1\n", r"line 6: duplicate motif id 'm1' \(first defined on line 1\)"),
    (">\n1\n1\n1\n1\n", r"line 1: '>' header without a motif id"),
])
def test_jaspar_file_errors(tmp_path, text, pattern):
    with pytest.raises(TisfmError, match=pattern):
        read_jaspar_file(write(tmp_path, text, "m.jaspar"))


def test_read_transfac_by_hand():
    m = read_transfac(FIXTURES / "example.transfac")
    assert m.ids == ("MA0004.1", "M00001") and m.names == ("Arnt", "MyoD")
    np.testing.assert_allclose(m.matrices[0], ARNT[:3])
    # columns T G C A: row "1 2 3 4" is A=4, C=3, G=2, T=1
    np.testing.assert_allclose(m.matrices[1], [[0.4, 0.3, 0.2, 0.1], [1, 0, 0, 0]])


def test_transfac_record_without_ids_gets_a_numbered_id(tmp_path):
    m = read_transfac(write(tmp_path, "P0 A C G T\n01 1 1 1 1\nXX\n//\n", "m.transfac"))
    assert m.ids == ("motif_1",) and m.names == ("motif_1",)
    np.testing.assert_allclose(m.matrices[0], [[0.25] * 4])


def test_read_transfac_written_by_biopython(tmp_path):
    with open(FIXTURES / "example.jaspar") as handle:
        bio = bio_motifs.parse(handle, "jaspar")
        text = bio_motifs.write(bio, "transfac")
    path = write(tmp_path, text, "bio.transfac")
    with open(path) as handle:
        bio_back = list(bio_motifs.parse(handle, "transfac"))
    m = read_transfac(path)
    assert len(m) == len(bio_back) == 3
    for b, matrix in zip(bio_back, m.matrices):
        np.testing.assert_allclose(np.array([b.pwm[x] for x in "ACGT"]).T, matrix, atol=1e-12)
    np.testing.assert_allclose(m.matrices[0], ARNT)


@pytest.mark.parametrize("text, pattern", [
    ("AC m1\nXX\nP0 A C G T\n01 1 0 0 0\n03 0 1 0 0\nXX\n//\n", r"line 5 \(motif 'm1'\): expected matrix position 2"),
    ("AC m1\nXX\nP0 A C G T\n01 1 0 0\nXX\n//\n", r"line 4 \(motif 'm1'\): a matrix row needs exactly 4 numbers"),
    ("AC m1\nXX\nP0 A C G X\n01 1 0 0 0\nXX\n//\n", r"line 3: a P0 line must name the columns"),
    ("AC m1\nXX\nID x\nXX\n//\n", r"line 1: TRANSFAC record 'm1' has no P0 matrix"),
    ("AC m1\nXX\nP0 A C G T\nXX\n//\n", r"line 3: motif 'm1' has no matrix rows"),
    ("AC m1\nXX\nP0 A C G T\n01 0 0 0 0\nXX\n//\n", r"line 4: position 1 of motif 'm1' has no counts"),
    ("AC m1\nP0 A C G T\n01 1 0 0 0\nXX\n//\nAC m1\nP0 A C G T\n01 1 0 0 0\nXX\n//\n",
     r"line 6: duplicate motif id 'm1' \(first defined on line 1\)"),
    ("VV  TRANSFAC\nXX\n//\n", r"contains no motifs"),
])
def test_transfac_errors(tmp_path, text, pattern):
    with pytest.raises(TisfmError, match=pattern):
        read_transfac(write(tmp_path, text, "m.transfac"))


def test_read_homer_by_hand_and_against_biopython():
    path = FIXTURES / "example.homer"
    m = read_homer(path)
    assert m.ids == ("Arnt(bHLH)/HepG2-Arnt-ChIP-Seq/Homer", "my_motif")
    assert m.names == ("Arnt(bHLH)/HepG2-Arnt-ChIP-Seq/Homer", "my motif")
    np.testing.assert_allclose(m.matrices[0], [[0.2, 0.8, 0, 0], [0.997, 0.001, 0.001, 0.001],
                                               [0.001, 0.997, 0.001, 0.001]])
    np.testing.assert_allclose(m.matrices[1], [[0.25] * 4, np.array([0.1, 0.2, 0.3, 0.39]) / 0.99])
    with open(path) as handle:
        bio = list(bio_motifs.parse(handle, "pfm-four-columns"))
    for b, matrix in zip(bio, m.matrices):
        np.testing.assert_allclose(np.array([b.pwm[x] for x in "ACGT"]).T, matrix, atol=1e-12)


@pytest.mark.parametrize("text, pattern", [
    (">AC\tm1\t5\n0.5 0.5 0 0\n0.5 0.5\n", r"line 3 \(motif 'm1'\): a matrix row needs exactly 4 numbers"),
    (">AC\tm1\t5\n0.5 0.5 0 0\n0.1 0.1 0.1 0.1\n", r"line 3: a row of motif 'm1' sums to 0.4"),
    (">AC\tm1\t5\n>CG\tm2\t5\n1 0 0 0\n", r"line 1: motif 'm1' has no matrix rows"),
    ("0.25 0.25 0.25 0.25\n", r"line 1: a matrix row before the first '>' header"),
    (">A\tm1\t5\n1 0 0 0\n>A\tm1\t5\n1 0 0 0\n", r"line 3: duplicate motif id 'm1' \(first defined on line 1\)"),
])
def test_homer_errors(tmp_path, text, pattern):
    with pytest.raises(TisfmError, match=pattern):
        read_homer(write(tmp_path, text, "m.motif"))


def test_homer_counts_warn_once(tmp_path):
    path = write(tmp_path, ">A\tm1\t5\n10 0 0 10\n0 5 5 0\n>C\tm2\t5\n0 3 0 1\n", "m.motif")
    with pytest.warns(UserWarning, match="2 motif"):
        m = read_homer(path)
    np.testing.assert_allclose(m.matrices[0], [[0.5, 0, 0, 0.5], [0, 0.5, 0.5, 0]])
    np.testing.assert_allclose(m.matrices[1], [[0, 0.75, 0, 0.25]])


# ----------------------------------------------------------------------------------------------
# JASPAR releases (pyjaspar) and load_motifs


def test_jaspar_2024_core_vertebrates():
    m = read_jaspar_release("2024")
    assert len(m) == 879
    assert m.source == "jaspar:2024 CORE vertebrates"
    assert len(set(i.split(".")[0] for i in m.ids)) == 879  # latest version only
    k = m.index("MA0004.1")
    assert m.names[k] == "Arnt"
    np.testing.assert_allclose(m.matrices[k], ARNT)  # JASPAR's published Arnt counts
    assert read_jaspar_release("JASPAR2024") is m  # cached per arguments
    mouse = read_jaspar_release(2024, species=10090)
    assert len(mouse) == 153
    assert mouse.source == "jaspar:2024 CORE vertebrates species 10090"
    assert set(mouse.ids) <= set(m.ids)


def test_jaspar_unknown_release_and_empty_selection():
    with pytest.raises(TisfmError, match=r"unknown JASPAR release '1999'.*2014.*2024.*2026"):
        read_jaspar_release("1999")
    with pytest.raises(TisfmError, match=r"unknown JASPAR release"):
        load_motifs("jaspar:2023")
    with pytest.raises(TisfmError, match="no JASPAR profiles match"):
        read_jaspar_release("2024", species="1")


@pytest.mark.parametrize("name, reader", [
    ("crlf.meme", read_meme), ("counts.meme", read_meme), ("example.jaspar", read_jaspar_file),
    ("example.pfm", read_jaspar_file), ("example.transfac", read_transfac), ("example.homer", read_homer)])
def test_load_motifs_sniffs_the_format(tmp_path, name, reader):
    # copy to a neutral file name so that only the content can decide
    path = tmp_path / f"{Path(name).stem}.txt"  # plain .pfm ids come from the file stem
    path.write_bytes((FIXTURES / name).read_bytes())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        loaded = load_motifs(path)
        direct = reader(FIXTURES / name)
    assert loaded.ids == direct.ids and loaded.names == direct.names
    assert loaded.fingerprint == direct.fingerprint


def test_load_motifs_jaspar_pfm_with_tab_header(tmp_path):
    # a JASPAR .pfm download: tab-separated header (2 fields, so not HOMER) and 4 plain rows
    path = write(tmp_path, ">MA0001.1\tAGL3\n0 3 79 40\n94 75 4 3\n1 0 3 4\n2 19 11 50\n", "agl3.txt")
    m = load_motifs(path)
    assert m.ids == ("MA0001.1",) and m.names == ("AGL3",)
    np.testing.assert_allclose(m.matrices[0], np.array([[0, 94, 1, 2], [3, 75, 0, 19], [79, 4, 3, 11],
                                                        [40, 3, 4, 50]]) / np.array([[97], [97], [97], [97]]))


def test_load_motifs_jaspar_spec():
    m = load_motifs("jaspar:2024")
    assert len(m) == 879 and m.source == "jaspar:2024 CORE vertebrates"
    assert len(load_motifs("jaspar:2024", species=["10090"])) == 153


def test_load_motifs_errors(tmp_path):
    with pytest.raises(TisfmError, match="missing.meme does not exist"):
        load_motifs(tmp_path / "missing.meme")
    unknown = write(tmp_path, "hello world\nthis is not a motif file\n", "x.txt")
    with pytest.raises(TisfmError, match=r"x.txt is in none of the supported formats"):
        load_motifs(unknown)
    with pytest.raises(TisfmError, match="species and tax_group only apply"):
        load_motifs(FIXTURES / "crlf.meme", species=10090)


def test_motif_url_names_the_database_entry():
    from tisfm_core.motifs import motif_url

    assert motif_url("MA0014.4") == "https://jaspar.elixir.no/matrix/MA0014.4/"
    assert motif_url("PB0001.1") == "https://jaspar.elixir.no/matrix/PB0001.1/"
    assert motif_url("MA0014") == "https://jaspar.elixir.no/matrix/MA0014/"
    # CIS-BP ids, bare or inside the TF+id+evidence names of the cisBP_mouse.meme file
    assert motif_url("M1848_1.02") == "https://cisbp.ccbr.utoronto.ca/matchlist.php?searchField=M1848_1.02"
    assert motif_url("Pax5+M1848_1.02+I") == motif_url("M1848_1.02")
    for other in ("Pax5", "MA00141.1", "XM1848_1.02", "", "M1848"):
        assert motif_url(other) is None
