"""The TISM page's region scan and variant modes in a real browser (headless Chromium).

Explains one pasted window (logo and hit track); pastes a 2-kb region, sees both tracks, clicks a
window on the prediction track and sees its logo; uploads a VCF, sorts the table, clicks a row and
sees its ref/alt logos. Screenshots go to tests/artifacts/. Skipped like tests/test_e2e.py when
Chromium or Playwright is missing.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from test_e2e import chromium_browser, goto, pick_run, server, settle, shot, sync_api  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _dna(n, seed):
    return "".join(np.random.default_rng(seed).choice(list("ACGT"), n))


def _other(base, k=1):
    return "ACGT"[("ACGT".index(base) + k) % 4]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("e2e_tism")
    contig = _dna(3000, 7)
    genome = folder / "genome" / "g.fa"
    genome.parent.mkdir()
    genome.write_text(">chr1\n" + "\n".join(contig[i:i + 60] for i in range(0, 3000, 60)) + "\n")
    rows = [("chr1", 500, "snp1", contig[499], _other(contig[499])),
            ("chr1", 900, "multi", contig[899], f"{_other(contig[899])},{_other(contig[899], 2)}"),
            ("chr1", 1500, "ins", contig[1499], contig[1499] + "GA"),
            ("chr1", 2000, "badref", _other(contig[1999]), contig[1999]),
            ("chr1", 2500, "snp2", contig[2499], _other(contig[2499], 3))]
    vcf = folder / "my_calls.vcf"
    vcf.write_text("##fileformat=VCFv4.2\n##contig=<ID=chr1,length=3000>\n"
                   "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
                   + "".join(f"{c}\t{p}\t{i}\t{r}\t{a}\t.\t.\t.\n" for c, p, i, r, a in rows))
    return {"genome": genome, "vcf": vcf}


def test_scan_a_region_and_score_variants(server, chromium_browser, files):  # noqa: F811 (fixtures)
    expect = sync_api.expect
    page = chromium_browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(90_000)
    page.goto(server["url"])
    page.get_by_role("heading", name="tiSFM Explorer").wait_for()
    pick_run(page, "lineages_full")
    goto(page, "TISM logos")

    # one window: the logo with its motif hits in a track of their own
    sequence = (server["fixture"] / "data" / "demo" / "sequences.fa").read_text().split("\n")[1]
    area = page.get_by_role("textbox", name=re.compile("DNA sequences, FASTA or raw"))
    area.fill(f">pasted\n{sequence}")
    area.press("Control+Enter")
    expect(page.get_by_text("the track underneath: motif matches", exact=False)).to_be_visible()
    expect(page.get_by_test_id("stImage").first).to_be_visible()
    settle(page)
    shot(page, "6_tism_logo_hits")

    # scan: a pasted 2-kb region, both tracks, a clicked window's logo
    page.get_by_text("Scan a longer region").click()
    settle(page)
    area = page.get_by_role("textbox", name="One DNA sequence of any length")
    area.fill(">locus\n" + _dna(2000, 1))
    area.press("Control+Enter")
    plot = page.locator(".js-plotly-plot").first
    plot.wait_for()
    expect(page.get_by_text("prediction of B per window")).to_be_visible()
    expect(page.get_by_text("TISM: mean effect per base", exact=False)).to_be_visible()
    points = plot.locator(".scatterlayer .trace").first.locator("path.point")
    expect(points).to_have_count(77)                        # 2,000 bp, 100-bp windows, stride 25
    picked = page.get_by_test_id("stSlider").get_by_text("1001-1100").first
    for _ in range(3):     # the chart may still be wiring its events after a rerun: click again
        settle(page)
        point = points.nth(40)
        point.scroll_into_view_if_needed()
        box = point.bounding_box()
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        try:
            expect(picked).to_be_visible(timeout=10_000)
            break
        except AssertionError:
            continue
    expect(picked).to_be_visible()
    settle(page)
    expect(page.get_by_test_id("stImage").first).to_be_visible()
    expect(page.get_by_text("logo of this window alone", exact=False)).to_be_visible()
    shot(page, "6_tism_scan")

    # variants: a VCF upload, the table sorted, a clicked row's ref/alt logos
    page.get_by_text("Variant effects").click()
    settle(page)
    genome = page.get_by_role("textbox", name="Genome FASTA on this server")
    genome.fill(str(files["genome"]))
    genome.press("Enter")
    settle(page)
    page.locator("input[type=file]").set_input_files(str(files["vcf"]))
    table = page.get_by_test_id("stDataFrame").first
    table.wait_for()
    expect(page.get_by_text("1 of 6 variants could not be scored", exact=False)).to_be_visible()
    expect(page.get_by_text("my_calls.vcf record 4 (badref)", exact=False)).to_be_visible()
    settle(page)
    order = page.get_by_role("combobox", name="Sort by")
    order.fill("genome")                                   # typing opens the list, filtered
    page.get_by_role("option", name="genome position").click()
    expect(order).to_have_value("genome position")
    settle(page)
    # rows now in genome order: snp1, multi (2 ALTs), ins, badref, snp2; tick the insertion's row
    table.scroll_into_view_if_needed()
    grid = table.bounding_box()
    page.mouse.click(grid["x"] + 18, grid["y"] + 35 * 4 + 17)
    expect(page.get_by_role("combobox", name="Variant")).to_have_value(re.compile(r"record 3 \(ins\), chr1:1500"))
    settle(page)
    expect(page.get_by_test_id("stImage").first).to_be_visible()
    expect(page.get_by_text("aligned on the variant", exact=False)).to_be_visible()
    shot(page, "6_tism_variants")
    page.close()
