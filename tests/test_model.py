"""The tiSFM model: parameter counts, shapes, and each layer against an independent computation."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tisfm_core.errors import TisfmError
from tisfm_core.model import TISFM, SelfAttentionSparse, TISFMConfig, position_index


def make(variant="full", n_motifs=862, n_outputs=8, length=300, width=30, era="paper", **kw):
    cfg = TISFMConfig.for_variant(variant, n_motifs=n_motifs, n_outputs=n_outputs, length=length,
                                  kernel_width=width, era=era, **kw)
    kernels = torch.rand(cfg.n_channels, 4, width, generator=torch.Generator().manual_seed(0))
    kernels[-cfg.n_pad_channels:] = 0
    return TISFM(cfg, kernels, random_state=0)


@pytest.mark.parametrize("variant, era, expected", [
    ("full", "paper", 966_182),      # the paper's stated count
    ("full", "head", 966_190),       # + key/query biases (2x2 + 2x2)
    ("base", "head", 218_750),
    ("interaction", "head", 966_110),
    ("attention", "head", 218_830),
    ("maxpool", "paper", 966_182),   # keeps the unused pooling weights, as the reference does
])
def test_parameter_counts_match_the_reference(variant, era, expected):
    assert make(variant, era=era).n_parameters() == expected


def test_trainable_count_excludes_frozen_kernels_until_unfrozen():
    m = make()
    assert m.n_parameters(trainable_only=True) == 966_182 - 1728 * 4 * 30
    m.set_kernels_trainable(True)
    assert m.n_parameters(trainable_only=True) == 966_182


def test_shapes_through_the_layers():
    m = make(n_motifs=10, n_outputs=3)
    x = F.one_hot(torch.randint(0, 4, (2, 300)), 4).permute(0, 2, 1).float()
    scores = m.motif_scores(m.augment_input(x))
    assert scores.shape == (2, 24, 271)
    v = m.activations(scores)
    assert v.shape == (2, 12, 542)
    # strand merge: row k is [forward track of motif k | reverse-complement track]
    # addcmul may fuse the multiply-add: equal up to rounding
    torch.testing.assert_close(v[:, 3, :271], torch.sigmoid(scores[:, 6] * m.scale[6] + m.bias[6]),
                               atol=1e-6, rtol=0)
    torch.testing.assert_close(v[:, 3, 271:], torch.sigmoid(scores[:, 7] * m.scale[7] + m.bias[7]),
                               atol=1e-6, rtol=0)
    assert m(x).shape == (2, 3)


def test_position_index_is_symmetric_with_ceil_half_values():
    idx = position_index(300).numpy()
    assert idx[0] == idx[-1] == 0 and idx[149] == idx[150] == 149
    assert np.array_equal(idx, idx[::-1]) and len(np.unique(idx)) == 150
    odd = position_index(251).numpy()
    assert odd[125] == 125 and len(np.unique(odd)) == 126 and np.array_equal(odd, odd[::-1])


def test_programmable_pooling_spans_mean_to_max():
    m = make(n_motifs=4, n_outputs=1, length=60, width=10)
    v = torch.rand(3, m.config.n_features, 10)
    with torch.no_grad():
        m.pool_weight.zero_()
        assert torch.allclose(m.pool(v), v.mean(-1), atol=1e-6)
        m.pool_weight.fill_(500.0)
        assert torch.allclose(m.pool(v), v.amax(-1), atol=1e-2)
        m.pool_weight.fill_(2.0)
        # independent: explicit softmax weights per feature
        w = np.exp(2.0 * v.numpy()) / np.exp(2.0 * v.numpy()).sum(-1, keepdims=True)
        assert np.allclose(m.pool(v).numpy(), (w * v.numpy()).sum(-1), atol=1e-6)


def test_maxpool_variant_takes_the_max_over_both_strands():
    m = make("maxpool", n_motifs=4, n_outputs=1, length=60, width=10)
    v = torch.rand(3, m.config.n_features, 20)
    assert torch.equal(m.pool(v), v.amax(-1))


def test_interaction_gate_formula():
    m = make("interaction", n_motifs=5, n_outputs=2, length=50, width=8, era="head")
    y = torch.rand(4, m.config.n_features)
    a, c = m.interaction.weight.detach(), m.interaction.bias.detach()
    expected = y * torch.sigmoid(y @ a.T + c)
    assert torch.allclose(m.gate(y), expected, atol=1e-6)
    assert make("base", n_motifs=5, n_outputs=2, length=50, width=8, era="head").gate(y) is y


def _attention_by_loops(att, x, softmax):
    """Explicit per-position loops over the reference's formulas (section 2.2)."""
    x = x.double()
    n, dim, L = x.shape
    out = torch.zeros(n, dim, L, dtype=torch.float64)
    for b in range(n):
        total = torch.zeros(dim, L, dtype=torch.float64)
        for h in range(att.heads):
            k = att.key[h].double() @ x[b]
            q = att.query[h].double() @ x[b]
            if att.key_bias is not None:
                k = k + att.key_bias[0, h].double()
                q = q + att.query_bias[0, h].double()
            v = att.value[h].double() @ x[b] + att.value_bias[0, h].double()
            s = torch.zeros(L, L, dtype=torch.float64)
            for i in range(L):
                for j in range(L):
                    s[i, j] = (k[:, i] * q[:, j]).sum() / math.sqrt(att.emb)
            p = torch.softmax(s, dim=1 if softmax == "query" else 0)
            o = torch.zeros(att.emb, L, dtype=torch.float64)
            for j in range(L):
                for i in range(L):
                    o[:, j] += p[i, j] * v[:, i]
            total += att.unify[h].double() @ o
        out[b] = total + att.unify_bias[0].double()
    return out


