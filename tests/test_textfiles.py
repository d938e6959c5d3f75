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
