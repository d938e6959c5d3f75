"""tiSFM's two heavy blocks, with hand-written backward passes.

**Motif block** (convolution -> calibration -> sigmoid -> softmax pooling). For a batch of
256 x 300 bp and 862 motifs its intermediates have 256 x 1728 x 271 = 120 million elements.
Autograd would store several such tensors and run a dozen memory-bound passes over them. Here
the forward pass works chunk by chunk and, when gradients are needed, keeps a single tensor: the
derivative of each pooled output with respect to each pre-activation,

    v = sigmoid(z),  z = s * scale + bias      s: motif scores, both strands merged per motif
    w = softmax(a * v)  over the 2 (L - K + 1) positions of a motif
    y = sum_j w_j v_j
    f_j = dy/dz_j = w_j (1 + a (v_j - y)) v_j (1 - v_j)      dy/da = sum_j w_j v_j^2 - y^2

plus its row sums. The backward pass then never touches the big tensor element-wise: the
gradients of scale, bias and a are small products of the row sums with the output gradient, and
the input gradient is one batched matrix product of ``f`` with the kernels scaled per sequence
(``sum_c g_c scale_c W_c f_c``).

The convolution runs as one matrix product over unfolded windows, in bf16 when
``precision="bf16"`` (oneDNN's AMX path on recent CPUs), else in fp32. With ``compiled=True`` the
element-wise work of a chunk is compiled by ``torch.compile`` into fused loops that read each
score once instead of once per operation (several times faster on CPU); compilation takes
seconds per model shape, so training turns it on and inference does not.

**Input attention** (:class:`AttentionCore`): ``out = v @ softmax(a^T b)``, the (L, L) matrix of
every sequence and head built a few sequences at a time and rebuilt in the backward pass, so the
(N, heads, L, L) tensors of the reference are never materialised.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F


def conv_dtype(precision, dtype=torch.float32):
    """Arithmetic of the motif convolution: bf16 for ``precision="bf16"``, else ``dtype`` (the
    input's: fp32, or fp64 for a model cast to double)."""
    return torch.bfloat16 if precision == "bf16" else dtype


def _windows(x, width, dtype):
    """All windows of ``x`` (N, 4, L) as columns: (N, 4 * width, L - width + 1), row c * width + k."""
    n, c, length = x.shape
    return x.unfold(2, width, 1).permute(0, 1, 3, 2).reshape(n, c * width, length - width + 1).to(dtype)


def _scores(windows, kernels):
    """The motif convolution as one matrix product over unfolded windows: (N, C, L - K + 1).

    In bf16 this is oneDNN's AMX matmul, about 4x faster than a channels-last bf16 Conv2d, and its
    output is already laid out (N, C, P), so nothing has to be transposed afterwards.
    """
    return torch.matmul(kernels.reshape(kernels.shape[0], -1).to(windows.dtype), windows)


def motif_conv(x, kernels, precision):
    """(N, 4, L) x (C, 4, K) -> scores (N, C, L - K + 1), fp32 and contiguous."""
    if precision == "bf16":
        return _scores(_windows(x, kernels.shape[2], torch.bfloat16), kernels).float()
    return F.conv1d(x, kernels)


def _activations(s, scale, bias, n_features):
    """Calibrated sigmoids of scores (n, C, P) -> fp32 (n, M, 2P), strands of a motif side by side."""
    v = torch.addcmul(bias[:, None], s, scale[:, None]).sigmoid_()
    return v.reshape(s.shape[0], n_features, -1)


#: Largest |pooling weight| for which the softmax may be shifted by max(a, 0) instead of the row
#: maximum: a v - max(a, 0) lies in [-|a|, 0] since v is in (0, 1), and exp of it underflows only
#: below about -87. The constant shift saves a reduction pass; larger weights use the row maximum.
CONSTANT_SHIFT_LIMIT = 80.0


def _softmax_weights(s, scale, bias, a, row_max):
    """Activations v (n, M, 2P) and unnormalised softmax weights e = exp(a v - shift), with
    their row sums z (n, M)."""
    v = _activations(s, scale, bias, a.shape[0])
    av = v * a[:, None]
    shift = av.amax(dim=-1, keepdim=True) if row_max else torch.relu(a)[:, None]
    e = torch.exp(av - shift)
    return v, e, e.sum(dim=-1)


def _pool_forward(s, scale, bias, a, row_max):
    """Pooled activations (n, M) of scores ``s`` (n, C, P); see the module docstring.

    The arithmetic of :func:`_softmax_weights`, in place where it can be: without gradients
    (inference, exact ISM) two (n, M, 2P) buffers instead of five."""
    v = _activations(s, scale, bias, a.shape[0])
    e = v * a[:, None]
    shift = e.amax(dim=-1, keepdim=True) if row_max else torch.relu(a)[:, None]
    e = e.sub_(shift).exp_()
    z = e.sum(dim=-1)
    return e.mul_(v).sum(dim=-1) / z


def _pool_forward_train(s, scale, bias, a, row_max):
    """Pooled activations and what the backward pass needs, for one chunk of scores ``s``.

    Written as a few row reductions and one element-wise expression so that the compiled kernel
    makes few passes over the chunk (the eager kernel computes the same numbers).

    Returns
    -------
    y : (n, M) pooled activations
    wv2 : (n, M) ``sum_j w_j v_j^2`` (for the gradient of ``a``)
    f_sum, fs_sum : (n, C) ``sum_j f_j`` and ``sum_j f_j s_j`` per channel (bias and scale)
    f : (n, C, P) ``dy/dz = w v (1 + a (v - y)) (1 - v)`` in the dtype of ``s``
    """
    v, e, z = _softmax_weights(s, scale, bias, a, row_max)
    ev = e * v
    y = ev.sum(dim=-1) / z
    wv2 = (ev * v).sum(dim=-1) / z
    f = (ev / z[..., None] * (1 - v) * (1 + a[:, None] * (v - y[..., None]))).view_as(s)
    return y, wv2, f.sum(dim=-1), (f * s).sum(dim=-1), f.to(s.dtype)


_compiled_kernels = {}
_compile_failed = []


def _run_kernel(compiled, fn, *args):
    """Call a chunk function, compiled when asked. Where compilation is impossible (no C++
    compiler, unsupported platform) say so once and run eagerly: same numbers, slower."""
    if not compiled or _compile_failed:
        return fn(*args)
    if fn not in _compiled_kernels:
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


class MotifBlock(torch.autograd.Function):
    """Pooled motif activations (N, M) of an augmented input (N, 4, L); see the module docstring."""

    @staticmethod
    def forward(ctx, x, kernels, scale, bias, pool_weight, chunk_size, precision, compiled):
        dtype = conv_dtype(precision, x.dtype)
        width = kernels.shape[2]
        train = any(ctx.needs_input_grad[:5])
        # reading |a| back is free on CPU; on a GPU it would stall the step, so the row maximum
        # (one more reduction, cheap there) is always used
        row_max = x.is_cuda or bool(pool_weight.detach().abs().max() > CONSTANT_SHIFT_LIMIT)
        parts = []
        for xc in x.split(chunk_size):
            n = xc.shape[0]
            if compiled:   # one chunk shape for the compiled kernels
                xc = _pad_rows(xc, chunk_size)
            s = _scores(_windows(xc, width, dtype), kernels)
            if train:
                parts.append([t[:n] for t in _run_kernel(compiled, _pool_forward_train, s, scale,
                                                         bias, pool_weight, row_max)])
            else:
                parts.append([_run_kernel(compiled, _pool_forward, s, scale, bias, pool_weight,
                                          row_max)[:n]])
        if not train:
            return torch.cat([p[0] for p in parts])
        y, wv2, f_sum, fs_sum = [torch.cat(p) for p in list(zip(*parts))[:4]]
        ctx.save_for_backward(x, kernels, scale, y, wv2, f_sum, fs_sum)
        # the (n, C, P) derivatives stay in their chunks: concatenating would copy 240 MB
        ctx.f_chunks = [p[4] for p in parts]
        ctx.chunk_size = chunk_size
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, kernels, scale, y, wv2, f_sum, fs_sum = ctx.saved_tensors
        f_chunks = ctx.f_chunks
        if f_chunks is None:
            raise RuntimeError("the motif block's saved derivatives were freed by an earlier "
                               "backward pass; retain_graph=True is not supported through it")
        need_x, need_k = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_a = (grad_y * (wv2 - y * y)).sum(0)
        g = grad_y.repeat_interleave(2, dim=1)                    # (N, C): channel 2m, 2m+1 -> m
        grad_bias = (g * f_sum).sum(0)
        grad_scale = (g * fs_sum).sum(0)
        grad_x, grad_k = None, None
        if need_x or need_k:
            c, _, width = kernels.shape
            dtype = f_chunks[0].dtype
            wt = kernels.reshape(c, -1).t().to(dtype)              # (4K, C)
            gs = (g * scale).to(dtype)                             # dL/ds = gs * f
            grad_x = [] if need_x else None
            grad_k = torch.zeros_like(kernels) if need_k else None
            chunk = ctx.chunk_size
            for xc, gc, fc in zip(x.split(chunk), gs.split(chunk), f_chunks):
                if need_x:   # per-sequence kernels W * gs, so f is read once and never scaled
                    wn = wt[None] * gc[:, None, :]                 # (n, 4K, C)
                    cols = torch.bmm(wn, fc).float()               # (n, 4K, P)
                    grad_x.append(F.fold(cols, (1, xc.shape[2]), (1, width)).view_as(xc))
                if need_k:
                    windows = _windows(xc, width, fc.dtype)        # (n, 4K, P)
                    per_seq = torch.bmm(fc, windows.transpose(1, 2)).float()   # (n, C, 4K)
                    grad_k += (per_seq * gc[..., None]).sum(0).view_as(kernels)
            if need_x:
                grad_x = torch.cat(grad_x)
        ctx.f_chunks = None   # free 240 MB now, not when the graph is dropped
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

    a, b, v: (N, heads, e, L). Processed ``chunk_size`` sequences at a time; the backward pass
    rebuilds P per chunk and uses ``dS = P * (dP - rowsum(P * dP))``.
    """

    @staticmethod
    def forward(ctx, a, b, v, transpose, chunk_size):
        outs = []
        for ac, bc, vc in zip(a.split(chunk_size), b.split(chunk_size), v.split(chunk_size)):
            p = torch.softmax(ac.transpose(-1, -2) @ bc, dim=-1)
            outs.append(vc @ (p.transpose(-1, -2) if transpose else p))
        ctx.save_for_backward(a, b, v)
        ctx.transpose, ctx.chunk_size = transpose, chunk_size
        return torch.cat(outs)

    @staticmethod
    def backward(ctx, grad_out):
        a, b, v = ctx.saved_tensors
        chunk = ctx.chunk_size
        ga, gb, gv = [], [], []
        for ac, bc, vc, go in zip(a.split(chunk), b.split(chunk), v.split(chunk),
                                  grad_out.split(chunk)):
            p = torch.softmax(ac.transpose(-1, -2) @ bc, dim=-1)
            pt = p.transpose(-1, -2) if ctx.transpose else p
            gv.append(go @ pt.transpose(-1, -2))
            dpt = vc.transpose(-1, -2) @ go
            dp = dpt.transpose(-1, -2) if ctx.transpose else dpt
            ds = torch._softmax_backward_data(dp, p, -1, p.dtype)
            ga.append(bc @ ds.transpose(-1, -2))
            gb.append(ac @ ds)
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
