"""Attribution: Taylor in-silico mutagenesis (TISM), exact ISM, logo values, variant effects,
motif hits and their files.

Every per-base attribution is an array ``values`` of shape (N, R, 4, L) (sequences, selected
outputs, bases A,C,G,T, positions) holding, for every position and base, the change of output r
when that base replaces the reference base; the reference base itself holds 0.

* :func:`ism` computes the change exactly, by the fastest exact engine of
  :mod:`tisfm_core.mutagenesis` for the model: for tiSFM without input attention and for AI-TAC
  only the part of the model a substitution reaches is recomputed; other models run one full
  forward pass per variant (3 L per sequence).
* :func:`tism` (Sasse et al. 2024) approximates it to first order from one input gradient per
  output: ``grad[b, i] - grad[ref(i), i]``. For tiSFM models the gradient is formed analytically
  (one forward pass, one grouped transposed convolution for all outputs); other models (AI-TAC,
  any ``nn.Module`` mapping (N, 4, L) to (N, R)) use one forward pass and a batched backward pass.

Positions whose reference is N (an all-zero one-hot column) have no reference base: both
methods give 0 there for every base.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .atomic import read_arrays, write_npz
from .errors import TisfmError, check_indices, check_integer, check_outputs
from .model import TISFM
from .motifs import kernel_slots
from .mutagenesis import (
    ALTERNATIVES,
    check_method,
    incremental_chunks,
    naive_chunks,
    structured_method,
)
from .sequences import one_hot, one_hot_torch
from .training import evaluation

__all__ = ["as_indices", "count_outputs", "tism", "ism", "ism_method", "estimate_ism_seconds",
           "logo_values", "agreement", "variant_effects", "motif_hits", "save_attribution",
           "load_attribution", "Attribution", "attribution_table"]

BASES = "ACGT"


# -- input checks -------------------------------------------------------------------------------

def as_indices(data, what="sequences"):
    """uint8 indices (N, L) from indices (N, L) / (L,) or a one-hot array (N, 4, L) / (4, L)."""
    if isinstance(data, torch.Tensor):
        data = data.detach().cpu().numpy()
    data = np.asarray(data)
    if data.dtype.kind in "iu":
        if data.ndim == 2 and data.shape[0] == 4 and np.isin(data, (0, 1)).all() \
                and np.isin(data.sum(axis=0), (0, 1)).all():
            # (4, L) of 0/1 integers: a one-hot sequence or four index sequences? refuse to guess
            raise TisfmError(f"{what}: an integer array of shape {data.shape} with only 0s and 1s is "
                             "ambiguous (one one-hot sequence or four index sequences); pass a float "
                             "one-hot array or uint8 base indices")
        idx = check_indices(data[None] if data.ndim == 1 else data, what)
        if idx.shape[0] == 0:
            raise TisfmError(f"{what}: no sequences given")
        return idx
    if data.dtype.kind in "fb":
        x = data[None] if data.ndim == 2 else data
        if x.ndim != 3 or x.shape[1] != 4:
            raise TisfmError(f"{what}: a one-hot input must be shaped (N, 4, L) or (4, L), got {data.shape}")
        if x.shape[0] == 0:
            raise TisfmError(f"{what}: no sequences given")
        x = x.astype(np.float32)
        sums = x.sum(axis=1)
        if not (np.isin(x, (0.0, 1.0)).all() and np.isin(sums, (0.0, 1.0)).all()):
            n, i = np.argwhere(~np.isin(sums, (0.0, 1.0)) | ~np.isin(x, (0.0, 1.0)).all(axis=1))[0]
            raise TisfmError(f"{what}: sequence {n}, position {i} is not a one-hot column (expected "
                             "one 1 and three 0s, or all 0s for N)")
        return np.where(sums > 0, x.argmax(axis=1), 4).astype(np.uint8)
    raise TisfmError(f"{what}: expected uint8 base indices or a float one-hot array, got dtype {data.dtype}")


def count_outputs(model, idx, device):
    if isinstance(model, TISFM):
        return model.config.n_outputs
    if isinstance(getattr(model, "n_outputs", None), int):
        return model.n_outputs
    with torch.inference_mode():
        return int(model(one_hot_torch(torch.from_numpy(idx[:1]).to(device))).shape[1])


def _progress(verbose, name, done, total, unit):
    if verbose:
        print(f"{name}: {done}/{total} {unit}", file=sys.stderr, flush=True)


# -- input gradients ----------------------------------------------------------------------------

def _autograd_gradients(model, x):
    """Generic models: one forward pass; returns ``grads(outs) -> (S, len(outs), 4, L)``.

    The backward passes for all selected outputs run as one vmapped backward
    (``is_grads_batched``), on the graph kept from the single forward pass.
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        y = model(x)

    def grads(outs):
        cot = torch.zeros((len(outs),) + tuple(y.shape), dtype=y.dtype, device=y.device)
        cot[torch.arange(len(outs), device=y.device), :, outs] = 1.0
        (g,) = torch.autograd.grad(y, x, cot, retain_graph=True, is_grads_batched=True)
        return g.transpose(0, 1)
    return grads


