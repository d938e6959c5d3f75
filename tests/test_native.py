"""The native CPU kernels (tisfm_core.native) against the torch formulas they replace, in fp64."""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from tisfm_core import fused, native

needs_native = pytest.mark.skipif(native.library() is None, reason="no C++ compiler here")


def pool_inputs(rows_per_motif=5, motifs=7, p=37, seed=0, weights=None):
    g = torch.Generator().manual_seed(seed)
    r = rows_per_motif * motifs
    s0, s1 = 3 * torch.randn(r, p, generator=g), 3 * torch.randn(r, p, generator=g)
    sc0, sc1 = torch.rand(motifs, generator=g) + 0.5, torch.rand(motifs, generator=g) + 0.5
    b0, b1 = torch.randn(motifs, generator=g) - 1, torch.randn(motifs, generator=g) - 1
    a = torch.linspace(-6, 9, motifs) if weights is None else torch.tensor(weights)
    return s0, s1, (sc0, sc1, b0, b1, a)


def torch_rows(params, per_motif):
    sc0, sc1, b0, b1, a = params
    return [t.double().repeat_interleave(per_motif)[:, None] for t in (sc0, sc1, b0, b1, a, torch.relu(a))]


def close(got, want, rtol):
    """Agreement relative to the largest magnitude of the reference."""
    err = float((got.double() - want).abs().max() / want.abs().max().clamp_min(1e-30))
    assert err < rtol, err


@needs_native
@pytest.mark.parametrize("p", [1, 15, 16, 17, 271])
@pytest.mark.parametrize("row_max", [False, True])
def test_pool_rows_match_the_torch_kernels(p, row_max):
    """Every vector-tail length, both softmax shifts; training outputs and the inference value."""
    s0, s1, params = pool_inputs(p=p)
    rows = torch_rows(params, 5)
    want = fused._pool_rows_train(s0.double(), s1.double(), rows, row_max)
    got = native.pool_rows(s0.view(7, 5, p), s1.view(7, 5, p), params, row_max, train=True)
    assert [t.shape for t in got] == [t.shape for t in want[:7]] + [(7, 5, p)] * 2
    for g, w in zip(got, want):
        close(g.reshape(w.shape), w, 1e-5)
    close(native.pool_rows(s0.view(7, 5, p), s1.view(7, 5, p), params, row_max, train=False),
          fused._pool_rows(s0.double(), s1.double(), rows, row_max), 1e-6)


@needs_native
def test_pool_rows_read_and_write_strided_layouts():
    """Strands interleaved in one score buffer (M, 2, n, P) and derivatives written sequence-major
    (n, M, 2, P), as the motif block lays them out: the same numbers as contiguous rows."""
    s0, s1, params = pool_inputs(p=23)
    want = native.pool_rows(s0.view(7, 5, 23), s1.view(7, 5, 23), params, False, train=True)
    both = torch.stack([s0.view(7, 5, 23), s1.view(7, 5, 23)], dim=1)      # (M, 2, n, P)
    f = torch.full((5, 7, 2, 23), float("nan"))
    got = native.pool_rows(both[:, 0], both[:, 1], params, False, train=True,
                           out=(f[:, :, 0].transpose(0, 1), f[:, :, 1].transpose(0, 1)))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=0)
    assert torch.equal(f[:, :, 1].transpose(0, 1), want[8]) and not f.isnan().any()
    with pytest.raises(ValueError, match="unit position stride"):
        native.pool_rows(both[:, 0, :, ::2], both[:, 1, :, ::2], params, False, train=False)


@needs_native
def test_pool_rows_with_extreme_weights_stay_finite_and_exact():
    """Large |a| with the row maximum, and tiny activations: no overflow, no 0/0."""
    s0, s1, params = pool_inputs(p=271, weights=[-150.0, -79.0, 0.0, 1e-3, 79.0, 120.0, 150.0])
    params = (*params[:2], params[2] - 10, params[3] - 10, params[4])    # v ~ 1e-5
    rows = torch_rows(params, 5)
    got = native.pool_rows(s0.view(7, 5, -1), s1.view(7, 5, -1), params, True, train=True)
    want = fused._pool_rows_train(s0.double(), s1.double(), rows, True)
    assert all(torch.isfinite(t).all() for t in got)
    for g, w in zip(got, want):
        close(g.reshape(w.shape), w, 1e-4)


def materialised(a, b, v, transpose):
    p = torch.softmax(a.transpose(-1, -2) @ b, dim=-1)
    return v @ (p.transpose(-1, -2) if transpose else p)


