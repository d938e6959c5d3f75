"""Resident memory of the app server with the shipped demo runs loaded.

Starts ``streamlit run app.py`` on the shipped runs (or --runs), drives it with headless
Chromium through every page, several runs (each CV fold, the tree-diff run, every ablation) and
TISM of pasted sequences, and reads the server's resident set size from /proc after each step
(VmRSS now, VmHWM the peak). Compares the peak with the 2 GB budget.

    python bench/app_memory.py [--runs trained_models]

Ends with one line: ``app_memory: <budget / peak>x headroom <details>``. Needs Playwright and
/usr/bin/chromium (as the end-to-end test does).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUDGET_MB = 2048
PAGES = ["Final layer", "Pooling vs information", "Regularization path", "Lineage tree",
         "TISM logos", "Models and training"]


def rss_mb(pid):
    """(VmRSS, VmHWM) of a process in MB, children not included."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                  if ":" in line)
    return tuple(int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM"))


def start_server(runs, home):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "TISFM_RUNS": str(runs), "TISFM_HOME": str(home)}
    log = open(Path(home) / "server.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                             "--server.port", str(port), "--browser.gatherUsageStats", "false",
                             "--server.fileWatcherType", "none"], cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                if answer.read().strip() == b"ok":
                    return proc, url
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"streamlit did not start: {(Path(home) / 'server.log').read_text()[-2000:]}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default=str(REPO / "trained_models"))
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    runs = Path(args.runs).resolve()
    run_names = sorted(str(p.parent.relative_to(runs)) for p in runs.rglob("model.safetensors"))
    home = tempfile.mkdtemp(prefix="tisfm-memory-")
    proc, url = start_server(runs, home)
    samples = [("started", *rss_mb(proc.pid))]
    sequence = next(line for line in (runs / "demo_atlas" / "sequences.fa").read_text().splitlines()
                    if line and not line.startswith(">"))
    t0 = time.perf_counter()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, headless=True,
                                        args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(120_000)

            def settle():
                page.wait_for_timeout(500)
                page.wait_for_function(
                    "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=180_000)

            def pick(run):
                page.get_by_test_id("stSidebar").get_by_test_id("stSelectbox").first.click()
                page.get_by_role("option").filter(has_text=f"{run} ·").first.click()
                settle()

            page.goto(url)
            page.get_by_role("heading", name="tiSFM Explorer").wait_for()
            settle()
            samples.append(("home", *rss_mb(proc.pid)))
            for run in run_names:                      # every run once, on the page it is for
                pick(run)
                for label in PAGES:
                    page.get_by_test_id("stSidebarNav").get_by_text(label, exact=True).click()
                    settle()
                    if label == "TISM logos":
                        area = page.get_by_test_id("stTextArea").locator("textarea")
                        if area.count():
                            area.fill("\n".join(f">s{i}\n{sequence}" for i in range(8)))
                            area.press("Control+Enter")
                            settle()
                    samples.append((f"{run} / {label}", *rss_mb(proc.pid)))
                print(f"{run}: RSS {samples[-1][1]:.0f} MB, peak {samples[-1][2]:.0f} MB", flush=True)
            browser.close()
    finally:
        final = rss_mb(proc.pid)
        proc.terminate()
        proc.wait(timeout=30)
    peak = max(final[1], max(s[2] for s in samples))
    worst = max(samples, key=lambda s: s[1])
    print(f"server RSS: {samples[0][1]:.0f} MB after start, {final[0]:.0f} MB at the end, peak {peak:.0f} MB "
          f"(highest while on: {worst[0]}); {len(samples) - 2} page views in {time.perf_counter() - t0:.0f} s")
    verdict = "meets" if peak < BUDGET_MB else "EXCEEDS"
    print(f"app_memory: {BUDGET_MB / peak:.1f}x headroom: peak RSS {peak:.0f} MB vs {BUDGET_MB} MB budget "
          f"({verdict} it; {len(run_names)} shipped runs x {len(PAGES)} pages, TISM of 8 sequences per run)")


if __name__ == "__main__":
    main()
