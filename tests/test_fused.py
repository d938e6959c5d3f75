"""The hand-written blocks of tisfm_core.fused against plain autograd on the same formulas."""

import math
import os

import pytest
import torch
import torch.nn.functional as F

from tisfm_core import fused, native
from tisfm_core.model import TISFM, TISFMConfig
from tisfm_core.training import use_compile


def plain_block(x, kernels, scale, bias, a):
    """Convolution -> calibration -> sigmoid -> softmax pooling, by autograd (the reference way)."""
    z = torch.sigmoid(F.conv1d(x, kernels) * scale[:, None] + bias[:, None])
    v = z.reshape(x.shape[0], a.shape[0], -1)
    w = torch.softmax(v * a[:, None], dim=-1)
    return (w * v).sum(-1)


def block_inputs(n=21, motifs=7, length=64, width=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = F.one_hot(torch.randint(0, 4, (n, length), generator=g), 4).permute(0, 2, 1).float()
    x = x + 0.1 * torch.randn(x.shape, generator=g)          # attention makes the input non-one-hot
    kernels = torch.randn(2 * motifs, 4, width, generator=g)
    scale = torch.rand(2 * motifs, generator=g) + 0.5
    bias = torch.randn(2 * motifs, generator=g) - 1
    a = torch.linspace(-3, 8, motifs)                        # both signs of the pooling weight
    return x, kernels, scale, bias, a


def grads_of(fn, tensors, weight):
    ts = [t.clone().requires_grad_(True) for t in tensors]
    y = fn(*ts)
    (y * weight).sum().backward()
    return y.detach(), [t.grad for t in ts]


@pytest.mark.parametrize("chunk", [1, 4, 64])
def test_motif_block_matches_autograd_for_every_input(chunk):
    inputs = block_inputs()
    weight = torch.randn(21, 7, generator=torch.Generator().manual_seed(1))
    y0, g0 = grads_of(plain_block, inputs, weight)
    y1, g1 = grads_of(lambda *t: fused.motif_block(*t, chunk_size=chunk), inputs, weight)
    torch.testing.assert_close(y1, y0, atol=1e-6, rtol=1e-5)
    for name, a, b in zip(("x", "kernels", "scale", "bias", "a"), g1, g0):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=name)


def test_bf16_block_stays_close_to_fp32():
    inputs = block_inputs()
    weight = torch.randn(21, 7, generator=torch.Generator().manual_seed(1))
    y0, g0 = grads_of(plain_block, inputs, weight)
    y1, g1 = grads_of(lambda *t: fused.motif_block(*t, precision="bf16"), inputs, weight)
    assert (y1 - y0).abs().max() < 2e-2 * y0.abs().max()
    for name, a, b in zip(("x", "kernels", "scale", "bias", "a"), g1, g0):
        rel = float((a - b).norm() / b.norm())
        assert rel < 3e-2, (name, rel)


@pytest.fixture
def torch_kernels(monkeypatch):
    """The block's torch kernels (eager or compiled) instead of the native CPU kernels."""
    monkeypatch.setattr(native, "library", lambda: None)


def test_compiled_block_gives_the_eager_numbers(torch_kernels):
    # 23 sequences in chunks of 8: the last chunk is padded for the compiled kernels
    inputs = block_inputs(n=23)
    weight = torch.randn(23, 7, generator=torch.Generator().manual_seed(2))
    y0, g0 = grads_of(lambda *t: fused.motif_block(*t, chunk_size=8), inputs, weight)
    y1, g1 = grads_of(lambda *t: fused.motif_block(*t, chunk_size=8, compiled=True), inputs, weight)
    assert not fused._compile_failed, fused._compile_failed
    torch.testing.assert_close(y1, y0, atol=1e-6, rtol=1e-5)
    for name, a, b in zip(("x", "kernels", "scale", "bias", "a"), g1, g0):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=name)
    with torch.no_grad():   # the inference kernel too
        torch.testing.assert_close(fused.motif_block(*inputs, chunk_size=8, compiled=True), y0,
                                   atol=1e-6, rtol=1e-5)


def narrow_kernels(motifs=9, width=12, seed=5, centred=False):
    """Kernels of motifs 1..width columns wide (zero columns elsewhere), two all-zero padding
    channels at the end: what a PWM stack looks like to the grouped convolution."""
    g = torch.Generator().manual_seed(seed)
    kernels = torch.zeros(2 * motifs, 4, width)
    for k in range(motifs - 1):
        span = 1 + (k * 5) % width
        start = (width - span) // 2 if centred else 0
        kernels[2 * k:2 * k + 2, :, start:start + span] = torch.randn(2, 4, span, generator=g)
    return kernels


