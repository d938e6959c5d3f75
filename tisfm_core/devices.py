"""Device and precision choice: CUDA when present, fast bf16 paths where they are accurate."""

from __future__ import annotations

import ctypes
import ctypes.util

import torch

from .errors import TisfmError, check_choice

#: Arithmetic of the motif convolution: "auto" picks bf16 where the CPU runs it natively.
PRECISIONS = ("auto", "fp32", "bf16")


def resolve_device(device="auto"):
    """Map "auto" | "cpu" | "cuda" | "cuda:N" (or a torch.device) to a torch.device.

    Raises
    ------
    TisfmError
        For "cuda" on a machine without a usable CUDA device, or an unknown name.
    """
    if isinstance(device, torch.device):
        return device
    name = str(device or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise TisfmError(f"--device {device} was requested but this machine has no usable CUDA "
                             "GPU (use --device auto or cpu)")
        try:
            dev = torch.device(name)
        except RuntimeError:
            raise TisfmError(f"unknown device {device!r}") from None
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise TisfmError(f"{device} does not exist: this machine has {torch.cuda.device_count()} GPU(s)")
        return dev
    raise TisfmError(f"unknown device {device!r}; use auto, cpu or cuda")


def cpu_supports_fast_bf16():
    """True when oneDNN can run bf16 convolutions natively (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.backends.mkldnn.is_available()) and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    except (AttributeError, RuntimeError):
        return False


def conv_precision(device, precision="auto"):
    """Precision of the motif convolution: "bf16" on CPUs that run it natively, else "fp32".

    On CUDA the training loop uses bf16 autocast instead, so the module itself stays fp32.
    """
    check_choice(precision, "precision", PRECISIONS)
    if precision != "auto":
        return precision
    if torch.device(device).type == "cpu" and cpu_supports_fast_bf16():
        return "bf16"
    return "fp32"


_allocator_tuned = []


def keep_freed_memory():
    """Make glibc's malloc keep freed large blocks for reuse instead of unmapping them.

    A training step allocates and frees the same 10-200 MB buffers every time. By default glibc
    serves each with a fresh ``mmap`` whose pages are faulted in one by one and returns it on
    free, which costs more than the arithmetic: on the CI-sized VM the reference-style model
    trains 3-4x faster with this setting, ours about 1.2x (``bench/train_throughput.py``). This is what
    PyTorch's CPU tuning guide gets from jemalloc or tcmalloc; the price is that a training
    process keeps its peak memory until it exits. Called by :func:`tisfm_core.training.fit` on
    CPU only, never in the app process. Returns True when the setting took effect.
    """
    if _allocator_tuned:
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):   # not glibc (macOS, musl, Windows): nothing to tune
        return False
    m_trim_threshold, m_top_pad, m_mmap_max = -1, -2, -4
    ok = (mallopt(m_mmap_max, 0) == 1 and mallopt(m_trim_threshold, 1 << 30) == 1
          and mallopt(m_top_pad, 64 << 20) == 1)
    if ok:
        _allocator_tuned.append(True)
    return ok