@pytest.mark.parametrize("softmax", ["query", "key"])
@pytest.mark.parametrize("bias", [True, False])
def test_attention_matches_explicit_loops(softmax, bias):
    torch.manual_seed(1)
    att = SelfAttentionSparse(4, 2, key_query_bias=bias, softmax=softmax)
    with torch.no_grad():
        for p in att.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(2, 4, 7)
    assert torch.allclose(att(x).double(), _attention_by_loops(att, x, softmax), atol=1e-5)


def test_key_softmax_is_standard_attention():
    torch.manual_seed(2)
    att = SelfAttentionSparse(4, 2, key_query_bias=True, softmax="key")
    x = torch.randn(3, 4, 11)
    k = torch.einsum("hed,ndl->nhle", att.key, x) + att.key_bias.transpose(-1, -2)
    q = torch.einsum("hed,ndl->nhle", att.query, x) + att.query_bias.transpose(-1, -2)
    v = torch.einsum("hed,ndl->nhle", att.value, x) + att.value_bias.transpose(-1, -2)
    o = F.scaled_dot_product_attention(q, k, v)  # softmax over keys for each query
    expected = torch.einsum("hde,nhle->ndl", att.unify, o) + att.unify_bias
    assert torch.allclose(att(x), expected, atol=1e-5)


def test_bf16_convolution_within_1e2_of_fp32():
    m = make(n_motifs=50, n_outputs=4).eval()
    x = F.one_hot(torch.randint(0, 4, (8, 300)), 4).permute(0, 2, 1).float()
    with torch.no_grad():
        ref = m(x)
        m.precision = "bf16"
        fast = m(x)
    assert (fast - ref).abs().max() <= 1e-2 * ref.abs().max()


def test_input_checks_name_the_problem():
    m = make(n_motifs=3, n_outputs=1, length=40, width=8)
    with pytest.raises(TisfmError, match="built for 40 bp"):
        m(torch.zeros(1, 4, 41))
    with pytest.raises(TisfmError, match=r"\(N, 4, L\)"):
        m(torch.zeros(1, 5, 40))
    cfg = TISFMConfig(n_motifs=3, n_outputs=1, length=40, kernel_width=8)
    with pytest.raises(TisfmError, match="kernel stack has shape"):
        TISFM(cfg, torch.zeros(5, 4, 8))
    with pytest.raises(TisfmError, match="unknown variant"):
        TISFMConfig.for_variant("huge", n_motifs=1, n_outputs=1)


def test_config_round_trip_and_type_checks():
    cfg = TISFMConfig.for_variant("interaction", n_motifs=7, n_outputs=2, length=100, era="paper")
    assert TISFMConfig.from_dict(cfg.to_dict()) == cfg and cfg.variant == "interaction"
    bad = cfg.to_dict() | {"n_motifs": "7"}
    with pytest.raises(TisfmError, match="'n_motifs' should be int"):
        TISFMConfig.from_dict(bad)
    with pytest.raises(TisfmError, match="unknown fields: colour"):
        TISFMConfig.from_dict(cfg.to_dict() | {"colour": 1})


def test_seeded_initialisation_is_reproducible_and_follows_the_reference_scheme():
    a, b = make(n_motifs=20, n_outputs=2), make(n_motifs=20, n_outputs=2)
    for (na, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(pa, pb), na
    assert torch.all(a.pool_weight == 2.0) and torch.all(a.scale == 1) and torch.all(a.bias == 0)
    bound = math.sqrt(6 / a.config.n_features)   # kaiming_uniform(relu)
    assert a.final.weight.abs().max() <= bound and a.interaction.weight.abs().max() <= bound
    assert a.attention.unify.abs().max() <= math.sqrt(6 / 12) + 1e-7  # xavier on (2, 4, 2)


def test_chunked_block_gives_the_same_outputs_and_gradients():
    m = make(n_motifs=12, n_outputs=3, length=80, width=12)
    m.set_kernels_trainable(True)
    with torch.no_grad():
        m.pool_weight.uniform_(-3, 8)     # both signs of the pooling weight
        m.scale.uniform_(0.5, 2)
        m.bias.uniform_(-3, 1)
    x0 = F.one_hot(torch.randint(0, 4, (37, 80)), 4).permute(0, 2, 1).float()
    grads = []
    for chunk in (None, 5):   # plain autograd on the whole batch vs the fused, chunked block
        m.chunk_size = chunk
        m.zero_grad()
        x = x0.clone().requires_grad_(True)
        out = m(x)
        (out ** 2).sum().backward()
        grads.append((out.detach(), {n: p.grad.clone() for n, p in m.named_parameters()}, x.grad))
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-5)
    assert torch.allclose(grads[0][2], grads[1][2], atol=1e-4, rtol=1e-4)
    for name, g in grads[0][1].items():
        assert torch.allclose(g, grads[1][1][name], atol=1e-4, rtol=1e-4), name
