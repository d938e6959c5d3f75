"""Scanning regions longer than the model's window: tiled predictions and attribution tracks.

A region of ``L_region`` bases is cut into model-length windows (``L`` bases) every ``stride``
bases, the last window flush with the region's end. Every window is predicted (batched forward
passes) and, on request, attributed (TISM, or exact ISM); the attribution of a base is the mean
over the windows that cover it of the window's value at that base. A region shorter than the
window is refused, or padded with N on both sides (centred) into one window.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .atomic import read_arrays, write_npz
from .attribution import as_indices, count_outputs, ism, tism
from .errors import TisfmError, check_integer, check_outputs
from .genome import Region, RegionSequence
from .model import TISFM
from .sequences import encode
from .training import evaluation, predict_batches

__all__ = ["MAX_REGION", "ScanResult", "load_scan", "save_scan", "scan_region", "window_starts"]

#: Longest region :func:`scan_region` accepts, in bases.
MAX_REGION = 100_000
#: Windows attributed per call of tism / ism: bounds the (windows, R, 4, L) float32 temporary.
_CHUNK_WINDOWS = 256
_METHODS = ("tism", "ism", None)
_PADS = ("refuse", "center")


def model_parts(model_or_run, *, device=None):
    """``(model, output names, window length)`` of a model, a loaded run or a run folder.

    A bare model's outputs are named by their positions ("0", "1", ...).
    """
    from .runs import load_run

    if isinstance(model_or_run, (str, Path)):
        model_or_run = load_run(model_or_run, device="cpu" if device is None else device)
    if isinstance(model_or_run, torch.nn.Module):
        model, names = model_or_run, None
    elif isinstance(getattr(model_or_run, "model", None), torch.nn.Module):
        model, names = model_or_run.model, list(model_or_run.outputs)
    else:
        raise TisfmError(f"expected a model, a loaded run or a run folder, got {type(model_or_run).__name__}")
    if isinstance(model, TISFM):
        length = model.config.length
    elif isinstance(getattr(model, "length", None), int):
        length = model.length
    else:
        raise TisfmError(f"cannot tell the input length of a {type(model).__name__}: give a tiSFM, "
                         "an AI-TAC model or a run")
    if names is None:
        first = next(model.parameters(), None)
        probe = np.zeros((1, length), dtype=np.uint8)
        with torch.no_grad():
            n = count_outputs(model, probe, torch.device("cpu") if first is None else first.device)
        names = [str(i) for i in range(n)]
    return model, names, int(length)


def window_starts(region_length, window, stride):
    """0-based starts of the windows tiling a region, the last one flush with its end.

    Parameters
    ----------
    region_length, window, stride : int
        Bases; ``window <= region_length`` and ``1 <= stride <= window``.

    Returns
    -------
    np.ndarray, int64, shape (W,)
        ``0, stride, 2 stride, ...`` plus ``region_length - window`` when the steps miss it.
    """
    starts = np.arange(0, region_length - window + 1, stride, dtype=np.int64)
    if starts[-1] != region_length - window:
        starts = np.append(starts, region_length - window)
    return starts


@dataclass
class ScanResult:
    """Predictions and attribution of a scanned region.

    Attributes
    ----------
    indices : np.ndarray
        uint8 (L_region,): the region's bases (without the N padding of ``pad="center"``).
    starts : np.ndarray
        int64 (W,): 0-based start of every window in the region; negative only for a short
        region padded with N (the window then starts before the region).
    window_length : int
        L, the model's input length.
    predictions : np.ndarray
        float32 (W, R): every selected output for every window.
    attribution : np.ndarray or None
        float32 (R, 4, L_region): per base and substituted base, the mean over the covering
        windows of their TISM or ISM values (0 at the reference base and at N); None when not
        computed.
    coverage : np.ndarray
        int32 (L_region,): number of windows covering each base (>= 1).
    outputs : list of str
        The R output names.
    method : {"tism", "ism"} or None
        How ``attribution`` was computed.
    region : Region or None
        Where the region lies in a genome, when it was read from one.
    """

    indices: np.ndarray
    starts: np.ndarray
    window_length: int
    predictions: np.ndarray
    attribution: np.ndarray | None
    coverage: np.ndarray
    outputs: list
    method: str | None = None
    region: Region | None = None

    @property
    def origin(self):
        """1-based coordinate of the region's first base (its genome start, or 1)."""
        return 1 if self.region is None else self.region.start

    @property
    def starts_1based(self):
        """int64 (W,): first base of every window in the user's 1-based coordinates."""
        return self.starts + self.origin

    @property
    def ends_1based(self):
        """int64 (W,): last base of every window (inclusive) in the user's 1-based coordinates."""
        return self.starts + self.origin + self.window_length - 1

    @property
    def positions_1based(self):
        """int64 (L_region,): 1-based coordinate of every base of the region."""
        return np.arange(len(self.indices), dtype=np.int64) + self.origin

    def windows(self):
        """uint8 (W, L): the base indices of every window (N where it hangs over the region)."""
        return _cut_windows(self.indices, self.starts, self.window_length)

    def window(self, i):
        """uint8 (L,): the base indices of window ``i``."""
        return _cut_windows(self.indices, self.starts[i:i + 1], self.window_length)[0]

    def window_label(self, i):
        """Window ``i`` as users read it: ``chr1:1001-1300`` (genome) or ``1-300``."""
        span = f"{self.starts_1based[i]}-{self.ends_1based[i]}"
        return span if self.region is None else f"{self.region.chrom}:{span}"

    def prediction_table(self):
        """DataFrame: one row per window with ``window`` (label), ``start`` and ``end``
        (1-based, inclusive) and one column per output."""
        table = pd.DataFrame({"window": [self.window_label(i) for i in range(len(self.starts))],
                              "start": self.starts_1based, "end": self.ends_1based})
        for k, name in enumerate(self.outputs):
            table[name] = self.predictions[:, k]
        return table


