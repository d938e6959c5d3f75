"""The motif block (convolution -> calibration -> sigmoid -> softmax pooling) with a hand-written
backward pass.

This block holds nearly all of tiSFM's work: for a batch of 256 x 300 bp and 862 motifs its
intermediates have 256 x 1728 x 271 = 120 million elements. Autograd would store several such
tensors and run a dozen memory-bound passes over them. Here the forward pass keeps only the
pooled output; the backward pass recomputes the convolution chunk by chunk (small enough to stay
in cache) and applies the closed-form gradient of the pooling in a few in-place passes:

    v = sigmoid(s * scale + bias)              s: motif scores, both strands merged per motif
    w = softmax(a * v)  over the 2 (L - K + 1) positions of a motif
    y = sum_j w_j v_j
    dy/dv_j = w_j (1 + a (v_j - y))            dy/da = sum_j w_j v_j^2 - y^2
    dv/dz = v (1 - v)                          z = s * scale + bias

The convolution itself runs as a channels-last bf16 Conv2d when ``precision="bf16"`` (oneDNN's
AMX path on recent CPUs), else as an fp32 Conv1d.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def motif_conv(x, kernels, precision):
    """(N, 4, L) x (C, 4, K) -> scores (N, C, L - K + 1) in fp32."""
    if precision == "bf16":
        xb = x.to(torch.bfloat16).unsqueeze(2).contiguous(memory_format=torch.channels_last)
        wb = kernels.to(torch.bfloat16).unsqueeze(2).contiguous(memory_format=torch.channels_last)
        # one copy converts both the dtype and the channels-last layout
        return F.conv2d(xb, wb).to(torch.float32, memory_format=torch.contiguous_format).squeeze(2)
    return F.conv1d(x, kernels)


def _activations(scores, scale, bias, n_features):
    v = torch.addcmul(bias[:, None], scores, scale[:, None])
    v.sigmoid_()
    return v.view(scores.shape[0], n_features, -1)


def _softmax_pool(v, a):
    w = torch.mul(v, a[:, None])
    w = torch.softmax(w, dim=-1)
    y = (w * v).sum(dim=-1)
    return y, w


class MotifBlock(torch.autograd.Function):
    """Pooled motif activations (N, M) of an augmented input (N, 4, L); see the module docstring."""

    @staticmethod
    def forward(ctx, x, kernels, scale, bias, pool_weight, chunk_size, precision):
        n_features = pool_weight.shape[0]
        outs = []
        with torch.no_grad():
            for xc in x.split(chunk_size):
                v = _activations(motif_conv(xc, kernels, precision), scale, bias, n_features)
                outs.append(_softmax_pool(v, pool_weight)[0])
        y = torch.cat(outs)
        ctx.save_for_backward(x, kernels, scale, bias, pool_weight, y)
        ctx.chunk_size, ctx.precision = chunk_size, precision
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, kernels, scale, bias, a, y = ctx.saved_tensors
        need_x, need_k = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        n_features = a.shape[0]
        grad_scale = torch.zeros_like(scale)
        grad_bias = torch.zeros_like(bias)
        grad_a = torch.zeros_like(a)
        grad_k = torch.zeros_like(kernels) if need_k else None
        grad_x = []
        start = 0
        for xc in x.split(ctx.chunk_size):
            n = xc.shape[0]
            gy, yc = grad_y[start:start + n], y[start:start + n]
            start += n
            with torch.enable_grad():
                xr = xc.detach().requires_grad_(need_x)
                kr = kernels.detach().requires_grad_(need_k)
                s_graph = motif_conv(xr, kr, ctx.precision)
            s = s_graph.detach()
            v = _activations(s, scale, bias, n_features)          # (n, M, P)
            _, w = _softmax_pool(v, a)
            # dy/da: sum_j w v^2 - y^2, accumulated over the chunk
            wv = w * v
            grad_a += (gy * ((wv * v).sum(-1) - yc * yc)).sum(0)
            # dL/dz = gy * w (1 + a (v - y)) * v (1 - v), built in place in `g`
            g = torch.sub(v, yc[..., None]).mul_(a[:, None]).add_(1.0)
            g.mul_(w).mul_(gy[..., None]).mul_(v)
            g.sub_(g * v)                                            # * (1 - v)
            gz = g.view_as(s)                                        # (n, C, Lc)
            grad_bias += gz.sum(dim=(0, 2))
            grad_scale += (gz * s).sum(dim=(0, 2))
            if need_x or need_k:
                gs = gz.mul_(scale[:, None])
                inputs = [t for t, need in ((xr, need_x), (kr, need_k)) if need]
                grads = torch.autograd.grad(s_graph, inputs, gs.to(s_graph.dtype))
                grads = list(grads)
                if need_x:
                    grad_x.append(grads.pop(0))
                if need_k:
                    grad_k += grads.pop(0)
        return (torch.cat(grad_x) if need_x else None, grad_k, grad_scale, grad_bias, grad_a, None,
                None)


def motif_block(x, kernels, scale, bias, pool_weight, *, chunk_size=16, precision="fp32"):
    """Differentiable pooled motif activations with recomputation (see :class:`MotifBlock`)."""
    return MotifBlock.apply(x, kernels, scale, bias, pool_weight, int(chunk_size), precision)
