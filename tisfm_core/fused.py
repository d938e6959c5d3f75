"""tiSFM's two heavy blocks, with hand-written backward passes.

**Motif block** (convolution -> calibration -> sigmoid -> softmax pooling). For a batch of
256 x 300 bp and 862 motifs its intermediates have 256 x 1728 x 271 = 120 million elements.
Autograd would store several such tensors and run a dozen memory-bound passes over them. Here
the forward pass works chunk by chunk and, when gradients are needed, keeps a single tensor: the
derivative of each pooled output with respect to each pre-activation,

    v = sigmoid(z),  z = s * scale + bias      s: motif scores, both strands merged per motif
    w = softmax(a * v)  over the 2 (L - K + 1) positions of a motif
    y = sum_j w_j v_j
    f_j = dy/dz_j = w_j (1 + a (v_j - y)) v_j (1 - v_j)      dy/da = sum_j w_j (v_j - y)^2

plus its row sums. The gradients of scale, bias and a are small products of the row sums with
the output gradient; only the input gradient (and the kernels' when they train) passes over the
big tensor, once: products of ``f`` with the kernels scaled by the output gradient times the scale
(``sum_c g_c scale_c W_c f_c``; see :func:`_input_gradient`). ``f`` is kept as saved tensors,
which autograd frees after the backward pass unless ``retain_graph=True`` (one forward, one
backward per output, as the TISM authors' ``takegrad`` and Captum do).

In fp32 on CPU the whole forward row, convolution included, is :mod:`tisfm_core.native`'s:
for one sequence and one motif it forms both strands' scores from the input over the kernel
columns that motif uses (36% of the dense multiply-adds for cisBP), then sigmoid, pooling and
``f``; the sequence stays in L1 while its motifs pass, so no score tensor exists. ``f`` is written
sequence-major, (sequence, motif, strand, position), and the native input gradient reads it in
tiles per sequence (the transposed convolution, again per motif over its own columns).
Elsewhere (bf16, CUDA, fp64, no C++ compiler) the convolution is a matrix product over unfolded
windows: in fp32 and fp64 it skips the zero columns of narrow motifs (:func:`conv_plan`: motifs
sorted by the kernel columns they use and cut into a few groups; 40% of the dense work), in bf16
(``precision="bf16"``, oneDNN's AMX path) one product covers everything; scores are laid out
(strand, motif, sequence, position) and with ``compiled=True`` ``torch.compile`` turns the torch
kernel into a single loop over rows that keeps a row in a local buffer, reading each score once
and writing each derivative once. Compilation takes seconds per model shape, so training turns
it on and inference does not.

**Input attention** (:class:`AttentionCore`): ``out = v @ softmax(a^T b)``. With two channels per
head in fp32 on CPU (tiSFM's attention) the native kernels build each row of the (L, L) matrix in
cache, forward and backward, from the row log-normalisers kept by the forward pass (4x faster
than torch's products); otherwise the matrix of every sequence and head is built a few sequences
at a time and rebuilt in the backward pass. The (N, heads, L, L) tensors of the reference are
never materialised.
"""

from __future__ import annotations

import os
import warnings

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from . import native


def conv_dtype(precision, dtype=torch.float32):
    """Arithmetic of the motif convolution: bf16 for ``precision="bf16"``, else ``dtype`` (the
    input's: fp32, or fp64 for a model cast to double)."""
    return torch.bfloat16 if precision == "bf16" else dtype


def motif_conv(x, kernels, precision):
    """(N, 4, L) x (C, 4, K) -> scores (N, C, L - K + 1), fp32 and contiguous."""
    if precision == "bf16":   # one bf16 product over the unfolded windows (oneDNN AMX)
        n, _, _ = x.shape
        width = kernels.shape[2]
        windows = x.to(torch.bfloat16).unfold(2, width, 1).permute(0, 1, 3, 2).reshape(n, 4 * width, -1)
        return torch.matmul(kernels.reshape(kernels.shape[0], -1).to(torch.bfloat16), windows).float()
    return F.conv1d(x, kernels)


def _activations(s, scale, bias, n_features):
    """Calibrated sigmoids of scores (n, C, P) -> fp32 (n, M, 2P), strands of a motif side by side."""
    v = torch.addcmul(bias[:, None], s, scale[:, None]).sigmoid_()
    return v.reshape(s.shape[0], n_features, -1)


