"""Cost at paper scale: encoding, training steps and validation at 12,000 to 512,596 regions.

For each size a synthetic genome + narrowPeak BED and a random target table (81 outputs) are
made, and a fresh process runs the real training path on them: ``load_dataset`` (BED + genome
encoding, target table, id matching), the paper's 10-fold split, a full tiSFM with the 862 cisBP
motifs, and ``training.fit`` for one epoch that stops after ``--steps`` steps (the training split
is cut to that many batches; the whole split stays loaded, as in real training), with the
validation pass timed on up to ``--val-regions`` regions. From that:

* time per epoch = median step time x steps per epoch (all training regions) + validation time
  scaled to the whole validation split;
* peak memory = the process's maximum resident set size (everything: imports, data, model,
  training buffers, which the tuned allocator keeps);
* projected training = ``--epochs`` epochs (the paper's protocol stops after the learning rate
  fell 4 times by 10 with patience 10: about 50 epochs at the least) of one fold.

    nice -n 10 python bench/scale.py [--sizes 12000 100000 512596] [--steps 200] [--threads 2]

Ends with one line: ``scale: <ratio>x <details>``, the time per region at the largest size over
that at the smallest (1x is linear). Target: linear, and under 4 GB at 512,596 regions.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from encode import make_bed, make_genome  # noqa: E402

CISBP = Path(__file__).resolve().parents[2] / "shared" / "data" / "motifs" / "cisBP_mouse.meme"


def write_targets(path, n, n_outputs, random_state=0):
    """Random integer targets (0-999) for regions peak_0 .. peak_{n-1}: a TSV written in blocks."""
    rng = np.random.default_rng(random_state)
    with open(path, "w") as fh:
        fh.write("\t" + "\t".join(f"cell{j}" for j in range(n_outputs)) + "\n")
        for start in range(0, n, 50_000):
            block = rng.integers(0, 1000, (min(50_000, n - start), n_outputs))
            np.savetxt(fh, np.column_stack([np.arange(start, start + len(block)), block]),
                       fmt="peak_%d" + "\t%d" * n_outputs)


def child(args):
    """One size in a fresh process: prints a JSON line of timings and the peak RSS."""
    import resource

    import torch

    from tisfm_core.dataset import load_dataset
    from tisfm_core.devices import conv_precision, cpu_description
    from tisfm_core.motifs import load_motifs
    from tisfm_core.sequences import one_hot_torch
    from tisfm_core.splits import kfold_split
    from tisfm_core.training import TrainSettings, fit, use_compile
    from tisfm_core.workflows import build_untrained

    torch.set_num_threads(args.threads)
    t = time.perf_counter()
    data = load_dataset(bed=args.bed, genome=args.genome, targets=args.targets, length=300)
    load_s = time.perf_counter() - t
    split = kfold_split(len(data), n_folds=10, fold=0)
    tr, va = data.subset(split["train"]), data.subset(split["val"])
    motifs = load_motifs(args.motifs)
    model = build_untrained("full", motifs=motifs, n_outputs=len(data.outputs), length=300,
                            era="paper")
    stamps = []
    n_steps = min(args.steps, math.ceil(len(tr) / args.batch_size))
    n_val = min(args.val_regions, len(va))
    settings = TrainSettings(epochs=1, batch_size=args.batch_size, device="cpu")
    # compile the validation pass's kernel first (fit compiles the training one in its first step)
    model.precision = conv_precision("cpu")
    model.compiled = use_compile(settings.compile, model, "cpu")
    with torch.no_grad():
        model(one_hot_torch(torch.from_numpy(va.indices[:args.batch_size])))
    fit(model, (tr.indices[:n_steps * args.batch_size], tr.targets[:n_steps * args.batch_size]),
        (va.indices[:n_val], va.targets[:n_val]), settings,
        callback=lambda e: stamps.append((e["event"], e.get("batch"), time.perf_counter(),
                                          time.process_time())))
    batches = [(b, w, c) for kind, b, w, c in stamps if kind == "batch"]
    # between the first and the last progress report: compilation and warm-up excluded
    (b0, w0, c0), (b1, w1, c1) = batches[0], batches[-1]
    step_s, step_cpu = (w1 - w0) / (b1 - b0), (c1 - c0) / (b1 - b0)
    val_s = (stamps[-1][2] - w1) * len(va) / n_val
    val_cpu = (stamps[-1][3] - c1) * len(va) / n_val
    print(json.dumps({
        "regions": len(data), "train": len(tr), "val": len(va), "load_s": load_s,
        "step_s": step_s, "step_cpu": step_cpu, "timed_steps": b1 - b0, "val_s": val_s,
        "val_cpu": val_cpu, "val_timed": n_val,
        "steps_per_epoch": math.ceil(len(tr) / args.batch_size),
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "cpu": cpu_description()}))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[12_000, 100_000, 512_596])
    parser.add_argument("--steps", type=int, default=200, help="training steps timed per size")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--outputs", type=int, default=81)
    parser.add_argument("--val-regions", type=int, default=10_000,
                        help="validation regions timed per size (scaled to the whole split)")
    parser.add_argument("--epochs", type=int, default=50, help="epochs of the projected training")
    parser.add_argument("--genome-mb", type=int, default=400)
    parser.add_argument("--motifs", default=str(CISBP) if CISBP.exists() else "jaspar:2024")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", default=None, help="where the generated files go")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bed", help=argparse.SUPPRESS)
    parser.add_argument("--genome", help=argparse.SUPPRESS)
    parser.add_argument("--targets", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)
    rows = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp = Path(tmp)
        genome, bed_all = tmp / "genome.fa", tmp / "all.narrowPeak"
        t0 = time.perf_counter()
        contigs = make_genome(genome, args.genome_mb)
        make_bed(bed_all, contigs, max(args.sizes), 300)
        print(f"generated a {args.genome_mb} Mb genome and {max(args.sizes)} regions in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
        lines = bed_all.read_text().splitlines(keepends=True)
        for n in sorted(args.sizes):
            bed, targets = tmp / f"{n}.narrowPeak", tmp / f"{n}.tsv"
            bed.write_text("".join(lines[:n]))
            write_targets(targets, n, args.outputs)
            cmd = [sys.executable, __file__, "--child", "--bed", str(bed), "--genome", str(genome),
                   "--targets", str(targets), "--steps", str(args.steps), "--motifs", args.motifs,
                   "--batch-size", str(args.batch_size), "--threads", str(args.threads),
                   "--val-regions", str(args.val_regions)]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode:
                sys.exit(f"size {n} failed:\n{out.stderr[-3000:]}")
            row = json.loads(out.stdout.strip().splitlines()[-1])
            row["epoch_s"] = row["step_s"] * row["steps_per_epoch"] + row["val_s"]
            row["epoch_cpu"] = row["step_cpu"] * row["steps_per_epoch"] + row["val_cpu"]
            rows.append(row)
            print(f"{n:>7} regions: load+encode {row['load_s']:.1f} s; {row['timed_steps']} steps "
                  f"timed, {row['step_s']:.2f} s/step (CPU {row['step_cpu']:.2f} s) x "
                  f"{row['steps_per_epoch']} steps + validation {row['val_s']:.0f} s = "
                  f"{row['epoch_s'] / 60:.1f} min/epoch ({1e3 * row['epoch_s'] / n:.2f} ms/region, "
                  f"CPU time {1e3 * row['epoch_cpu'] / n:.2f}); peak RSS {row['peak_mb']:.0f} MB; "
                  f"{row['cpu']}", flush=True)
            bed.unlink()
            targets.unlink()
    small, big = rows[0], rows[-1]
    per = lambda row, key: row[key] / row["regions"]                    # noqa: E731
    ratio = per(big, "epoch_s") / per(small, "epoch_s")
    hours = args.epochs * big["epoch_s"] / 3600
    ok = "meets" if big["peak_mb"] < 4096 else "MISSES"
    print(f"scale: {ratio:.2f}x time per region at {big['regions']} vs {small['regions']} regions "
          f"({1e3 * per(big, 'epoch_s'):.2f} vs {1e3 * per(small, 'epoch_s'):.2f} ms/region/epoch; "
          f"CPU time {per(big, 'epoch_cpu') / per(small, 'epoch_cpu'):.2f}x); "
          f"peak RSS {small['peak_mb']:.0f} -> {big['peak_mb']:.0f} MB ({ok} < 4 GB); "
          f"{big['epoch_s'] / 60:.1f} min/epoch at {big['regions']}, projected {hours:.1f} h for "
          f"{args.epochs} epochs of one fold; {args.steps} steps a size, batch {args.batch_size}; "
          f"{big['cpu']}")


if __name__ == "__main__":
    main()
