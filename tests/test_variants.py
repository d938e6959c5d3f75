"""Variant effects against windows built by hand from the genome string; a VCF written here with
every kind of problem gives exactly the expected rows and messages; typed variants; the CLI."""

import gzip

import numpy as np
import pandas as pd
import pysam
import pytest
from conftest import sensitive_tisfm

from tisfm_core.cli import build_parser
from tisfm_core.errors import TisfmError
from tisfm_core.runs import load_run, save_run
from tisfm_core.sequences import decode, encode
from tisfm_core.training import predict_batches
from tisfm_core.variants import (
    Variant,
    parse_variant,
    read_vcf,
    score_variants,
    variant_windows,
)

L = 48
OUTPUTS = ["B", "T", "NK"]


@pytest.fixture(scope="module")
def genome(tmp_path_factory):
    folder = tmp_path_factory.mktemp("genome")
    rng = np.random.default_rng(5)
    chroms = {"chr1": "".join(rng.choice(list("ACGT"), 400)), "chr2": "".join(rng.choice(list("ACGT"), 300))}
    path = folder / "g.fa"
    # chr1 partly soft-masked (lower case), as genome FASTAs are
    text = {"chr1": chroms["chr1"][:230].lower() + chroms["chr1"][230:], "chr2": chroms["chr2"]}
    path.write_text("".join(f">{c}\n" + "\n".join(s[i:i + 70] for i in range(0, len(s), 70)) + "\n"
                            for c, s in text.items()))
    return path, chroms, folder / "cache"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    model, motifs = sensitive_tisfm()
    return load_run(save_run(tmp_path_factory.mktemp("run") / "run", model, outputs=OUTPUTS, motifs=motifs))


def hand_windows(seq, pos, ref, alt):
    """Reference window centred on REF, alternative window centred on ALT in the ALT-applied string."""
    p = pos - 1
    assert seq[p:p + len(ref)] == ref
    lo = p + len(ref) // 2 - L // 2
    applied = seq[:p] + alt + seq[p + len(ref):]
    alo = p + len(alt) // 2 - L // 2
    return seq[lo:lo + L], applied[alo:alo + L]


def hand_effect(run, seq, pos, ref, alt):
    r, a = hand_windows(seq, pos, ref, alt)
    assert len(r) == len(a) == L
    pred = predict_batches(run.model, encode([r, a]), device="cpu")
    return pred[0], pred[1]


def _vcf_text(chroms):
    c1 = chroms["chr1"]
    wrong = "ACGT"[("ACGT".index(c1[299]) + 1) % 4]
    rows = [
        ("chr1", 100, "rs1", c1[99], "ACGT"[("ACGT".index(c1[99]) + 2) % 4]),      # SNP
        ("chr1", 150, "multi", c1[149], ",".join(b for b in "ACGT" if b != c1[149][:1])[:3] + ",*"),
        ("chr1", 200, "ins", c1[199], c1[199] + "TTG"),                              # insertion
        ("chr1", 250, "del", c1[249:253], c1[249]),                                  # deletion
        ("chr1", 300, "badref", wrong, c1[299]),                                     # wrong REF
        ("chrZ", 50, ".", "A", "C"),                                                 # unknown contig
        ("chr2", 301, ".", "A", "C"),                                                # past the end
        ("chr1", 120, "sv", c1[119], "<DEL>"),                                       # symbolic
        ("chr1", 10, "edge", c1[9], "ACGT"[("ACGT".index(c1[9]) + 1) % 4]),        # window off the start
        ("chr1", 130, "bnd", c1[129], c1[129] + "]chr2:20]"),                       # breakend
    ]
    header = ("##fileformat=VCFv4.2\n##contig=<ID=chr1,length=400>\n##contig=<ID=chr2,length=300>\n"
              "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")
    return header + "".join(f"{c}\t{p}\t{i}\t{r}\t{a}\t.\t.\t.\n" for c, p, i, r, a in rows), wrong


