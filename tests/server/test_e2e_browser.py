"""End to end in headless Chromium (Debian `chromium`): home, search, paper page, results table,
a <script> planted in a paper body that must not run, and a lab's report laid out at 1280 px."""

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
    pytest.mark.requires("chromium"),  # at CHROMIUM
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


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()


def test_browse_search_and_read_a_paper(tmp_path, embedder, browser):
    data = tmp_path / "d"
    key = lab_key(data)
    with local_server(data, embedder=embedder) as url:
        with PreprintClient(url, key) as c:
            base = c.publish(PaperCreate(title="Chain of thought baseline", body="We prompt step by step.",
                                         results=[ResultRecord(**dict(RESULT, technique="cot", correct=55, accuracy=0.55,
                                                                      ci_low=None, ci_high=None))]))
            paper = c.publish(PaperCreate(title="Majority voting over reasoning chains", abstract="Self-consistency.",
                                          body=EVIL_BODY, results=[ResultRecord(**RESULT)], citations=[base.id]))
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


# A lab's report as the lab publishes it: its body repeats the title and the abstract, and its results
# tables are wide (ten columns, long technique names, record and job ids).
REPORT_TITLE = "Verifier votes help a small model on basic arithmetic"
REPORT_ABSTRACT = "We let a verifier vote over sampled chains and compare four prompting techniques on held-out problems."
TECHNIQUES = ["self_refine_with_verifier_votes_and_calibrated_temperature_e3",
              "plan_then_solve_with_arithmetic_self_check_e2", "least_to_most_decomposition_e1", "zero_shot_cot"]


def _report_body() -> str:
    head = ("| Technique | Split | n | Correct | Accuracy | 95% CI | Tokens/problem | Cut at max_tokens | Record | Job |\n"
            "|---|---|---:|---:|---:|---|---:|---:|---|---|\n")
    rows = "".join(f"| {name} | report | 100 | 62 | 62.0% | [52.0%, 71.0%] | 501 | {7 + i}/300 at 512 "
                   f"| `ev-{i}1f66200c84a5d9c` | `job-{i}0455c95453c` |\n" for i, name in enumerate(TECHNIQUES))
    return (f"# {REPORT_TITLE}\n\n*Lab:* lab-a · *Run:* `lab-20261207-065835-2df25e`\n\n## Abstract\n\n"
            f"{REPORT_ABSTRACT}\n\n## 1 Results\n\n{head}{rows}\n## 2 Discussion\n\nThe verifier helps.\n")


def test_a_lab_report_shows_title_and_abstract_once_and_fits_1280px(tmp_path, embedder, browser):
    data = tmp_path / "d"
    results = [ResultRecord(**dict(RESULT, benchmark="basic_arithmetic", subset="split=report(0.3) first=100",
                                   model="smollm2-135m-instruct", technique=name, job_id=f"job-{i}0455c95453c",
                                   spec_hash=f"{i}86a5aec2091d8c0", tokens_per_problem=501.0))
               for i, name in enumerate(TECHNIQUES)]
    with local_server(data, embedder=embedder) as url, PreprintClient(url, lab_key(data)) as c:
        paper = c.publish(PaperCreate(title=REPORT_TITLE, abstract=REPORT_ABSTRACT, body=_report_body(), results=results))
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{url}/papers/{paper.id}")
        text = page.locator("main").inner_text()
        assert text.count(REPORT_TITLE) == 1 and text.count(REPORT_ABSTRACT) == 1
        assert "The verifier helps." in text and "lab-20261207-065835-2df25e" in text  # the rest of the body stays
        # every table fits its column: no cut-off last column, no horizontal scrollbar
        widths = page.eval_on_selector_all("main table", "ts => ts.map(t => [t.scrollWidth, t.parentElement.clientWidth])")
        assert len(widths) == 2 and all(width <= room for width, room in widths), widths
        assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
        assert "self_refine_with_verifier_votes_and_calibrated_temperature_e3" in page.locator("#results").inner_text()
        page.close()
