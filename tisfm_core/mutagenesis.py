"""Exact in-silico mutagenesis engines: the plain batched loop and two that use the model's structure.

Every engine evaluates the 3 single-base substitutions of each position of a span of each
sequence and yields chunks ``(sequence, positions, delta)``: ``delta[s, k, r]`` is the change of
selected output r when ``ALTERNATIVES[ref][k]`` replaces the reference base at ``positions[s]``.
:func:`tisfm_core.attribution.ism` picks the engine and writes the chunks into its (N, R, 4, L)
array (positions whose reference is N are skipped there).

* :func:`naive_chunks`: every variant through the whole model, in batches. The only exact
  method for the tiSFM variants with input attention ("full", "attention", "maxpool"): the
  attention mixes all positions (``x_a = x + Attn(x + p)``), so one substitution changes the
  attention input's keys, queries and values at one position but the attention output, and with
  it every motif score, at every position. Updating the attention in closed form would still
  leave the whole (C, L - K + 1) motif block to recompute per variant, which is where the time
  goes, so nothing is gained over recomputing. What remains is to run the plain loop well: the
  reference predictions once, ``inference_mode``, fp32 (bf16 would move the results by about
  4e-3, far beyond rounding), and on CPU the motif block one sequence at a time, so that its
  intermediates stay in cache.
* :func:`tisfm_chunks`: tiSFM without input attention. The positional embedding is added to
  the one-hot input, so a substitution at i changes the convolution's input at i only, and the
  motif scores only in the K windows ``i - K + 1 .. i`` that cover it, and a motif of width w
  (zero-padded to K in the kernel buffer) only in w of them. Per variant only those calibrated
  sigmoids are recomputed (features grouped by motif width: on the shipped motif set 53% of the
  ``K x C`` buffer); the pooling sums over the untouched positions come from prefix and suffix
  sums (or running maxima) of the reference, so the cost per variant is about
  ``w / (L - K + 1)`` of the motif block plus the interaction gate and the final layer on the
  pooled (n_features,) vector. On CPU in fp32 the windows go to a native kernel
  (:func:`tisfm_core.native.ism_pool`): each channel its own window width, vector lanes over
  positions (contiguous loads), ``sigmoid(z + dz)`` formed as ``1 / (1 + exp(-z) exp(-dz))``
  from ``exp(-z)`` per sequence and ``exp(-dz)`` per model (one exponential per window entry, that
  of the softmax weight) and the window sums in registers; 5-6x faster than the dozen torch
  operations per width group, which remain for CUDA, fp64 models, calibrated changes beyond
  ``|dz| = 40`` and machines without a compiler.
* :func:`aitac_chunks`: the fastISM idea (Nair et al. 2022) for the AI-TAC CNN. Each
  convolution's input changes in a window that grows layer by layer; the change of its output is
  the transposed convolution of the change of its input (only the changed positions are
  multiplied), added to the reference, and only the pooling windows it reaches are redone. The
  dense layers run in full on the flattened features.

Precision: the structured engines work in the model's dtype (fp32 as shipped, fp64 after
``model.double()``) for the per-variant windows and in fp64 for everything summed over the
sequence (the prefix and suffix sums, the pooled features, the gate and the final layer of
tiSFM). They agree with the naive loop in the same dtype to float rounding (about 1e-6 in fp32
on the shipped models). Softmax pooling is summed as ``exp(a v)`` without a shift: v lies in
(0, 1), so the exponent lies between 0 and a, which fp32 holds for ``|a| <= 80``; larger
weights switch the windows to fp64, which holds ``|a| <= 600``. Beyond that (a pooling that is
max pooling to hundreds of digits) only the naive loop is exact.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
import torch.nn.functional as F

from . import native
from .aitac import AITAC
from .errors import TisfmError
from .fused import CONSTANT_SHIFT_LIMIT
from .model import TISFM
from .sequences import one_hot_torch

__all__ = ["ALTERNATIVES", "METHODS", "check_method", "structured_method", "incremental_chunks",
           "naive_chunks", "tisfm_chunks", "aitac_chunks"]

#: the three alternative bases of each reference base (row = reference A, C, G, T)
ALTERNATIVES = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]], dtype=np.int64)
METHODS = ("auto", "naive", "incremental")
#: largest |pooling weight| for which the incremental tiSFM engine is exact (fp64 exponent range)
FP64_POOL_LIMIT = 600.0
#: elements of one chunk of per-variant windows (about 2 MB in fp32: stays in L2 cache)
_WINDOW_ELEMENTS = 1 << 19
#: sequences per chunk of the motif block in the naive loop on CPU: one sequence's (C, P)
#: intermediates stay in L2 cache (1.2-1.5x faster than the default 16 on the shipped models)
_NAIVE_CHUNK = 1
#: largest calibrated change of one substitution for the native kernel, which forms
#: sigmoid(z + dz) as 1 / (1 + exp(-z) exp(-dz)) with exp(-z) in fp32 range (see reference)
_NATIVE_DZ_LIMIT = 40.0


def structured_method(model):
    """Why ``model`` has no incremental engine (a sentence), or None when it has one."""
    if isinstance(model, AITAC):
        return None
    if not isinstance(model, TISFM):
        return f"{type(model).__name__} is not a tiSFM or AI-TAC model"
    if model.config.attention:
        return ("its input attention mixes all positions, so one substitution changes every motif "
                "score")
    if model.config.pooling == "programmable":
        limit = float(model.pool_weight.detach().abs().max())
        if limit > FP64_POOL_LIMIT:
            return (f"a pooling weight of magnitude {limit:.0f} exceeds {FP64_POOL_LIMIT:.0f}, "
                    "beyond which its softmax cannot be updated exactly")
    return None


def _position_chunks(n_seq, span, per_chunk):
    """(sequence, first, stop) position ranges of at most ``per_chunk`` positions."""
    start, stop = span
    for n in range(n_seq):
        for i0 in range(start, stop, per_chunk):
            yield n, i0, min(i0 + per_chunk, stop)


def _references(idx, n, i0, i1, device):
    """Reference bases of positions i0..i1-1 of sequence n, N clamped to A (its result is dropped)."""
    return torch.from_numpy(np.minimum(idx[n, i0:i1], 3).astype(np.int64)).to(device)


# -- naive ------------------------------------------------------------------------------------

def naive_chunks(model, idx, outs, span, batch_size, device):
    """Every variant through the whole model, ``batch_size`` variants per forward pass."""
    alternatives = torch.from_numpy(ALTERNATIVES).to(device)
    outs_t = torch.from_numpy(outs).to(device)
    seqs = torch.from_numpy(idx).to(device).long()
    old_chunk = getattr(model, "chunk_size", None)
    if old_chunk and device.type == "cpu":
        model.chunk_size = min(old_chunk, _NAIVE_CHUNK)
    try:
        reference = torch.cat([model(one_hot_torch(seqs[s:s + batch_size]))[:, outs_t]
                               for s in range(0, len(seqs), batch_size)])
        for n, i0, i1 in _position_chunks(len(idx), span, max(1, batch_size // 3)):
            pos = torch.arange(i0, i1, device=device)
            alt = alternatives[_references(idx, n, i0, i1, device)]            # (S, 3)
            mutated = seqs[n].repeat(3 * len(pos), 1)
            mutated[torch.arange(3 * len(pos), device=device), pos.repeat_interleave(3)] = alt.reshape(-1)
            pred = model(one_hot_torch(mutated))[:, outs_t]
            yield n, np.arange(i0, i1), (pred - reference[n]).view(len(pos), 3, -1)
    finally:
        if old_chunk:
            model.chunk_size = old_chunk


# -- tiSFM without input attention ------------------------------------------------------------

class _TisfmHead:
    """Interaction gate and final layer of a tiSFM on pooled features in the order ``order``."""

    def __init__(self, model, outs, order, dtype):
        def get(t):
            return t.detach().to(dtype)
        order = torch.as_tensor(order, device=model.final.weight.device)
        self.gate = None
        if model.interaction is not None:   # u = y * sigmoid(A y + c), features permuted
            weight = get(model.interaction.weight)[order][:, order]
            self.gate = (weight.T.contiguous(), get(model.interaction.bias)[order])
        outs = torch.as_tensor(outs, device=model.final.weight.device)
        self.weight = get(model.final.weight)[outs][:, order].T.contiguous()
        self.bias = get(model.final.bias)[outs]

    def __call__(self, y):
        if self.gate is not None:
            y = y * torch.sigmoid(torch.addmm(self.gate[1], y, self.gate[0]))
        return torch.addmm(self.bias, y, self.weight)


def _width_groups(widths, overhead=48):
    """Features with a non-zero kernel, split into at most 3 groups of one window width each.

    Sorted by kernel width, widest first, then cut where the sum of (group width x features)
    plus ``overhead`` per group (the fixed cost of its dozen tensor operations, in elements per
    variant) is least. Features whose kernels are all zero (the padding features) are in no
    group: a substitution never changes their scores.
    """
    order = np.argsort(-widths, kind="stable")
    order = order[widths[order] > 0]
    w = widths[order]
    if not len(w):
        return []
    cuts = [j for j in range(1, len(w)) if w[j] != w[j - 1]]
    best = None
    for n_cuts in range(3):
        for chosen in itertools.combinations(cuts, n_cuts):
            bounds = [0, *chosen, len(w)]
            cost = sum(int(w[b0]) * (b1 - b0) + overhead for b0, b1 in zip(bounds, bounds[1:]))
            if best is None or cost < best[0]:
                best = (cost, bounds)
    return [order[b0:b1] for b0, b1 in zip(best[1], best[1][1:])]


class _TisfmPlan:
    """What the incremental tiSFM engine precomputes per model (see :func:`tisfm_chunks`).

    Features are grouped by motif width; inside a group the two strands of a feature are
    adjacent channels, and the head takes the features in group order.
    """

    def __init__(self, model, outs, device):
        cfg = model.config
        width, length, n_ch = cfg.kernel_width, cfg.length, cfg.n_channels
        self.width, self.length, self.n_ch = width, length, n_ch
        self.n_pos = n_pos = length - width + 1
        acc = self.acc = torch.float64
        self.programmable = cfg.pooling == "programmable"
        self.kernels = model.kernels.detach().to(acc)
        self.scale, self.bias = model.scale.detach().to(acc), model.bias.detach().to(acc)
        self.a = model.pool_weight.detach().to(acc).repeat_interleave(2)         # per channel
        big = self.programmable and float(self.a.abs().max()) > CONSTANT_SHIFT_LIMIT
        work = self.work = acc if big else model.scale.dtype
        self.position = 0.0
        if model.position_emb is not None:
            self.position = model.position_emb(model.position_index).detach().to(acc).view(1, -1)
        # flipped kernels wf[b, k] = W[:, b, K - 1 - k]: a substitution at i moves score i - K + 1 + k
        # by wf[alt, k] - wf[ref, k]; its calibrated change, zero-padded on the k axis
        wf = self.kernels.flip(-1).permute(1, 2, 0)                                 # (4, K, C)
        alternatives = torch.from_numpy(ALTERNATIVES).to(device)
        dz = F.pad((wf[alternatives] - wf[:, None]) * self.scale, (0, 0, 0, width))   # fp64
        used = self.kernels.abs().sum(1).cpu().numpy() > 0                            # (C, K)
        any_used = used.any(1)
        last = np.where(any_used, width - np.argmax(used[:, ::-1], axis=1), 0)       # l_c
        span = np.where(any_used, last - np.argmax(used, axis=1), 0).reshape(-1, 2).max(1)
        # the native kernel takes each channel's own window; the torch path groups by width
        self.native = (work == torch.float32 and device.type == "cpu"
                       and float(dz.abs().max()) <= _NATIVE_DZ_LIMIT and native.library() is not None)
        groups = [np.flatnonzero(span > 0)] if self.native else _width_groups(span)
        grouped = np.concatenate(groups) if groups else np.zeros(0, dtype=np.int64)
        self.constant = torch.from_numpy(np.setdiff1d(np.arange(cfg.n_features), grouped)).to(device)
        self.order = np.concatenate([grouped, self.constant.cpu().numpy()])
        self.head = _TisfmHead(model, outs, self.order, acc)
        self.groups = []
        if self.native:
            self._native_plan(grouped, dz, used, last, device)
            return
        dz = dz.to(work)
        pos = torch.arange(length, device=device)
        for feats in groups:
            w = int(span[feats].max())
            cols = np.stack([2 * feats, 2 * feats + 1], axis=1).reshape(-1)
            cols_t = torch.from_numpy(cols).to(device)
            last_t = torch.from_numpy(last[cols]).to(device)
            j = torch.arange(w, device=device)
            # channel c's window of a substitution at i: scores i - l_c + 1 + j, j < w
            starts = pos[:, None] - last_t + 1                                          # (L, C_g)
            # rows of the score table padded by K in front: window i is rows i .. i + w - 1
            rows = torch.arange(length + w - 1, device=device)[:, None] - last_t + 1 + width
            lo, hi = starts.clamp(0, n_pos), (starts + w).clamp(0, n_pos)
            self.groups.append(dict(
                width=w, n=len(cols), starts=starts, j=j,
                rows=rows * n_ch + cols_t, lo=lo * n_ch + cols_t, hi=(n_pos - hi) * n_ch + cols_t,
                partial=(starts.amin(1) < 0) | (starts.amax(1) + w > n_pos),
                dz=dz[:, :, width - last_t + j[:, None], cols_t],                      # (4, 3, w, C_g)
                a=self.a[cols_t].to(work), ones=torch.ones(1, w, dtype=work, device=device)))

    def _native_plan(self, feats, dz, used, last, device):
        """Per channel, the window of a substitution in the padded coordinates of the native
        kernel (score p at p + K), exp(-calibrated change) (C, 4, 3, K) and the validity mask."""
        width, n_pos = self.width, self.n_pos
        first = np.argmax(used, axis=1)
        span = np.where(last > 0, last - first, 0)
        self.q = self.length + 2 * width + native.vector_width()
        self.start = torch.from_numpy((width - last + 1).astype(np.int64))
        self.span = torch.from_numpy(span.astype(np.int64))
        # window entry j of channel c is kernel column l_c - 1 - j: row width - l_c + j of dz
        rows = torch.from_numpy(width - last[:, None] + np.arange(width)).to(device)   # (C, K)
        cols = torch.arange(self.n_ch, device=device)[:, None]
        # exp(-dz) from fp64: the kernel forms sigmoid(z + dz) as 1 / (1 + exp(-z) exp(-dz))
        dz = dz[:, :, rows, cols].permute(2, 0, 1, 3)
        self.edz = torch.exp(-dz).float().contiguous()                                   # (C, 4, 3, K)
        self.mask = torch.zeros(self.q, dtype=torch.float32)
        self.mask[width:width + n_pos] = 1
        self.feats = torch.from_numpy(feats.astype(np.int64))
        self.a32 = self.a.float().contiguous()
        # buffers reused from sequence to sequence (a sequence's state is dropped before the next)
        self.buffers = dict(
            tables=torch.empty(self.n_ch, 4 if self.programmable else 2, self.q, dtype=torch.float64),
            ez=torch.ones(self.n_ch, self.q, dtype=torch.float32),
            refs=torch.zeros(self.length + native.vector_width(), dtype=torch.int32))

    def _native_reference(self, seq, z, v):
        """Per-sequence state of the native kernel: exp(-scores) padded, outside tables, bases."""
        tables, ez, refs = (self.buffers[k] for k in ("tables", "ez", "refs"))
        if self.programmable:
            e = torch.exp(v * self.a[:, None])
            ev = e * v
            native.ism_tables(e, ev, self.width, self.q, False, out=tables)
            y = ev.sum(1).view(-1, 2).sum(-1) / e.sum(1).view(-1, 2).sum(-1)
        else:
            native.ism_tables(v, None, self.width, self.q, True, out=tables)
            y = v.amax(1).view(-1, 2).amax(-1)
        # exp(-z) in fp32 range: with |dz| <= 40, sigmoid(z + dz) moves by < 5e-21 for |z| > 87
        torch.exp(-z.clamp(-87.0, 87.0), out=ez[:, self.width:self.width + self.n_pos])
        refs[:self.length] = seq.clamp(max=3)
        return y, (ez, tables, refs)

    def reference(self, seq, device):
        """Per-sequence tables: the reference output, the pooled features that never change, and
        per group the windows of calibrated scores and the pooling sums (or maxima) outside them
        (or the native kernel's exp(-scores) and tables)."""
        n_ch = self.n_ch
        x = one_hot_torch(seq.to(device), self.acc) + self.position
        z = torch.addcmul(self.bias[:, None], F.conv1d(x[None], self.kernels)[0], self.scale[:, None])
        if self.native:
            y, tables = self._native_reference(seq, z, torch.sigmoid(z))
            y = y[self.order]
            return self.head(y[None])[0], y[len(self.order) - len(self.constant):], tables
        v = torch.sigmoid(z).T                                                          # (P, C)
        zero = v.new_zeros(1, n_ch)
        if self.programmable:
            # |a| <= 80 in fp32 (600 in fp64): exp(a v) cannot overflow, so no shift is needed
            e = torch.exp(v * self.a)
            # sums before position j (row j) and, read backwards, from j on: positive terms only
            tables = [(torch.cat([zero, t.cumsum(0)]), torch.cat([zero, t.flip(0).cumsum(0)]))
                      for t in (e, e * v)]
            den, num = (pre[-1].view(-1, 2).sum(-1) for pre, _ in tables)
            y = num / den
        else:
            low = torch.full_like(zero, -torch.inf)
            tables = [(torch.cat([low, v.cummax(0).values]), torch.cat([low, v.flip(0).cummax(0).values]))]
            y = tables[0][0][-1].view(-1, 2).amax(-1)
        y = y[self.order]
        out = self.head(y[None])[0]
        zpad = F.pad(z.T.to(self.work), (0, 0, self.width, 2 * self.width))
        per_group = []
        for g in self.groups:
            table = zpad.take(g["rows"])                                                # (L + w - 1, C_g)
            windows = table.as_strided((self.length, g["width"], g["n"]), (g["n"], g["n"], 1))
            if self.programmable:
                outside = [pre.take(g["lo"]) + suf.take(g["hi"]) for pre, suf in tables]
            else:
                outside = [torch.maximum(tables[0][0].take(g["lo"]), tables[0][1].take(g["hi"]))]
            per_group.append((table, windows, outside))
        return out, y[len(self.order) - len(self.constant):], per_group

    def _window_sum(self, g, t, outside, i0, i1):
        """Sum over the window (S, 3, w, C_g) plus the sum outside it, both strands: (S, 3, M_g)."""
        s = i1 - i0
        t = torch.matmul(g["ones"], t.view(3 * s, g["width"], g["n"])).view(s, 3, g["n"])
        t = t.to(self.acc) + outside[i0:i1, None]
        return t[..., 0::2] + t[..., 1::2]

    def chunk(self, ref, i0, i1, state):
        """Outputs (S, 3, R) of the 3 substitutions of positions i0 .. i1 - 1."""
        out_ref, constant, per_group = state
        s, acc = i1 - i0, self.acc
        if self.native:
            ez, tables, refs = per_group
            y = native.ism_pool(ez, self.mask, tables, self.edz, self.start, self.span, self.a32,
                                self.feats, refs, i0, i1, not self.programmable)
            y = torch.cat([y, constant.expand(s, 3, -1)], dim=2).view(3 * s, -1)
            return self.head(y).view(s, 3, -1) - out_ref
        pooled = []
        for g, (_, windows, outside) in zip(self.groups, per_group):
            v = g["dz"].index_select(0, ref).add_(windows[i0:i1, None]).sigmoid_()   # (S, 3, w, C_g)
            inside = None
            if bool(g["partial"][i0:i1].any()):
                at = g["starts"][i0:i1, None, :] + g["j"][:, None]
                inside = ((at >= 0) & (at < self.n_pos))[:, None]
            if self.programmable:
                e = v.mul(g["a"]).exp_()
                if inside is not None:
                    e.mul_(inside)
                den = self._window_sum(g, e, outside[0], i0, i1)
                num = self._window_sum(g, e.mul_(v), outside[1], i0, i1)
                pooled.append(num / den)
            else:
                if inside is not None:
                    v.masked_fill_(~inside, -torch.inf)
                t = torch.maximum(v.amax(2).to(acc), outside[0][i0:i1, None])
                pooled.append(torch.maximum(t[..., 0::2], t[..., 1::2]))
        pooled.append(constant.expand(s, 3, -1))
        y = torch.cat(pooled, dim=2).view(3 * s, -1)
        return self.head(y).view(s, 3, -1) - out_ref


def tisfm_chunks(model, idx, outs, span, batch_size, device):
    """Incremental exact ISM of a tiSFM without input attention (see the module docstring).

    For a variant at position i the scores change at ``p = i - K + 1 + k`` for the kernel columns
    k a motif occupies; with ``wf[b, k] = W[:, b, K - 1 - k]`` the calibrated pre-activation there
    becomes ``z_ref[p] + scale * (wf[alt, k] - wf[ref, k])``. Features are grouped by motif width
    so that a narrow motif's window is not padded to the widest kernel. Softmax pooling needs,
    per channel, the sums of ``e = exp(a v)`` and ``e v`` over the positions the variant leaves
    alone: a prefix sum before the window plus a suffix sum after it (sums of positive terms, so
    no cancellation however much the window dominates). Max pooling takes the larger of the
    window's maximum and the running maxima before and after it.
    """
    plan = _TisfmPlan(model, outs, device)
    elements = sum(g["width"] * g["n"] for g in plan.groups) or 1
    per_chunk = max(1, min(batch_size // 3, _WINDOW_ELEMENTS // (3 * elements)))
    if plan.native:   # its cost per call is in (feature, alternative) loops: one call per sequence
        per_chunk = span[1] - span[0]
    return _plan_chunks(plan, idx, span, per_chunk, device)


# -- AI-TAC ---------------------------------------------------------------------------------

def _shifted(t, start, width):
    """``out[v, :, j] = t[v, :, start[v] + j]``, 0 outside ``t``: (V, C, n) -> (V, C, width)."""
    n = t.shape[-1]
    padded = F.pad(t, (width, width))
    first = (start + width).clamp(0, n + width)
    return padded.unfold(2, width, 1)[torch.arange(len(t), device=t.device), :, first]


class _AitacPlan:
    """Which window of each layer a substitution at each position can change, and the chunk math.

    Layer l is a convolution of width ``2 p + 1`` (zero padding p), ReLU, max pooling of width w
    with stride w and padding 1, and batch norm. A change of its input over ``[a, a + width)``
    changes the convolution output over ``[a - p, a + width + p)``, and pooling output j reads
    convolution positions ``j w - 1 .. j w + w - 2``. Every position gets a pooled window of the
    same width per layer (the widest needed), shifted inside the layer at the ends, so that all
    variants of a chunk have the same shapes.
    """

    def __init__(self, model, outs, device):
        self.model = model
        self.dtype = dtype = model.fc1.weight.dtype
        self.outs = torch.from_numpy(outs).to(device)
        lengths = model.feature_lengths()
        self.layers = []
        start, width = np.arange(model.length), 1
        for index, block in enumerate((model.layer1, model.layer2, model.layer3)):
            conv, w = block[1], block[3].kernel_size[1]
            p = block[0].padding[0]
            n_in, n_out = lengths[3 * index + 1], lengths[3 * index + 2]
            j_lo = np.clip((np.maximum(start - p, 0) + 1) // w, 0, n_out - 1)
            j_hi = np.clip((np.minimum(start + width - 1 + p, n_in - 1) + 1) // w, 0, n_out - 1)
            n_win = int((j_hi - j_lo + 1).max())
            first = np.clip(j_lo, 0, n_out - n_win)
            weight = conv.weight.detach()
            self.layers.append(dict(
                block=block, w=w, n_in=n_in, n_out=n_out, n_win=n_win,
                first=torch.from_numpy(first).to(device),
                # the pooled window's first convolution position, j w - 1, counted from the
                # first position of the change of the convolution output, a - p
                offset=torch.from_numpy(first * w - 1 - (start - p)).to(device),
                # transposed-convolution weights (C_in, C_out, k) that map a change of the input
                # to the change of the output
                transposed=weight.reshape(weight.shape[0], -1, weight.shape[-1]).flip(-1)
                .transpose(0, 1).contiguous()))
            start, width = first, n_win
        eye = torch.eye(4, dtype=dtype, device=device)
        alternatives = torch.from_numpy(ALTERNATIVES).to(device)
        # change of the first convolution for each (reference, alternative): (4, 3, C1, k)
        self.first_change = torch.einsum("rab,bck->rack", eye[alternatives] - eye[:, None],
                                         self.layers[0]["transposed"])

    def dense(self, features):
        m = self.model
        return m.fc3(m.activation(m.fc2(m.activation(m.fc1(features.flatten(1))))))[:, self.outs]

    def reference(self, seq, device):
        """Per layer, the convolution output on the pooling grid (position q at q + 1, -inf
        padding) and the pooled, normalised output; and the reference prediction."""
        h = one_hot_torch(seq.to(device), self.dtype)[None, None]
        grids, pooled = [], []
        for layer in self.layers:
            block, w, n_out = layer["block"], layer["w"], layer["n_out"]
            pre = block[1](block[0](h))                                           # (1, C, 1, n_in)
            grid = pre.new_full((pre.shape[1], n_out * w), -torch.inf)
            used = min(layer["n_in"], n_out * w - 1)
            grid[:, 1:used + 1] = pre[0, :, 0, :used]
            grids.append(grid.view(-1, n_out, w))
            h = block[4](block[3](block[2](pre)))
            pooled.append(h[0, :, 0])                                               # (C, n_out)
        return grids, pooled, self.dense(h)[0]

    def chunk(self, ref, i0, i1, state):
        """Outputs (S, 3, R) of the 3 substitutions of positions i0 .. i1 - 1."""
        grids, pooled, out_ref = state
        s = i1 - i0
        change = self.first_change.index_select(0, ref).flatten(0, 1)             # (3S, C1, k)
        for index, layer in enumerate(self.layers):
            block, w, n_win = layer["block"], layer["w"], layer["n_win"]
            if index:
                change = F.conv_transpose1d(change, layer["transposed"])
            first = layer["first"][i0:i1]
            window = _shifted(change, layer["offset"][i0:i1].repeat_interleave(3), n_win * w)
            before = grids[index].unfold(1, n_win, 1)[:, first].permute(1, 0, 3, 2)   # (S, C, n_win, w)
            conv = window.view(s, 3, -1, n_win, w) + before[:, None]
            bn = block[4]
            new = F.batch_norm(conv.relu_().amax(-1).flatten(0, 1), bn.running_mean, bn.running_var,
                               bn.weight, bn.bias, False, 0.0, bn.eps)                 # (3S, C, n_win)
            if index + 1 < len(self.layers):
                old = pooled[index].unfold(1, n_win, 1)[:, first].transpose(0, 1)      # (S, C, n_win)
                change = (new.view(s, 3, -1, n_win) - old[:, None]).flatten(0, 1)
        where = (first[:, None] + torch.arange(n_win, device=first.device)).repeat_interleave(3, 0)
        features = pooled[-1].expand(3 * s, -1, -1).clone()
        features.scatter_(2, where[:, None, :].expand_as(new), new)               # the new window
        return (self.dense(features) - out_ref).view(s, 3, -1)


def aitac_chunks(model, idx, outs, span, batch_size, device):
    """fastISM for AI-TAC (see the module docstring and :class:`_AitacPlan`)."""
    return _plan_chunks(_AitacPlan(model, outs, device), idx, span, max(1, batch_size // 3), device)


def _plan_chunks(plan, idx, span, per_chunk, device):
    """Drive a plan: its reference tables once per sequence, then chunk by chunk."""
    seqs = torch.from_numpy(idx)
    state, current = None, None
    for n, i0, i1 in _position_chunks(len(idx), span, per_chunk):
        if current != n:
            state, current = plan.reference(seqs[n], device), n
        yield n, np.arange(i0, i1), plan.chunk(_references(idx, n, i0, i1, device), i0, i1, state)


def incremental_chunks(model):
    """The structured engine of ``model`` (which :func:`structured_method` accepts)."""
    if isinstance(model, AITAC):
        return aitac_chunks
    return tisfm_chunks


def check_method(method):
    """``method`` when it is one of :data:`METHODS`, else a TisfmError naming them."""
    if method not in METHODS:
        raise TisfmError(f"ISM method must be one of {', '.join(METHODS)}, got {method!r}")
    return method