@pytest.mark.parametrize("compressed", [False, True])
def test_vcf_gives_exactly_the_expected_rows_and_messages(genome, run, tmp_path, compressed):
    path, chroms, cache = genome
    c1 = chroms["chr1"]
    text, wrong = _vcf_text(chroms)
    vcf = tmp_path / "calls.vcf"
    vcf.write_text(text)
    if compressed:
        pysam.tabix_compress(str(vcf), str(tmp_path / "calls.vcf.gz"))
        vcf = tmp_path / "calls.vcf.gz"
    variants = read_vcf(vcf)
    multi = [b for b in "ACGT" if b != c1[149]][:2]
    assert [(v.chrom, v.pos, v.ref, v.alt, v.id) for v in variants] == [
        ("chr1", 100, c1[99], "ACGT"[("ACGT".index(c1[99]) + 2) % 4], "rs1"),
        ("chr1", 150, c1[149], multi[0], "multi"), ("chr1", 150, c1[149], multi[1], "multi"),
        ("chr1", 150, c1[149], "*", "multi"),
        ("chr1", 200, c1[199], c1[199] + "TTG", "ins"), ("chr1", 250, c1[249:253], c1[249], "del"),
        ("chr1", 300, wrong, c1[299], "badref"), ("chrZ", 50, "A", "C", ""), ("chr2", 301, "A", "C", ""),
        ("chr1", 120, c1[119], "<DEL>", "sv"),
        ("chr1", 10, c1[9], "ACGT"[("ACGT".index(c1[9]) + 1) % 4], "edge"),
        ("chr1", 130, c1[129], c1[129] + "]chr2:20]", "bnd")]
    assert variants[3].source == f"{vcf.name} record 2" and variants[-1].source == f"{vcf.name} record 10"

    scores = score_variants(run, variants, path, index_dir=cache, device="cpu", batch_size=3)
    table = scores.table
    assert len(table) == 12 and scores.outputs == OUTPUTS
    assert table["status"].tolist() == ["scored"] * 3 + ["refused"] + ["scored"] * 2 + ["refused"] * 6
    name = vcf.name
    expected_messages = {
        3: "ALT '*' (an allele deleted by an overlapping variant) has no bases to score",
        6: f"REF {wrong} does not match the genome: chr1:300 is {c1[299]}",
        7: "contig chrZ is not in g.fa (its contigs: 'chr1', 'chr2')",
        8: "position 301 lies past the end of chr2 (300 bp)",
        9: "symbolic ALT allele <DEL> is not supported: only alleles written as bases can be scored",
        10: "the 48-bp window centred on it would start 15 bp before the start of chr1",
        11: f"breakend ALT {c1[129]}]chr2:20] is not supported: only alleles written as bases can be scored"}
    assert {i: m for i, m in enumerate(table["message"]) if m} == expected_messages
    assert scores.problems == [
        f"{name} record 2 (multi), chr1:150 {c1[149]}>*: {expected_messages[3]}",
        f"{name} record 5 (badref), chr1:300 {wrong}>{c1[299]}: {expected_messages[6]}",
        f"{name} record 6, chrZ:50 A>C: {expected_messages[7]}",
        f"{name} record 7, chr2:301 A>C: {expected_messages[8]}",
        f"{name} record 8 (sv), chr1:120 {c1[119]}><DEL>: {expected_messages[9]}",
        f"{name} record 9 (edge), chr1:10 {variants[-2].ref}>{variants[-2].alt}: {expected_messages[10]}",
        f"{name} record 10 (bnd), chr1:130 {c1[129]}>{c1[129]}]chr2:20]: {expected_messages[11]}"]

    for i in (0, 1, 2, 4, 5):
        v = variants[i]
        ref, alt = hand_effect(run, c1, v.pos, v.ref, v.alt)
        row = table.iloc[i]
        np.testing.assert_allclose(row[[f"ref:{o}" for o in OUTPUTS]].to_numpy(float), ref, atol=1e-6)
        np.testing.assert_allclose(row[[f"alt:{o}" for o in OUTPUTS]].to_numpy(float), alt, atol=1e-6)
        np.testing.assert_allclose(row[[f"diff:{o}" for o in OUTPUTS]].to_numpy(float), alt - ref, atol=1e-6)
        assert np.abs(alt - ref).max() > 0
        # rank 1 = largest |alt - ref| across the outputs
        order = np.argsort(-np.abs(alt - ref))
        assert [int(row[f"rank:{OUTPUTS[k]}"]) for k in order] == [1, 2, 3]
        assert row["top_output"] == OUTPUTS[order[0]]
        assert row["max_abs_diff"] == pytest.approx(np.abs(alt - ref).max(), abs=1e-6)
    refused = table[table["status"] == "refused"]
    assert refused[[f"diff:{o}" for o in OUTPUTS]].isna().all().all()
    assert refused[[f"rank:{o}" for o in OUTPUTS]].isna().all().all()


