"""How many regions does the AI-TAC baseline need? The same planted task at two training sizes.

Each region is 300 bp of uniform random sequence; half of them carry one planted 10-mer
(ACGTTGCAGG) at a random position, and the two outputs are +1 / -1 for carriers plus Gaussian
noise (sd 0.5), so the best possible R2 is 0.50 on either output. AI-TAC
(:class:`tisfm_core.aitac.AITAC`, 3.2 million parameters) is trained as its authors' script
trains it (Adam, lr 1e-3, batch 100; mean squared error, since their per-region Pearson loss over
outputs is degenerate with two outputs) on ``--small`` and on ``--large`` regions, and scored on
the same held-out regions after every epoch.

    python bench/aitac_size.py [--small 5000] [--large 40000] [--epochs 2]

On the shipped demo atlas (9,600 training regions) AI-TAC's test R2 is about 0: this bench shows
whether that is the data size (it learns with more regions) or the model. Ends with one line:
``aitac_size: best validation R2 <large> with <n> regions vs <small> with <m> (...)``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tisfm_core.aitac import AITAC  # noqa: E402
from tisfm_core.devices import cpu_description  # noqa: E402

LENGTH = 300
MOTIF = np.array([0, 1, 2, 3, 3, 2, 1, 0, 2, 2])   # ACGTTGCAGG in A,C,G,T codes
NOISE = 0.5


def planted(n, rng):
    """(n, 4, L) one-hot sequences and (n, 2) targets; R2 ceiling 1 / (1 + 4 NOISE^2) = 0.5."""
    idx = rng.integers(0, 4, (n, LENGTH))
    carrier = rng.random(n) < 0.5
    for i in np.flatnonzero(carrier):
        p = rng.integers(0, LENGTH - len(MOTIF) + 1)
        idx[i, p:p + len(MOTIF)] = MOTIF
    y = np.stack([carrier, -carrier.astype(float)], 1).astype(np.float64) + rng.normal(0, NOISE, (n, 2))
    x = F.one_hot(torch.from_numpy(idx), 4).permute(0, 2, 1).float()
    return x, torch.from_numpy(y).float()


def r2(model, x, y, batch_size=500):
    model.eval()
    with torch.inference_mode():
        p = torch.cat([model(x[s:s + batch_size]) for s in range(0, len(x), batch_size)])
    return (1 - ((p - y) ** 2).sum(0) / ((y - y.mean(0)) ** 2).sum(0)).mean().item()


def train(x, y, xv, yv, epochs, random_state):
    torch.manual_seed(random_state)
    model = AITAC(n_outputs=2, length=LENGTH)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    history = []
    for epoch in range(1, epochs + 1):
        model.train()
        t0 = time.perf_counter()
        order = torch.randperm(len(x))
        for s in range(0, len(x), 100):
            j = order[s:s + 100]
            loss = F.mse_loss(model(x[j]), y[j])
            opt.zero_grad()
            loss.backward()
            opt.step()
        seconds = time.perf_counter() - t0
        history.append((r2(model, xv, yv), r2(model, x[:2000], y[:2000])))
        print(f"  {len(x):,} regions, epoch {epoch}: validation R2 {history[-1][0]:.3f}, training R2 "
              f"{history[-1][1]:.3f} ({seconds:.0f} s, {len(x) / seconds:.0f} seq/s)", flush=True)
    return history


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", type=int, default=5000)
    parser.add_argument("--large", type=int, default=40000)
    parser.add_argument("--val", type=int, default=2000, help="held-out regions (default 2000)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cpu = cpu_description()
    print(f"CPU: {cpu}")
    rng = np.random.default_rng(0)
    x, y = planted(args.large + args.val, rng)
    xv, yv = x[args.large:], y[args.large:]
    best = {}
    for n in (args.small, args.large):
        history = train(x[:n], y[:n], xv, yv, args.epochs, random_state=0)
        best[n] = max(h[0] for h in history)
        last_train = history[-1][1]
        print(f"{n:,} regions: best validation R2 {best[n]:.3f}, training R2 {last_train:.3f} after "
              f"{args.epochs} epoch(s)")
    ceiling = 1 / (1 + 4 * NOISE ** 2)
    print(f"aitac_size: best validation R2 {best[args.large]:.3f} with {args.large:,} regions vs "
          f"{best[args.small]:.3f} with {args.small:,} (same planted 10-mer, R2 ceiling {ceiling:.2f}, "
          f"{args.epochs} epochs, Adam lr 1e-3, batch 100; {cpu})")


if __name__ == "__main__":
    main()
