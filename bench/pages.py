"""Page render times: first render and cached second render of every app page (AppTest).

Renders each page twice in one Streamlit AppTest session on the shipped demo runs (or --runs),
with the most relevant run active (the CV fold for the final layer and path pages, the tree-diff
run for the lineage tree), and prints both times and their ratio.

Before that it times what the TISM page does for one pasted 300-bp sequence once the run is
loaded (target: the logo within 1 s): TISM of the first 3 outputs on the CV fold (the full
model), the logo heights, the motif hits, the logo figure of the default 100-bp window and its
PNG as ``st.pyplot`` makes it (dpi 200, tight box); the logo drawn by
:func:`tisfm_core.plots.draw_letters` against the same figure drawn by logomaker. It also
prints :func:`tisfm_core.attribution.estimate_ism_seconds` for that sequence on every run, the
number the page needs to offer exact ISM unasked when it takes under a second.

    python bench/pages.py [--runs trained_models] [--threads 2]

Ends with one line: ``pages: <ratio>x <details>`` where the ratio is first / cached render time
summed over the pages. Target: every cached render under 2 s.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PAGES = [("home", "app.py", "cv"), ("models", "pages/1_Models_and_training.py", "cv"),
         ("final layer", "pages/2_Final_layer.py", "cv"),
         ("pooling vs IC", "pages/3_Pooling_vs_information.py", "cv"),
         ("path", "pages/4_Regularization_path.py", "cv"),
         ("lineage tree", "pages/5_Lineage_tree.py", "tree"),
         ("TISM logos", "pages/6_TISM_logos.py", "cv")]


def logomaker_logo(heights, start):
    """The TISM logo as tisfm_core.plots drew it before draw_letters (logomaker, one artist per
    letter), for the comparison."""
    import logomaker
    import pandas as pd
    from matplotlib.figure import Figure

    length = heights.shape[1]
    frame = pd.DataFrame(heights.T, columns=list("ACGT"), index=np.arange(start, start + length))
    fig = Figure(figsize=(min(24.0, max(6.0, 0.11 * length + 2.0)), 2.8))
    ax = fig.subplots()
    logomaker.Logo(frame, ax=ax, color_scheme={"A": "#109648", "C": "#255C99", "G": "#F7B32B",
                                               "T": "#D62839"}, flip_below=False, show_spines=False)
    fig.tight_layout()
    return fig


def png(fig):
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=200, bbox_inches="tight")   # st.pyplot's defaults
    return buffer.getvalue()


def tism_page_timing(found, repeat=3):
    """What the TISM page computes for one pasted sequence after the run is loaded; returns the
    median total in seconds."""
    import torch

    from tisfm_core.attribution import estimate_ism_seconds, logo_values, motif_hits, tism
    from tisfm_core.plots import attribution_logo
    from tisfm_core.runs import load_run

    cv = next((r for r in found if r.parent.name == "cv_full"), found[0])
    started = time.perf_counter()
    run = load_run(cv)
    load = time.perf_counter() - started
    rng = np.random.default_rng(0)
    outputs = list(range(min(3, len(run.outputs))))
    lo, hi = 101, 200                                   # the page's default window (1-based)
    rows, totals = [], []
    for rep in range(repeat + 1):                       # the first is a warm-up
        idx = rng.integers(0, 4, size=(1, 300)).astype(np.uint8)
        t0 = time.perf_counter()
        values = tism(run.model, idx, outputs=outputs)
        t1 = time.perf_counter()
        heights = logo_values(values, idx)
        hits = motif_hits(run.motifs, idx, threshold=0.85) if run.motifs is not None else None
        t2 = time.perf_counter()
        shown = None
        if hits is not None and len(hits):
            hits = hits.assign(start=hits["start"] + 1)
            shown = hits[(hits["end"] >= lo) & (hits["start"] <= hi)]
            shown = shown.assign(end=shown["end"] + 1) if len(shown) else None
        fig = attribution_logo(heights[0, 0][:, lo - 1:hi], start=lo, hits=shown, title="logo")
        t3 = time.perf_counter()
        png(fig)
        t4 = time.perf_counter()
        old = logomaker_logo(heights[0, 0][:, lo - 1:hi], lo)
        png(old)
        t5 = time.perf_counter()
        if rep:
            rows.append((t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4))
            totals.append(t4 - t0)
    med = [statistics.median(col) for col in zip(*rows)]
    total = statistics.median(totals)
    print(f"TISM page, one pasted 300-bp sequence on {cv.parent.name}/{cv.name} ({run.model.config.variant} "
          f"model, {len(outputs)} outputs; run load {load:.2f} s): TISM {med[0] * 1000:.0f} ms, heights and motif "
          f"hits {med[1] * 1000:.0f} ms, logo figure {med[2] * 1000:.0f} ms, PNG {med[3] * 1000:.0f} ms: "
          f"{total:.2f} s in all ({'meets' if total < 1 else 'MISSES'} the <1 s target; medians of {repeat}, "
          f"torch {torch.get_num_threads()} threads)", flush=True)
    logo_new = med[2] + med[3]
    print(f"tism_logo: {med[4] / logo_new:.1f}x draw_letters {logo_new * 1000:.0f} ms vs logomaker "
          f"{med[4] * 1000:.0f} ms for the 100-bp logo figure and its PNG", flush=True)
    seen = set()
    for path in found:                                  # one run of each variant
        other = load_run(path)
        spec = other.config["model"]
        variant = other.model.config.variant if spec["kind"] == "tisfm" else spec["kind"]
        if variant in seen:
            continue
        seen.add(variant)
        idx = rng.integers(0, 4, size=(1, int(spec["config"]["length"]))).astype(np.uint8)
        seconds = estimate_ism_seconds(other.model, idx, outputs=[0])
        print(f"exact ISM estimate, 1 sequence x 1 output, {variant} ({path.parent.name}/{path.name}): "
              f"{seconds:.2f} s ({'under' if seconds < 1 else 'over'} 1 s)", flush=True)
    return total


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default=str(REPO / "trained_models"))
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    args = parser.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    runs = Path(args.runs).resolve()
    os.environ["TISFM_RUNS"] = str(runs)
    os.environ.setdefault("TISFM_HOME", tempfile.mkdtemp(prefix="tisfm-bench-"))
    from streamlit.testing.v1 import AppTest

    from tisfm_core.runs import find_runs

    found = find_runs(runs)
    if not found:
        raise SystemExit(f"no runs under {runs}; build them with: tisfm demo-models --out {runs}")
    tism_page_timing(found)
    active = {"cv": next((r for r in found if r.parent.name == "cv_full"), found[0]),
              "tree": next((r for r in found if "treediff" in r.name), found[0])}
    rows = []
    for name, script, which in PAGES:
        at = AppTest.from_file(str(REPO / script), default_timeout=300)
        at.session_state["active_run"] = str(active[which])
        t0 = time.perf_counter()
        at.run()
        first = time.perf_counter() - t0
        if at.exception:
            raise SystemExit(f"{name}: {at.exception[0].message}")
        t0 = time.perf_counter()
        at.run()
        second = time.perf_counter() - t0
        rows.append((name, first, second))
        print(f"{name:<14} first {first:6.2f} s   cached {second:6.2f} s", flush=True)
    total_first = sum(r[1] for r in rows)
    total_second = sum(r[2] for r in rows)
    worst = max(rows, key=lambda r: r[2])
    ok = "meets" if worst[2] < 2 else "MISSES"
    print(f"pages: {total_first / total_second:.1f}x first {total_first:.1f} s vs cached "
          f"{total_second:.1f} s over {len(rows)} pages; slowest cached: {worst[0]} {worst[2]:.2f} s "
          f"({ok} the <2 s target)")


if __name__ == "__main__":
    main()