def test_indel_windows_keep_the_length_and_are_recentred(genome, run):
    path, chroms, cache = genome
    c1 = chroms["chr1"]
    for pos, ref, alt in [(200, c1[199], c1[199] + "TTGCA"), (250, c1[249:260], c1[249]),
                          (180, c1[179:182], "GG"), (90, c1[89], "A" if c1[89] != "A" else "C")]:
        w = variant_windows(run, Variant("chr1", pos, ref, alt), path, index_dir=cache)
        r, a = hand_windows(c1, pos, ref, alt)
        assert decode(w.ref) == [r] and decode(w.alt) == [a]
        assert decode(w.ref[w.ref_offset:w.ref_offset + len(ref)]) == [ref]
        assert decode(w.alt[w.alt_offset:w.alt_offset + len(alt)]) == [alt]
    with pytest.raises(TisfmError, match=r"chr1:100 .*: the REF allele \(60 bp\) is longer than the model's "
                                         "48-bp window"):
        variant_windows(run, Variant("chr1", 100, c1[99:159], c1[99]), path, index_dir=cache)
    with pytest.raises(TisfmError, match=r"the ALT allele \(49 bp\) is longer"):
        variant_windows(L, Variant("chr1", 100, c1[99], c1[99] + "A" * 48), path, index_dir=cache)
    with pytest.raises(TisfmError, match="window centred on it would end 4 bp past the end of chr2"):
        variant_windows(run, f"chr2:281:{chroms['chr2'][280]}:N", path, index_dir=cache)
    with pytest.raises(TisfmError, match="give one variant with one ALT allele, got 2"):
        variant_windows(run, "chr1:100:A:C,G", path, index_dir=cache)


def test_typed_variants_and_their_problems(genome, run):
    path, chroms, cache = genome
    c1 = chroms["chr1"]
    assert parse_variant(" chr1:1,000:a:g,t ") == [Variant("chr1", 1000, "A", "G"), Variant("chr1", 1000, "A", "T")]
    assert parse_variant("HLA-A*01:01:5:C:T") == [Variant("HLA-A*01:01", 5, "C", "T")]
    for bad, message in [("chr1:100:A", "is not of the form chrom:pos:ref:alt"),
                         ("chr1:x:A:G", "is not of the form chrom:pos:ref:alt"),
                         ("chr1:0:A:G", "positions are 1-based, so pos must be >= 1")]:
        with pytest.raises(TisfmError, match=message):
            parse_variant(bad)
    snp = "G" if c1[99] != "G" else "T"
    typed = [f"chr1:100:{c1[99]}:{snp}", ("chr1", 260, c1[259].lower(), c1[259]), "chr1:200:R:A",
             f"chr1:150:{c1[149]}:<INS>"]
    scores = score_variants(run, typed, path, outputs=["NK", "B"], index_dir=cache, device="cpu")
    assert scores.outputs == ["NK", "B"]
    assert scores.table.columns.tolist()[:9] == ["id", "chrom", "pos", "ref", "alt", "status", "message",
                                                 "top_output", "max_abs_diff"]
    assert scores.table.columns.tolist()[9:] == ["ref:NK", "ref:B", "alt:NK", "alt:B", "diff:NK", "diff:B",
                                                 "rank:NK", "rank:B"]
    messages = scores.table["message"].tolist()
    ref, alt = hand_effect(run, c1, 100, c1[99], snp)
    np.testing.assert_allclose(scores.table.loc[0, ["diff:NK", "diff:B"]].to_numpy(float),
                               (alt - ref)[[2, 0]], atol=1e-6)
    assert messages[0] == ""
    assert messages[1:] == ["ALT equals REF", "REF 'R' holds characters other than A, C, G, T and N",
                            ("symbolic ALT allele <INS> is not supported: only alleles written as bases can "
                             "be scored")]
    with pytest.raises(TisfmError, match="no variants were given"):
        score_variants(run, [], path, index_dir=cache)
    with pytest.raises(TisfmError, match="'Mono' is not an output"):
        score_variants(run, typed, path, outputs=["Mono"], index_dir=cache)