def test_conv_plan_groups_cover_every_motif_and_skip_only_zero_columns():
    kernels = narrow_kernels(motifs=40, width=30, centred=True)
    order, groups = fused.conv_plan(kernels)
    work = sum((m1 - m0) * (hi - lo) for m0, m1, lo, hi in groups)
    products = sum(hi > lo for _, _, lo, hi in groups)
    assert len(groups) >= 2 and work < 40 * 30     # the padding motif costs nothing
    assert work + fused.GROUP_COST * products <= 40 * 30 + fused.GROUP_COST
    assert sorted(order.tolist()) == list(range(40))
    assert groups[0][0] == 0 and groups[-1][1] == 40
    assert all(a[1] == b[0] for a, b in zip(groups, groups[1:]))   # consecutive, no gaps
    per_motif = kernels.view(40, 8, 30).abs().sum(1)               # (M, K) column use
    for m0, m1, lo, hi in groups:
        rows = per_motif[order[m0:m1]]
        assert rows[:, :lo].sum() == 0 and rows[:, hi:].sum() == 0
    assert fused.conv_plan(kernels, grouped=False)[1] == ((0, 40, 0, 30),)


@pytest.mark.parametrize("centred", [False, True])
def test_grouped_block_matches_autograd_for_narrow_motifs(centred, monkeypatch):
    monkeypatch.setattr(fused, "GROUP_COST", 0)               # a group per distinct span
    x, _, scale, bias, _ = block_inputs(motifs=9, width=12)
    kernels = narrow_kernels(centred=centred)
    assert len(fused.conv_plan(kernels)[1]) == 9              # 8 spans and the padding
    a = torch.linspace(-3, 8, 9)
    weight = torch.randn(21, 9, generator=torch.Generator().manual_seed(6))
    inputs = (x, kernels, scale, bias, a)
    y0, g0 = grads_of(plain_block, inputs, weight)
    y1, g1 = grads_of(lambda *t: fused.motif_block(*t, chunk_size=8), inputs, weight)
    torch.testing.assert_close(y1, y0, atol=1e-6, rtol=1e-5)
    for name, p, q in zip(("x", "kernels", "scale", "bias", "a"), g1, g0):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4, msg=name)


def small_model(chunk_size):
    cfg = TISFMConfig.for_variant("full", n_motifs=8, n_outputs=3, length=40, kernel_width=12,
                                  era="head", n_pad_channels=2)
    model = TISFM(cfg, narrow_kernels(centred=True), random_state=3)
    with torch.no_grad():
        model.bias.sub_(1.0)
    model.chunk_size = chunk_size
    return model


def test_retain_graph_loop_gives_every_outputs_gradients(monkeypatch):
    """One forward pass, one backward pass per output with retain_graph=True (the TISM authors'
    takegrad, Captum's loops) through the fused block, against plain autograd (chunk_size=None)."""
    monkeypatch.setattr(fused, "GROUP_COST", 0)
    x = F.one_hot(torch.randint(0, 4, (5, 40), generator=torch.Generator().manual_seed(7)),
                  4).permute(0, 2, 1).float()
    fused_model, plain = small_model(2), small_model(None)
    grads = {}
    for name, model in (("fused", fused_model), ("plain", plain)):
        xi = x.clone().requires_grad_(True)
        out = model(xi)
        per_output = []
        for r in range(out.shape[1]):
            gx, gs = torch.autograd.grad(out[:, r].sum(), (xi, model.scale), retain_graph=True)
            per_output.append((gx, gs))
        grads[name] = per_output
    for r, ((fx, fs), (px, ps)) in enumerate(zip(grads["fused"], grads["plain"])):
        torch.testing.assert_close(fx, px, atol=1e-5, rtol=1e-4, msg=f"input gradient {r}")
        torch.testing.assert_close(fs, ps, atol=1e-5, rtol=1e-4, msg=f"scale gradient {r}")
    assert not torch.allclose(grads["fused"][0][0], grads["fused"][1][0])   # outputs differ
    # the same through torch.autograd.functional.jacobian (a retain_graph loop over outputs)
    jac = torch.autograd.functional.jacobian(fused_model, x[:2])
    want = torch.autograd.functional.jacobian(plain, x[:2])
    torch.testing.assert_close(jac, want, atol=1e-5, rtol=1e-4)


def test_second_backward_without_retain_graph_is_refused_by_autograd():
    x, kernels, scale, bias, a = block_inputs()
    scale.requires_grad_(True)
    y = fused.motif_block(x, kernels, scale, bias, a).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="retain_graph"):
        y.backward()