@needs_native
@pytest.mark.parametrize("length", [37, 48])
@pytest.mark.parametrize("transpose", [False, True])
def test_attention_matches_the_materialised_softmax(length, transpose):
    g = torch.Generator().manual_seed(3)
    a, b, v, go = (2 * torch.randn(3, 2, 2, length, generator=g) for _ in range(4))
    ref = [t.double().requires_grad_(True) for t in (a, b, v)]
    out = materialised(*ref, transpose)
    out.backward(go.double())
    got, lse = native.attention_forward(a, b, v, transpose)
    close(got, out.detach(), 1e-6)
    scores = ref[0].detach().transpose(-1, -2) @ ref[1].detach()
    close(lse, torch.logsumexp(scores, dim=-1), 1e-6)
    for name, grad, want in zip("abv", native.attention_backward(a, b, v, lse, go, transpose), ref):
        close(grad, want.grad, 1e-5)


@needs_native
@pytest.mark.parametrize("length, n", [(40, 1), (64, 3), (300, 5)])
@pytest.mark.parametrize("train, room", [(False, 0), (True, 0), (True, 16), (True, 21)])
def test_conv_pool_rows_equal_pool_rows_on_the_convolution(length, n, train, room):
    """Scores formed inside the kernel, per motif over its own columns (narrow, shifted, empty
    motifs), give what the row kernel gives on torch's convolution; derivative rows padded to a
    multiple of 16 floats (written whole, streamed) or to an odd room (row by row) hold the same
    derivatives, and the input gradient reads them in place."""
    g = torch.Generator().manual_seed(4)
    motifs, width = 6, 9
    kernels = torch.randn(2 * motifs, 4, width, generator=g)
    kernels[0:2, :, 4:] = 0          # narrow, left-aligned
    kernels[2:4, :, :3] = 0          # shifted right
    kernels[4:6, :, 2:7] = 0         # a gap inside: the span is still 0 .. 8
    kernels[6:8] = 0                 # no columns (a padding motif)
    x = torch.randn(n, 4, length, generator=g)
    weights = kernels.view(motifs, 2, 4, width).permute(0, 1, 3, 2).reshape(2 * motifs, 4 * width)
    lo, hi = native.column_spans(weights)
    assert lo.tolist() == [0, 3, 0, 0, 0, 0] and hi.tolist() == [4, 9, 9, 0, 9, 9]
    p = length - width + 1
    s = torch.nn.functional.conv1d(x, kernels).view(n, motifs, 2, p).permute(1, 2, 0, 3).contiguous()
    _, _, params = pool_inputs(rows_per_motif=n, motifs=motifs, p=p, seed=5)
    want = native.pool_rows(s[:, 0], s[:, 1], params, False, train)
    r = {0: p, 16: -(-p // 16) * 16, 21: p + 21}[room]
    f = torch.full((n, motifs, 2, r), 7.0)
    got = native.conv_pool_rows(x, weights, (lo, hi), params, False, train, out=f if train else None)
    for a, b in zip(got if train else [got], want if train else [want]):
        torch.testing.assert_close(a, b, rtol=2e-5, atol=1e-5)
    if train:
        for t in (0, 1):
            torch.testing.assert_close(f[:, :, t, :p].transpose(0, 1), want[7 + t], rtol=2e-5, atol=1e-6)
        g = torch.randn(n, 2 * motifs, generator=g)
        torch.testing.assert_close(native.input_gradient(f[..., :p], g, weights, (lo, hi)),
                                   native.input_gradient(f[..., :p].contiguous(), g, weights, (lo, hi)))


@needs_native
def test_conv_pool_rows_refuses_an_out_that_does_not_fit():
    x, weights = torch.randn(2, 4, 20), torch.randn(6, 4 * 5)
    spans = native.column_spans(weights)
    params = tuple(torch.ones(3) for _ in range(5))
    for bad in (torch.empty(2, 3, 2, 15), torch.empty(2, 3, 2, 40)[..., :20], torch.empty(2, 3, 2, 16).double()):
        with pytest.raises(ValueError, match="out must be a contiguous float32"):
            native.conv_pool_rows(x, weights, spans, params, False, True, out=bad)


@needs_native
def test_the_block_and_the_attention_take_the_native_path(monkeypatch):
    """fp32 on CPU goes native (no per-row parameter copies, no (L, L) matrices from torch);
    fp64 and more than two channels per head keep the torch code."""
    calls = []
    for name in ("conv_pool_rows", "attention_forward"):
        real = getattr(native, name)
        monkeypatch.setattr(native, name, lambda *a, _r=real, _n=name, **k: calls.append(_n) or _r(*a, **k))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 4, 30, generator=g)
    kernels, scale, bias, w = torch.randn(6, 4, 5, generator=g), torch.ones(6), torch.zeros(6), torch.ones(3)
    fused.motif_block(x, kernels, scale, bias, w, chunk_size=2)
    fused.attention_core(*(torch.randn(2, 2, 2, 9, generator=g) for _ in range(3)))
    assert calls == ["conv_pool_rows", "conv_pool_rows", "attention_forward"]
    fused.motif_block(x.double(), kernels.double(), scale.double(), bias.double(), w.double())
    fused.attention_core(*(torch.randn(2, 2, 3, 9, generator=g) for _ in range(3)))
    assert len(calls) == 3


@needs_native
@pytest.mark.parametrize("max_pool", [False, True])
def test_ism_tables_are_the_sums_and_maxima_before_and_after(max_pool):
    g = torch.Generator().manual_seed(3)
    t0, t1 = torch.rand(5, 23, generator=g, dtype=torch.float64), torch.rand(5, 23, generator=g, dtype=torch.float64)
    offset, q = 7, 45
    out = native.ism_tables(t0, None if max_pool else t1, offset, q, max_pool)
    assert out.shape == (5, 2 if max_pool else 4, q)
    for k in range(q):   # padded position k holds score k - offset
        lo = min(max(k - offset, 0), 23)
        for t, row in ((t0, 0), (t1, 2))[:1 if max_pool else 2]:
            before, after = t[:, :lo], t[:, lo:]
            if max_pool:
                none = torch.full((5,), -torch.inf, dtype=torch.float64)
                want = (before.amax(1) if lo else none, after.amax(1) if lo < 23 else none)
            else:
                want = (before.sum(1), after.sum(1))
            torch.testing.assert_close(out[:, row, k], want[0], rtol=1e-14, atol=0)
            torch.testing.assert_close(out[:, row + 1, k], want[1], rtol=1e-14, atol=0)


@needs_native
def test_ism_pool_refuses_reads_beyond_its_padding():
    channels, q, kw = 4, 30, 5
    args = dict(ez=torch.ones(channels, q), mask=torch.ones(q),
                tables=torch.zeros(channels, 4, q, dtype=torch.float64),
                edz=torch.ones(channels, 4, 3, kw), start=torch.full((channels,), 2),
                width=torch.full((channels,), kw), a=torch.ones(channels),
                feats=torch.arange(2), refs=torch.zeros(40, dtype=torch.int32), max_pool=False)
    w = native.vector_width()
    fits = q - w - 2 - kw + 1    # the last i1 whose vector reads stay inside q
    assert native.ism_pool(**args, i0=0, i1=fits).shape == (fits, 3, 2)
    with pytest.raises(ValueError, match="out of range"):
        native.ism_pool(**args, i0=0, i1=fits + 1)
    with pytest.raises(ValueError, match="out of range"):
        native.ism_pool(**{**args, "feats": torch.tensor([2])}, i0=0, i1=4)
    with pytest.raises(ValueError, match="float32"):
        native.ism_pool(**{**args, "ez": torch.ones(channels, q, dtype=torch.float64)}, i0=0, i1=4)


def test_without_a_compiler_the_kernels_warn_once_and_torch_runs(monkeypatch):
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setattr(native, "_compiler", lambda: None)
    with pytest.warns(RuntimeWarning, match="no C.. compiler found"):
        assert native.library() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")                          # no second warning
        assert native.library() is None
        assert not native.usable(torch.zeros(1))
    g = torch.Generator().manual_seed(1)
    a, b, v = (torch.randn(2, 2, 2, 11, generator=g) for _ in range(3))
    torch.testing.assert_close(fused.attention_core(a, b, v), materialised(a, b, v, False))


@pytest.mark.parametrize("variable, value, reason", [
    ("CXX", "false", "native CPU kernels are unavailable"),                  # a failing build
    ("TISFM_VECTOR_WIDTH", "32", "TISFM_VECTOR_WIDTH must be 4, 8 or 16, not '32'"),
])
def test_a_build_that_cannot_be_made_is_reported_with_its_reason(monkeypatch, tmp_path, variable,
                                                                 value, reason):
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setenv(variable, value)
    monkeypatch.setenv("TISFM_KERNEL_CACHE", str(tmp_path))
    with pytest.warns(RuntimeWarning, match=reason):
        assert native.library() is None
    assert not list(tmp_path.glob("*.so"))                    # nothing half-built left behind


def test_tisfm_native_0_turns_them_off(monkeypatch):
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setenv("TISFM_NATIVE", "0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert native.library() is None


_CAPPED = """
import sys, torch
sys.path.insert(0, sys.argv[1])
from tisfm_core import fused, native
g = torch.Generator().manual_seed(0)
s0, s1 = torch.randn(40, 271, generator=g), torch.randn(40, 271, generator=g)
params = (torch.rand(8, generator=g) + 0.5, torch.rand(8, generator=g) + 0.5, torch.randn(8, generator=g),
          torch.randn(8, generator=g), torch.randn(8, generator=g))
y = native.pool_rows(s0.view(8, 5, -1), s1.view(8, 5, -1), params, False, train=False)
rows = [t.double().repeat_interleave(5)[:, None] for t in (*params, torch.relu(params[4]))]
err = float((y - fused._pool_rows(s0.double(), s1.double(), rows, False)).abs().max())
# the convolution inside the kernel, and its input gradient, against torch's
x, kernels = torch.randn(5, 4, 60, generator=g), torch.randn(16, 4, 7, generator=g)
w = kernels.view(8, 2, 4, 7).permute(0, 1, 3, 2).reshape(16, 28)
spans = native.column_spans(w)
s = torch.nn.functional.conv1d(x, kernels).view(5, 8, 2, -1).permute(1, 2, 0, 3).contiguous()
got = native.conv_pool_rows(x, w, spans, params, False, train=False)
err = max(err, float((got - native.pool_rows(s[:, 0], s[:, 1], params, False, train=False)).abs().max()))
f, gsc = torch.randn(5, 8, 2, 54, generator=g), torch.randn(5, 16, generator=g)
want = torch.nn.functional.conv_transpose1d((f.view(5, 16, 54) * gsc[:, :, None]), kernels)
err = max(err, float((native.input_gradient(f, gsc, w, spans) - want).abs().max() / want.abs().max()))
print(native.library().tisfm_vector_width(), err)
"""


@needs_native
@pytest.mark.slow
def test_a_capped_cpu_capability_gets_kernels_built_for_it(tmp_path):
    """ATEN_CPU_CAPABILITY=avx2 (the emulation of an AVX2-only CPU) builds 8-wide kernels of its
    own, cached beside the others, and ``default`` the 4-wide baseline ones (no AVX): all give the
    same numbers."""
    if "AVX" not in torch.backends.cpu.get_cpu_capability():
        pytest.skip("not an x86 CPU with AVX2")
    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "TISFM_VECTOR_WIDTH")}
    env["TISFM_KERNEL_CACHE"] = str(tmp_path)
    repo = str(Path(__file__).resolve().parents[1])
    widths = []
    for extra in ({}, {"ATEN_CPU_CAPABILITY": "avx2"}, {"ATEN_CPU_CAPABILITY": "default"},
                  {"ATEN_CPU_CAPABILITY": "avx2", "TISFM_VECTOR_WIDTH": "16"}):
        out = subprocess.run([sys.executable, "-c", _CAPPED, repo], env={**env, **extra},
                             capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        width, err = out.stdout.split()
        assert float(err) < 1e-6
        widths.append(int(width))
    assert widths[1] == 8 and widths[0] >= 8 and widths[2] == 4 and widths[3] == 16
    assert len(list(tmp_path.glob("tisfm_kernels_avx2_w16_*.so"))) == 1
    assert len(list(tmp_path.glob("tisfm_kernels_avx2_*.so"))) == 2
    assert len(list(tmp_path.glob("tisfm_kernels_default_*.so"))) == 1


@needs_native
@pytest.mark.slow
def test_the_16_lane_kernels_pass_the_kernel_tests_on_any_cpu(tmp_path):
    """The AVX-512 build's loop logic (16 lanes: blocks, tails, padding), built with
    TISFM_VECTOR_WIDTH=16 for whatever this CPU has, passes the native, fused and exact-ISM tests,
    so a CPU without AVX-512 checks it too (only the intrinsic wrappers differ on AVX-512: those
    are compiled here, not run)."""
    build = subprocess.run([native._compiler(), *native.BASE_FLAGS, *native.ISA_FLAGS["AVX512"], "-o",
                            str(tmp_path / "avx512.so"), str(native.SOURCE)], capture_output=True, text=True,
                           timeout=native.BUILD_TIMEOUT_S)
    assert build.returncode == 0, build.stderr[-2000:]
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    env.update(TISFM_VECTOR_WIDTH="16", TISFM_KERNEL_CACHE=str(tmp_path))
    root = Path(__file__).resolve().parents[1]
    probe = subprocess.run([sys.executable, "-c", "from tisfm_core import native; print(native.vector_width())"],
                           cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert probe.returncode == 0 and probe.stdout.split()[-1] == "16", probe.stderr[-2000:]
    files = [f"tests/{name}" for name in ("test_native.py", "test_fused.py", "test_ism_fast.py")]
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "not slow", "-p", "no:cacheprovider",
                          *files], cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:]
    assert " passed" in out.stdout and " failed" not in out.stdout