def _attention_forward(att, u):
    """The model's attention on ``u`` (S, 4, L), keeping what its backward pass needs.

    Returns the stacked projection weights (3H, E, 4) of keys, queries and values, the keys,
    queries and values (S, H, E, L) and the attention P (S, H, L, L). The scores' 1/sqrt(E) is
    folded into the query projection, so the scores are plain dot products k_i . q_j.
    """
    root = math.sqrt(att.emb)
    zeros = torch.zeros_like(att.value_bias)
    key_bias, query_bias = (zeros, zeros) if att.key_bias is None else (att.key_bias, att.query_bias)
    weight = torch.cat([att.key, att.query / root, att.value])
    bias = torch.cat([key_bias, query_bias / root, att.value_bias], dim=1)
    k, q, v = (torch.einsum("hed,ndl->nhel", weight, u) + bias).split(att.heads, dim=1)
    p = torch.einsum("nhei,nhej->nhij", k, q).softmax(dim=-1 if att.softmax == "query" else -2)
    return weight, k, q, v, p


def _attention_vjp(att, weight, k, q, v, p, grad):
    """Cotangent of the attention input for R cotangents of its output at once.

    ``grad`` (S, R, 4, L) -> (S, R, 4, L). Autograd would build R (L, L) cotangents of the
    scores per head; with E = 2 dimensions per head every product with them is a product of
    P (or P^T) with a few vectors, so all R outputs cost two batched matrix products with P.
    With dP = V^T dO and the softmax over queries (rows of P sum to 1),
    dS = P * (dP - c), c_i = sum_j P_ij dP_ij; over keys, c_j = sum_i P_ij dP_ij.
    Then dK = dS Q, dQ = dS^T K, dV = P dO (Q already carries the 1/sqrt(E)).
    """
    n_out, emb = grad.shape[1], att.emb
    do = torch.einsum("hde,srdl->shlre", att.unify, grad)         # (S, H, L, R, E)
    kt, qt, vt = (a.transpose(2, 3) for a in (k, q, v))            # (S, H, L, E)
    lead = do.shape[:3]
    vk = (vt[..., :, None] * kt[..., None, :]).reshape(*lead, emb * emb)   # [f, e]: v_f k_e
    dq_prod = (do[..., :, None] * qt[:, :, :, None, None, :]).reshape(*lead, -1)  # [r, f, e]
    pt = p.transpose(2, 3)
    if att.softmax == "query":
        z = p @ torch.cat([do.reshape(*lead, -1), dq_prod, qt], dim=-1)
        pdo = z[..., : n_out * emb].view(*lead, n_out, emb)                        # P dO
        pdq = z[..., n_out * emb: -emb].view(*lead, n_out, emb, emb)              # P (dO_f q_e)
        pq = z[..., -emb:]                                                         # P q
        c = torch.linalg.vecdot(vt[..., None, :], pdo)                             # (S, H, L, R)
        ck = (c[..., None] * kt[..., None, :]).reshape(*lead, -1)
        z = pt @ torch.cat([vk, ck], dim=-1)
        ptvk = z[..., : emb * emb].view(*lead, emb, emb)
        ptck = z[..., emb * emb:].view(*lead, n_out, emb)
        dk = torch.einsum("shif,shirfe->shire", vt, pdq) - c[..., None] * pq[..., None, :]
        dq = torch.einsum("shjrf,shjfe->shjre", do, ptvk) - ptck
    else:
        z = pt @ torch.cat([vt, vk, kt], dim=-1)
        ptv, ptk = z[..., :emb], z[..., -emb:]
        ptvk = z[..., emb: -emb].view(*lead, emb, emb)
        c = torch.linalg.vecdot(do, ptv[..., None, :])                             # (S, H, L, R)
        dq = torch.einsum("shjrf,shjfe->shjre", do, ptvk) - c[..., None] * ptk[..., None, :]
        cq = (c[..., None] * qt[..., None, :]).reshape(*lead, -1)
        z = p @ torch.cat([do.reshape(*lead, -1), dq_prod, cq], dim=-1)
        pdo = z[..., : n_out * emb].view(*lead, n_out, emb)
        pdq = z[..., n_out * emb: -n_out * emb].view(*lead, n_out, emb, emb)
        pcq = z[..., -n_out * emb:].view(*lead, n_out, emb)
        dk = torch.einsum("shif,shirfe->shire", vt, pdq) - pcq
    return torch.einsum("hed,shlre->srdl", weight, torch.cat([dk, dq, pdo], dim=1))