@pytest.mark.parametrize("transpose", [False, True])
def test_attention_core_matches_the_materialised_attention(transpose):
    g = torch.Generator().manual_seed(3)
    a, b, v = (torch.randn(11, 2, 2, 40, generator=g) for _ in range(3))
    weight = torch.randn(11, 2, 2, 40, generator=g)

    def dense(a, b, v):
        p = torch.softmax(torch.einsum("nhei,nhej->nhij", a, b), dim=-1)
        return torch.einsum("nhij,nhei->nhej", p.transpose(-1, -2) if transpose else p, v)

    y0, g0 = grads_of(dense, (a, b, v), weight)
    y1, g1 = grads_of(lambda *t: fused.attention_core(*t, transpose=transpose, chunk_size=4),
                      (a, b, v), weight)
    torch.testing.assert_close(y1, y0, atol=1e-5, rtol=1e-5)
    for name, p, q in zip("abv", g1, g0):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4, msg=name)


def test_key_softmax_attention_is_standard_attention():
    """attention_softmax="key" must equal softmax(Q K^T / sqrt(e)) V computed independently."""
    cfg = TISFMConfig(n_motifs=3, n_outputs=1, length=20, kernel_width=5, attention_softmax="key")
    m = TISFM(cfg, torch.zeros(cfg.n_channels, 4, 5), random_state=0)
    att = m.attention
    x = torch.randn(5, 4, 20)
    q = torch.einsum("hed,ndl->nhle", att.query, x) + att.query_bias.transpose(-1, -2)
    k = torch.einsum("hed,ndl->nhle", att.key, x) + att.key_bias.transpose(-1, -2)
    v = torch.einsum("hed,ndl->nhle", att.value, x) + att.value_bias.transpose(-1, -2)
    out = F.scaled_dot_product_attention(q, k, v)              # (n, h, L, e)
    want = torch.einsum("hde,nhle->ndl", att.unify, out) + att.unify_bias
    torch.testing.assert_close(att(x), want, atol=1e-5, rtol=1e-5)
    assert math.isclose(att.emb, 2)


def test_compile_choice(monkeypatch):
    def model(n, pooling="programmable"):
        cfg = TISFMConfig(n_motifs=n, n_outputs=1, length=40, kernel_width=5, pooling=pooling)
        return TISFM(cfg, torch.zeros(cfg.n_channels, 4, 5))
    big, small = model(100), model(99)
    # an fp32 block runs the native kernels where they exist: nothing to compile
    assert use_compile("auto", big, "cpu") is (native.library() is None)
    big.precision = "bf16"
    assert use_compile("auto", big, "cpu") and not use_compile("auto", small, "cpu")
    assert not use_compile("auto", model(200, "max"), "cpu")
    assert use_compile("on", small, "cpu") and not use_compile("off", big, "cpu")
    monkeypatch.setattr(native, "library", lambda: None)
    big.precision = "fp32"
    assert use_compile("auto", big, "cpu")


@pytest.mark.parametrize("weights", [(-79.0, 79.0), (-120.0, 150.0)])
def test_extreme_pooling_weights_match_the_exact_softmax(weights):
    """Near the limit of the constant softmax shift (79) and beyond it (the row maximum is used)."""
    x, kernels, scale, bias, _ = block_inputs()
    a = torch.tensor([weights[0], weights[1], 0.0, 1.0, weights[1], weights[0], 5.0])
    bias = bias - 4                                        # mostly small activations: the hard case
    weight = torch.randn(21, 7, generator=torch.Generator().manual_seed(4))
    y0, g0 = grads_of(plain_block, (x, kernels, scale, bias, a), weight)
    y1, g1 = grads_of(fused.motif_block, (x, kernels, scale, bias, a), weight)
    assert torch.isfinite(y1).all()
    torch.testing.assert_close(y1, y0, atol=1e-6, rtol=1e-4)
    for name, p, q in zip(("x", "kernels", "scale", "bias", "a"), g1, g0):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-3, msg=name)


def test_without_a_compiler_the_block_warns_once_and_runs_eagerly(monkeypatch, torch_kernels):
    def broken_compile(fn, **kwargs):
        def run(*args):
            raise RuntimeError("InvalidCxxCompiler: no working C++ compiler found")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    monkeypatch.setattr(fused, "_compiled_kernels", {})
    monkeypatch.setattr(fused, "_compile_failed", [])
    inputs = block_inputs()
    with pytest.warns(RuntimeWarning, match="continuing with the eager kernels"):
        y = fused.motif_block(*inputs, chunk_size=8, compiled=True)
    # the compiled path pads the last chunk: other product shapes, so rounding may differ by CPU
    torch.testing.assert_close(y, fused.motif_block(*inputs, chunk_size=8), atol=1e-6, rtol=1e-5)
    assert len(fused._compile_failed) == 1
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")                          # no second warning
        fused.motif_block(*inputs, chunk_size=8, compiled=True)


