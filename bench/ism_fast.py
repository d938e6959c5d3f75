"""Benchmark: exact ISM by the model's structure against the naive loop, on the shipped runs.

Usage::

    python bench/ism_fast.py [--n 4] [--threads 2] [--repeat 3] [--runs ablations/base ...]

For ``trained_models/ablations/base``, ``interaction`` (tiSFM without input attention: the
incremental engine) and ``aitac`` (fastISM), both ways run in this process on the same ``--n``
test sequences of the run (300 bp, all outputs): ``ism(method="naive")`` (every variant through
the whole model, 512 variants per forward pass) and ``ism(method="incremental")``, alternating,
``--repeat`` times each (median). For AI-TAC, tangermeme's ``saturation_mutagenesis(fast=True)``
(its own fastISM through ``torch.export``) runs too when tangermeme is importable (its 30-second
threshold for trying the fast path is set to 0 so that it is used), compared per extra sequence
(see :func:`tangermeme_comparison`). Every number is printed with
the CPU model, torch's CPU capability, the thread count and the load average (the VM is shared).
The last line is::

    ism_fast: <smallest tiSFM ratio>x <details>
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tisfm_core.attribution import ism  # noqa: E402
from tisfm_core.runs import load_run, resolve_run_data  # noqa: E402

RUNS = ("ablations/base", "ablations/interaction", "ablations/aitac")


def cpu_line():
    """CPU model, the vector extensions that matter here, torch's CPU capability and threads."""
    model, flags = platform.processor() or "unknown CPU", set()
    try:
        info = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        info = []
    for line in info:
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            model = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
    isa = [name for name, flag in (("AVX2", "avx2"), ("AVX-512", "avx512f"),
                                   ("AVX512-BF16", "avx512_bf16"), ("AMX", "amx_tile")) if flag in flags]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{model} ({os.cpu_count()} cores; {', '.join(isa) or 'no AVX2'}), torch "
            f"{torch.__version__} capability {torch.backends.cpu.get_cpu_capability()}, "
            f"{torch.get_num_threads()} threads, load average {load:.1f}")


def test_sequences(run, n, rng):
    """The first n test sequences of the run (random ones when its data is not here)."""
    from tisfm_core.atomic import read_json
    from tisfm_core.dataset import load_sequences

    length = int(run.config["model"]["config"]["length"])
    source = resolve_run_data(run).get("sequences")
    if source and Path(source).is_file():
        seqs = load_sequences(source, length=length)
        split = Path(run.path) / "split.json"
        rows = read_json(split)["test"] if split.is_file() else list(range(len(seqs)))
        return seqs.indices[np.asarray(rows[:n], dtype=np.int64)], "test sequences"
    return rng.integers(0, 4, size=(n, length)).astype(np.uint8), "random sequences"


def tangermeme_ism(model, idx):
    """tangermeme's fastISM as ISM values (N, R, 4, L), or None when tangermeme is absent."""
    try:
        import tangermeme.saturation_mutagenesis as sm
    except ImportError:
        return None
    from tisfm_core.sequences import one_hot

    sm._FAST_MIN_SECONDS = 0            # always try its fast path (it does above 30 s)
    with warnings.catch_warnings():
        warnings.simplefilter("error", sm.TangermemeWarning)   # a fallback to its slow path fails
        y0, y = sm.saturation_mutagenesis(model, torch.from_numpy(one_hot(idx)), raw_outputs=True,
                                          batch_size=256, device="cpu", fast=True)
    return (y - y0[:, None, None, :]).permute(0, 3, 1, 2).numpy()


