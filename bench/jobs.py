"""Background jobs: the bounded local queue vs starting every job at once (the old behaviour).

Four short trainings of the full model (the demo atlas's motifs, 300 bp) are launched as jobs,
first through the local queue (at most one job per two cores, each with cores / N threads), then
all at once with every job using every core, as jobs were started before the queue. Reported:
the total wall time of each way, and the training throughput (sequences per second, median over
the epochs after the first, which compiles) of the first job while the others wait in the queue
(or run beside it), against the same job trained alone.

    python bench/jobs.py [--jobs 4] [--regions 2000] [--epochs 3] [--workdir DIR]

Ends with one line: ``jobs: <ratio>x <details>``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tisfm_core import jobs  # noqa: E402
from tisfm_core.atomic import read_json  # noqa: E402
from tisfm_core.demo import make_demo_atlas  # noqa: E402


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def machine():
    return (f"{cpu_model()}, {jobs.cpu_count()} cores, torch {torch.__version__} "
            f"(CPU capability {torch.backends.cpu.get_cpu_capability()})")


def run_jobs(workdir, name, atlas, n_jobs, epochs, *, max_jobs, threads):
    """Launch ``n_jobs`` trainings under this queue size and thread count; wait for them all.

    Returns (total wall seconds, per-job median training throughput in seq/s, in launch order).
    """
    # the jobs' own scripts read the configuration from the environment when they start the next one
    os.environ["TISFM_JOBS_MAX"] = str(max_jobs)
    os.environ["TISFM_JOB_THREADS"] = str(threads)
    folder = workdir / name
    files = atlas["files"]
    t0 = time.perf_counter()
    launched = []
    for i in range(n_jobs):
        out = workdir / f"{name}_runs" / f"run{i}"
        launched.append(jobs.launch("train", [
            "--sequences", files["sequences"], "--targets", files["lineages"], "--motifs", files["motifs"],
            "--epochs", str(epochs), "--batch-size", "256", "--device", "cpu", "--quiet",
            "--out", str(out)], folder, label=f"{name} {i}"))
    while True:
        rows = jobs.list_jobs(folder)
        if all(r["over"] and r["state"] not in jobs.ACTIVE_STATES for r in rows):
            break
        time.sleep(0.5)
    total = time.perf_counter() - t0
    bad = [r for r in rows if r["state"] != "done"]
    if bad:
        raise SystemExit(f"job {bad[0]['id']} {bad[0]['state']}: {bad[0]['message']}\n"
                         f"{jobs.log_tail(bad[0]['job'])}")
    speeds = []
    for job in launched:
        history = read_json(Path(job.out) / "config.json")["history"]
        later = [h["samples_per_s"] for h in history[1:]] or [history[0]["samples_per_s"]]
        speeds.append(statistics.median(later))
    return total, speeds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--regions", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workdir", help="folder for the data, jobs and runs (default: a temporary one)")
    a = parser.parse_args()
    workdir = Path(a.workdir or tempfile.mkdtemp(prefix="bench_jobs_"))
    for var in ("TISFM_JOB_BACKEND", "TISFM_JOBS_CONFIG"):
        os.environ.pop(var, None)
    cores = jobs.cpu_count()
    print(f"machine: {machine()}", flush=True)
    atlas = make_demo_atlas(workdir / "atlas", n_regions=a.regions)
    print(f"data: demo atlas, {a.regions} regions x {atlas['length']} bp, {atlas['n_motifs']} motifs, "
          f"7 lineage outputs; {a.epochs} epochs per job", flush=True)
    queue_slots = max(1, cores // 2)
    # alone first: it also fills the compile cache every later job reuses
    _, (alone,) = run_jobs(workdir, "alone", atlas, 1, a.epochs, max_jobs=queue_slots,
                           threads=max(1, cores // queue_slots))
    print(f"alone: {alone:.0f} seq/s  [{machine()}]", flush=True)
    queue_total, queue_speeds = run_jobs(workdir, "queue", atlas, a.jobs, a.epochs, max_jobs=queue_slots,
                                         threads=max(1, cores // queue_slots))
    print(f"queue (at most {queue_slots} running, {max(1, cores // queue_slots)} threads each): "
          f"{queue_total:.1f} s for {a.jobs} jobs; first job {queue_speeds[0]:.0f} seq/s  [{machine()}]",
          flush=True)
    all_total, all_speeds = run_jobs(workdir, "all_at_once", atlas, a.jobs, a.epochs, max_jobs=a.jobs,
                                     threads=cores)
    print(f"all at once ({a.jobs} running, {cores} threads each): {all_total:.1f} s for {a.jobs} jobs; "
          f"first job {all_speeds[0]:.0f} seq/s  [{machine()}]", flush=True)
    print(f"jobs: {all_total / queue_total:.2f}x total wall time, queue {queue_total:.0f} s vs all at once "
          f"{all_total:.0f} s for {a.jobs} jobs on {cores} cores; one job while another waits in the queue "
          f"{queue_speeds[0]:.0f} seq/s = {100 * queue_speeds[0] / alone:.0f}% of alone ({alone:.0f} seq/s) "
          f"vs {100 * all_speeds[0] / alone:.0f}% when all start at once ({cpu_model()})")


if __name__ == "__main__":
    main()
