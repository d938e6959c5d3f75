"""Device and precision choice: CUDA when present, fast bf16 paths where they are accurate."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

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


#: ``ONEDNN_MAX_CPU_ISA`` values that still allow oneDNN's AMX kernels (unset means all).
_AMX_ISAS = ("", "ALL", "DEFAULT")


def cpu_has_amx():
    """True when oneDNN may run bf16 matrix products on AMX tiles (Intel Xeon 4th gen and later).

    Honours ``ONEDNN_MAX_CPU_ISA``: capping oneDNN below AMX (say ``AVX512_CORE_BF16``, what an
    AMD EPYC offers) reads as no AMX, so the cap emulates such a CPU.
    """
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    if cap not in _AMX_ISAS and "AMX" not in cap:
        return False
    try:
        return bool(torch.backends.mkldnn.is_available()) and torch.cpu._is_amx_tile_supported()
    except (AttributeError, RuntimeError):
        return False


def cpu_description():
    """One line naming this machine's CPU for benchmark records: model, torch's vector
    capability (``ATEN_CPU_CAPABILITY`` caps it), whether oneDNN may use AMX, MKL's cap
    (``MKL_ENABLE_INSTRUCTIONS``: MKL runs torch's fp32 matrix products and ignores the other two
    settings), torch's threads."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            model = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA")
    mkl = os.environ.get("MKL_ENABLE_INSTRUCTIONS")   # MKL (fp32 matrix products) dispatches alone
    return (f"{model}, torch CPU capability {torch.backends.cpu.get_cpu_capability()}, "
            f"AMX {'yes' if cpu_has_amx() else 'no'}{f' (ONEDNN_MAX_CPU_ISA={cap})' if cap else ''}, "
            f"MKL {f'capped to {mkl}' if mkl else 'uncapped'}, {torch.get_num_threads()} threads")


def conv_precision(device, precision="auto"):
    """Precision of the motif convolution: "bf16" on CPUs with AMX, else "fp32".

    Without AMX bf16 does not pay: with AVX512-BF16 a bf16 product is no faster than fp32 and the
    fp32 convolution skips the motifs' zero columns (:func:`tisfm_core.fused.conv_plan`), about
    2x fewer operations; with AVX2 only, bf16 is emulated and 20x slower. On CUDA the training
    loop uses bf16 autocast instead, so the module itself stays fp32.
    """
    check_choice(precision, "precision", PRECISIONS)
    if precision != "auto":
        return precision
    if torch.device(device).type == "cpu" and cpu_has_amx():
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
