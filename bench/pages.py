"""Page render times: first render and cached second render of every app page (AppTest).

Renders each page twice in one Streamlit AppTest session on the shipped demo runs (or --runs),
with the most relevant run active (the CV fold for the final layer and path pages, the tree-diff
run for the lineage tree), and prints both times and their ratio.

    python bench/pages.py [--runs trained_models] [--repeat 2]

Ends with one line: ``pages: <ratio>x <details>`` where the ratio is first / cached render time
summed over the pages. Target: every cached render under 2 s.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PAGES = [("home", "app.py", "cv"), ("models", "pages/1_Models_and_training.py", "cv"),
         ("final layer", "pages/2_Final_layer.py", "cv"),
         ("pooling vs IC", "pages/3_Pooling_vs_information.py", "cv"),
         ("path", "pages/4_Regularization_path.py", "cv"),
         ("lineage tree", "pages/5_Lineage_tree.py", "tree"),
         ("TISM logos", "pages/6_TISM_logos.py", "cv")]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default=str(REPO / "trained_models"))
    args = parser.parse_args(argv)
    runs = Path(args.runs).resolve()
    os.environ["TISFM_RUNS"] = str(runs)
    os.environ.setdefault("TISFM_HOME", tempfile.mkdtemp(prefix="tisfm-bench-"))
    from streamlit.testing.v1 import AppTest

    from tisfm_core.runs import find_runs

    found = find_runs(runs)
    if not found:
        raise SystemExit(f"no runs under {runs}; build them with: tisfm demo-models --out {runs}")
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