_CAPPED_CHECK = """
import sys, torch
sys.path.insert(0, sys.argv[1])
from tisfm_core import fused
g = torch.Generator().manual_seed(0)
x = torch.nn.functional.one_hot(torch.randint(0, 4, (8, 40), generator=g), 4).permute(0, 2, 1).float()
kernels = torch.rand(10, 4, 6, generator=g)
scale, bias, a = torch.rand(10, generator=g) + 0.5, torch.randn(10, generator=g), torch.randn(5, generator=g)
with torch.no_grad():
    y = fused.motif_block(x, kernels, scale, bias, a, chunk_size=8, compiled=True)
    y0 = fused.motif_block(x, kernels, scale, bias, a, chunk_size=8)
assert not fused._compile_failed, fused._compile_failed
print(float((y - y0).abs().max()))
"""


@pytest.mark.slow
def test_a_capped_cpu_capability_never_reuses_other_isas_compiled_code(tmp_path):
    """Inductor's FX graph cache does not key CPU code on the vector ISA: after an AVX-512
    process filled the cache, an ATEN_CPU_CAPABILITY=avx2 process reusing it got wrong numbers.
    A capped process compiles afresh, so both give the eager numbers."""
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")}
    env["TORCHINDUCTOR_CACHE_DIR"] = str(tmp_path / "inductor")   # one cache for both
    repo = str(Path(__file__).resolve().parents[1])
    for extra in ({}, {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}):
        out = subprocess.run([sys.executable, "-c", _CAPPED_CHECK, repo], env={**env, **extra},
                             capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        assert float(out.stdout.split()[-1]) < 1e-5, (extra, out.stdout)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@cuda
def test_cuda_block_matches_the_cpu_block_in_fp32_and_under_bf16_autocast():
    inputs = block_inputs(motifs=9, width=12)
    inputs = (inputs[0], narrow_kernels(), *inputs[2:4], torch.linspace(-3, 8, 9))
    weight = torch.randn(21, 9, generator=torch.Generator().manual_seed(8))
    y0, g0 = grads_of(lambda *t: fused.motif_block(*t, chunk_size=8), inputs, weight)
    on_gpu = [t.cuda() for t in inputs]
    y1, g1 = grads_of(lambda *t: fused.motif_block(*t, chunk_size=8), on_gpu, weight.cuda())
    torch.testing.assert_close(y1.cpu(), y0, atol=1e-5, rtol=1e-4)
    for name, p, q in zip(("x", "kernels", "scale", "bias", "a"), g1, g0):
        torch.testing.assert_close(p.cpu(), q, atol=1e-4, rtol=1e-3, msg=name)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y2, g2 = grads_of(lambda *t: fused.motif_block(*t, chunk_size=8), on_gpu, weight.cuda())
    assert (y2.float().cpu() - y0).abs().max() < 2e-2 * y0.abs().max()
    for name, p, q in zip(("x", "kernels", "scale", "bias", "a"), g2, g0):
        assert float((p.float().cpu() - q).norm() / q.norm()) < 3e-2, name


@cuda
def test_cuda_retain_graph_loop_matches_the_cpu_gradients():
    x = F.one_hot(torch.randint(0, 4, (3, 40), generator=torch.Generator().manual_seed(9)),
                  4).permute(0, 2, 1).float()
    grads = []
    for device in ("cpu", "cuda"):
        model = small_model(2).to(device)
        xi = x.to(device).requires_grad_(True)
        out = model(xi)
        grads.append([torch.autograd.grad(out[:, r].sum(), xi, retain_graph=True)[0].cpu()
                      for r in range(out.shape[1])])
    for r, (a, b) in enumerate(zip(*grads)):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4, msg=f"output {r}")


@pytest.mark.parametrize("kernels_from", ["native", "torch"])
def test_a_padding_motif_gets_no_pooling_gradient_from_rounding(kernels_from, monkeypatch):
    """dy/da is a weighted variance of v, zero for the constant activations of an all-zero
    (padding) kernel. Written as sum(w v^2) - y^2 it cancelled to noise of either sign, which
    Adam turned into steps of size lr (and two DDP processes into different weights)."""
    if kernels_from == "torch":
        monkeypatch.setattr(native, "library", lambda: None)
    x, kernels, scale, bias, a = block_inputs(n=64)
    kernels[-2:] = 0
    bias[-1] = bias[-2]          # both strands of the last motif: one constant activation
    weight = torch.randn(64, 7, generator=torch.Generator().manual_seed(3))
    _, grads = grads_of(lambda *t: fused.motif_block(*t, chunk_size=16), (x, kernels, scale, bias, a), weight)
    grad_a = grads[4]
    assert abs(float(grad_a[-1])) < 1e-10 * float(grad_a[:-1].abs().max())
    assert float(grad_a[:-1].abs().min()) > 0