def tangermeme_comparison(model, idx, naive, repeat, ratios):
    """tangermeme's fastISM against ours per sequence at the margin: each is timed on the
    sequences and on them twice over, so that tangermeme's capture of the model by torch.export
    and its check against its slow path (several seconds, paid on every call) do not count."""
    if tangermeme_ism(model, idx[:1]) is None:
        return "; tangermeme not installed (naive comparison only)"
    twice = np.concatenate([idx, idx])
    margins = {"tangermeme": [], "ours": []}
    for _ in range(repeat):
        for key, fn in (("tangermeme", tangermeme_ism),
                        ("ours", lambda m, x: ism(m, x, method="incremental"))):
            once, _, values = timed(lambda: fn(model, idx))
            double, _, _ = timed(lambda: fn(model, twice))
            margins[key].append((double - once) / len(idx))
            if key == "tangermeme":
                diff = float(np.abs(values - naive).max())
                per_call = once / len(idx)
    theirs, ours = (statistics.median(margins[k]) for k in ("tangermeme", "ours"))
    ratios["tangermeme"] = theirs / ours
    return (f"; per extra sequence: tangermeme 1.6 fastISM {theirs * 1000:.0f} ms, ours {ours * 1000:.0f} ms "
            f"= {theirs / ours:.1f}x (tangermeme {per_call * 1000:.0f} ms/seq per call with its capture; "
            f"max |tangermeme - naive| {diff:.1e})")


def timed(fn):
    """Wall seconds, process CPU seconds (all threads) and the result of ``fn()``."""
    started, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - started, time.process_time() - cpu, out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4, help="sequences per run (default 4)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--repeat", type=int, default=3, help="timed calls of each way (median)")
    parser.add_argument("--runs", nargs="+", default=list(RUNS),
                        help="runs under trained_models/ (default: " + " ".join(RUNS) + ")")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    print(cpu_line(), flush=True)
    ratios = {}
    for name in args.runs:
        path = REPO / "trained_models" / name
        if not (path / "model.safetensors").exists():
            print(f"{name}: not found, skipped")
            continue
        run = load_run(path)
        model = run.model.eval()
        idx, what = test_sequences(run, args.n, rng)
        ism(model, idx[:1], method="naive")                  # warm-up of both ways
        ism(model, idx[:1], method="incremental")
        naive_t, fast_t, naive_cpu, fast_cpu = [], [], [], []
        for _ in range(args.repeat):
            t, c, naive = timed(lambda: ism(model, idx, method="naive"))
            naive_t.append(t)
            naive_cpu.append(c)
            t, c, fast = timed(lambda: ism(model, idx, method="incremental"))
            fast_t.append(t)
            fast_cpu.append(c)
        t_naive, t_fast = statistics.median(naive_t), statistics.median(fast_t)
        cpu_ratio = statistics.median(naive_cpu) / statistics.median(fast_cpu)
        diff = float(np.abs(fast - naive).max())
        ratios[name] = t_naive / t_fast
        n, r, _, length = naive.shape
        extra = ""
        if name.endswith("aitac"):
            extra = tangermeme_comparison(model, idx, naive, args.repeat, ratios)
        print(f"{name}: incremental {t_fast / n * 1000:.0f} ms/seq vs naive {t_naive / n * 1000:.0f} ms/seq "
              f"= {t_naive / t_fast:.1f}x (CPU time {cpu_ratio:.1f}x), max |incremental - naive| {diff:.1e} "
              f"(N={n} {what}, L={length}, "
              f"R={r}; medians of {args.repeat}: naive {', '.join(f'{t:.2f}' for t in naive_t)} s, "
              f"incremental {', '.join(f'{t:.3f}' for t in fast_t)} s){extra}  [{cpu_line()}]", flush=True)
    tisfm = {k: v for k, v in ratios.items() if "aitac" not in k and k != "tangermeme"}
    worst = min(tisfm.values()) if tisfm else ratios.get("ablations/aitac", float("nan"))
    parts = [f"{k.split('/')[-1]} {v:.0f}x" for k, v in tisfm.items()]
    if "ablations/aitac" in ratios:
        parts.append(f"aitac {ratios['ablations/aitac']:.1f}x naive")
    if "tangermeme" in ratios:
        parts.append(f"{ratios['tangermeme']:.1f}x tangermeme fastISM")
    print(f"ism_fast: {worst:.0f}x incremental vs naive exact ISM ({', '.join(parts)}; tiSFM target >= 20x, "
          f"AI-TAC target >= tangermeme; {cpu_line()})")


if __name__ == "__main__":
    main()
