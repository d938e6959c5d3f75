"""Hand-vectorised CPU kernels for the hot spots of training and exact ISM.

``kernels.cpp`` holds the motif block's row kernel (the convolution of one sequence by one
motif over the kernel columns it uses, then sigmoid, softmax pooling and the derivative of
:func:`tisfm_core.fused._pool_rows_train`), its input gradient (the transposed convolution), the
input attention's forward and backward passes for two channels per head, and the window pooling
of the incremental exact ISM of tiSFM without attention (:mod:`tisfm_core.mutagenesis`).
Written once with compiler vector extensions, it is compiled on first use with the system C++
compiler for torch's CPU capability (AVX-512, AVX2, or the baseline), so that an
``ATEN_CPU_CAPABILITY`` cap applies to it as to torch, and cached per user.
``TISFM_VECTOR_WIDTH`` (4, 8 or 16 floats) overrides the width for testing: 16 on an AVX2 CPU runs
the AVX-512 build's loop logic, each 16-float operation as two AVX2 ones.
Its exp is a short polynomial with no special cases (1.4 ulp, about a third of the instructions
of a general-purpose one): training spends most of its element-wise time on the 120 million exps
of a 256-sequence batch, for which Inductor's generated code called a general-purpose exp.

Where no compiler is found, the build fails or ``TISFM_NATIVE=0`` is set, :func:`library` returns
None (with one warning in the first two cases) and callers use their torch code: same numbers to
rounding, slower. The kernels split their rows over ``torch.get_num_threads()`` OpenMP threads of
torch's own runtime (the library loads the ``libgomp`` torch loaded): a second pool of threads
would compete with torch's, which keep spinning for a while after each operation.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("kernels.cpp")
#: Compiler flags for torch's CPU capability (``torch.backends.cpu.get_cpu_capability()``).
ISA_FLAGS = {
    "AVX512": ["-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl", "-mavx2", "-mfma"],
    "AVX512_BF16": ["-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl", "-mavx2", "-mfma"],
    "AVX2": ["-mavx2", "-mfma"],
}
BASE_FLAGS = ["-O3", "-std=gnu++17", "-shared", "-fPIC", "-fno-math-errno", "-fno-trapping-math",
              "-ffp-contract=fast", "-fopenmp"]
BUILD_TIMEOUT_S = 180

_lock = threading.Lock()
_state = {}          # "lib": the CDLL, or None, once tried
_F = ctypes.POINTER(ctypes.c_float)
_D = ctypes.POINTER(ctypes.c_double)
_L = ctypes.POINTER(ctypes.c_int64)
_I = ctypes.POINTER(ctypes.c_int32)


def cache_dir():
    """Where compiled kernels are kept: ``TISFM_KERNEL_CACHE``, else the user's cache folder."""
    if os.environ.get("TISFM_KERNEL_CACHE"):
        return Path(os.environ["TISFM_KERNEL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tisfm" / "kernels"


def _compiler():
    return os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")


def _build():
    """Compile (or find compiled) kernels for this CPU capability; a CDLL, or None with a reason."""
    cxx = _compiler()
    if not cxx:
        return None, "no C++ compiler found (set CXX)"
    capability = torch.backends.cpu.get_cpu_capability()
    flags = BASE_FLAGS + ISA_FLAGS.get(capability, [])
    width = os.environ.get("TISFM_VECTOR_WIDTH", "").strip()
    if width:
        if width not in ("4", "8", "16"):
            return None, f"TISFM_VECTOR_WIDTH must be 4, 8 or 16, not {width[:20]!r}"
        flags = flags + [f"-DTISFM_WIDTH={width}"]
    try:
        version = subprocess.run([cxx, "--version"], capture_output=True, text=True,
                                 timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"{cxx} does not run ({exc})"
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + " ".join([cxx, version] + flags).encode()).hexdigest()[:20]
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError:
        folder = Path(tempfile.gettempdir())
    target = folder / f"tisfm_kernels_{capability.lower()}{width and '_w' + width}_{key}.so"
    if not target.exists():
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=folder)
        os.close(fd)
        try:
            for attempt in (flags, [f for f in flags if f != "-fopenmp"]):   # OpenMP if it can
                done = subprocess.run([cxx, *attempt, "-o", tmp, str(SOURCE)], capture_output=True,
                                      text=True, timeout=BUILD_TIMEOUT_S)
                if done.returncode == 0:
                    break
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
                return None, f"{cxx} failed to build them ({last})"
            os.replace(tmp, target)     # atomic: concurrent processes never load half a file
        except (OSError, subprocess.SubprocessError) as exc:
            return None, f"building the kernels failed ({exc})"
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    try:
        lib = ctypes.CDLL(str(target))
    except OSError as exc:
        return None, f"loading {target.name} failed ({exc})"
    i64, i32 = ctypes.c_int64, ctypes.c_int
    lib.tisfm_pool_rows.argtypes = ([_F, _F] + [i64] * 5 + [_F] * 5 + [i32] + [_F] * 9
                                    + [i64, i64, i32])
    lib.tisfm_conv_pool_rows.argtypes = ([_F, i64, i64, _F, i64, i64, _I, _I] + [_F] * 5 + [i32]
                                         + [_F] * 9 + [i64, i64, i64, i32])
    lib.tisfm_input_gradient.argtypes = [_F, i64, i64, i64, i64, _F, i64, _I, _I, _F, _F, i32]
    lib.tisfm_attention_forward.argtypes = [_F, _F, _F, i64, i64, i32, _F, _F, i32]
    lib.tisfm_attention_backward.argtypes = [_F, _F, _F, _F, _F, i64, i64, i32, _F, _F, _F, i32]
    lib.tisfm_ism_tables.argtypes = [_D, _D, i64, i64, i64, i64, i32, _D, i32]
    lib.tisfm_ism_pool.argtypes = [_F, _F, _D, _F, _L, _L, _F, _L, i64, i64, i64, _I, i64, i64,
                                   i32, _D, i32]
    lib.tisfm_vector_width.restype = ctypes.c_int
    return lib, None


def library():
    """The compiled kernels (a ``ctypes.CDLL``), or None where they cannot be used."""
    if "lib" not in _state:
        with _lock:
            if "lib" not in _state:
                if os.environ.get("TISFM_NATIVE", "1").strip() == "0":
                    _state["lib"] = None
                else:
                    lib, why = _build()
                    _state["why"] = why
                    if why:
                        warnings.warn(f"tiSFM's native CPU kernels are unavailable: {why}; "
                                      f"using torch's kernels (same results, slower)", RuntimeWarning)
                    _state["lib"] = lib
    return _state["lib"]


def description():
    """One line for benchmarks and logs: which element-wise kernels run on this CPU."""
    lib = library()
    if lib is None:
        return f"torch kernels (native ones unavailable: {_state.get('why') or 'TISFM_NATIVE=0'})"
    return (f"native kernels, {lib.tisfm_vector_width()} floats per vector "
            f"({torch.backends.cpu.get_cpu_capability()})")


def usable(*tensors):
    """Whether the kernels can take these tensors: fp32 on the CPU, and compiled kernels exist."""
    return all(t.dtype == torch.float32 and t.device.type == "cpu" for t in tensors) and \
        library() is not None


_POINTERS = {torch.float32: _F, torch.float64: _D, torch.int64: _L, torch.int32: _I}


def _ptr(t):
    return ctypes.cast(t.data_ptr(), _POINTERS[t.dtype]) if t is not None else None


def vector_width():
    """Floats per vector of the compiled kernels (the padding :func:`ism_pool` needs)."""
    return library().tisfm_vector_width()


def _rows_view(t, name):
    """Strides (motif, sequence) of a (M, n, P) view whose positions are contiguous."""
    if t.dim() != 3 or t.stride(2) != 1 or t.dtype != torch.float32:
        raise ValueError(f"{name} must be a float32 (M, n, P) view with unit position stride")
    return t.stride(0), t.stride(1)


def pool_rows(s0, s1, params, row_max, train, out=None):
    """Native :func:`tisfm_core.fused._pool_rows` (``train=False``) or ``_pool_rows_train``.

    Parameters
    ----------
    s0, s1 : torch.Tensor, shape (M, n, P)
        Scores of both strands, rows (motif, sequence); views with the same strides, positions
        contiguous (the strands may be interleaved in one buffer).
    params : tuple of torch.Tensor
        ``(sc0, sc1, b0, b1, a)``, each of shape (M,): scale and bias per strand, pooling weight.
    row_max, train : bool
    out : tuple of two torch.Tensor, shape (M, n, P), optional
        Where the derivatives ``f0, f1`` go (any strides with contiguous positions, the same for
        both): so that a caller can lay them out for its backward products. Allocated if absent.

    Returns
    -------
    As the torch kernels, rows ``r = m * n + i``: pooled values (M n,), or the nine training
    outputs with ``f0, f1`` as (M, n, P).
    """
    strides = _rows_view(s0, "s0")
    motifs, per_motif, p = s0.shape
    if _rows_view(s1, "s1") != strides:
        raise ValueError("s0 and s1 must share their strides")
    outs, f_strides = _row_outputs(s0, motifs, per_motif, p, train, out)
    params = _row_params(params)
    library().tisfm_pool_rows(_ptr(s0), _ptr(s1), motifs, per_motif, p, *strides,
                              *map(_ptr, params), int(row_max), *map(_ptr, outs), *f_strides,
                              torch.get_num_threads())
    return _row_results(outs, train)


def _row_params(params):
    """Contiguous fp32 copies: the caller keeps them alive across the call."""
    return [t.detach().float().contiguous() for t in params]


def _row_outputs(like, motifs, per_motif, p, train, out):
    """The row kernels' outputs: pooled values, or the seven row sums and f0, f1 (M, n, P)."""
    rows = motifs * per_motif
    new = lambda *shape: like.new_empty(shape)   # noqa: E731
    if not train:
        return [new(rows)] + [None] * 8, (0, 0)
    f0, f1 = out if out is not None else (new(motifs, per_motif, p), new(motifs, per_motif, p))
    f_strides = _rows_view(f0, "f0")
    if _rows_view(f1, "f1") != f_strides:
        raise ValueError("f0 and f1 must share their strides")
    return [new(rows) for _ in range(7)] + [f0, f1], f_strides


def _row_results(outs, train):
    if not train:
        return outs[0]
    z, evs, *rest = outs
    return (z[:, None], evs[:, None], *rest)


def column_spans(weights):
    """Per motif the kernel columns ``lo .. hi - 1`` outside which both strands are zero.

    ``weights`` (2 M, 4 K) with rows (motif, strand) and columns ``k * 4 + base``; returns two
    int32 tensors (M,), ``lo = hi = 0`` for a motif without columns.
    """
    rows, cols = weights.shape
    used = (weights.detach().view(rows // 2, 2, cols // 4, 4) != 0).any(3).any(1)   # (M, K)
    k = torch.arange(cols // 4, dtype=torch.int32)
    lo = torch.where(used, k, cols // 4).amin(1)
    hi = torch.where(used, k + 1, 0).amax(1)
    return torch.minimum(lo, hi).to(torch.int32).contiguous(), hi.to(torch.int32).contiguous()


def conv_pool_rows(x, weights, spans, params, row_max, train, out=None):
    """:func:`pool_rows` on the scores of ``x`` computed inside the kernel (no score tensor).

    Parameters
    ----------
    x : torch.Tensor, shape (n, 4, L), float32
        The (augmented) input of the motif convolution.
    weights : torch.Tensor, shape (2 M, 4 K), float32
        Kernels with rows (motif, strand) and columns ``k * 4 + base``.
    spans : tuple of two torch.Tensor
        :func:`column_spans` of ``weights``.
    params, row_max, train
        As for :func:`pool_rows`, with rows ``r = m * n + i``.
    out : torch.Tensor, shape (n, M, 2, R), float32, optional
        Where the derivatives go when training (allocated with R = P if absent): row (i, m, t)
        holds ``f_t`` of motif m and sequence i in its first P floats. With R at least the
        kernels' padded row (P rounded up to the vector width, as R = P rounded up to 16 is) the
        kernel writes the rows whole with stores that bypass the caches.
    """
    x, weights = x.detach().contiguous(), weights.detach().contiguous()
    n, bases, length = x.shape
    rows, cols = weights.shape
    motifs, width = rows // 2, cols // 4
    lo, hi = spans
    if bases != 4 or x.dtype != torch.float32 or weights.dtype != torch.float32 or \
            cols != 4 * width or length < width or tuple(lo.shape) != (motifs,) or \
            lo.dtype != torch.int32 or hi.dtype != torch.int32 or tuple(hi.shape) != (motifs,):
        raise ValueError("conv_pool_rows: x (n, 4, L) and weights (2 M, 4 K) in float32, spans (M,) int32")
    p = length - width + 1
    room = p
    if train:
        f = x.new_empty((n, motifs, 2, p)) if out is None else out
        if f.dtype != torch.float32 or f.dim() != 4 or tuple(f.shape[:3]) != (n, motifs, 2) or \
                f.shape[3] < p or not f.is_contiguous():
            raise ValueError(f"conv_pool_rows: out must be a contiguous float32 ({n}, {motifs}, 2, R >= {p})")
        room = f.shape[3]
        out = (f[:, :, 0, :p].transpose(0, 1), f[:, :, 1, :p].transpose(0, 1))
    outs, f_strides = _row_outputs(x, motifs, n, p, train, out)
    params = _row_params(params)
    library().tisfm_conv_pool_rows(_ptr(x), n, length, _ptr(weights), motifs, width, _ptr(lo),
                                   _ptr(hi), *map(_ptr, params), int(row_max), *map(_ptr, outs),
                                   *f_strides, room, torch.get_num_threads())
    return _row_results(outs, train)


def input_gradient(f, g, weights, spans):
    """dL/dx (n, 4, L) of :func:`conv_pool_rows` from its derivatives and the output gradient.

    Parameters
    ----------
    f : torch.Tensor, shape (n, M, 2, P), float32
        The derivatives ``dy/ds`` as the training kernel wrote them (sequence-major): contiguous,
        or the first P floats of the rows of a contiguous (n, M, 2, R) ``out``.
    g : torch.Tensor, shape (n, 2 M), float32
        Output gradient times the scale, columns (motif, strand).
    weights, spans
        As for :func:`conv_pool_rows`.
    """
    g, weights = (t.detach().contiguous() for t in (g, weights))
    f = f.detach()
    n, motifs, _, p = f.shape
    room = f.stride(2)
    if f.stride(3) != 1 or room < p or f.stride(1) != 2 * room or f.stride(0) != 2 * motifs * room:
        f, room = f.contiguous(), p
    rows, cols = weights.shape
    width = cols // 4
    lo, hi = spans
    if f.dtype != torch.float32 or g.dtype != torch.float32 or weights.dtype != torch.float32 or \
            rows != 2 * motifs or tuple(g.shape) != (n, rows) or tuple(lo.shape) != (motifs,):
        raise ValueError("input_gradient: f (n, M, 2, P), g (n, 2 M), weights (2 M, 4 K) in float32")
    dx = f.new_empty(n, 4, p + width - 1)
    library().tisfm_input_gradient(_ptr(f), n, motifs, p, room, _ptr(weights), width, _ptr(lo),
                                   _ptr(hi), _ptr(g), _ptr(dx), torch.get_num_threads())
    return dx


def attention_forward(a, b, v, transpose):
    """``v @ softmax(a^T b)`` (or ``v @ P^T``) for (N, heads, 2, L) inputs: (out, lse (N, heads, L))."""
    lib = library()
    a, b, v = (t.contiguous() for t in (a, b, v))
    n, h, _, length = a.shape
    out, lse = torch.empty_like(a), a.new_empty(n, h, length)
    lib.tisfm_attention_forward(_ptr(a), _ptr(b), _ptr(v), n * h, length, int(transpose), _ptr(out),
                                _ptr(lse), torch.get_num_threads())
    return out, lse


def attention_backward(a, b, v, lse, grad_out, transpose):
    """Gradients (ga, gb, gv) of :func:`attention_forward` from the output gradient."""
    lib = library()
    a, b, v, lse, go = (t.contiguous() for t in (a, b, v, lse, grad_out))
    n, h, _, length = a.shape
    ga, gb, gv = torch.empty_like(a), torch.empty_like(b), torch.empty_like(v)
    lib.tisfm_attention_backward(_ptr(a), _ptr(b), _ptr(v), _ptr(lse), _ptr(go), n * h, length,
                                 int(transpose), _ptr(ga), _ptr(gb), _ptr(gv), torch.get_num_threads())
    return ga, gb, gv


def _check(t, dtype, shape, name):
    if t.dtype != dtype or not t.is_contiguous() or t.device.type != "cpu" or tuple(t.shape) != shape:
        raise ValueError(f"{name} must be a contiguous {dtype} CPU tensor of shape {shape}, "
                         f"got {t.dtype} {tuple(t.shape)}")


def ism_tables(t0, t1, offset, q, max_pool, out=None):
    """Before/after tables of exact ISM (see ``tisfm_ism_tables`` in kernels.cpp).

    Parameters
    ----------
    t0, t1 : torch.Tensor, shape (C, P), float64
        ``exp(a v)`` and ``exp(a v) v`` (softmax pooling; ``t1`` unused and may be None for max
        pooling, where ``t0`` is ``v``).
    offset, q : int
        Padded coordinate of score 0, and entries per table.
    out : torch.Tensor, optional
        Where to write them (a caller's buffer reused across sequences saves the page faults of
        a fresh allocation of several MB each time).

    Returns
    -------
    torch.Tensor, shape (C, 4, q) (softmax pooling) or (C, 2, q) (max pooling), float64
    """
    channels, p = t0.shape
    _check(t0, torch.float64, (channels, p), "t0")
    if not max_pool:
        _check(t1, torch.float64, (channels, p), "t1")
    shape = (channels, 2 if max_pool else 4, q)
    if out is None:
        out = t0.new_empty(shape)
    _check(out, torch.float64, shape, "out")
    library().tisfm_ism_tables(_ptr(t0), _ptr(t0 if max_pool else t1), channels, p, offset, q,
                               int(max_pool), _ptr(out), torch.get_num_threads())
    return out


def ism_pool(ez, mask, tables, edz, start, width, a, feats, refs, i0, i1, max_pool, out=None):
    """Pooled features (i1 - i0, 3, F) in fp64 of the 3 substitutions of positions i0 .. i1 - 1.

    Parameters
    ----------
    ez : torch.Tensor, shape (C, Q), float32
        ``exp(-z)`` of the reference calibrated scores z in padded coordinates, 1 elsewhere.
    mask : torch.Tensor, shape (Q,), float32
        1 where a padded position holds a score, else 0.
    tables : torch.Tensor, from :func:`ism_tables`
    edz : torch.Tensor, shape (C, 4, 3, K), float32
        ``exp(-dz)`` of the calibrated change of window entry j for reference base b and
        alternative k.
    start, width : torch.Tensor, shape (C,), int64
        A substitution at i changes channel c at padded positions ``i + start[c] + j``,
        ``j < width[c]``; the caller pads so that every read lies inside ``Q`` (reads reach
        ``i1 + W - 2 + start + width``, W = :func:`vector_width`).
    a : torch.Tensor, shape (C,), float32
        Pooling weight per channel (|a| <= 80).
    feats : torch.Tensor, shape (F,), int64
        Features to pool (channels ``2 f`` and ``2 f + 1``).
    refs : torch.Tensor, shape (>= i1 + W,), int32
        Reference base 0-3 of each position.
    out : torch.Tensor, shape (i1 - i0, 3, F), float64, optional
        Where to write the result.
    """
    channels, q = ez.shape
    kw = edz.shape[-1]
    _check(ez, torch.float32, (channels, q), "ez")
    _check(mask, torch.float32, (q,), "mask")
    _check(tables, torch.float64, (channels, 2 if max_pool else 4, q), "tables")
    _check(edz, torch.float32, (channels, 4, 3, kw), "edz")
    for t, name in ((start, "start"), (width, "width")):
        _check(t, torch.int64, (channels,), name)
    _check(a, torch.float32, (channels,), "a")
    _check(feats, torch.int64, (len(feats),), "feats")
    _check(refs, torch.int32, (len(refs),), "refs")
    w = vector_width()
    reach = i1 + w - 2 + int((start + width).max()) if channels else 0
    if len(refs) < i1 + w or reach >= q or int(start.min()) + i0 < 0 or int(width.max()) > kw \
            or (len(feats) and (int(feats.min()) < 0 or 2 * int(feats.max()) + 1 >= channels)):
        raise ValueError("ism_pool: padding, windows or features out of range")
    shape = (i1 - i0, 3, len(feats))
    if out is None:
        out = ez.new_empty(shape, dtype=torch.float64)
    _check(out, torch.float64, shape, "out")
    library().tisfm_ism_pool(_ptr(ez), _ptr(mask), _ptr(tables), _ptr(edz), _ptr(start),
                             _ptr(width), _ptr(a), _ptr(feats), len(feats), q, kw, _ptr(refs), i0,
                             i1, int(max_pool), _ptr(out), torch.get_num_threads())
    return out
