"""Import state dicts of the reference tiSFM implementation (boooooogey/ATAConv).

The reference saves ``model.state_dict()`` with ``torch.save``. We read it with
``torch.load(..., weights_only=True)`` (no arbitrary unpickling), check every key and shape against
the requested variant and era, and map the names onto :class:`~tisfm_core.model.TISFM`.
"""

from __future__ import annotations

import math
import pickle
import zipfile

import torch

from .errors import TisfmError
from .model import TISFM, TISFMConfig
from .textfiles import check_input_file, check_zip_sizes, open_zip

#: Largest state dict imported (the paper's models are about 4 MB) and most entries in its zip.
MAX_STATE_DICT_BYTES = 512 * 2**20
MAX_STATE_DICT_MEMBERS = 1000
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

#: reference parameter name -> our parameter name
NAME_MAP = {
    "position_emb.weight": "position_emb.weight",
    "attention_layer.tokey": "attention.key",
    "attention_layer.toquery": "attention.query",
    "attention_layer.tovalue": "attention.value",
    "attention_layer.tovalue_bias": "attention.value_bias",
    "attention_layer.unifyheads": "attention.unify",
    "attention_layer.unifyheads_bias": "attention.unify_bias",
    "attention_layer.tokey_bias": "attention.key_bias",
    "attention_layer.toquery_bias": "attention.query_bias",
    "conv_motif.weight": "kernels",
    "conv_scale": "scale",
    "conv_bias": "bias",
    "attentionpooling.weight": "pool_weight",
    "interaction_layer.weight": "interaction.weight",
    "interaction_layer.bias": "interaction.bias",
    "linreg.weight": "final.weight",
    "linreg.bias": "final.bias",
}


