"""End to end in headless Chromium (Debian `chromium`): home, search, paper page, results table,
and a <script> planted in a paper body that must not run."""

from __future__ import annotations

from pathlib import Path

import pytest

from preprint_server.client import PreprintClient
from preprint_server.schemas import PaperCreate, ResultRecord
from preprint_server.serve import local_server
from tests.server.conftest import RESULT
from tests.server.processes import lab_key

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (apt-get install chromium chromium-driver)"),
]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]

EVIL_BODY = """# Method

We vote over $k$ sampled chains: $$\\hat a = \\arg\\max_a \\sum_i [a_i = a]$$

<script>window.__pwned = 1; document.title = 'pwned';</script>
<img src=x onerror="window.__pwned = 2">
[click me](javascript:void(window.__pwned=3))

[obfuscated link](jav&#x09;ascript:void(window.__pwned=4))

| step | value |
|------|-------|
| 1    | two   |
"""

# What a click follows, recorded while the click is dispatched (a javascript: URL runs later, in a
# task of its own, so checking only its effect right after the click could miss it).
FOLLOWED_JS = """() => { window.__followed = "no click seen";
  document.addEventListener("click", e => { const a = e.target.closest("a[href]"); window.__followed = a ? a.href : ""; },
                            true); }"""


def test_browse_search_and_read_a_paper(tmp_path, embedder):
    from playwright.sync_api import sync_playwright

    data = tmp_path / "d"
    key = lab_key(data)
    with local_server(data, embedder=embedder) as url:
        with PreprintClient(url, key) as c:
            base = c.publish(PaperCreate(title="Chain of thought baseline", body="We prompt step by step.",
                                         results=[ResultRecord(**dict(RESULT, technique="cot", correct=55, accuracy=0.55,
                                                                      ci_low=None, ci_high=None))]))
            paper = c.publish(PaperCreate(title="Majority voting over reasoning chains", abstract="Self-consistency.",
                                          body=EVIL_BODY, results=[ResultRecord(**RESULT)], citations=[base.id]))
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
            try:
                page = browser.new_page()
                errors = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(url + "/")
                assert page.locator("h1").first.inner_text().startswith("Recent papers")
                assert page.locator("#leaderboard-math500 table tbody tr").count() == 2
                assert page.locator("#leaderboard-math500 svg.chart").count() == 1

                page.fill("header input[name=q]", "voting over sampled answers")
                page.click("header button[type=submit]")
                page.wait_for_url("**/search?q=*")
                first = page.locator("ol.hits li a.title").first
                assert first.inner_text() == "Majority voting over reasoning chains"
                first.click()
                page.wait_for_url(f"**/papers/{paper.id}")

                rows = page.locator("#results tbody tr")
                assert rows.count() == 1
                cells = rows.first.locator("td").all_inner_texts()
                assert cells[:5] == ["math500", "test", "report", "qwen2.5-0.5b", "self-consistency"]
                assert "62.0%" in cells and "job job-1" in cells
                assert "Not replicated yet" in page.locator("#replication-summary").inner_text()
                assert page.locator(".markdown table td").first.inner_text() == "1"  # Markdown table rendered
                assert page.locator(".markdown .math").count() >= 2
                # the planted script, handler and javascript: links did nothing
                planted = page.locator(".markdown").get_by_text("click me")
                assert planted.count() == 1
                here = page.url
                page.evaluate(FOLLOWED_JS)
                planted.click()
                assert page.evaluate("window.__followed") == ""  # the click followed no link at all
                assert page.url == here and page.evaluate("window.__pwned") is None
                # links that reach the page point at http(s)/mailto only; the obfuscated one is among them
                protocols = page.eval_on_selector_all(".markdown a[href]", "as => as.map(a => [a.textContent, a.protocol])")
                assert ["obfuscated link", "http:"] in protocols
                assert {proto for _, proto in protocols} <= {"http:", "https:", "mailto:"}, protocols
                assert page.evaluate("window.__pwned") is None
                assert page.title() != "pwned"
                assert page.locator(".markdown script").count() == 0
                assert page.locator(".markdown [onerror]").count() == 0
                assert not errors
                page.click(f"a[href='/papers/{base.id}']")
                assert page.locator("#paper-title").inner_text() == "Chain of thought baseline"
            finally:
                browser.close()
