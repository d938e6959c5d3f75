"""The tiSFM model: one class, every variant of the paper selected by flags.

Layers, in order (reference: ../shared/docs/reference-tisfm.md, section 2):

1. symmetric positional embedding p (L,) added to the one-hot input, either directly or through
2. a two-head self-attention on the 4 input channels (residual: x + Attn(x + p));
3. a convolution with fixed PWM kernels, motif k in channel 2k and its reverse complement in 2k+1;
4. per-channel calibration (scale, bias) and a sigmoid;
5. the two strands of a motif concatenated and pooled together by programmable softmax pooling
   (``a = 0`` is average pooling, ``a -> inf`` max pooling) or by max pooling;
6. an optional TF-TF interaction gate ``u = y * sigmoid(A y + c)``;
7. a linear final layer (TF x output), the layer the penalties make sparse.

Every parameter after the convolution is indexed by a motif, which is what makes the model
interpretable. Parameter names follow the reference where they are shown to users
(``final`` is the reference's ``linreg``); :mod:`tisfm_core.reference` maps the reference names.
"""

from __future__ import annotations

import math
import typing
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .errors import TisfmError
from .fused import _activations, attention_core, motif_block, motif_conv
from .motifs import ERAS

#: The paper's ablations (Fig. 1) as flag sets.
VARIANTS = {
    "full": dict(attention=True, interaction=True, pooling="programmable"),
    "base": dict(attention=False, interaction=False, pooling="programmable"),
    "attention": dict(attention=True, interaction=False, pooling="programmable"),
    "interaction": dict(attention=False, interaction=True, pooling="programmable"),
    "maxpool": dict(attention=True, interaction=True, pooling="max"),
}

POOLINGS = ("programmable", "max")
SOFTMAX_AXES = ("query", "key")
#: Largest estimated memory of one model (weights, training state and the activations of one
#: chunk of sequences); a config above it is refused before anything is allocated. The paper's
#: model (862 motifs, 81 outputs, 300 bp) needs about 0.3 GiB.
MAX_MODEL_BYTES = 2 * 2**30


def check_model_memory(n_bytes, what):
    """Refuse a model whose :meth:`TISFMConfig.memory_estimate` (or AI-TAC's) passes
    :data:`MAX_MODEL_BYTES`; ``what`` describes its size in the message."""
    if n_bytes > MAX_MODEL_BYTES:
        raise TisfmError(f"a model of {what} would need about {n_bytes / 2**30:,.1f} GiB of memory; "
                         f"the cap is {MAX_MODEL_BYTES / 2**30:.0f} GiB: refused before building it")
    return n_bytes