def test_batched_scores_equal_one_variant_at_a_time(genome, run):
    path, chroms, cache = genome
    rng = np.random.default_rng(0)
    variants = []
    for pos in rng.integers(30, 370, size=40).tolist():
        ref = chroms["chr1"][pos - 1]
        variants.append(Variant("chr1", pos, ref, "ACGT"[("ACGT".index(ref) + 1) % 4]))
    batched = score_variants(run, variants, path, index_dir=cache, device="cpu", batch_size=16).table
    single = pd.concat([score_variants(run, [v], path, index_dir=cache, device="cpu").table
                        for v in variants], ignore_index=True)
    columns = [f"diff:{o}" for o in OUTPUTS]
    np.testing.assert_allclose(batched[columns].to_numpy(float), single[columns].to_numpy(float), atol=1e-6)


def test_bad_vcf_files(tmp_path):
    header = "##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
    (tmp_path / "empty.vcf").write_text(header)
    with pytest.raises(TisfmError, match="empty.vcf has no records: there are no variants to score"):
        read_vcf(tmp_path / "empty.vcf")
    (tmp_path / "text.vcf").write_text("chrom pos ref alt\nchr1 10 A G\n")
    with pytest.raises(TisfmError, match="is not a readable VCF/BCF file"):
        read_vcf(tmp_path / "text.vcf")
    (tmp_path / "bad.vcf").write_text(header + "chr1\t10\t.\tA\tG\t.\t.\t.\nchr1\tten\t.\tA\tG\t.\t.\t.\n")
    with pytest.raises(TisfmError, match=r"bad.vcf, line 4 \('chr1\\tten.*htslib cannot parse this record"):
        read_vcf(tmp_path / "bad.vcf")
    (tmp_path / "plain.vcf.gz").write_bytes(gzip.compress((header + "chr1\t10\t.\tA\tG\t.\t.\t.\n").encode()))
    with pytest.raises(TisfmError, match="compressed with plain gzip.*bgzip"):
        read_vcf(tmp_path / "plain.vcf.gz")
    with pytest.raises(TisfmError, match="VCF file .*missing.vcf does not exist"):
        read_vcf(tmp_path / "missing.vcf")


def test_cli_variants_handler(genome, run, tmp_path, capsys):
    path, chroms, cache = genome
    text, _ = _vcf_text(chroms)
    vcf = tmp_path / "calls.vcf"
    vcf.write_text(text)
    parser = build_parser()
    out = tmp_path / "effects.tsv"
    args = parser.parse_args(["variants", str(run.path), "--vcf", str(vcf), "--genome", str(path), "--out",
                              str(out), "--device", "cpu", "--index-dir", str(cache)])
    args.func(args)
    captured = capsys.readouterr()
    assert captured.out.startswith("variants: 5 of 12 scored (7 refused), 3 outputs")
    assert captured.err.count("warning: refused calls.vcf record") == 7
    table = pd.read_csv(out, sep="\t", keep_default_na=False, na_values=[""])
    expected = score_variants(run, read_vcf(vcf), path, index_dir=cache, device="cpu").table
    assert table["status"].tolist() == expected["status"].tolist()
    assert table["message"].fillna("").tolist() == expected["message"].tolist()
    np.testing.assert_allclose(table["diff:NK"].to_numpy(float), expected["diff:NK"].to_numpy(float),
                               atol=1e-5, equal_nan=True)

    c1 = chroms["chr1"]
    args = parser.parse_args(["variants", str(run.path), "--variant", f"chr1:100:{c1[99]}:N",
                              f"chr1:101:{c1[100]}:N", "--genome", str(path), "--out", str(out),
                              "--device", "cpu", "--index-dir", str(cache), "--outputs", "T"])
    args.func(args)
    assert pd.read_csv(out, sep="\t")["diff:T"].notna().sum() == 2
    args = parser.parse_args(["variants", str(run.path), "--variant", "chrQ:1:A:C", "--genome", str(path),
                              "--out", str(tmp_path / "none.tsv"), "--device", "cpu", "--index-dir", str(cache)])
    with pytest.raises(TisfmError, match="none of the 1 variants could be scored .*contig chrQ is not in g.fa"):
        args.func(args)
    assert pd.read_csv(tmp_path / "none.tsv", sep="\t")["status"].tolist() == ["refused"]
