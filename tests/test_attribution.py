"""Attribution: TISM against explicit autograd, ISM against hand-built mutants, exactness on a
linear model, agreement, variant effects, motif hits against brute force, files and CLI."""


import numpy as np
import pytest
import torch
from conftest import random_motifs, sensitive_tisfm
from torch import nn

from tisfm_core.aitac import AITAC
from tisfm_core.attribution import (
    agreement,
    ism,
    load_attribution,
    logo_values,
    motif_hits,
    save_attribution,
    tism,
    variant_effects,
)
from tisfm_core.cli import build_parser
from tisfm_core.errors import TisfmError
from tisfm_core.motifs import MotifSet
from tisfm_core.runs import save_run
from tisfm_core.sequences import decode, encode, one_hot

L = 48
_tisfm = sensitive_tisfm


def _sequences(n=3, random_state=1):
    idx = np.random.default_rng(random_state).integers(0, 4, size=(n, L)).astype(np.uint8)
    idx[1, 5] = 4  # one N
    return idx


def _explicit_tism(model, idx):
    """One backward pass per sequence and output, minus the gradient at the reference base."""
    n_out = model(torch.from_numpy(one_hot(idx[:1]))).shape[1]
    out = np.zeros((len(idx), n_out, 4, idx.shape[1]), dtype=np.float64)
    for n in range(len(idx)):
        for r in range(n_out):
            x = torch.from_numpy(one_hot(idx[n:n + 1])).requires_grad_(True)
            model(x)[0, r].backward()
            g = x.grad[0].double().numpy()
            for i in range(idx.shape[1]):
                if idx[n, i] < 4:
                    out[n, r, :, i] = g[:, i] - g[idx[n, i], i]
    return out


MODELS = {
    "full": lambda: _tisfm("full")[0],
    "full-key-paper": lambda: _tisfm("full", attention_softmax="key", era="paper")[0],
    "base": lambda: _tisfm("base")[0],
    "maxpool": lambda: _tisfm("maxpool")[0],
    "attention": lambda: _tisfm("attention")[0],
    "aitac": lambda: (torch.manual_seed(0), AITAC(n_outputs=3, length=L, n_filters=8).eval())[1],
}


@pytest.mark.parametrize("name", list(MODELS))
def test_tism_equals_explicit_autograd(name):
    model = MODELS[name]()
    idx = _sequences(2)
    values = tism(model, idx)
    expected = _explicit_tism(model, idx)
    assert values.shape == (2, 3, 4, L) and values.dtype == np.float32
    scale = np.abs(expected).max()
    assert scale > 0
    np.testing.assert_allclose(values, expected, atol=1e-5 * scale, rtol=1e-4)
    ref = one_hot(idx).astype(bool)
    assert np.all(np.moveaxis(values, 1, 0)[:, ref] == 0)          # exactly 0 at the reference
    assert np.all(values[1, :, :, 5] == 0)                          # N position
    assert np.abs(values[0, :, :, 5]).max() > 0                      # same position, known base