@dataclass
class TISFMConfig:
    """Everything needed to rebuild a :class:`TISFM` (stored in a run's ``config.json``).

    Parameters
    ----------
    n_motifs : int
        Number of real motifs n; the kernel stack has ``2 * n + n_pad_channels`` channels.
    n_outputs : int
        Number of outputs R (cell types, lineages or tree edges).
    length : int, default 300
        Input window L. The positional table and the pooling span are sized from it.
    kernel_width : int, default 30
        Width K of the kernel buffer (the widest motif).
    attention, interaction : bool, default True
        Input self-attention; TF-TF interaction gate.
    pooling : {"programmable", "max"}, default "programmable"
    positional : bool, default True
        Symmetric positional embedding (distance to the nearer end).
    era : {"paper", "head"}, default "head"
        Reference code era: "paper" (Jan 2023; the published parameter count) has no key/query
        biases in the attention and left-aligned kernels; "head" (2024) has both.
    attention_softmax : {"query", "key"}, default "query"
        Axis of the attention softmax. The reference normalises over the query axis (each source
        position spreads unit mass over targets); "key" is standard attention.
    n_pad_channels : int, default 4
        All-zero kernels appended by the reference; they form ``n_pad_channels // 2`` dummy
        features that act as learned constants and are excluded from every interpretation.
    """

    n_motifs: int
    n_outputs: int
    length: int = 300
    kernel_width: int = 30
    attention: bool = True
    interaction: bool = True
    pooling: str = "programmable"
    positional: bool = True
    era: str = "head"
    attention_softmax: str = "query"
    n_pad_channels: int = 4

    def __post_init__(self):
        if self.pooling not in POOLINGS:
            raise TisfmError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.era not in ERAS:
            raise TisfmError(f"era must be one of {ERAS}, got {self.era!r}")
        if self.attention_softmax not in SOFTMAX_AXES:
            raise TisfmError(
                f"attention_softmax must be one of {SOFTMAX_AXES}, got {self.attention_softmax!r}")
        for name in ("n_motifs", "n_outputs", "length", "kernel_width", "n_pad_channels"):
            value = getattr(self, name)
            low = 0 if name == "n_pad_channels" else 1
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise TisfmError(f"{name} must be an integer >= {low}, got {value!r}")
            setattr(self, name, int(value))
        if self.n_pad_channels % 2:
            raise TisfmError("n_pad_channels must be even: channels are paired by strand")
        if self.kernel_width > self.length:
            raise TisfmError(
                f"the input window ({self.length} bp) is shorter than the widest motif "
                f"({self.kernel_width} bp)")
        check_model_memory(self.memory_estimate(),
                           f"{self.n_motifs:,} motifs, {self.n_outputs:,} outputs, a {self.length:,} bp "
                           f"window and {self.kernel_width:,} bp kernels")

    def n_parameters(self):
        """Parameter count of the model this config builds (without building it)."""
        c, m = self.n_channels, self.n_features
        count = math.ceil(self.length / 2) if self.positional else 0
        if self.attention:   # key, query, value and unify (2 heads of 2 x 4), their biases
            count += 80 if self.era == "head" else 72
        count += c * 4 * self.kernel_width + 2 * c + m
        count += m * m + m if self.interaction else 0
        return count + self.n_outputs * (m + 1)

    def memory_estimate(self, chunk_size=16):
        """Bytes a model of this config needs to train: float32 weights with their gradient and
        two Adam moments, plus the activations of one chunk of ``chunk_size`` sequences in the
        motif block (scores, sigmoids, pooling weights) and of two in the attention (L x L)."""
        positions = 2 * (self.length - self.kernel_width + 1)
        conv = 3 * chunk_size * self.n_channels * positions
        attention = 3 * 2 * 2 * self.length ** 2 if self.attention else 0
        return 4 * (4 * self.n_parameters() + conv + attention)

    @classmethod
    def for_variant(cls, variant, **kwargs):
        """Config of one of the paper's ablations (``VARIANTS``), other fields from ``kwargs``."""
        if variant not in VARIANTS:
            raise TisfmError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
        return cls(**{**VARIANTS[variant], **kwargs})

    @property
    def variant(self):
        """The name of the matching paper variant, or "custom"."""
        for name, flags in VARIANTS.items():
            if all(getattr(self, k) == v for k, v in flags.items()):
                return name
        return "custom"

    @property
    def n_channels(self):
        return 2 * self.n_motifs + self.n_pad_channels

    @property
    def n_features(self):
        """Pooled features: one per motif plus the dummy features of the padding channels."""
        return self.n_channels // 2

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, data):
        if not isinstance(data, dict):
            raise TisfmError("model config must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TisfmError(f"model config has unknown fields: {', '.join(unknown)}")
        missing = [f.name for f in fields(cls) if f.name in ("n_motifs", "n_outputs") and f.name not in data]
        if missing:
            raise TisfmError(f"model config is missing required fields: {', '.join(missing)}")
        types = typing.get_type_hints(cls)   # the dataclass annotations: int, bool or str
        for key, value in data.items():
            want = types[key]
            ok = isinstance(value, want) and not (want is int and isinstance(value, bool))
            if not ok:
                raise TisfmError(
                    f"model config field {key!r} should be {want.__name__}, got {type(value).__name__}")
        return cls(**data)


def position_index(length):
    """Symmetric positional index: distance to the nearer end of the window.

    Returns
    -------
    torch.LongTensor, shape (length,)
        ``i`` for ``i < length // 2`` else ``length - 1 - i``; ``ceil(length / 2)`` distinct values.
    """
    i = torch.arange(length)
    return torch.where(i < length // 2, i, length - 1 - i)


class SelfAttentionSparse(nn.Module):
    """The reference's multi-head self-attention over the 4 input channels.

    Parameters
    ----------
    dim : int, default 4
        Input channels.
    heads : int, default 2
    key_query_bias : bool, default True
        The "head" era has key and query biases; the paper era does not.
    softmax : {"query", "key"}, default "query"
        "query" reproduces the reference (softmax over query positions); "key" is standard attention.
    """

    def __init__(self, dim=4, heads=2, key_query_bias=True, softmax="query"):
        super().__init__()
        e = math.ceil(dim / heads)
        self.heads, self.emb, self.softmax = heads, e, softmax
        self.key = nn.Parameter(torch.empty(heads, e, dim))
        self.query = nn.Parameter(torch.empty(heads, e, dim))
        self.value = nn.Parameter(torch.empty(heads, e, dim))
        self.value_bias = nn.Parameter(torch.zeros(1, heads, e, 1))
        self.unify = nn.Parameter(torch.empty(heads, dim, e))
        self.unify_bias = nn.Parameter(torch.empty(1, dim, 1))
        if key_query_bias:
            self.key_bias = nn.Parameter(torch.zeros(1, heads, e, 1))
            self.query_bias = nn.Parameter(torch.zeros(1, heads, e, 1))
        else:
            self.register_parameter("key_bias", None)
            self.register_parameter("query_bias", None)
        for w in (self.key, self.query, self.value, self.unify):
            nn.init.xavier_uniform_(w)
        nn.init.uniform_(self.unify_bias, -math.sqrt(1 / dim), math.sqrt(1 / dim))

    def forward(self, x):
        """x: (N, dim, L) -> (N, dim, L)."""
        k = torch.einsum("hed,ndl->nhel", self.key, x)
        q = torch.einsum("hed,ndl->nhel", self.query, x)
        if self.key_bias is not None:
            k = k + self.key_bias
            q = q + self.query_bias
        v = torch.einsum("hed,ndl->nhel", self.value, x) + self.value_bias
        # scores[n, h, i, j] = k_i . q_j / sqrt(e): key position i, query position j. The
        # reference normalises over j ("query"), standard attention over i ("key").
        k = k / math.sqrt(self.emb)
        if self.softmax == "query":
            out = attention_core(k, q, v)
        else:
            out = attention_core(q, k, v, transpose=True)
        return torch.einsum("hde,nhel->ndl", self.unify, out) + self.unify_bias


class TISFM(nn.Module):
    """Totally interpretable sequence-to-function model.

    Parameters
    ----------
    config : TISFMConfig
    kernels : array-like, shape (2 * n_motifs + n_pad_channels, 4, kernel_width)
        The PWM kernel stack (:meth:`tisfm_core.motifs.MotifSet.kernels`). Frozen unless
        :meth:`set_kernels_trainable` is called.
    random_state : int or None, default None
        Seed for the initialisation (the reference's scheme); None uses torch's global RNG.

    Attributes
    ----------
    precision : {"fp32", "bf16"}
        Arithmetic of the motif convolution. "bf16" runs its matrix product in bf16, about 3x
        faster on CPUs with AMX (:func:`tisfm_core.devices.conv_precision` picks it there) and
        within about 4e-3 relative error; "fp32" skips the zero columns of narrow motifs
        instead (:func:`tisfm_core.fused.conv_plan`). Everything else stays fp32.
    chunk_size : int or None
        Sequences per chunk of the convolution-pooling block (None: the whole batch at once).
    compiled : bool
        Fuse the element-wise work of the motif block with ``torch.compile`` (training turns
        this on for large models; a few seconds of compilation per model shape).
    """

    def __init__(self, config, kernels, random_state=None):
        super().__init__()
        self.config = config
        kernels = torch.as_tensor(np.asarray(kernels), dtype=torch.float32)
        want = (config.n_channels, 4, config.kernel_width)
        if tuple(kernels.shape) != want:
            raise TisfmError(f"kernel stack has shape {tuple(kernels.shape)}, expected {want} "
                             f"({config.n_motifs} motifs, both strands, {config.n_pad_channels} padding "
                             f"channels, width {config.kernel_width})")
        generator_state = None
        if random_state is not None:
            generator_state = torch.random.get_rng_state()
            torch.manual_seed(random_state)
        try:
            self._build(config, kernels)
        finally:
            if generator_state is not None:
                torch.random.set_rng_state(generator_state)
        self.precision = "fp32"
        self.chunk_size = 16
        self.compiled = False

    def _build(self, config, kernels):
        c, m = config.n_channels, config.n_features
        if config.positional:
            self.position_emb = nn.Embedding(math.ceil(config.length / 2), 1)
        else:
            self.position_emb = None
        self.register_buffer("position_index", position_index(config.length), persistent=False)
        if config.attention:
            self.attention = SelfAttentionSparse(
                4, 2, key_query_bias=config.era == "head", softmax=config.attention_softmax)
        else:
            self.attention = None
        self.kernels = nn.Parameter(kernels.clone(), requires_grad=False)
        self.scale = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))
        # the max-pooling variant keeps the (unused) pooling weights, as the reference does
        self.pool_weight = nn.Parameter(torch.full((m,), 2.0))
        if config.interaction:
            self.interaction = nn.Linear(m, m)
            nn.init.kaiming_uniform_(self.interaction.weight, nonlinearity="relu")
        else:
            self.interaction = None
        self.final = nn.Linear(m, config.n_outputs)
        nn.init.kaiming_uniform_(self.final.weight, nonlinearity="relu")

    # -- parameter groups -------------------------------------------------------------------
    def set_kernels_trainable(self, trainable=True):
        """Unfreeze (fine-tune) or freeze the PWM kernels."""
        self.kernels.requires_grad_(bool(trainable))
        return self

    def freeze_all_but_final(self):
        """Train only the final layer (the fast regularization path needs this)."""
        for name, p in self.named_parameters():
            p.requires_grad_(name.startswith("final."))
        return self

    def n_parameters(self, trainable_only=False):
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    # -- forward pieces ---------------------------------------------------------------------
    def _check_input(self, x):
        if x.dim() != 3 or x.shape[1] != 4:
            raise TisfmError(f"input must be shaped (N, 4, L), got {tuple(x.shape)}")
        if x.shape[2] != self.config.length:
            raise TisfmError(
                f"sequences are {x.shape[2]} bp but this model was built for {self.config.length} bp")

    def augment_input(self, x):
        """Input after the positional embedding and attention: (N, 4, L)."""
        if self.position_emb is not None:
            p = self.position_emb(self.position_index).view(1, 1, -1)
        else:
            p = None
        if self.attention is not None:
            return x + self.attention(x if p is None else x + p)
        return x if p is None else x + p

    def motif_scores(self, x):
        """Raw convolution of the (augmented) input with the kernel stack: (N, C, L - K + 1)."""
        return motif_conv(x, self.kernels, self.precision)

    def activations(self, scores):
        """Calibrated sigmoid activations, strands merged: (N, n_features, 2 * (L - K + 1))."""
        return _activations(scores, self.scale, self.bias, self.config.n_features)

    def pool(self, v):
        """(N, M, P) -> (N, M): programmable softmax pooling or max pooling over both strands."""
        if self.config.pooling == "max":
            return v.amax(dim=-1)
        w = torch.softmax(v * self.pool_weight[:, None], dim=-1)
        return (w * v).sum(dim=-1)

    def gate(self, y):
        """Interaction gate u = y * sigmoid(A y + c) (identity without interaction)."""
        if self.interaction is None:
            return y
        return y * torch.sigmoid(self.interaction(y))

    def pooled(self, x):
        """Pooled motif activations of augmented input: (N, 4, L) -> (N, n_features)."""
        return self.pool(self.activations(self.motif_scores(x)))

    def features(self, x):
        """Gated motif features fed to the final layer: (N, n_features).

        The convolution-sigmoid-pooling block runs in chunks of ``chunk_size`` sequences: its
        (N, 2n, L) intermediates are the bulk of the work and stay in cache at that size. With
        gradients on, each chunk is recomputed in the backward pass instead of stored, which
        keeps memory flat in the batch size; programmable pooling uses the closed-form backward
        of :mod:`tisfm_core.fused`. ``chunk_size=None`` runs plain autograd on the whole batch.
        """
        x = x.to(self.scale.dtype)   # fp32, or fp64 after model.double()
        self._check_input(x)
        xa = self.augment_input(x)
        if not self.chunk_size:
            return self.gate(self.pooled(xa))
        if self.config.pooling == "programmable":
            return self.gate(motif_block(xa, self.kernels, self.scale, self.bias, self.pool_weight,
                                         chunk_size=self.chunk_size, precision=self.precision,
                                         compiled=self.compiled))
        if torch.is_grad_enabled():
            parts = [checkpoint(self.pooled, c, use_reentrant=False) for c in xa.split(self.chunk_size)]
        else:
            parts = [self.pooled(c) for c in xa.split(self.chunk_size)]
        return self.gate(torch.cat(parts))

    def forward(self, x):
        """x: (N, 4, L) one-hot in A,C,G,T order -> (N, n_outputs)."""
        return self.final(self.features(x))

    # -- views for interpretation -----------------------------------------------------------
    @property
    def final_weights(self):
        """Final-layer weights of the real motifs, padding features dropped: (R, n_motifs)."""
        return self.final.weight.detach()[:, : self.config.n_motifs]

    @property
    def pooling_weights(self):
        return self.pool_weight.detach()[: self.config.n_motifs]

    @property
    def interaction_weights(self):
        """A restricted to real motifs, (out, in) as in nn.Linear: (n_motifs, n_motifs) or None."""
        if self.interaction is None:
            return None
        n = self.config.n_motifs
        return self.interaction.weight.detach()[:n, :n]
