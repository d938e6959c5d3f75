"""The app in a real browser: `streamlit run app.py` on a free port, driven by headless Chromium.

Visits every page (screenshots in tests/artifacts/), explains a pasted sequence, trains a tiny
model as a background job and sees it listed, and cancels a second job. Skipped when Chromium
(/usr/bin/chromium) or Playwright is missing.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from app_fixtures import app_runs_folder

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "tests" / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
sync_api = pytest.importorskip("playwright.sync_api")
if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)", allow_module_level=True)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _serve(runs, home, env=None, startup_s=60, with_pid=False):
    """``streamlit run app.py`` on a free port with these runs and home folders (and ``env``
    added); yields its URL, or (URL, server pid) ``with_pid``."""
    port = _free_port()
    env = {**os.environ, "TISFM_RUNS": str(runs), "TISFM_HOME": str(home), **(env or {})}
    log = open(home / "server.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                             "--server.port", str(port), "--server.address", "127.0.0.1",
                             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + startup_s
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                    if answer.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"streamlit did not start: {(home / 'server.log').read_text()[-2000:]}")
            time.sleep(0.3)
        yield (url, proc.pid) if with_pid else url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    fixture = app_runs_folder()
    home = tmp_path_factory.mktemp("e2e_home")
    with _serve(fixture / "runs", home) as url:
        yield {"url": url, "fixture": fixture, "home": home}


@pytest.fixture(scope="module")
def chromium_browser():
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield chromium
        chromium.close()


def settle(page):
    """Wait until the script run of the page has finished (the 'running' widget is gone)."""
    page.wait_for_timeout(400)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')",
                           timeout=90_000)


def shot(page, name):
    """Screenshot of the whole page: the viewport is stretched to the app's scroll height first
    (Streamlit scrolls inside its own container, so full_page alone stops at the window)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    size = page.viewport_size
    height = page.evaluate("() => Math.max(...[...document.querySelectorAll('[data-testid=\"stMain\"], "
                           "[data-testid=\"stAppViewContainer\"]')].map(e => e.scrollHeight), 0)")
    page.set_viewport_size({"width": size["width"], "height": int(min(max(height, size["height"]), 8000))})
    page.wait_for_timeout(300)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    page.set_viewport_size(size)


def goto(page, label):
    page.get_by_test_id("stSidebarNav").get_by_text(label, exact=True).click()
    page.get_by_role("heading", name=label if label != "Pooling vs information" else
                     "Pooling vs information content").wait_for(timeout=60_000)
    settle(page)


def pick_run(page, name):
    page.get_by_test_id("stSidebar").get_by_test_id("stSelectbox").first.click()
    page.get_by_role("option", name=name).first.click()
    settle(page)


def centre(locator):
    """The centre (x, y) of an element, scrolled into view."""
    locator.scroll_into_view_if_needed()
    box = locator.bounding_box()
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def click_until_it_changes(page, widget, places):
    """Click each place (a function giving x, y) until the widget's value moves: the first
    place may hold the value already shown."""
    before = widget.input_value()
    for place in places:
        page.mouse.click(*place())
        try:
            sync_api.expect(widget).not_to_have_value(before, timeout=8_000)
            return
        except AssertionError:
            continue
    sync_api.expect(widget).not_to_have_value(before)


def field(page, label):
    return page.get_by_label(label, exact=True)


def commit(locator, value):
    locator.fill(str(value))
    locator.press("Enter")