def test_tism_output_order_batching_and_inputs():
    model, _ = _tisfm("full")
    idx = _sequences(4)
    full = tism(model, idx)
    # tolerances, not equality: the batched backward passes differ by CPU (AMD EPYC: 2e-9)
    np.testing.assert_allclose(tism(model, idx, outputs=[2, 0]), full[:, [2, 0]], rtol=1e-5, atol=1e-8)
    for batch_size in (1, 2, 5):  # one pair, outputs split (2 + 1), sequences split
        np.testing.assert_allclose(tism(model, idx, batch_size=batch_size), full, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(tism(model, one_hot(idx)), full, rtol=1e-5, atol=1e-8)  # one-hot input
    np.testing.assert_allclose(tism(model, idx[0]), full[:1], rtol=1e-5, atol=1e-8)  # one sequence (L,)
    with pytest.raises(TisfmError, match="output position 3"):
        tism(model, idx, outputs=[3])
    bad = one_hot(idx)
    bad[2, :, 7] = 0.5
    with pytest.raises(TisfmError, match="sequence 2, position 7"):
        tism(model, bad)


def test_model_state_restored():
    model, _ = _tisfm("full")
    model.train()
    model.precision = "bf16"
    idx = _sequences(2)
    values = tism(model, idx)
    assert model.training and model.precision == "bf16"
    model.eval()
    model.precision = "fp32"
    np.testing.assert_allclose(values, tism(model, idx), rtol=1e-5, atol=1e-8)  # in fp32, eval


def test_ism_equals_hand_built_mutants():
    model, _ = _tisfm("full")
    idx = _sequences(2)
    values = ism(model, idx, batch_size=37)
    texts = decode(idx)
    expected = np.zeros(values.shape)
    with torch.no_grad():
        for n, text in enumerate(texts):
            base_pred = model(torch.from_numpy(one_hot(encode([text]))))[0].numpy()
            mutants, where = [], []
            for i, ref in enumerate(text):
                for alt in "ACGT":
                    if ref != "N" and alt != ref:
                        mutants.append(text[:i] + alt + text[i + 1:])
                        where.append(("ACGT".index(alt), i))
            preds = model(torch.from_numpy(one_hot(encode(mutants)))).numpy()
            for (b, i), p in zip(where, preds):
                expected[n, :, b, i] = p - base_pred
    np.testing.assert_allclose(values, expected, atol=1e-6)
    assert np.all(values[1, :, :, 5] == 0)
    # other batch size here: equal up to float rounding of batched matrix products
    np.testing.assert_allclose(ism(model, idx, outputs=[1]), values[:, [1]], rtol=0, atol=1e-7)


class LinearModel(nn.Module):
    """out_r = sum_{b,i} W[r, b, i] x[b, i] + c_r: first order is exact."""

    def __init__(self, n_outputs=3, length=L):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.register_buffer("weight", torch.randn(n_outputs, 4, length, generator=g))
        self.register_buffer("offset", torch.randn(n_outputs, generator=g))

    def forward(self, x):
        return torch.einsum("nbl,rbl->nr", x, self.weight) + self.offset


def test_tism_equals_ism_on_a_linear_model():
    model = LinearModel()
    idx = _sequences(3)
    t, e = tism(model, idx), ism(model, idx)
    w = model.weight.numpy()
    known = w[None] - np.take_along_axis(w[None], np.minimum(idx, 3)[:, None, None, :].astype(np.int64), 2)
    known = known * (idx < 4)[:, None, None, :]
    np.testing.assert_allclose(t, known, atol=1e-6)
    np.testing.assert_allclose(t, e, atol=1e-5)
    np.testing.assert_allclose(agreement(t, e), 1.0, atol=1e-6)
    np.testing.assert_allclose(agreement(t, e, indices=idx), 1.0, atol=1e-6)


def test_agreement_matches_corrcoef():
    rng = np.random.default_rng(0)
    idx = _sequences(3)
    a = rng.normal(size=(3, 2, 4, L)).astype(np.float32)
    b = (0.5 * a + rng.normal(size=a.shape)).astype(np.float32)
    alt = ~one_hot(idx).astype(bool) & (idx < 4)[:, None, :]         # non-reference entries
    a, b = a * alt[:, None], b * alt[:, None]                          # 0 at reference and N
    for r_vals in (agreement(a, b), agreement(a, b, indices=idx)):
        for n in range(3):
            for r in range(2):
                want = np.corrcoef(a[n, r][alt[n]], b[n, r][alt[n]])[0, 1]
                assert r_vals[n, r] == pytest.approx(want, abs=1e-9)
    assert np.isnan(agreement(np.zeros_like(a) + alt[:, None], b, indices=idx)).all()  # constant


def test_logo_values():
    rng = np.random.default_rng(1)
    idx = _sequences(2)
    values = rng.normal(size=(2, 2, 4, L)).astype(np.float32)
    values *= ~one_hot(idx).astype(bool)[:, None]                      # 0 at the reference
    logo = logo_values(values, idx)
    for n in range(2):
        for i in range(L):
            ref = idx[n, i]
            for r in range(2):
                if ref == 4:
                    assert np.all(logo[n, r, :, i] == 0)
                    continue
                alts = [b for b in range(4) if b != ref]
                assert logo[n, r, ref, i] == pytest.approx(-values[n, r, alts, i].mean(), abs=1e-6)
                assert np.all(logo[n, r, alts, i] == 0)


def test_variant_effects_match_ism_and_tism():
    model, _ = _tisfm("full")
    idx = _sequences(3)
    e, t = ism(model, idx), tism(model, idx)
    df = variant_effects(model, idx, 9, "g", output_names=["a", "b", "c"])
    assert list(df.columns) == ["sequence", "position", "ref", "alt", "output", "ref_pred", "alt_pred",
                                "exact_delta", "tism_delta"]
    assert len(df) == 9 and list(df["output"][:3]) == ["a", "b", "c"]
    with torch.no_grad():
        pred = model(torch.from_numpy(one_hot(idx))).numpy()
    for row in df.itertuples():
        n, r = row.sequence, "abc".index(row.output)
        assert row.ref == "ACGTN"[idx[n, 9]] and row.alt == "G"
        assert row.ref_pred == pytest.approx(pred[n, r], abs=1e-6)
        assert row.exact_delta == pytest.approx(e[n, r, 2, 9], abs=1e-6)
        assert row.tism_delta == pytest.approx(t[n, r, 2, 9], abs=1e-6)
    # at an N the substitution adds a base: the first-order change is the gradient at alt
    one = variant_effects(model, idx[1], 5, "T", outputs=[2])
    x = torch.from_numpy(one_hot(idx[1:2])).requires_grad_(True)
    model(x)[0, 2].backward()
    assert one["ref"].tolist() == ["N"] and one["output"].tolist() == [2]
    assert one["tism_delta"][0] == pytest.approx(x.grad[0, 3, 5].item(), abs=1e-6)
    with pytest.raises(TisfmError, match="0..47"):
        variant_effects(model, idx, L, "A")
    with pytest.raises(TisfmError, match="A, C, G, T"):
        variant_effects(model, idx, 3, "R")


def _brute_force_hits(motifs, idx, threshold):
    comp = [3, 2, 1, 0, 4]
    rows = []
    for n, seq in enumerate(idx):
        for k, m in enumerate(motifs.matrices):
            w, best = len(m), m.max(axis=1).sum()
            for start in range(len(seq) - w + 1):
                site = seq[start:start + w]
                plus = sum(m[j, b] for j, b in enumerate(site) if b < 4)
                minus = sum(m[j, comp[b]] for j, b in enumerate(site[::-1]) if b < 4)
                for strand, score in (("+", plus), ("-", minus)):
                    if score / best >= threshold:
                        rows.append((n, motifs.ids[k], start, start + w, strand, score))
    return sorted(rows)


def test_motif_hits_brute_force_and_planted_sites():
    motifs = random_motifs(3, widths=(4, 6, 9), random_state=2)
    idx = _sequences(3)
    for era in ("head", "paper"):
        hits = motif_hits(motifs, idx, threshold=0.6, era=era)
        assert list(hits.columns) == ["sequence", "motif", "name", "start", "end", "strand", "score",
                                      "relative"]
        got = sorted(zip(hits.sequence, hits.motif, hits.start, hits.end, hits.strand, hits.score))
        want = _brute_force_hits(motifs, idx, 0.6)
        assert len(got) == len(want) > 0
        for g, w in zip(got, want):
            assert g[:5] == w[:5] and g[5] == pytest.approx(w[5], abs=1e-6)
        assert (hits.sort_values(["sequence", "start"], kind="stable").index == hits.index).all()
    # plant the consensus of motif 2 (width 9) at 30 on + and its reverse complement at 3 on -
    m = motifs.matrices[2]
    consensus = m.argmax(axis=1).astype(np.uint8)
    seq = np.full(L, 4, dtype=np.uint8)
    seq[30:39] = consensus
    seq[3:12] = (3 - consensus)[::-1]
    hits = motif_hits(motifs, seq, threshold=0.99)
    planted = hits[hits.motif == motifs.ids[2]]
    assert set(zip(planted.start, planted.end, planted.strand)) >= {(30, 39, "+"), (3, 12, "-")}
    best = m.max(axis=1).sum()
    assert np.allclose(planted.score, best, atol=1e-6) and np.allclose(planted.relative, 1.0)
    assert (planted.name == motifs.names[2]).all()


def test_save_load_round_trip_and_refuses_pickle(tmp_path):
    values = np.random.default_rng(0).normal(size=(2, 3, 4, L)).astype(np.float32)
    idx = _sequences(2)
    path = tmp_path / "a.npz"
    save_attribution(path, values, ["r1", "r2"], ["x", "y", "z"], indices=idx)
    loaded = load_attribution(path)
    np.testing.assert_array_equal(loaded.values, values)
    assert loaded.ids == ["r1", "r2"] and loaded.outputs == ["x", "y", "z"]
    np.testing.assert_array_equal(loaded.indices, idx)
    with np.load(path, allow_pickle=False) as raw:
        assert raw["ids"].dtype.kind == "U" and raw["outputs"].dtype.kind == "U"
    with pytest.raises(TisfmError, match="expected 3 names"):
        save_attribution(path, values, ["r1", "r2"], ["x"])
    evil = tmp_path / "evil.npz"
    np.savez(evil, values=values, ids=np.array(["r1", {"a": 1}], dtype=object), outputs=np.array(["x"] * 3))
    with pytest.raises(TisfmError, match="object arrays"):
        load_attribution(evil)
    np.savez(tmp_path / "bad.npz", values=values.astype(np.float64), ids=np.array(["a", "b"]),
             outputs=np.array(["x", "y", "z"]))
    with pytest.raises(TisfmError, match="float32"):
        load_attribution(tmp_path / "bad.npz")


def test_cli_handlers(tmp_path, capsys):
    model, motifs = _tisfm("full")
    run = save_run(tmp_path / "run", model, outputs=["B", "T", "NK"], motifs=motifs)
    idx = _sequences(3)
    fasta = tmp_path / "s.fa"
    fasta.write_text("".join(f">s{i}\n{t}\n" for i, t in enumerate(decode(idx))))
    parser = build_parser()

    args = parser.parse_args(["tism", str(run), "--sequences", str(fasta), "--out", str(tmp_path / "t.npz")])
    args.func(args)
    assert capsys.readouterr().out.startswith("tism: 3 sequences x 3 outputs x 48 bp")
    saved = load_attribution(tmp_path / "t.npz")
    assert saved.ids == ["s0", "s1", "s2"] and saved.outputs == ["B", "T", "NK"]
    np.testing.assert_allclose(saved.values, tism(model, idx), atol=1e-6)

    args = parser.parse_args(["ism", str(run), "--sequences", str(fasta), "--out", str(tmp_path / "i.npz"),
                              "--outputs", "NK,B", "--batch-size", "100"])
    args.func(args)
    saved = load_attribution(tmp_path / "i.npz")
    assert saved.outputs == ["NK", "B"]
    np.testing.assert_allclose(saved.values, ism(model, idx, outputs=[2, 0]), atol=1e-6)

    args = parser.parse_args(["tism", str(run), "--sequences", str(fasta), "--out", str(tmp_path / "x.npz"),
                              "--outputs", "B,Mono"])
    with pytest.raises(TisfmError, match="'Mono' is not an output.*valid outputs: B, T, NK"):
        args.func(args)


def test_motif_hits_exact_site_on_both_strands():
    single = MotifSet(("m",), ("m",), (np.eye(4)[[0, 1, 2]],))        # ACG
    hits = motif_hits(single, encode(["TTACGTT"]), threshold=1.0)
    # ACG at 2 on +, and CGT (its reverse complement) at 3 read on -
    assert list(zip(hits.start, hits.end, hits.strand, hits.score)) == [(2, 5, "+", 3.0), (3, 6, "-", 3.0)]
    with pytest.raises(TisfmError, match="threshold"):
        motif_hits(single, encode(["ACGT"]), threshold=1.5)