def _cut_windows(indices, starts, length):
    left = max(0, -int(starts.min()))
    right = max(0, int(starts.max()) + length - len(indices))
    padded = np.concatenate([np.full(left, 4, np.uint8), indices, np.full(right, 4, np.uint8)])
    view = np.lib.stride_tricks.sliding_window_view(padded, length)
    return np.ascontiguousarray(view[starts + left])


def _region_indices(sequence):
    """(uint8 (L,), Region or None) from a DNA string, base indices, one-hot or a RegionSequence."""
    if isinstance(sequence, RegionSequence):
        return _region_indices(sequence.indices)[0], sequence.region
    if isinstance(sequence, (str, bytes)):
        return encode([sequence], ["region"])[0], None
    idx = as_indices(sequence, "region")
    if idx.shape[0] != 1:
        raise TisfmError(f"region: give one sequence, got {idx.shape[0]} (scan them one at a time)")
    return idx[0], None


def scan_region(model_or_run, sequence, *, stride, outputs=None, attribution="tism", pad="refuse",
                batch_size=64, device=None, verbose=False):
    """Tile a region in model-length windows; predict and attribute every window.

    Parameters
    ----------
    model_or_run : TISFM, AITAC, nn.Module with a ``length``, Run, or a run folder
    sequence : str, np.ndarray or RegionSequence
        The region: a DNA string, uint8 base indices (L_region,), a one-hot array
        (4, L_region), or the result of :func:`tisfm_core.genome.read_region` (then the result
        carries genome coordinates). At most :data:`MAX_REGION` bases.
    stride : int
        Bases between window starts, 1..L (every base is covered). The last window is placed
        flush with the region's end, so the last step may be shorter.
    outputs : sequence of str or int, optional
        Output names (or positions) to predict and attribute, in the order wanted; default all.
    attribution : {"tism", "ism", None}, default "tism"
        TISM (one analytic gradient per window and output), exact ISM (3 L forward passes per
        window) or no attribution.
    pad : {"refuse", "center"}, default "refuse"
        A region shorter than L is refused, or padded with N (half on each side, the extra base
        on the right) into one window.
    batch_size : int, default 64
        Windows per forward pass for the predictions; window-output pairs per gradient pass for
        TISM; single-base variants per forward pass (times 8) for ISM.
    device : str or torch.device, optional
        Default: CUDA when present, else CPU. The model's device and mode are restored.
    verbose : bool, default False
        Print progress to stderr.

    Returns
    -------
    ScanResult
        ``predictions`` (W, R), ``attribution`` (R, 4, L_region) or None, ``coverage``,
        ``starts`` and the output names.

    Raises
    ------
    TisfmError
        For a region longer than :data:`MAX_REGION`, a region shorter than L with
        ``pad="refuse"``, a stride outside 1..L, an unknown output or method.
    """
    model, names, length = model_parts(model_or_run, device=device)
    indices, region = _region_indices(sequence)
    n = len(indices)
    where = f"region {region}" if region is not None else "the region"
    if n > MAX_REGION:
        raise TisfmError(f"{where} is {n:,} bp long; scans are limited to {MAX_REGION:,} bp "
                         "(split it into smaller regions)")
    stride = check_integer(stride, "stride")
    if stride > length:
        raise TisfmError(f"stride {stride} is longer than the model's {length}-bp window: bases "
                         f"between windows would not be covered (use 1..{length})")
    if attribution not in _METHODS:
        raise TisfmError(f"attribution must be 'tism', 'ism' or None, got {attribution!r}")
    if pad not in _PADS:
        raise TisfmError(f"pad must be 'refuse' or 'center', got {pad!r}")
    batch_size = check_integer(batch_size, "batch_size")
    outs = check_outputs(outputs, len(names), names)
    if n < length:
        if pad == "refuse":
            raise TisfmError(f"{where} is {n} bp, shorter than the model's {length}-bp window; pad it "
                             "with N (pad='center', --pad center) or give a longer region")
        starts = np.array([-((length - n) // 2)], dtype=np.int64)
    else:
        starts = window_starts(n, length, stride)
    windows = _cut_windows(indices, starts, length)

    values = None
    with evaluation(model, device) as dev:
        predictions = predict_batches(model, windows, batch_size=batch_size, device=dev)[:, outs]
        if attribution is not None:
            total = np.zeros((len(outs), 4, n), dtype=np.float64)
            for lo in range(0, len(windows), _CHUNK_WINDOWS):
                chunk = windows[lo:lo + _CHUNK_WINDOWS]
                if attribution == "tism":
                    part = tism(model, chunk, outputs=outs, batch_size=batch_size, device=dev)
                else:
                    part = ism(model, chunk, outputs=outs, batch_size=8 * batch_size, device=dev)
                for k, start in enumerate(starts[lo:lo + _CHUNK_WINDOWS].tolist()):
                    a, b = max(start, 0), min(start + length, n)
                    total[:, :, a:b] += part[k, :, :, a - start:b - start]
                if verbose:
                    print(f"scan: {min(lo + _CHUNK_WINDOWS, len(windows))}/{len(windows)} windows "
                          f"attributed", file=sys.stderr, flush=True)
    coverage = np.zeros(n + 1, dtype=np.int32)
    np.add.at(coverage, np.clip(starts, 0, n), 1)
    np.add.at(coverage, np.clip(starts + length, 0, n), -1)
    coverage = np.cumsum(coverage[:n], dtype=np.int32)
    if attribution is not None:
        values = (total / coverage).astype(np.float32)
    return ScanResult(indices=indices, starts=starts, window_length=length,
                      predictions=predictions.astype(np.float32), attribution=values, coverage=coverage,
                      outputs=[names[o] for o in outs], method=attribution, region=region)


def save_scan(path, result):
    """Write a :class:`ScanResult` to an ``.npz`` readable without pickle.

    The file is also an attribution file (:func:`tisfm_core.attribution.load_attribution`
    reads ``values`` (1, R, 4, L_region), ``ids``, ``outputs`` and ``indices`` (1, L_region))
    when attribution was computed; the windows are in ``window_starts`` (0-based),
    ``window_predictions`` (W, R), ``coverage``, ``window_length``, and the genome position in
    ``chrom`` and ``origin`` (1-based start; chrom "" for a pasted sequence).
    """
    label = "region" if result.region is None else str(result.region)
    arrays = {"ids": np.asarray([label]), "outputs": np.asarray(result.outputs, dtype=str),
              "indices": result.indices[None].astype(np.uint8),
              "window_starts": result.starts.astype(np.int64),
              "window_predictions": result.predictions.astype(np.float32),
              "coverage": result.coverage.astype(np.int32),
              "window_length": np.int64(result.window_length),
              "chrom": np.asarray("" if result.region is None else result.region.chrom),
              "origin": np.int64(result.origin),
              "method": np.asarray(result.method or "")}
    if result.attribution is not None:
        arrays["values"] = result.attribution[None].astype(np.float32)
    write_npz(path, **arrays)


def load_scan(path):
    """Read a file written by :func:`save_scan` (never unpickles).

    Returns
    -------
    ScanResult

    Raises
    ------
    TisfmError
        When the file is missing, corrupt, holds pickled arrays or lacks the scan arrays.
    """
    arrays = read_arrays(path, what="scan file")
    keys = ("ids", "outputs", "indices", "window_starts", "window_predictions", "coverage",
            "window_length", "chrom", "origin", "method")
    missing = [k for k in keys if not isinstance(arrays, dict) or k not in arrays]
    if missing:
        raise TisfmError(f"{path} is not a scan file (no array {missing[0]!r})")
    indices, starts = arrays["indices"], arrays["window_starts"]
    predictions, outputs = arrays["window_predictions"], arrays["outputs"]
    values = arrays.get("values")
    n = indices.shape[-1]
    if (indices.dtype != np.uint8 or indices.shape != (1, n) or starts.ndim != 1
            or predictions.shape != (len(starts), len(outputs))
            or (values is not None and values.shape != (1, len(outputs), 4, n))):
        raise TisfmError(f"{path}: the scan arrays have inconsistent shapes (indices {indices.shape}, "
                         f"window_starts {starts.shape}, window_predictions {predictions.shape})")
    chrom, origin = str(arrays["chrom"]), int(arrays["origin"])
    region = Region(chrom, origin, origin + n - 1) if chrom else None
    return ScanResult(indices=indices[0], starts=starts.astype(np.int64), window_length=int(arrays["window_length"]),
                      predictions=predictions, attribution=None if values is None else values[0],
                      coverage=arrays["coverage"], outputs=outputs.tolist(),
                      method=str(arrays["method"]) or None, region=region)