def test_every_page_and_a_training_job(server, chromium_browser):
    expect = sync_api.expect
    page = chromium_browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    page.goto(server["url"])
    page.get_by_role("heading", name="tiSFM Explorer").wait_for()
    pick_run(page, "lineages_full")
    expect(page.get_by_text("Active run: lineages_full")).to_be_visible()
    page.locator(".js-plotly-plot").first.wait_for()
    shot(page, "0_home")

    goto(page, "Final layer")
    page.locator(".js-plotly-plot").first.wait_for()
    expect(page.get_by_text("Synthetic demo", exact=False).first).to_be_visible()  # the run is kept
    # clicking a heatmap cell selects that motif for the logo
    motif = page.get_by_role("combobox", name="Motif", exact=True)
    cells = page.locator(".js-plotly-plot").first.locator(".nsewdrag").first
    cells.scroll_into_view_if_needed()
    area = cells.bounding_box()
    # the clicked row may be the motif already shown: try rows until the selection moves
    click_until_it_changes(page, motif, [lambda f=f: (area["x"] + area["width"] * 0.5, area["y"] + area["height"] * f)
                                         for f in (0.6, 0.15, 0.85, 0.35)])
    settle(page)
    shot(page, "2_final_layer")

    goto(page, "Pooling vs information")
    expect(page.locator(".js-plotly-plot")).to_have_count(2)
    expect(page.get_by_text("Pearson r").first).to_be_visible()
    shot(page, "3_pooling_vs_information")

    goto(page, "Regularization path")
    expect(page.locator(".js-plotly-plot")).to_have_count(3)
    shot(page, "4_regularization_path")

    goto(page, "TISM logos")
    sequence = (server["fixture"] / "data" / "demo" / "sequences.fa").read_text().split("\n")[1]
    area = page.get_by_test_id("stTextArea").locator("textarea")
    area.fill(f">pasted\n{sequence}")
    area.press("Control+Enter")
    expect(page.get_by_text("Mean TISM effect at the reference base").first).to_be_visible(timeout=60_000)
    expect(page.get_by_test_id("stImage").first).to_be_visible()
    settle(page)
    shot(page, "6_tism_logos")

    goto(page, "Lineage tree")
    pick_run(page, "treediff_base")
    expect(page.locator(".js-plotly-plot")).to_have_count(2)
    # clicking an edge's diamond lists that edge's TFs
    edge = page.get_by_role("combobox", name="Edge (or click its diamond in the tree)")
    diamonds = page.locator(".js-plotly-plot").first.locator(".scatterlayer path.point")
    click_until_it_changes(page, edge, [lambda k=k: centre(diamonds.nth(k)) for k in (7, 20, 33)])
    settle(page)
    assert "edge=" in page.url
    shot(page, "5_lineage_tree")

    goto(page, "Models and training")
    demo = server["fixture"] / "data" / "demo"
    page.get_by_text("Files on this server").click()
    settle(page)
    commit(field(page, "Sequence file (FASTA or id<TAB>sequence)"), demo / "sequences.fa")
    commit(field(page, "Targets TSV (header; first column = region ids)"), demo / "targets_lineages.tsv")
    page.get_by_text("file on this server").click()
    settle(page)
    commit(field(page, "Motif file"), demo / "motifs_small.meme")
    commit(field(page, "Epochs (frozen PWMs)"), 2)
    commit(field(page, "Folds"), 5)
    commit(field(page, "Batch size"), 64)
    commit(field(page, "Run name (folder in your runs folder)"), "e2e_run")
    settle(page)
    page.get_by_role("button", name="Start training job").click()
    expect(page.get_by_text("Started job").first).to_be_visible()
    # the jobs panel polls the job; when it ends the page reloads and the run is listed
    expect(page.get_by_text("· done").first).to_be_visible(timeout=150_000)
    settle(page)
    assert (server["home"] / "runs" / "e2e_run" / "model.safetensors").exists()
    page.get_by_test_id("stSidebar").get_by_test_id("stSelectbox").first.click()
    expect(page.get_by_role("option", name="e2e_run").first).to_be_visible()
    page.keyboard.press("Escape")
    shot(page, "1_models_and_training")

    # a second, long job: cancel it from its panel
    commit(field(page, "Epochs (frozen PWMs)"), 5000)
    commit(field(page, "Run name (folder in your runs folder)"), "e2e_long")
    settle(page)
    page.get_by_role("button", name="Start training job").click()
    page.get_by_role("button", name="Cancel job").click()
    expect(page.get_by_text("· cancelled").first).to_be_visible(timeout=60_000)
    shot(page, "1_models_and_training_cancelled")
    job_files = list((server["home"] / "jobs").glob("*/job.json"))
    assert len(job_files) == 2
    page.close()


#: (URL path, screenshot name, how to tell the page's main figure is drawn) of every page.
PAGES = (("", "0_home", ".js-plotly-plot"), ("Models_and_training", "1_models_and_training", None),
         ("Final_layer", "2_final_layer", ".js-plotly-plot"),
         ("Pooling_vs_information", "3_pooling_vs_information", ".js-plotly-plot"),
         ("Regularization_path", "4_regularization_path", ".js-plotly-plot"),
         ("Lineage_tree", "5_lineage_tree", ".js-plotly-plot"), ("TISM_logos", "6_tism_logos", None))


def test_every_page_of_the_shipped_runs_at_two_screen_sizes(chromium_browser, tmp_path):
    """Screenshots (tests/artifacts/shipped_WxH_*.png) of every page on the shipped runs, opened
    from its URL as a new visitor would: every page draws its main figure without a click (the
    TISM page one click away), and the URL keeps the run and the page's choices."""
    expect = sync_api.expect
    home = tmp_path / "home"
    home.mkdir()
    with _serve(REPO / "trained_models", home) as url:
        for width, height in ((1280, 800), (1920, 1080)):
            page = chromium_browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(90_000)
            for path, name, figure in PAGES:
                page.goto(f"{url}/{path}")
                page.get_by_test_id("stSidebar").wait_for()
                settle(page)
                if figure:
                    page.locator(figure).first.wait_for()
                if path == "TISM_logos":
                    page.get_by_role("button", name="Use an example").click()
                    settle(page)
                    expect(page.get_by_test_id("stImage").first).to_be_visible(timeout=90_000)
                settle(page)
                assert "run=cv_full" in page.url, page.url
                expect(page.get_by_test_id("stException")).to_have_count(0)
                shot(page, f"shipped_{width}x{height}_{name}")
            # a link with a run and a page's choices opens that view
            page.goto(f"{url}/Regularization_path?run=cv_full%2Ffold_0&output=myeloid&log=0")
            settle(page)
            page.locator(".js-plotly-plot").first.wait_for()
            expect(page.get_by_text("Output of the coefficient paths")).to_be_visible()
            assert "output=myeloid" in page.url and "log=0" in page.url
            page.close()