def _tisfm_gradients(model, x):
    """tiSFM: the input gradient of every output in closed form; same contract as above.

    With scores s = conv(x_a, K), activations z = sigmoid(scale * s + bias), pooled features y
    (softmax pooling ``y = sum_p w_p v_p``, ``w = softmax(a v)``, over both strands of a motif),
    gated features u = y * sigmoid(A y + c) and outputs W u + b:

    * dy_m / dv_p = w_p (1 + a_m (v_p - y_m))  (max pooling: the argmax, ties shared evenly,
      as autograd does);
    * dz / ds = scale * z (1 - z);
    * d out_r / dy = W_r * sigmoid(A y + c) + (W_r * y * sig'(A y + c)) A.

    The position-wise part h = dy/dv * dz/ds does not depend on the output, so one grouped
    transposed convolution (group m = the two strands of motif m) turns it into
    T[m] = d y_m / d x_a of shape (4, L) for all features, and the output gradients are the
    products d out_r / dy @ T: R outputs cost one convolution, not R. The attention in front
    (x_a = x + Attn(x + p)) is back-propagated in closed form too (:func:`_attention_vjp`).
    Few, large tensor operations: on a busy CPU each operation waits for its threads.
    """
    cfg = model.config
    model._check_input(x)
    with torch.no_grad():
        u = x
        if model.position_emb is not None:
            u = x + model.position_emb(model.position_index).view(1, 1, -1)
        if model.attention is None:
            xa = u
        else:
            att = model.attention
            att_saved = _attention_forward(att, u)
            values, p = att_saved[3:]
            out = torch.einsum("nhij,nhei->nhej", p, values)
            xa = x + torch.einsum("hde,nhel->ndl", att.unify, out) + att.unify_bias
        s = model.motif_scores(xa)                                # (S, C, Lc)
        v = model.activations(s)                                  # (S, M, 2 Lc)
        n_seq, n_feat = v.shape[:2]
        if cfg.pooling == "max":
            y = v.amax(dim=-1)
            top = (v == y[..., None]).to(v.dtype)
            dv = top / top.sum(dim=-1, keepdim=True)
        else:
            a = model.pool_weight[:, None]
            w = torch.softmax(v * a, dim=-1)
            y = torch.linalg.vecdot(w, v)
            dv = torch.addcmul(w, w * a, v - y[..., None])       # w (1 + a (v - y))
        slope = torch.addcmul(v, v, v, value=-1).mul_(dv)         # dv * z (1 - z)
        h = slope.view(s.shape).mul_(model.scale[:, None])
        t = _transposed_conv(h, model.kernels, n_feat).reshape(n_seq, n_feat, 4 * cfg.length)
        if model.interaction is not None:
            gate = torch.sigmoid(model.interaction(y))            # (S, M)
            gate_slope = y * gate * (1 - gate)
        final = model.final.weight                                # (R_all, M)

    def grads(outs):
        with torch.no_grad():
            wr = final[outs]                                      # (R, M)
            if model.interaction is None:
                dy = wr.expand(n_seq, -1, -1)
            else:
                dy = torch.addcmul((wr * gate_slope[:, None]) @ model.interaction.weight, wr, gate[:, None])
            g = torch.bmm(dy, t).view(n_seq, len(outs), 4, cfg.length)
            if model.attention is not None:  # x_a = x + Attn(u): identity plus the attention's VJP
                g = g + _attention_vjp(model.attention, *att_saved, g)
        return g
    return grads


