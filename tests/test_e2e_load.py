"""The shared server under load: a real `streamlit run app.py`, several browser users doing normal
work while another one uploads decompression bombs, oversized models and Markdown-named files.

The normal users must keep working (every page they open shows what it should, no error box),
the attacker must get an error box for every upload, the rendered page must hold no link or image
made from an upload name, and the server's peak resident memory must stay under 2 GB. Skipped
when Chromium (/usr/bin/chromium) or Playwright is missing.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time

import pytest
from app_fixtures import app_runs_folder
from conftest import deflate_bomb, gzip_bomb, make_zip
from test_e2e import ARGS, CHROMIUM, _serve

MAX_SERVER_RSS = 2 * 10**9
NORMAL_USERS = 3
ROUNDS = 2

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
async_api = pytest.importorskip("playwright.async_api")
async_api.expect.set_options(timeout=120_000)   # four users share two busy cores
if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)", allow_module_level=True)


def _status(pid, key):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    fixture = app_runs_folder()
    home = tmp_path_factory.mktemp("load_home")
    roots = {"TISFM_SERVER_ROOTS": os.pathsep.join([str(fixture), str(home)])}
    with _serve(fixture / "runs", home, env=roots, startup_s=90, with_pid=True) as (url, pid):
        yield {"url": url, "fixture": fixture, "home": home, "pid": pid}


@pytest.fixture(scope="module")
def weapons(server, tmp_path_factory):
    """The attacker's files: bombs, an oversized model, a Markdown-named file."""
    tmp = tmp_path_factory.mktemp("weapons")
    run = server["fixture"] / "runs" / "lineages_full"
    good = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != "train.log"}
    stream, crc = deflate_bomb(1024)
    config = json.loads(good["config.json"])
    config["model"]["config"]["n_motifs"] = 10**7
    files = {
        "bomb.zip": make_zip({**{k: v for k, v in good.items() if k != "model.safetensors"},
                              "model.safetensors": (stream, crc, 2**30)}),
        "huge.zip": make_zip({**good, "config.json": json.dumps(config).encode()}),
        "bomb.fa.gz": gzip_bomb(1024, head=b">r0\n"),
        "[x](http:evil.example) ![i](http:evil.example) _t_.fa": b"hello\n>a\nACGT\n",
    }
    for name, data in files.items():
        (tmp / name).write_bytes(data)
    return {name: tmp / name for name in files}


async def settle(page):
    await page.wait_for_timeout(400)
    await page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')",
                                 timeout=120_000)


async def goto(page, label, heading=None):
    await page.get_by_test_id("stSidebarNav").get_by_text(label, exact=True).click()
    await page.get_by_role("heading", name=heading or label).wait_for(timeout=120_000)
    await settle(page)


async def no_error_box(page, where):
    errors = await page.get_by_test_id("stAlertContentError").all_inner_texts()
    assert not errors, (where, errors)


async def normal_user(browser, url, sequence, log):
    """Home, a TISM logo of a pasted sequence and the final layer, ROUNDS times."""
    context = await browser.new_context(viewport={"width": 1300, "height": 900})
    page = await context.new_page()
    page.set_default_timeout(120_000)
    expect = async_api.expect
    await page.goto(url)
    await page.get_by_role("heading", name="tiSFM Explorer").wait_for()
    for round_ in range(ROUNDS):
        await goto(page, "Home", "tiSFM Explorer")
        await expect(page.get_by_text("Active run:").first).to_be_visible()
        await no_error_box(page, "home")
        await goto(page, "TISM logos")
        area = page.get_by_test_id("stTextArea").locator("textarea")
        await area.fill(f">user_round{round_}\n{sequence}")
        await area.press("Control+Enter")
        await expect(page.get_by_text("Mean TISM effect at the reference base").first).to_be_visible()
        await settle(page)
        await no_error_box(page, "tism")
        await goto(page, "Final layer")
        await page.locator(".js-plotly-plot").first.wait_for()
        await no_error_box(page, "final layer")
        log.append(round_)
    await context.close()


async def attacker(browser, url, weapons, refusals):
    """Uploads every weapon where it fits and collects the error box each one gets."""
    context = await browser.new_context(viewport={"width": 1300, "height": 900})
    page = await context.new_page()
    page.set_default_timeout(120_000)
    await page.goto(url)
    await page.get_by_role("heading", name="tiSFM Explorer").wait_for()

    async def refused(step, needle):
        box = page.get_by_test_id("stAlertContentError").filter(has_text=needle)
        await box.first.wait_for(timeout=120_000)
        refusals.append((step, await box.first.inner_text()))

    async def uploader(label):
        return page.get_by_test_id("stFileUploader").filter(has_text=label).locator("input[type=file]")

    await goto(page, "Models and training")
    await page.get_by_role("tab", name="Upload a run").click()
    for name, needle in (("bomb.zip", "expands more than 200-fold"), ("huge.zip", "refused before building")):
        await (await uploader("Run zip")).set_input_files(str(weapons[name]))
        # the button must act on this file, not the one before it: wait until the uploader lists it
        await page.get_by_test_id("stFileUploader").filter(has_text="Run zip").filter(has_text=name).wait_for()
        await settle(page)
        await page.get_by_role("button", name="Add this run").click()
        await refused(name, needle)
    await goto(page, "TISM logos")
    await page.get_by_text("Upload FASTA").click()
    await settle(page)
    await (await uploader("FASTA file (plain or gzip)")).set_input_files(str(weapons["bomb.fa.gz"]))
    await refused("bomb.fa.gz", "decompresses to more than")
    markdown_name = next(n for n in weapons if n.startswith("["))
    await (await uploader("FASTA file (plain or gzip)")).set_input_files(str(weapons[markdown_name]))
    await refused("markdown name", "text before the first")
    links = await page.locator("a[href*='evil'], img[src*='evil']").count()
    refusals.append(("links made from the name", links))
    await context.close()


def test_normal_users_keep_working_while_another_attacks(server, weapons):
    sequence = (server["fixture"] / "data" / "demo" / "sequences.fa").read_text().split("\n")[1]
    pid = server["pid"]
    with open(f"/proc/{pid}/clear_refs", "w") as handle:   # the peak starts at the idle server
        handle.write("5")
    samples, done = [], threading.Event()

    def sample():
        while not done.is_set():
            samples.append(_status(pid, "VmRSS"))
            time.sleep(0.2)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    progress, refusals = [[] for _ in range(NORMAL_USERS)], []

    async def scenario():
        async with async_api.async_playwright() as p:
            browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
            try:
                await asyncio.gather(*[normal_user(browser, server["url"], sequence, progress[i])
                                       for i in range(NORMAL_USERS)],
                                     attacker(browser, server["url"], weapons, refusals))
            finally:
                await browser.close()
    try:
        asyncio.run(scenario())
    finally:
        done.set()
        sampler.join()
    peak = max(_status(pid, "VmHWM"), *samples)
    assert all(rounds == list(range(ROUNDS)) for rounds in progress), progress
    steps = dict(refusals)
    assert set(steps) == {"bomb.zip", "huge.zip", "bomb.fa.gz", "markdown name", "links made from the name"}
    assert steps["links made from the name"] == 0
    assert "[x](http:evil.example)" in steps["markdown name"], steps["markdown name"]
    assert peak < MAX_SERVER_RSS, f"server peak RSS {peak / 1e9:.2f} GB"
    assert not list((server["home"] / "runs").glob("*")), "a refused upload left a run behind"
    print(f"server peak RSS under load: {peak / 2**20:.0f} MiB")
