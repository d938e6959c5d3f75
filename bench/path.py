"""Benchmark: regularization path, fast mode (features once) against slow mode (full forward).

Runs both modes on the same lambdas, epochs and batches, and reports the speed ratio per
lambda-epoch and the largest weight difference (they should agree to float error). Optionally
times the fast mode alone on a larger grid (default 20 lambdas x 20 epochs, the target setting).

Usage::

    python bench/path.py                      # synthetic model and data (built here, see below)
    python bench/path.py --run RUN            # a trained run and its own train/val/test split

Without ``--run`` a synthetic problem is made: random PWMs, random sequences with output k driven
by planted sites of motif k, and a full tiSFM trained quickly (data-driven initialisation:
calibrated sigmoids and a ridge fit of the final layer, no gradient epochs), so the numbers
describe the path machinery, not a biologically trained model.

The fast/slow comparison runs on the first ``--compare-n`` training regions (and a quarter as many
validation and test regions) so that the slow mode stays short on large data; the fast-only
timing uses all of it. The last line is ``path: <ratio>x <details>``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tisfm_core.motifs import MotifSet  # noqa: E402
from tisfm_core.path import load_run_data, path_from_arrays  # noqa: E402
from tisfm_core.specs import PathSpec  # noqa: E402
from tisfm_core.runs import load_run  # noqa: E402
from tisfm_core.splits import kfold_split  # noqa: E402
from tisfm_core.training import initialize_from_data  # noqa: E402
from tisfm_core.workflows import build_untrained  # noqa: E402


def synthetic(n, length, n_motifs, n_outputs, random_state=0):
    """Random PWMs and sequences; output k counts planted sites of motif k (plus noise)."""
    rng = np.random.default_rng(random_state)
    widths = rng.integers(8, 16, size=n_motifs)
    mats = tuple(rng.dirichlet(np.full(4, 0.3), size=int(w)) for w in widths)
    motifs = MotifSet(ids=tuple(f"M{i}" for i in range(n_motifs)),
                      names=tuple(f"TF{i}" for i in range(n_motifs)), matrices=mats, source="random")
    idx = rng.integers(0, 4, size=(n, length)).astype(np.uint8)
    planted = rng.random((n, n_outputs)) < 0.3
    for k in range(n_outputs):
        site = mats[k % n_motifs].argmax(1).astype(np.uint8)
        for i in np.flatnonzero(planted[:, k]):
            start = rng.integers(0, length - len(site))
            idx[i, start:start + len(site)] = site
    y = (planted + 0.2 * rng.normal(size=planted.shape)).astype(np.float32)
    split = kfold_split(n, n_folds=10, fold=0, random_state=random_state)
    parts = {k: (idx[v], y[v]) for k, v in split.items()}
    model = build_untrained("full", motifs=motifs, n_outputs=n_outputs, length=length, random_state=0)
    # sigmoid calibration + ridge fit of the final layer: a usable model without gradient epochs
    initialize_from_data(model, *parts["train"], random_state=random_state)
    return model.eval(), parts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", help="a trained tiSFM run (its data files must exist)")
    parser.add_argument("--n", type=int, default=1200, help="synthetic regions (default 1200)")
    parser.add_argument("--length", type=int, default=200, help="synthetic length (default 200)")
    parser.add_argument("--compare-n", type=int, default=600,
                        help="training regions of the fast/slow comparison (default 600)")
    parser.add_argument("--motifs", type=int, default=32, help="synthetic motifs (default 32)")
    parser.add_argument("--outputs", type=int, default=8, help="synthetic outputs (default 8)")
    parser.add_argument("--lambdas", type=int, default=5, help="lambdas of the fast/slow comparison")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per lambda in the comparison")
    parser.add_argument("--full-lambdas", type=int, default=20,
                        help="lambdas of the fast-only timing (0 skips it; default 20)")
    parser.add_argument("--full-epochs", type=int, default=20, help="epochs of the fast-only timing")
    parser.add_argument("--penalty", default="mcp", choices=["l1", "mcp"])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    if args.run:
        run = load_run(args.run)
        model, parts = run.model, load_run_data(run)
        source = f"run {args.run}"
    else:
        model, parts = synthetic(args.n, args.length, args.motifs, args.outputs)
        source = "synthetic model (data-driven init, ridge-fitted final layer)"
    n = sum(len(p[0]) for p in parts.values())
    print(f"{source}: {n} regions, {model.config.n_motifs} motifs, {model.final.out_features} outputs, "
          f"{model.config.length} bp; prepared in {time.perf_counter() - t0:.1f} s", flush=True)

    def grid(count):
        return np.r_[0.0, np.geomspace(1e-4, 1e-1, count - 1)] if count > 1 else np.zeros(1)

    quarter = max(args.compare_n // 4, 1)
    cut = {"train": args.compare_n, "val": quarter, "test": quarter}
    small = {k: (idx[:cut[k]], y[:cut[k]]) for k, (idx, y) in parts.items()}
    n_small = sum(len(p[0]) for p in small.values())
    common = dict(penalty=args.penalty, batch_size=args.batch_size, device="cpu", random_state=0)
    lambdas = grid(args.lambdas)
    tiny = {k: (idx[:64], y[:64]) for k, (idx, y) in parts.items()}
    for mode in ("fast", "slow"):  # warm-up: first calls pay for lazy initialisation in torch
        path_from_arrays(model, tiny["train"], tiny["val"], tiny["test"],
                         PathSpec(mode=mode, lambdas=[0], epochs=1, **common))
    res = {}
    for mode in ("fast", "slow"):
        res[mode] = path_from_arrays(model, small["train"], small["val"], small["test"],
                                     PathSpec(mode=mode, lambdas=lambdas, epochs=args.epochs, **common))
        r = res[mode]
        print(f"{mode}: {r.seconds:.2f} s for {len(lambdas)} lambdas, {int(r.epochs.sum())} epochs "
              f"(feature pass {r.feature_seconds:.2f} s)", flush=True)
    fast, slow = res["fast"], res["slow"]
    dw = float(np.abs(fast.weights - slow.weights).max())
    dmse = float(np.abs(fast.val_mse - slow.val_mse).max())
    ratio = (slow.seconds / slow.epochs.sum()) / (fast.seconds / fast.epochs.sum())
    # the feature pass is paid once per path; the loop ratio is what every further epoch gains
    loop_ratio = slow.seconds / max(fast.seconds - fast.feature_seconds, 1e-9)
    print(f"max |w_fast - w_slow| {dw:.2e}, max |val MSE difference| {dmse:.2e}", flush=True)

    full = ""
    if args.full_lambdas:
        r = path_from_arrays(model, parts["train"], parts["val"], parts["test"],
                             PathSpec(mode="fast", lambdas=grid(args.full_lambdas), epochs=args.full_epochs,
                                      **common))
        print(f"fast {args.full_lambdas} lambdas x {args.full_epochs} epochs: {r.seconds:.1f} s "
              f"(feature pass {r.feature_seconds:.1f} s, {int(r.epochs.sum())} epochs run)", flush=True)
        full = f", fast {args.full_lambdas}x{args.full_epochs}: {r.seconds:.1f} s"
    print(f"path: {ratio:.1f}x (per lambda-epoch, feature pass included; {loop_ratio:.0f}x without it; "
          f"fast {fast.seconds:.2f} s, slow {slow.seconds:.2f} s, "
          f"max |dw| {dw:.1e}, {len(lambdas)} lambdas x {args.epochs} epochs, N {n_small} of {n}, "
          f"{model.config.n_motifs} motifs, {args.threads} threads{full})")


if __name__ == "__main__":
    main()