def read_state_dict(path):
    """Read a PyTorch state dict without executing code.

    Parameters
    ----------
    path : str or Path
        File written by ``torch.save(model.state_dict(), path)``.

    Returns
    -------
    dict[str, torch.Tensor]
        Tensors on the CPU (checkpoints saved on a GPU load on CPU-only machines).
    """
    path = check_input_file(path, "state dict")
    with open(path, "rb") as handle:
        magic = handle.read(4)
    # torch.save writes a zip archive; files of PyTorch < 1.6 are bare pickles (protocol >= 2)
    if not (magic.startswith(b"PK\x03\x04") or magic[:1] == b"\x80"):
        raise TisfmError(f"{path.name} is not a PyTorch checkpoint: it is neither the zip archive "
                         "torch.save writes nor a legacy pickle (empty, text or another format)")
    if path.stat().st_size > MAX_STATE_DICT_BYTES:
        raise TisfmError(f"{path.name} is larger than {MAX_STATE_DICT_BYTES / 2**20:.0f} MiB (the cap "
                         "on a state dict); refused")
    if magic.startswith(b"PK") and zipfile.is_zipfile(path):   # a damaged zip fails in torch.load
        # the members are inflated by torch.load: their sizes are checked from the directory first
        with open_zip(path, path.name, max_members=MAX_STATE_DICT_MEMBERS) as archive:
            check_zip_sizes(archive, path.name, max_bytes=MAX_STATE_DICT_BYTES)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refuses globals other than tensors and containers: a crafted or foreign pickle
        raise TisfmError(
            f"{path.name} was refused: it is not a plain PyTorch state dict (it asks to load "
            f"Python objects, which could run code). Detail: {str(exc).splitlines()[0]}") from None
    except Exception as exc:  # torch raises many types for truncated or non-PyTorch files
        raise TisfmError(f"{path.name} is not a readable PyTorch checkpoint (truncated or another "
                         f"format): {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TisfmError(f"{path.name} does not hold a state dict (a mapping of names to tensors)")
    for name, tensor in state.items():
        if tensor.dtype not in FLOAT_DTYPES:
            raise TisfmError(f"{path.name}: {name} has dtype {str(tensor.dtype).removeprefix('torch.')}; "
                             "the weights must be float16, bfloat16, float32 or float64")
        if not torch.isfinite(tensor).all():
            raise TisfmError(f"{path.name}: {name} contains NaN or infinite values")
    return {str(k).removeprefix("module."): v for k, v in state.items()}


def config_from_state_dict(state, *, variant, era, n_outputs=None, length=300,
                           attention_softmax="query"):
    """Build the :class:`TISFMConfig` a reference state dict implies, checking it fits ``variant``."""
    missing = [k for k in ("conv_motif.weight", "linreg.weight", "attentionpooling.weight")
               if k not in state]
    if missing:
        raise TisfmError(f"not a tiSFM reference state dict: missing {', '.join(missing)}")
    unknown = sorted(set(state) - set(NAME_MAP))
    if unknown:
        raise TisfmError(f"state dict has keys no tiSFM variant has: {', '.join(unknown[:5])}")
    conv, final = state["conv_motif.weight"], state["linreg.weight"]
    if final.dim() != 2:
        raise TisfmError(f"linreg.weight has shape {tuple(final.shape)}; expected (outputs, features)")
    if conv.dim() != 3:
        raise TisfmError(f"conv_motif.weight has shape {tuple(conv.shape)}; expected (2n + 4, 4, K)")
    c, four, k = conv.shape
    if four != 4 or c % 2 or c < 6:
        raise TisfmError(f"conv_motif.weight has shape {tuple(state['conv_motif.weight'].shape)}; "
                         "expected (2n + 4, 4, K)")
    r = final.shape[0]
    if n_outputs is not None and n_outputs != r:
        raise TisfmError(f"{n_outputs} output names were given but the state dict has {r} outputs")
    config = TISFMConfig.for_variant(variant, n_motifs=(c - 4) // 2, n_outputs=r, length=length,
                                     kernel_width=k, era=era, attention_softmax=attention_softmax)
    has_attention = "attention_layer.tokey" in state
    has_interaction = "interaction_layer.weight" in state
    has_kq_bias = "attention_layer.tokey_bias" in state
    if has_attention != config.attention or has_interaction != config.interaction:
        found = {(True, True): "full or maxpool", (False, False): "base",
                 (True, False): "attention", (False, True): "interaction"}[(has_attention, has_interaction)]
        raise TisfmError(f"the state dict is a {found} model, not {variant!r}")
    if has_attention and has_kq_bias != (era == "head"):
        raise TisfmError(
            f"era {era!r} does not fit this state dict: its attention "
            f"{'has' if has_kq_bias else 'has no'} key/query biases, which means era "
            f"{'head' if has_kq_bias else 'paper'}")
    if "position_emb.weight" in state:
        table = state["position_emb.weight"].shape[0]
        if table != math.ceil(length / 2):
            raise TisfmError(f"the positional table has {table} rows, which fits a window of "
                             f"{2 * table - 1} or {2 * table} bp, not {length} bp")
    return config


def import_reference(path, motifs, *, variant, era, outputs=None, length=300,
                     attention_softmax="query"):
    """Load a reference state dict into a :class:`TISFM`.

    Parameters
    ----------
    path : str or Path
        The reference ``state_dict`` (``torch.save``).
    motifs : tisfm_core.motifs.MotifSet
        The motif file the reference model was built from (gives the motif ids; must have
        ``(C - 4) / 2`` motifs, none wider than the kernel buffer).
    variant : {"full", "base", "attention", "interaction", "maxpool"}
    era : {"paper", "head"}
    outputs : list of str, optional
        Output names; default ``output_0 ...``.
    length : int, default 300
    attention_softmax : {"query", "key"}, default "query"

    Returns
    -------
    model : TISFM
        In eval mode, with the state dict's kernels (they may have been fine-tuned).
    """
    state = read_state_dict(path)
    config = config_from_state_dict(state, variant=variant, era=era,
                                    n_outputs=None if outputs is None else len(outputs),
                                    length=length, attention_softmax=attention_softmax)
    if len(motifs) != config.n_motifs:
        raise TisfmError(f"the motif file has {len(motifs)} motifs but the state dict has kernels "
                         f"for {config.n_motifs}")
    if motifs.max_width > config.kernel_width:
        raise TisfmError(f"the motif file has motifs of {motifs.max_width} bp but the state dict's "
                         f"kernels are {config.kernel_width} wide")
    model = TISFM(config, state["conv_motif.weight"])
    ours = model.state_dict()
    mapped = {}
    for key, tensor in state.items():
        name = NAME_MAP[key]
        target = ours[name]
        if key == "conv_bias":
            tensor = tensor.reshape(-1)
        if tuple(tensor.shape) != tuple(target.shape):
            raise TisfmError(f"{key} has shape {tuple(tensor.shape)}, expected {tuple(target.shape)}")
        mapped[name] = tensor.float()
    absent = sorted(set(ours) - set(mapped))
    if absent:
        raise TisfmError(f"the state dict lacks parameters this variant needs: {', '.join(absent)}")
    model.load_state_dict(mapped)
    return model.eval()