def _transposed_conv(h, kernels, groups):
    """conv_transpose1d(h, kernels, groups=groups) as a channels-last grouped conv2d.

    The same sums as ``F.conv_transpose1d`` (flipped kernels, full padding); oneDNN's grouped
    channels-last path is several times faster for these shapes (hundreds of groups of 2 -> 4
    channels).
    """
    c, b, width = kernels.shape
    weight = kernels.view(groups, c // groups, b, width).transpose(1, 2).reshape(groups * b, c // groups, 1, width)
    weight = weight.flip(-1).contiguous(memory_format=torch.channels_last)
    h = h.unsqueeze(2).contiguous(memory_format=torch.channels_last)
    return F.conv2d(h, weight, padding=(0, width - 1), groups=groups).squeeze(2)


def _gradient_chunks(model, idx, outs, batch_size, device, verbose, name):
    """Yield (sequence slice, output slice, raw gradients (S, R', 4, L)) for all pairs.

    ``batch_size`` sequences go through the model at once; their gradients are formed a few
    outputs at a time, at most ``batch_size`` sequence-output pairs together (bounds memory).
    """
    n_out = len(outs)
    per_seq = min(batch_size, len(idx))
    per_out = max(1, min(n_out, batch_size // per_seq))
    outs_t = torch.from_numpy(outs).to(device)
    source = torch.from_numpy(idx)
    make = _tisfm_gradients if isinstance(model, TISFM) else _autograd_gradients
    for start in range(0, len(idx), per_seq):
        stop = min(start + per_seq, len(idx))
        grads = make(model, one_hot_torch(source[start:stop].to(device)))
        for o in range(0, n_out, per_out):
            yield slice(start, stop), slice(o, o + per_out), grads(outs_t[o:o + per_out])
        _progress(verbose, name, stop, len(idx), "sequences")


def tism(model, indices_or_onehot, *, outputs=None, output_names=None, batch_size=64, device=None,
         verbose=False):
    """Taylor in-silico mutagenesis: first-order effect of every single-base substitution.

    ``values[n, r, b, i] = d out_r / d x[b, i] - d out_r / d x[ref(i), i]`` at the sequence's
    own one-hot input: the change of output r predicted by a first-order Taylor expansion when
    base b replaces the reference base at position i. It is 0 at the reference base, and 0 for
    every base at positions whose reference is N (no reference base to substitute).

    Parameters
    ----------
    model : TISFM, AITAC or torch.nn.Module
        Maps (N, 4, L) one-hot input to (N, R_all) outputs. Used in eval mode with fp32
        arithmetic (the model's mode, precision and device are restored afterwards).
    indices_or_onehot : np.ndarray or torch.Tensor
        uint8 base indices (N, L) (or (L,) for one sequence; 4 = N), or a float one-hot array
        (N, 4, L) / (4, L) in A,C,G,T order.
    outputs : sequence of int or str, optional
        The outputs to explain (positions, or names when ``output_names`` is given), in the
        order wanted; default all.
    output_names : sequence of str, optional
        Names of all the model's outputs (e.g. ``run.outputs``).
    batch_size : int, default 64
        Sequences differentiated at once; with many outputs they are explained a few outputs at
        a time so that at most ``batch_size`` sequence-output gradients are held at once.
    device : str, optional
        "cpu", "cuda" or "cuda:N"; None uses CUDA when present.
    verbose : bool, default False
        Print progress to stderr.

    Returns
    -------
    np.ndarray, float32, shape (N, R, 4, L)
        R = ``len(outputs)``.

    Raises
    ------
    TisfmError
        For a model that declares ``supports_tism = False`` (the linear baseline, whose site
        counts have no useful gradient; use :func:`ism`).
    """
    if not getattr(model, "supports_tism", True):
        raise TisfmError("TISM needs the model's gradient, and the linear baseline's site-count "
                         "features are step functions (gradient 0 almost everywhere): a Taylor "
                         "estimate would show only its max-score term. Use exact ISM (tisfm ism) "
                         "for this model")
    idx = as_indices(indices_or_onehot)
    batch_size = check_integer(batch_size, "batch_size")
    with evaluation(model, device) as dev:
        outs = check_outputs(outputs, count_outputs(model, idx, dev), output_names)
        values = np.zeros((len(idx), len(outs), 4, idx.shape[1]), dtype=np.float32)
        for seq, out, g in _gradient_chunks(model, idx, outs, batch_size, dev, verbose, "tism"):
            ref = torch.from_numpy(idx[seq]).to(dev).long()
            known = (ref < 4)[:, None, None, :]
            at_ref = g.gather(2, ref.clamp(max=3)[:, None, None, :].expand(-1, g.shape[1], 1, -1))
            values[seq, out] = ((g - at_ref) * known).cpu().numpy()
    return values


# -- exact in-silico mutagenesis ----------------------------------------------------------------

def _predict(model, idx, outs, batch_size, device):
    """Predictions of the selected outputs, (N, R) on ``device`` (call under inference_mode)."""
    source = torch.from_numpy(idx)
    parts = [model(one_hot_torch(source[s:s + batch_size].to(device)))[:, outs]
             for s in range(0, len(idx), batch_size)]
    return torch.cat(parts)


def ism(model, indices_or_onehot, *, outputs=None, output_names=None, batch_size=512, device=None,
        verbose=False, method="auto"):
    """Exact in-silico mutagenesis: the change of every output for every single-base substitution.

    ``values[n, r, b, i] = out_r(sequence n with base b at i) - out_r(sequence n)`` for the
    three alternative bases at every position; 0 at the reference base and, for every base, at
    positions whose reference is N. Computed under ``torch.inference_mode`` in the model's dtype
    (fp32 as shipped; the model's bf16 convolution setting is not used: it is not exact).

    Parameters
    ----------
    model, indices_or_onehot, outputs, output_names, device, verbose
        As in :func:`tism`.
    batch_size : int, default 512
        The most variants evaluated at once: one forward pass of the naive method; a chunk of
        the incremental methods, which also keep their chunks small enough to stay in cache.
    method : {"auto", "naive", "incremental"}, default "auto"
        "naive" runs every variant through the whole model. "incremental" uses the model's
        structure (:mod:`tisfm_core.mutagenesis`): for a tiSFM without input attention only the
        motif windows covering the substitution are recomputed and the pooling sums are updated;
        for AI-TAC only the span of each convolution the substitution reaches (fastISM). Both
        give the naive values up to float rounding (within 1e-5 in fp32). "auto" is
        "incremental" where the model allows it (:func:`ism_method`), else "naive".

    Returns
    -------
    np.ndarray, float32, shape (N, R, 4, L)
    """
    idx = as_indices(indices_or_onehot)
    batch_size = check_integer(batch_size, "batch_size")
    method = ism_method(model, method)
    with evaluation(model, device) as dev, torch.inference_mode():
        outs = check_outputs(outputs, count_outputs(model, idx, dev), output_names)
        values = np.zeros((len(idx), len(outs), 4, idx.shape[1]), dtype=np.float32)
        _ism_fill(model, idx, outs, (0, idx.shape[1]), batch_size, dev, method, values, verbose)
    return values


def ism_method(model, method="auto"):
    """The exact ISM method :func:`ism` uses for ``model``: "incremental" or "naive".

    Raises
    ------
    TisfmError
        For an unknown method, or "incremental" for a model without a structured engine
        (tiSFM with input attention, pooling weights beyond 600 in magnitude, other models).
    """
    check_method(method)
    reason = structured_method(model)
    if method == "incremental" and reason is not None:
        raise TisfmError(f"incremental ISM is not available for this model: {reason}")
    if method == "auto":
        return "naive" if reason is not None else "incremental"
    return method


def _ism_fill(model, idx, outs, span, batch_size, device, method, values, verbose):
    """Run the engine of ``method`` over ``span`` of every sequence, writing into ``values``."""
    engine = naive_chunks if method == "naive" else incremental_chunks(model)
    total, done = len(idx) * (span[1] - span[0]), 0
    for n, pos, delta in engine(model, idx, outs, span, batch_size, device):
        ref = idx[n, pos]
        keep = ref < 4
        pos, alt = pos[keep], ALTERNATIVES[ref[keep]]                   # (S,), (S, 3)
        keep_t = torch.from_numpy(keep).to(delta.device)
        values[n, :, alt, pos[:, None]] = delta[keep_t].float().cpu().numpy()
        done += len(keep)
        if verbose and (done == total or done // 512 != (done - len(keep)) // 512):
            _progress(verbose, "ism", 3 * done, 3 * total, "variants")


def estimate_ism_seconds(model, indices_or_onehot, *, outputs=None, output_names=None, method="auto",
                         device=None, probe=8):
    """Roughly how many seconds :func:`ism` would take, from two short probes.

    Meant for deciding whether exact ISM is quick enough to run unasked (e.g. in the app): the
    incremental engine of a tiSFM without attention explains a 300-bp sequence in tens of
    milliseconds, the naive loop of an attention model takes a second or more. The same engine
    runs on ``probe`` and on ``2 * probe`` middle positions of the first sequence; their
    difference is the cost per position, the rest the cost per sequence (its reference pass and
    tables), and both are scaled to all positions of all sequences. Each probe runs twice and
    the faster run counts; together they cost about ``6 * probe / L`` of one sequence's ISM.

    Returns
    -------
    float
    """
    idx = as_indices(indices_or_onehot)
    probe = check_integer(probe, "probe")
    method = ism_method(model, method)
    length = idx.shape[1]
    probe = min(probe, max(1, length // 2))
    first = max(0, length // 2 - probe)
    with evaluation(model, device) as dev, torch.inference_mode():
        outs = check_outputs(outputs, count_outputs(model, idx, dev), output_names)
        scratch = np.zeros((1, len(outs), 4, length), dtype=np.float32)
        seconds = []
        for width in (probe, 2 * probe):
            best = math.inf
            for _ in range(2):          # the faster of two: a busy machine only adds time
                started = time.perf_counter()
                _ism_fill(model, idx[:1], outs, (first, first + width), 512, dev, method, scratch, False)
                best = min(best, time.perf_counter() - started)
            seconds.append(best)
    per_position = max(seconds[1] - seconds[0], 0.0) / probe
    per_sequence = max(seconds[0] - per_position * probe, 0.0)
    return len(idx) * (per_sequence + per_position * length)


# -- summaries ----------------------------------------------------------------------------------

def _check_values(values, idx, what="values"):
    values = np.asarray(values)
    if values.ndim != 4 or values.shape[2] != 4:
        raise TisfmError(f"{what} must be shaped (N, R, 4, L), got {values.shape}")
    if idx is not None and (values.shape[0], values.shape[3]) != idx.shape:
        raise TisfmError(f"{what} of shape {values.shape} do not match {idx.shape[0]} sequences of "
                         f"{idx.shape[1]} bp")
    return values


def logo_values(values, indices):
    """Per-base logo heights: the mean effect of mutating away each reference base.

    At every position the reference base gets ``-(mean over its 3 alternatives of the change)``
    and the other bases 0, so a base whose substitution lowers the output gets a positive bar
    (it supports the output) and one whose substitution raises it a negative bar. Positions
    whose reference is N are 0.

    Parameters
    ----------
    values : np.ndarray, shape (N, R, 4, L)
        TISM or ISM values (0 at the reference base).
    indices : np.ndarray
        The sequences the values belong to: uint8 indices (N, L) or one-hot (N, 4, L).

    Returns
    -------
    np.ndarray, float32, shape (N, R, 4, L)
    """
    idx = as_indices(indices)
    values = _check_values(values, idx)
    ref = idx.astype(np.int64)
    at_ref = np.take_along_axis(values, np.minimum(ref, 3)[:, None, None, :], axis=2)
    mean_alt = (values.sum(axis=2, keepdims=True) - at_ref) / 3.0
    onehot = one_hot(idx)[:, None].astype(bool)                   # all False at N positions
    return np.where(onehot, -mean_alt, 0.0).astype(np.float32)


def agreement(a, b, *, indices=None):
    """Pearson correlation of two attributions per sequence and output.

    Parameters
    ----------
    a, b : np.ndarray, shape (N, R, 4, L)
        E.g. TISM and ISM values of the same sequences and outputs.
    indices : np.ndarray, optional
        The sequences (uint8 (N, L) or one-hot). With them, the correlation runs over exactly
        the 3 alternative bases of every non-N position; without, over all entries that are not
        0 in both arrays (the reference bases and N positions are exactly 0 in both).

    Returns
    -------
    np.ndarray, float64, shape (N, R)
        NaN where either array is constant over those entries.
    """
    a = _check_values(a, None, "a").astype(np.float64)
    b = _check_values(b, None, "b").astype(np.float64)
    if a.shape != b.shape:
        raise TisfmError(f"the two attributions differ in shape: {a.shape} and {b.shape}")
    if indices is None:
        mask = ~((a == 0) & (b == 0))
    else:
        idx = as_indices(indices)
        _check_values(a, idx, "a")
        mask = np.broadcast_to(((one_hot(idx) == 0) & (idx < 4)[:, None, :])[:, None], a.shape)
    count = mask.sum(axis=(2, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        da = np.where(mask, a - (a * mask).sum(axis=(2, 3), keepdims=True) / count[..., None, None], 0)
        db = np.where(mask, b - (b * mask).sum(axis=(2, 3), keepdims=True) / count[..., None, None], 0)
        r = (da * db).sum(axis=(2, 3)) / np.sqrt((da ** 2).sum(axis=(2, 3)) * (db ** 2).sum(axis=(2, 3)))
    return np.where(np.isfinite(r), r, np.nan)


def variant_effects(model, indices, position, alt, *, outputs=None, output_names=None, device=None):
    """Reference vs alternative allele at one position, for every selected output.

    Parameters
    ----------
    model : TISFM, AITAC or torch.nn.Module
    indices : np.ndarray
        One sequence (L,) or several (N, L) as uint8 indices, or one-hot (4, L) / (N, 4, L).
    position : int
        0-based position of the variant.
    alt : str or int
        Alternative base, one of A, C, G, T (or 0..3).
    outputs : sequence of int or str, optional
        Output positions (or names, with ``output_names``); default all.
    output_names : sequence of str, optional
        Names of all the model's outputs; the ``output`` column then holds names, not positions.
    device : str, optional
        None uses CUDA when present.

    Returns
    -------
    pandas.DataFrame
        One row per sequence and output: ``sequence`` (0-based), ``position``, ``ref``, ``alt``
        (letters; ref ``N`` where the sequence has N), ``output``, ``ref_pred``, ``alt_pred``,
        ``exact_delta`` (alt_pred - ref_pred) and ``tism_delta`` (the first-order estimate:
        gradient at alt minus gradient at ref, or the gradient at alt where ref is N).
    """
    idx = as_indices(indices)
    length = idx.shape[1]
    if isinstance(position, bool) or not isinstance(position, (int, np.integer)) or not 0 <= position < length:
        raise TisfmError(f"variant position must be an integer in 0..{length - 1} (0-based), got {position!r}")
    if isinstance(alt, str) and alt.upper() in BASES and len(alt) == 1:
        alt_i = BASES.index(alt.upper())
    elif isinstance(alt, (int, np.integer)) and not isinstance(alt, bool) and 0 <= alt < 4:
        alt_i = int(alt)
    else:
        raise TisfmError(f"alternative allele must be one of A, C, G, T, got {alt!r}")
    mutated = idx.copy()
    mutated[:, position] = alt_i
    with evaluation(model, device) as dev:
        n_all = count_outputs(model, idx, dev)
        outs = check_outputs(outputs, n_all, output_names)
        with torch.inference_mode():
            ref_pred = _predict(model, idx, torch.from_numpy(outs).to(dev), 256, dev).float().cpu().numpy()
            alt_pred = _predict(model, mutated, torch.from_numpy(outs).to(dev), 256, dev).float().cpu().numpy()
        tism_delta = np.zeros_like(ref_pred)
        for seq, out, g in _gradient_chunks(model, idx, outs, 64, dev, False, "variant"):
            g = g[..., position].cpu().numpy()                   # (S, R', 4)
            ref = idx[seq, position].astype(np.int64)
            at_ref = np.take_along_axis(g, np.minimum(ref, 3)[:, None, None], axis=2)[..., 0]
            at_ref = at_ref * (ref < 4)[:, None]                 # no reference base at N
            tism_delta[seq, out] = g[:, :, alt_i] - at_ref
    if output_names is not None:
        names = [str(o) for o in output_names]
        if len(names) != n_all:
            raise TisfmError(f"{len(names)} output names for a model with {n_all} outputs")
        labels = [names[o] for o in outs]
    else:
        labels = outs.tolist()
    n_seq, n_out = ref_pred.shape
    letters = np.array(list(BASES + "N"))
    return pd.DataFrame({
        "sequence": np.repeat(np.arange(n_seq), n_out),
        "position": int(position),
        "ref": np.repeat(letters[idx[:, position]], n_out),
        "alt": BASES[alt_i],
        "output": np.tile(np.asarray(labels, dtype=object), n_seq),
        "ref_pred": ref_pred.reshape(-1),
        "alt_pred": alt_pred.reshape(-1),
        "exact_delta": (alt_pred - ref_pred).reshape(-1),
        "tism_delta": tism_delta.reshape(-1),
    })


# -- motif matches ------------------------------------------------------------------------------

HIT_COLUMNS = ["sequence", "motif", "name", "start", "end", "strand", "score", "relative"]


def motif_hits(motifs, indices, *, threshold=0.8, era="head", batch_size=64):
    """Matches of every motif on both strands, scored by the sum of matched probabilities.

    The score of a site is ``sum_j p_j(base at start + j)`` (on the minus strand, the reverse
    complement matrix against the given strand, i.e. the motif against the reverse complement
    site). The relative score divides by the best possible score of the motif (the sum of its
    row maxima). N bases contribute 0. Sites are found by one convolution with
    ``motifs.kernels(era)`` (zero-padded so that motifs narrower than the kernel are scanned to
    the sequence ends); a palindromic motif reports a site on both strands.

    Parameters
    ----------
    motifs : MotifSet
    indices : np.ndarray
        One sequence (L,) or several (N, L) as uint8 indices, or one-hot (4, L) / (N, 4, L).
    threshold : float, default 0.8
        Minimum relative score, in [0, 1].
    era : {"head", "paper"}, default "head"
        Kernel layout (sites are the same for both; it fixes each motif's offset in the kernel).
    batch_size : int, default 64
        Sequences scanned at once.

    Returns
    -------
    pandas.DataFrame
        Columns ``sequence`` (0-based row), ``motif`` (id), ``name``, ``start`` (0-based),
        ``end`` (exclusive), ``strand`` ("+" or "-"), ``score``, ``relative``; sorted by
        sequence and start (then motif and strand).
    """
    idx = as_indices(indices)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating)) \
            or not 0 <= threshold <= 1:
        raise TisfmError(f"threshold must be a relative score in [0, 1], got {threshold!r}")
    batch_size = check_integer(batch_size, "batch_size")
    kernels = motifs.kernels(era, n_pad_channels=0).astype(np.float64)   # (2n, 4, W)
    n_ch, _, width = kernels.shape
    length = idx.shape[1]
    widths = np.repeat(motifs.widths, 2)
    offset = kernel_slots(widths, width, era)
    best = kernels.max(axis=1).sum(axis=1)                        # same on both strands
    # output j of the padded convolution covers sequence positions j - (W - 1) ... j
    starts = np.arange(length + width - 1)[None, :] - (width - 1) + offset[:, None]
    inside = (starts >= 0) & (starts + widths[:, None] <= length)
    weight = torch.from_numpy(kernels)
    frames = []
    for s in range(0, len(idx), batch_size):
        x = torch.from_numpy(one_hot(idx[s:s + batch_size]).astype(np.float64))
        score = F.conv1d(x, weight, padding=width - 1).numpy()    # (B, 2n, L + W - 1)
        relative = score / best[None, :, None]
        # 1e-9: a perfect match may differ from the best score in the last bits (summation order)
        seq, ch, j = np.nonzero((relative >= threshold - 1e-9) & inside[None])
        frames.append(pd.DataFrame({
            "sequence": seq + s, "motif_index": ch // 2, "start": starts[ch, j],
            "end": starts[ch, j] + widths[ch], "strand": np.where(ch % 2 == 0, "+", "-"),
            "score": score[seq, ch, j], "relative": np.minimum(relative[seq, ch, j], 1.0)}))
    hits = pd.concat(frames, ignore_index=True).sort_values(["sequence", "start", "motif_index", "strand"], kind="stable")
    ids, names = np.asarray(motifs.ids, dtype=object), np.asarray(motifs.names, dtype=object)
    hits["motif"] = ids[hits["motif_index"].to_numpy(dtype=np.int64)]
    hits["name"] = names[hits["motif_index"].to_numpy(dtype=np.int64)]
    return hits[HIT_COLUMNS].astype({"sequence": np.int64, "start": np.int64, "end": np.int64,
                                     "score": np.float64, "relative": np.float64}).reset_index(drop=True)


# -- files --------------------------------------------------------------------------------------

class Attribution(NamedTuple):
    """Contents of an attribution file."""

    values: np.ndarray      #: float32 (N, R, 4, L)
    ids: list               #: N sequence ids
    outputs: list           #: R output names
    indices: np.ndarray | None  #: uint8 (N, L) sequences, when saved


def _names(values, n, what):
    arr = np.asarray([str(v) for v in values], dtype=str)
    if arr.ndim != 1 or len(arr) != n:
        raise TisfmError(f"{what}: expected {n} names, got {len(arr)}")
    return arr


def save_attribution(path, values, ids, outputs, *, indices=None):
    """Write attribution values to an ``.npz`` readable without pickle.

    Parameters
    ----------
    path : str or Path
    values : np.ndarray, shape (N, R, 4, L)
        Stored as float32.
    ids : sequence of str, length N
    outputs : sequence of str, length R
    indices : np.ndarray, uint8 (N, L), optional
        The sequences, stored so that logos can be drawn from the file alone.
    """
    values = _check_values(values, None).astype(np.float32)
    n, r, _, length = values.shape
    arrays = {"values": values, "ids": _names(ids, n, "ids"), "outputs": _names(outputs, r, "outputs")}
    if indices is not None:
        idx = as_indices(indices, "indices")
        _check_values(values, idx)
        arrays["indices"] = idx
    write_npz(path, **arrays)


def load_attribution(path):
    """Read a file written by :func:`save_attribution` (never unpickles).

    Returns
    -------
    Attribution
        ``values`` float32 (N, R, 4, L), ``ids`` and ``outputs`` as lists of str, ``indices``
        uint8 (N, L) or None.

    Raises
    ------
    TisfmError
        When the file is missing, not an npz, holds object (pickled) arrays, lacks an array or
        has arrays of the wrong shape or dtype.
    """
    path = Path(path)
    arrays = read_arrays(path, what="attribution file")
    if not isinstance(arrays, dict):
        raise TisfmError(f"attribution file {path} is a single .npy array, expected an .npz archive")
    for key in ("values", "ids", "outputs"):
        if key not in arrays:
            raise TisfmError(f"{path} has no array {key!r} (not an attribution file)")
    values, ids, outputs = arrays["values"], arrays["ids"], arrays["outputs"]
    if values.dtype != np.float32 or values.ndim != 4 or values.shape[2] != 4:
        raise TisfmError(f"{path}: 'values' must be float32 shaped (N, R, 4, L), got {values.dtype} "
                         f"{values.shape}")
    for key, arr, n in (("ids", ids, values.shape[0]), ("outputs", outputs, values.shape[1])):
        if arr.dtype.kind != "U" or arr.shape != (n,):
            raise TisfmError(f"{path}: {key!r} must be {n} unicode strings, got {arr.dtype} {arr.shape}")
    indices = arrays.get("indices")
    if indices is not None:
        if indices.dtype != np.uint8 or indices.shape[0] != values.shape[0]:
            raise TisfmError(f"{path}: 'indices' must be uint8 base indices for {values.shape[0]} "
                             f"sequences, got {indices.dtype} {indices.shape}")
        check_indices(indices, f"{path}: 'indices'", length=values.shape[3])
    return Attribution(values, ids.tolist(), outputs.tolist(), indices)


def attribution_table(values, ids, outputs, indices):
    """Attribution values as a long table, one row per sequence, output, position and base.

    Parameters
    ----------
    values : np.ndarray, float32, shape (N, R, 4, L)
    ids : sequence of str, length N
    outputs : sequence of str, length R
    indices : np.ndarray, uint8, shape (N, L)

    Returns
    -------
    pandas.DataFrame
        Columns ``sequence``, ``output``, ``position`` (1-based), ``ref``, ``base``, ``effect``.
    """
    values = _check_values(values, np.asarray(indices))
    n, r, _, length = values.shape
    refs = np.array(list(BASES + "N"))[indices]
    return pd.DataFrame({
        "sequence": np.repeat(np.asarray(ids, dtype=object), r * 4 * length),
        "output": np.tile(np.repeat(np.asarray(outputs, dtype=object), 4 * length), n),
        "position": np.tile(np.arange(1, length + 1), n * r * 4),
        "ref": np.repeat(refs.reshape(n, 1, 1, length), r, axis=1).repeat(4, axis=2).reshape(-1),
        "base": np.tile(np.repeat(list(BASES), length), n * r),
        "effect": values.reshape(-1),
    })
