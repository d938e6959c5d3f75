"""Fine-tuning in a real browser: pick a shipped run, fine-tune it for one epoch on a small
synthetic demo atlas as a background job, watch the job, open the child and see its final layer
next to the change from its parent. Skipped when Chromium or Playwright is missing."""

from __future__ import annotations

import json
import re

import pytest
from test_e2e import (  # noqa: F401
    REPO,
    chromium_browser,
    goto,
    pick_run,
    server,
    settle,
    shot,
    sync_api,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def visible(page, label):
    """The visible field of that label (the Train tab has fields of the same names)."""
    return page.get_by_label(label, exact=True).locator("visible=true")


def commit(locator, value):
    locator.fill(str(value))
    locator.press("Enter")


def test_fine_tune_a_shipped_run_and_open_the_child(server, chromium_browser):  # noqa: F811 (fixtures)
    expect = sync_api.expect
    page = chromium_browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    page.goto(server["url"])
    page.get_by_role("heading", name="tiSFM Explorer").wait_for()
    # add the shipped runs to the runs folders, as a user would in the sidebar
    folders = page.get_by_test_id("stSidebar").get_by_label("Runs folders (separate with ;)", exact=True)
    commit(folders, f"{server['fixture'] / 'runs'}; {REPO / 'trained_models'}")
    settle(page)
    pick_run(page, "ablations/base")
    goto(page, "Models and training")
    page.get_by_role("tab", name="Fine-tune this model").click()
    settle(page)
    expect(page.get_by_text("Fine-tune the active run").first).to_be_visible()
    page.get_by_text("Other data").locator("visible=true").click()
    settle(page)
    commit(visible(page, "Regions"), 200)
    page.get_by_text("final layer only").locator("visible=true").click()
    commit(visible(page, "Epochs"), 1)
    commit(visible(page, "Name of the new run (folder in your runs folder)"), "e2e_child")
    settle(page)
    page.get_by_role("button", name="Start fine-tuning job").click()
    expect(page.get_by_text("Started job").first).to_be_visible(timeout=120_000)
    # the job's panel follows it (starting, running, done; it may be quick)
    expect(page.get_by_text(re.compile(r"e2e_child: fine-tune base .* · (starting|running|done)")).first
           ).to_be_visible()
    shot(page, "7_finetune_running")
    expect(page.get_by_text("· done").first).to_be_visible(timeout=240_000)
    settle(page)
    child = server["home"] / "runs" / "e2e_child"
    config = json.loads((child / "config.json").read_text())
    assert config["finetune"]["train"] == "final" and config["finetune"]["parent"]["name"] == "base"
    shot(page, "7_finetune_done")

    pick_run(page, "e2e_child")
    page.get_by_test_id("stSidebarNav").get_by_text("Home", exact=True).click()
    page.get_by_role("heading", name="tiSFM Explorer").wait_for()
    settle(page)
    expect(page.get_by_text("Lineage").first).to_be_visible()
    expect(page.get_by_text("fine-tuned (train final)").first).to_be_visible()
    goto(page, "Final layer")
    page.locator(".js-plotly-plot").first.wait_for()
    page.get_by_text("Show the change from the parent run base").click()
    settle(page)
    expect(page.locator(".js-plotly-plot")).to_have_count(2)
    expect(page.get_by_text("minus that of its parent base").first).to_be_visible()
    shot(page, "7_finetune_final_layer")
    page.close()
