"""Text inputs: gzip read transparently everywhere, and one clear message for what is not a file."""

import gzip

import numpy as np
import pytest
from conftest import planted_dataset

from tisfm_core.errors import TisfmError
from tisfm_core.motifs import load_motifs
from tisfm_core.sequences import read_bed_windows, read_sequences
from tisfm_core.targets import read_targets
from tisfm_core.textfiles import check_input_file, read_text


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("text")
    fasta, tsv, meme, _ = planted_dataset(tmp, n=50, length=40, n_outputs=2)
    genome = tmp / "genome.fa"
    genome.write_text(">chr1\n" + "ACGTTGCA" * 40 + "\n")
    bed = tmp / "peaks.bed"
    bed.write_text("chr1\t50\t120\tp1\nchr1\t200\t260\tp2\n")
    gz = {}
    for path in (fasta, tsv, meme, bed):
        # a name without .gz on purpose: gzip is recognised by its magic bytes
        gz[path.suffix] = path.with_name(path.name + ".compressed")
        gz[path.suffix].write_bytes(gzip.compress(path.read_bytes()))
    return dict(tmp=tmp, fasta=fasta, tsv=tsv, meme=meme, bed=bed, genome=genome, gz=gz)


def test_gzip_inputs_read_like_the_plain_files(files):
    gz = files["gz"]
    a, b = read_sequences(files["fasta"]), read_sequences(gz[".fa"])
    assert list(a.ids) == list(b.ids) and np.array_equal(a.indices, b.indices)
    assert read_targets(files["tsv"]).equals(read_targets(gz[".tsv"]))
    assert load_motifs(files["meme"]).fingerprint == load_motifs(gz[".meme"]).fingerprint
    w1 = read_bed_windows(files["bed"], files["genome"], length=40)
    w2 = read_bed_windows(gz[".bed"], files["genome"], length=40)
    assert np.array_equal(w1.indices, w2.indices) and list(w1.ids) == list(w2.ids)


@pytest.mark.parametrize("target, message", [
    (lambda f: f["tmp"], "is a folder, not a file"),
    (lambda f: "/dev/null", "is not a regular file"),
    (lambda f: f["tmp"] / "missing.fa", "does not exist"),
])
def test_what_is_not_a_file_is_named(files, target, message):
    with pytest.raises(TisfmError, match=message):
        check_input_file(target(files), "sequence file")
    with pytest.raises(TisfmError, match=message):
        read_sequences(target(files))


def test_damaged_gzip_and_binary_files(files):
    damaged = files["tmp"] / "damaged.fa.gz"
    damaged.write_bytes(files["gz"][".fa"].read_bytes()[:-40])
    with pytest.raises(TisfmError, match="damaged or truncated gzip"):
        read_sequences(damaged)
    binary = files["tmp"] / "binary.fa"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    with pytest.raises(TisfmError, match="not UTF-8 text"):
        read_text(binary, "sequence file")


def test_comma_separated_targets_are_named_as_such(files):
    csv = files["tmp"] / "targets.csv"
    csv.write_text(files["tsv"].read_text().replace("\t", ","))
    with pytest.raises(TisfmError, match="comma- or semicolon-separated"):
        read_targets(csv)


def test_bounded_decompression(tmp_path, monkeypatch):
    """Bombs stop at the expansion guard, long lines at the line cap, big text at the size cap;
    genuine compressed text (about 4-fold) reads in full."""
    from conftest import gzip_bomb

    from tisfm_core import textfiles
    from tisfm_core.textfiles import decode_text, iter_lines

    bomb = gzip_bomb(64, head=b">a\n")
    with pytest.raises(TisfmError, match="expands more than 200-fold.*refused after 16 MiB"):
        decode_text(bomb, "x.fa.gz")
    path = tmp_path / "bomb.fa.gz"
    path.write_bytes(bomb)
    with pytest.raises(TisfmError, match="bomb.fa.gz expands more than 200-fold"):
        read_text(path, "FASTA file")
    rng = np.random.default_rng(0)
    text = "".join(f">r{i}\n" + "".join(rng.choice(list("ACGT"), 300)) + "\n" for i in range(200))
    assert decode_text(gzip.compress(text.encode()), "y.fa.gz") == text
    with pytest.raises(TisfmError, match="larger than 100 bytes"):
        decode_text(text.encode(), "y.fa", max_bytes=100)
    monkeypatch.setattr(textfiles, "MAX_LINE_CHARS", 1000)
    long = tmp_path / "long.txt"
    long.write_text("short\n" + "A" * 5000 + "\n")
    with pytest.raises(TisfmError, match="line 2 is longer than"):
        list(iter_lines(long, "sequence file"))


def test_zip_directories_are_checked_before_reading(tmp_path):
    from conftest import deflate_bomb, make_zip

    from tisfm_core.textfiles import check_zip_sizes, open_zip

    stream, crc = deflate_bomb(64)
    with open_zip(make_zip({"a": b"x" * 1000, "b": (stream, crc, 64 * 2**20)}), "z") as archive:
        with pytest.raises(TisfmError, match="'b' expands more than 200-fold"):
            check_zip_sizes(archive, "z", max_bytes=2**30)
    with open_zip(make_zip({"a": b"x" * 1000, "c": b"y" * 1000}), "z") as archive:
        assert check_zip_sizes(archive, "z", max_bytes=2000) == 2000
        with pytest.raises(TisfmError, match="unpacks to more than"):
            check_zip_sizes(archive, "z", max_bytes=1999)
    with pytest.raises(TisfmError, match="lists 30 entries; at most 10"):
        open_zip(make_zip({f"m{i}": b"" for i in range(30)}), "z", max_members=10)
    with pytest.raises(TisfmError, match="is not a zip archive"):
        open_zip(b"PK\x03\x04 truncated", "z")


def test_npz_members_are_checked_before_numpy_inflates_them(tmp_path):
    from conftest import deflate_bomb, make_zip

    from tisfm_core.atomic import read_arrays

    stream, crc = deflate_bomb(64)
    bomb = tmp_path / "path.npz"
    bomb.write_bytes(make_zip({"coefs.npy": (stream, crc, 64 * 2**20)}))
    with pytest.raises(TisfmError, match="'coefs.npy' expands more than 200-fold"):
        read_arrays(bomb, what="path file")
    good = tmp_path / "good.npz"
    np.savez_compressed(good, a=np.zeros((100, 100)))
    assert read_arrays(good)["a"].shape == (100, 100)