#: Largest |pooling weight| for which the softmax may be shifted by max(a, 0) instead of the row
#: maximum: a v - max(a, 0) lies in [-|a|, 0] since v is in (0, 1), and exp of it underflows only
#: below about -87. The constant shift saves a reduction pass; larger weights use the row maximum.
CONSTANT_SHIFT_LIMIT = 80.0

#: What one more matrix product of the grouped convolution costs, in motifs x kernel columns of
#: work (chunks of 16 x 271 positions on 1-2 cores: anything from 256 to 1024 is equally fast).
GROUP_COST = 512


def grouped_conv(dtype, device):
    """Whether the convolution runs in column groups: in fp32 (or fp64) on CPU. (bf16 AMX
    products are fastest long; on a GPU reading the column spans back would stall the step.)"""
    return dtype in (torch.float32, torch.float64) and torch.device(device).type == "cpu"


def conv_plan(kernels, grouped=True):
    """Motif order and column groups of the convolution.

    A motif narrower than the kernel buffer has all-zero columns (cisBP motifs fill 36% of a
    30-column buffer). Motifs are sorted by the span of columns they use on either strand and cut
    into groups whose product skips the columns none of them uses; the cut minimises the work
    plus :data:`GROUP_COST` per group. Exact: only zeros are skipped.

    Parameters
    ----------
    kernels : torch.Tensor, shape (2 M, 4, K)
    grouped : bool, default True
        False gives one group over all motifs and columns (see :func:`grouped_conv`).

    Returns
    -------
    order : torch.LongTensor, shape (M,)
        Sorted position -> motif.
    groups : tuple of (m0, m1, lo, hi)
        Sorted motifs ``m0 .. m1 - 1`` use only kernel columns ``lo .. hi - 1``.
    """
    m, k = kernels.shape[0] // 2, kernels.shape[2]
    if not grouped:
        return torch.arange(m, device=kernels.device), ((0, m, 0, k),)
    used = kernels.detach().reshape(m, 8, k).ne(0).any(1).cpu()          # (M, K)
    first = torch.where(used.any(1), used.int().argmax(1), 0)
    span = torch.where(used.any(1), k - used.flip(1).int().argmax(1), 0) - first
    key = span * (k + 1) + first                                          # by width, then start
    order = torch.argsort(key, stable=True)
    keys, counts = (t.tolist() for t in torch.unique(key, return_counts=True))
    # cheapest cut of the sorted spans into consecutive groups (a few dozen distinct spans)
    best, cut = [0] + [None] * len(keys), [0] * (len(keys) + 1)
    for j in range(1, len(keys) + 1):
        lo, hi, count = k, 0, 0
        for i in range(j - 1, -1, -1):
            lo, hi = min(lo, keys[i] % (k + 1)), max(hi, keys[i] % (k + 1) + keys[i] // (k + 1))
            count += counts[i]
            cost = best[i] + count * max(hi - lo, 0) + (GROUP_COST if hi > lo else 0)
            if best[j] is None or cost < best[j]:
                best[j], cut[j] = cost, i
    bounds, j = [], len(keys)
    while j:
        bounds.append((cut[j], j))
        j = cut[j]
    groups, m0 = [], 0
    for i, j in reversed(bounds):
        starts = [key % (k + 1) for key in keys[i:j]]
        ends = [key % (k + 1) + key // (k + 1) for key in keys[i:j]]
        m1 = m0 + sum(counts[i:j])
        groups.append((m0, m1, min(starts), max(ends)))
        m0 = m1
    return order.to(kernels.device), tuple(groups)


def _sorted_weights(kernels, order, dtype, pairs=False):
    """Kernels (2 M, 4, K) -> (2, M, 4 K): strand t of sorted motif m, column k * 4 + base; with
    ``pairs``, (1, 2 M, 4 K) with the two strands of a motif in consecutive rows."""
    m, k = kernels.shape[0] // 2, kernels.shape[2]
    w = kernels.detach().view(m, 2, 4, k)[order]
    if pairs:
        return w.permute(0, 1, 3, 2).reshape(1, 2 * m, 4 * k).to(dtype)
    return w.permute(1, 0, 3, 2).reshape(2, m, 4 * k).to(dtype)


def _strand_windows(x, width, dtype):
    """Windows of ``x`` (n, 4, L): (4 K, n P), row k * 4 + base, column sequence * P + position."""
    n, _, length = x.shape
    p = length - width + 1
    return x.to(dtype).transpose(0, 1).unfold(2, width, 1).permute(3, 0, 1, 2).reshape(4 * width, n * p)


def _strand_scores(x, weights, groups):
    """Scores (2, M, n, P) of the sorted motifs of ``x`` (n, 4, L) for :func:`_sorted_weights`
    (2, M, 4 K): one product per group and strand over the group's columns, written in place."""
    win = _strand_windows(x, weights.shape[2] // 4, weights.dtype)
    s = win.new_empty((2, weights.shape[1], win.shape[1]))
    for m0, m1, lo, hi in groups:
        for t in range(2):
            if hi > lo:
                torch.mm(weights[t, m0:m1, 4 * lo:4 * hi], win[4 * lo:4 * hi], out=s[t, m0:m1])
            else:   # motifs without columns: the padding channels
                s[t, m0:m1] = 0
    return s.view(2, weights.shape[1], x.shape[0], -1)


def _scaled(f, gc):
    """dL/ds = gc * f per strand, (M, n, P), of a chunk's derivatives ``f`` and ``gc`` (2, M, n)."""
    return [f[t] * gc[t, :, :, None] for t in (0, 1)]


def _input_gradient(f, gc, weights, groups, shape, fs=None):
    """dL/dx (n, 4, L) of one chunk: ``sum_m W_m gc_m f_m`` per sequence and strand.

    ``f`` holds the two strands' (M, n, P) derivatives of the sorted motifs, ``gc`` (2, M, n) the
    output gradient times the scale. In fp32 and fp64 each group's kernels are scaled per
    sequence, which is 6x less element-wise work than scaling ``f``, and multiplied with ``f`` as
    a batch of per-sequence products read in place (scaling ``f`` instead costs a pass over it
    from memory: 1.4x slower in a training step). In bf16 ``fs`` (:func:`_scaled`, given or
    formed here) goes through one product per group and strand over all the chunk's sequences at
    once: oneDNN copied both operands of per-sequence bf16 products into its own layout (2.4x
    slower).
    """
    n, _, length = shape
    width = weights.shape[2] // 4
    p = length - width + 1
    spans = [(lo, hi) for _, _, lo, hi in groups if hi > lo]
    if weights.dtype in (torch.float32, torch.float64):
        cols = f[0].new_zeros((n, 4 * width, p))
        for m0, m1, lo, hi in groups:
            for t in range(2) if hi > lo else ():
                scaled = weights[t, m0:m1, 4 * lo:4 * hi].t()[None] * gc[t, m0:m1].t()[:, None]
                cols[:, 4 * lo:4 * hi].baddbmm_(scaled, f[t][m0:m1].transpose(0, 1))
        cols = cols.view(n, width, 4, p).transpose(0, 1)
    else:
        fs = _scaled(f, gc) if fs is None else fs
        acc = torch.promote_types(fs[0].dtype, torch.float32)   # bf16 sums in fp32
        cols = fs[0].new_zeros((4 * width, n * p), dtype=acc)
        for m0, m1, lo, hi in groups:
            for t in range(2) if hi > lo else ():
                cols[4 * lo:4 * hi] += torch.mm(weights[t, m0:m1, 4 * lo:4 * hi].t(),
                                                fs[t][m0:m1].reshape(m1 - m0, -1)).to(acc)
        cols = cols.view(width, 4, n, p).transpose(1, 2)
    return _columns_to_input(cols, spans, length)


def _columns_to_input(cols, spans, length):
    """dL/dx (n, 4, L) from the window-column gradients ``cols`` (K, n, 4, P)."""
    p = cols.shape[3]
    grad = cols.new_zeros(cols.shape[1], 4, length)
    for k in range(min(lo for lo, _ in spans), max(hi for _, hi in spans)) if spans else ():
        grad[:, :, k:k + p] += cols[k]   # column k of a window is position p + k
    return grad


def _rows_softmax(s0, s1, params, row_max):
    """Activations v and unnormalised softmax weights e of rows of both strands (R, P) each."""
    sc0, sc1, b0, b1, a, shift = params
    v0 = torch.sigmoid(s0 * sc0 + b0)
    v1 = torch.sigmoid(s1 * sc1 + b1)
    if row_max:
        shift = torch.maximum(v0 * a, v1 * a).amax(dim=-1, keepdim=True)
    return v0, v1, torch.exp(v0 * a - shift), torch.exp(v1 * a - shift)


def _pool_rows(s0, s1, params, row_max):
    """Pooled activations (R,) of rows (motif, sequence) of both strands' scores (R, P)."""
    v0, v1, e0, e1 = _rows_softmax(s0, s1, params, row_max)
    return (e0 * v0 + e1 * v1).sum(dim=-1) / (e0 + e1).sum(dim=-1)


def _pool_rows_train(s0, s1, params, row_max):
    """Row sums and derivatives for the backward pass, rows as in :func:`_pool_rows`.

    Every reduction spans both strands at once and only row sums feed the derivative, so the
    compiled kernel is one loop over rows that keeps a row's v and e in a local buffer: each score
    is read once and each derivative written once. (The eager kernel computes the same numbers.)

    Returns
    -------
    z, evs, evar : (R, 1), (R, 1), (R,)
        ``sum e``, ``sum e v`` and ``sum e (v - y)^2`` (``evar / z = dy/da``, a weighted variance:
        as ``sum e v^2 / z - y^2`` it cancelled to rounding noise of either sign for rows of
        constant v, such as the padding motifs', which Adam turned into steps of size lr).
    f0_sum, f1_sum, fs0_sum, fs1_sum : (R,)
        ``sum_j f_j`` and ``sum_j f_j s_j`` per strand (gradients of bias and scale).
    f0, f1 : (R, P)
        ``dy/dz = e v (1 - v) (1 + a (v - y)) / z`` per strand, in the dtype of the scores.
    """
    v0, v1, e0, e1 = _rows_softmax(s0, s1, params, row_max)
    a = params[4]
    ev0, ev1 = e0 * v0, e1 * v1
    z = (e0 + e1).sum(dim=-1, keepdim=True)
    evs = (ev0 + ev1).sum(dim=-1, keepdim=True)
    iz = 1 / z
    y = evs * iz
    evar = (e0 * (v0 - y) ** 2 + e1 * (v1 - y) ** 2).sum(dim=-1)
    c, q = (1 - a * evs * iz) * iz, a * iz                # f = e v (1 - v) (c + q v)
    f0 = ev0 * (1 - v0) * (c + q * v0)
    f1 = ev1 * (1 - v1) * (c + q * v1)
    return (z, evs, evar, f0.sum(dim=-1), f1.sum(dim=-1), (f0 * s0).sum(dim=-1),
            (f1 * s1).sum(dim=-1), f0.to(s0.dtype), f1.to(s1.dtype))


_compiled_kernels = {}
_compile_failed = []


def _compile_cache_per_isa():
    """Keep a capped ``ATEN_CPU_CAPABILITY`` away from Inductor's caches of generated code.

    torch 2.13's FX graph cache does not key CPU kernels on the vector ISA: C++ generated for
    AVX-512 (16 floats a step) is found again under ``ATEN_CPU_CAPABILITY=avx2`` and compiled
    for 8-float vectors, which gives wrong numbers (and the reverse). A capped process therefore
    neither reads nor writes the FX graph and AOT autograd caches (it compiles afresh, a few
    seconds) and keeps its compiled objects in its own folder unless ``TORCHINDUCTOR_CACHE_DIR``
    is set.
    """
    cap = os.environ.get("ATEN_CPU_CAPABILITY", "").strip().lower()
    if not cap:
        return
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    inductor_config.fx_graph_cache = False
    functorch_config.enable_autograd_cache = False
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = f"{default_cache_dir()}_{cap}"


def _run_kernel(compiled, fn, *args):
    """Call a chunk function, compiled when asked. Where compilation is impossible (no C++
    compiler, unsupported platform) say so once and run eagerly: same numbers, slower."""
    if not compiled or _compile_failed:
        return fn(*args)
    if fn not in _compiled_kernels:
        if not _compiled_kernels:
            _compile_cache_per_isa()
        _compiled_kernels[fn] = torch.compile(fn, dynamic=False)
    try:
        return _compiled_kernels[fn](*args)
    except Exception as exc:  # noqa: BLE001 - any compiler failure means: run eagerly
        _compile_failed.append(repr(exc))
        warnings.warn(f"torch.compile of the motif block failed ({type(exc).__name__}); "
                      f"continuing with the eager kernels (same results, slower)", RuntimeWarning)
        return fn(*args)


def _pad_rows(t, n):
    """Pad dim 0 of ``t`` with zeros to ``n`` rows (compiled kernels see one chunk shape)."""
    if t.shape[0] == n:
        return t
    return torch.cat([t, t.new_zeros((n - t.shape[0],) + tuple(t.shape[1:]))])


def _unsort_channels(t, order):
    """(2, M) per strand of the sorted motifs -> (2 M,) in the kernel stack's channel order."""
    out = t.new_empty(t.shape[1], 2)
    out[order] = t.t()
    return out.view(-1)


#: The native kernels' derivative rows are padded to a multiple of this many floats (64 bytes:
#: whole AVX-512 vectors), so that they can be written whole, bypassing the caches.
ROW_FLOATS = 16


class MotifBlock(torch.autograd.Function):
    """Pooled motif activations (N, M) of an augmented input (N, 4, L); see the module docstring."""

    @staticmethod
    def forward(ctx, x, kernels, scale, bias, pool_weight, chunk_size, precision, compiled):
        m = pool_weight.shape[0]
        dtype = conv_dtype(precision, x.dtype)
        if x.is_cuda and torch.is_autocast_enabled("cuda"):
            dtype = torch.get_autocast_dtype("cuda")
        train = any(ctx.needs_input_grad[:5])
        # reading |a| back is free on CPU; on a GPU it would stall the step, so the row maximum
        # (one more reduction, cheap there) is always used
        row_max = x.is_cuda or bool(pool_weight.detach().abs().max() > CONSTANT_SHIFT_LIMIT)
        order, groups = conv_plan(kernels, grouped=grouped_conv(dtype, x.device))
        # fp32 on CPU: the native kernels (convolution inside the row kernel, any chunk shape,
        # parameters indexed per motif), kernels in the pairs layout
        use_native = dtype == torch.float32 and native.usable(x)
        weights = _sorted_weights(kernels, order, dtype, pairs=use_native)
        sc, bi = scale.view(m, 2)[order].t(), bias.view(m, 2)[order].t()      # (2, M)
        a = pool_weight[order]
        kernel = _pool_rows_train if train else _pool_rows
        spans = native.column_spans(weights[0]) if use_native else None
        parts = []
        for xc in x.split(chunk_size):
            n = xc.shape[0]
            if use_native:   # scores formed inside the kernel, per motif over its own columns
                p = xc.shape[2] - kernels.shape[2] + 1
                # rows padded to whole vectors: the kernel streams them to memory
                f = xc.new_empty((n, m, 2, -(-p // ROW_FLOATS) * ROW_FLOATS)) if train else None
                out = native.conv_pool_rows(xc, weights[0], spans, (sc[0], sc[1], bi[0], bi[1], a),
                                            row_max, train, out=f)
                parts.append([t.reshape(m, n, *t.shape[1:]) for t in out[:7]] + [f[..., :p]] if train
                             else [out.reshape(m, n)])
                continue
            if compiled:   # one chunk shape for the compiled kernels
                xc = _pad_rows(xc, chunk_size)
            s = _strand_scores(xc, weights, groups)                           # (2, M, n', P)
            rows = [t.repeat_interleave(xc.shape[0])[:, None]                 # row = (motif, seq)
                    for t in (sc[0], sc[1], bi[0], bi[1], a, torch.relu(a))]
            out = _run_kernel(compiled, kernel, s[0].reshape(-1, s.shape[3]),
                              s[1].reshape(-1, s.shape[3]), rows, row_max)
            parts.append([t.reshape(m, xc.shape[0], *t.shape[1:])[:, :n] for t in
                          (out if train else (out,))])
        inverse = torch.argsort(order)
        if not train:
            return torch.cat([p[0] for p in parts], dim=1).t()[:, inverse]
        z, evs, evar, f0_sum, f1_sum, fs0_sum, fs1_sum = [torch.cat(p, dim=1) for p in
                                                          list(zip(*parts))[:7]]
        y, dy_da = evs[..., 0] / z[..., 0], evar / z[..., 0]                  # (M, N)
        f_sum, fs_sum = torch.stack([f0_sum, f1_sum]), torch.stack([fs0_sum, fs1_sum])
        # the (M, n, P) derivatives stay in their chunks: concatenating would copy 240 MB. As
        # saved tensors autograd frees them after a backward pass unless retain_graph=True.
        ctx.save_for_backward(x, kernels, order, sc, y, dy_da, f_sum, fs_sum,
                              *[f for p in parts for f in p[7:]])
        ctx.chunk_size, ctx.groups, ctx.pairs = chunk_size, groups, use_native
        return y.t()[:, inverse]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        x, kernels, order, sc, y, dy_da, f_sum, fs_sum, *f = ctx.saved_tensors
        m = y.shape[0]
        gy = grad_y[:, order].t()                                             # (M, N)
        grad_a = torch.empty_like(y[:, 0])
        grad_a[order] = (gy * dy_da).sum(1)
        grad_bias = _unsort_channels((gy * f_sum).sum(2), order)
        grad_scale = _unsort_channels((gy * fs_sum).sum(2), order)
        need_x, need_k = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_x, grad_k = None, None
        if need_x or need_k:
            dtype = f[0].dtype
            width = kernels.shape[2]
            weights = _sorted_weights(kernels, order, dtype, pairs=ctx.pairs)
            spans = native.column_spans(weights[0]) if ctx.pairs else None
            gs = (gy[None] * sc[:, :, None]).to(dtype)                        # dL/ds = gs * f
            grad_x, grad_w, start = [], 0, 0
            per = 1 if ctx.pairs else 2                                       # saved tensors per chunk
            for i, xc in enumerate(x.split(ctx.chunk_size)):
                n = xc.shape[0]
                gc = gs[:, :, start:start + n]
                start += n
                fc = f[per * i:per * i + per]
                if ctx.pairs:
                    g = gc.permute(2, 1, 0).reshape(n, 2 * m)                 # columns (motif, strand)
                    if need_x:
                        grad_x.append(native.input_gradient(fc[0], g, weights[0], spans))
                    if need_k:
                        fs = fc[0].view(n, 2 * m, -1) * g[:, :, None]
                        win = _strand_windows(xc, width, dtype).view(4 * width, n, -1)
                        grad_w = grad_w + torch.bmm(fs, win.permute(1, 2, 0)).sum(0)
                    continue
                fs = _scaled(fc, gc) if need_k else None   # formed only where a product needs it
                if need_x:
                    grad_x.append(_input_gradient(fc, gc, weights, ctx.groups, xc.shape, fs))
                if need_k:
                    win = _strand_windows(xc, width, dtype).t()               # (n P, 4 K)
                    grad_w = grad_w + torch.stack([torch.mm(fs[t].reshape(m, -1), win)
                                                   for t in (0, 1)]).to(kernels.dtype)
            if need_x:
                grad_x = torch.cat(grad_x)
            if need_k:
                grad_k = torch.empty_like(kernels).view(m, 2, 4, width)
                grad_k[order] = (grad_w.view(m, 2, width, 4).permute(0, 1, 3, 2) if ctx.pairs
                                 else grad_w.view(2, m, width, 4).permute(1, 0, 3, 2))
                grad_k = grad_k.view_as(kernels)
        return grad_x, grad_k, grad_scale, grad_bias, grad_a, None, None, None


def motif_block(x, kernels, scale, bias, pool_weight, *, chunk_size=16, precision="fp32",
                compiled=False):
    """Differentiable pooled motif activations (see :class:`MotifBlock`).

    Parameters
    ----------
    x : torch.Tensor, shape (N, 4, L)
    kernels : torch.Tensor, shape (C, 4, K)
    scale, bias : torch.Tensor, shape (C,)
    pool_weight : torch.Tensor, shape (C // 2,)
    chunk_size : int, default 16
        Sequences per chunk.
    precision : {"fp32", "bf16"}, default "fp32"
        Arithmetic of the convolution.
    compiled : bool, default False
        Fuse the element-wise work with ``torch.compile`` (falls back to eager with a warning
        where compilation is unavailable).

    Returns
    -------
    torch.Tensor, shape (N, C // 2)
    """
    return MotifBlock.apply(x, kernels, scale, bias, pool_weight, int(chunk_size), precision,
                            bool(compiled))


class AttentionCore(torch.autograd.Function):
    """``out = v @ P`` with ``P = softmax(a^T b, dim=-1)`` (or ``v @ P^T`` when ``transpose``).

    a, b, v: (N, heads, e, L). Processed ``chunk_size`` sequences at a time. The backward pass
    rebuilds P per chunk; ``dS = P * (dP - rowsum(P * dP))`` with ``dP`` of rank e (2 in tiSFM),
    so every product with ``dS`` is a product of P with 3 e + e^2 rows and neither ``dP`` nor
    ``dS`` is formed: two passes over each (L, L) matrix instead of six.
    """

    @staticmethod
    def forward(ctx, a, b, v, transpose, chunk_size):
        ctx.transpose, ctx.chunk_size = transpose, chunk_size
        if a.shape[2] == 2 and native.usable(a, b, v):   # fp32 on CPU, two channels per head
            out, lse = native.attention_forward(a, b, v, transpose)
            ctx.save_for_backward(a, b, v, lse)
            return out
        outs = []
        for ac, bc, vc in zip(a.split(chunk_size), b.split(chunk_size), v.split(chunk_size)):
            p = torch.softmax(ac.transpose(-1, -2) @ bc, dim=-1)
            outs.append(vc @ (p.transpose(-1, -2) if transpose else p))
        ctx.save_for_backward(a, b, v)
        return torch.cat(outs)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        a, b, v, *lse = ctx.saved_tensors
        if lse:   # the native forward ran: its row log-normalisers rebuild P in one pass
            return (*native.attention_backward(a, b, v, lse[0], grad_out, ctx.transpose), None, None)
        e, chunk = a.shape[2], ctx.chunk_size
        ga, gb, gv = [], [], []
        for ac, bc, vc, go in zip(a.split(chunk), b.split(chunk), v.split(chunk),
                                  grad_out.split(chunk)):
            p = torch.softmax(ac.transpose(-1, -2) @ bc, dim=-1)          # (n, h, L, L)
            # dP_ij = sum_k alpha_ki beta_kj
            alpha, beta = (go, vc) if ctx.transpose else (vc, go)
            pairs = lambda s, t: (s[:, :, :, None] * t[:, :, None]).flatten(2, 3)   # noqa: E731
            rows = torch.cat([beta, pairs(bc, beta), bc], dim=2) @ p.transpose(-1, -2)
            p_beta = rows[:, :, :e]                                        # P beta^T
            r = (alpha * p_beta).sum(2, keepdim=True)                      # rowsum(P * dP)
            ga.append((alpha[:, :, None] * rows[:, :, e:e + e * e].unflatten(2, (e, e))).sum(3)
                      - r * rows[:, :, e + e * e:])
            cols = torch.cat([pairs(ac, alpha), ac * r] + ([alpha] if ctx.transpose else []),
                             dim=2) @ p                                    # (P^T w^T)^T
            gb.append((beta[:, :, None] * cols[:, :, :e * e].unflatten(2, (e, e))).sum(3)
                      - cols[:, :, e * e:e * e + e])
            gv.append(cols[:, :, e * e + e:] if ctx.transpose else p_beta)
        return torch.cat(ga), torch.cat(gb), torch.cat(gv), None, None


def attention_core(a, b, v, *, transpose=False, chunk_size=2):
    """Attention output without materialising (N, heads, L, L); see :class:`AttentionCore`.

    Parameters
    ----------
    a, b, v : torch.Tensor, shape (N, heads, e, L)
        Scores are ``a^T b`` (L x L per sequence and head), normalised over the last axis.
    transpose : bool, default False
        Apply the transposed weights (``v @ P^T``).
    chunk_size : int, default 2
        Sequences per chunk: 2 x heads x L x L floats (1.4 MB for L = 300) stay in L2 cache.

    Returns
    -------
    torch.Tensor, shape (N, heads, e, L)
    """
    return AttentionCore.apply(a, b, v, bool(transpose), int(chunk_size))
