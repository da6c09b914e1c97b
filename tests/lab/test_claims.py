"""The claim checker: numbers in prose must match harness records."""

import json

from agentlab.lab.report.claims import check_claims, verify_draft

RECORDS = [
    {"technique": "self_consistency", "accuracy": 0.45, "n": 20, "correct": 9, "ci_low": 0.258, "ci_high": 0.658},
    {"technique": "zero_shot_cot", "accuracy": 0.30, "n": 20, "correct": 6, "ci_low": 0.145, "ci_high": 0.519},
]


def test_planted_wrong_number_is_removed():
    res = check_claims("The baseline is reported in the table. Our method achieves 92.5% accuracy.", RECORDS)
    assert "92.5" not in res.text
    assert res.text == "The baseline is reported in the table."
    assert [(c.text, c.status) for c in res.claims] == [("92.5%", "removed")]


def test_wrong_number_next_to_a_technique_is_fixed():
    # the sentence is replaced by the generated sentence for the named record (never another record's value)
    res = check_claims("self_consistency reached 51% on the report split.", RECORDS)
    assert res.text == "self_consistency reached 45.0% accuracy (9/20) on the report split."
    assert res.claims[0].status == "fixed" and res.claims[0].replacement == res.text
    assert res.claims[0].verdict == "unsupported" and "51%" in res.claims[0].note
    assert all(c.status == "ok" for c in check_claims(res.text, RECORDS, fix=False).claims)


def test_matching_numbers_pass():
    text = ("self_consistency reaches 45.0% (9/20), 15 percentage points above zero_shot_cot at 0.30; "
            "the interval is 25.8% to 65.8%. Temperature 0.7 was used.")
    res = check_claims(text, RECORDS, extra_values=[0.7])
    assert res.text == text
    assert all(c.status == "ok" for c in res.claims)


def test_ratio_and_difference_mismatch():
    res = check_claims("It solved 12/20 problems. The gain was 30 percentage points.", RECORDS)
    assert res.text == ""
    assert {c.status for c in res.claims} == {"removed"}


def test_rounding_tolerance_follows_written_precision():
    assert check_claims("zero_shot_cot: 30%.", RECORDS).claims[0].status == "ok"
    assert check_claims("zero_shot_cot: 31%.", RECORDS).claims[0].status == "fixed"


def test_verify_draft_covers_every_section():
    draft = {"title": "A 99% solution", "abstract": "self_consistency gets 45%.", "introduction": "We get 45%.",
             "method": "",
             "discussion": "It is 88% better.", "conclusion": ""}
    clean, claims = verify_draft(draft, RECORDS, None)
    assert "99%" not in clean["title"] and "88%" not in clean["discussion"]
    assert clean["abstract"] == "self_consistency gets 45%."
    assert clean["introduction"] == ""  # a number no technique owns (unbound) is not published
    assert {c["section"] for c in claims if c["status"] != "ok"} == {"title", "introduction", "discussion"}
    assert {c["verdict"] for c in claims if c["section"] == "introduction"} == {"unbound"}


# -- agentlab report check (typer CliRunner) ------------------------------------------------------

REPORT = [
    {"record_id": "ra", "job_id": "ja", "technique": "plan_and_solve", "split": "report", "accuracy": 0.55, "n": 20,
     "correct": 11, "ci_low": 0.342, "ci_high": 0.742, "tokens_per_problem": 210.0},
    {"record_id": "rb", "job_id": "jb", "technique": "zero_shot_cot", "split": "report", "accuracy": 0.45, "n": 20,
     "correct": 9, "ci_low": 0.258, "ci_high": 0.658, "tokens_per_problem": 150.0},
    {"record_id": "da", "job_id": "jc", "technique": "plan_and_solve", "split": "dev", "accuracy": 0.60, "n": 20,
     "correct": 12, "ci_low": 0.387, "ci_high": 0.781, "tokens_per_problem": 200.0},
]
COMPARISON = {"n": 20, "wins": 4, "losses": 2, "delta": 0.10, "p_value": 0.6875, "record_a": "ra", "record_b": "rb"}


def _paper(abstract: str, discussion: str = "The table shows the measured accuracies.") -> str:
    from agentlab.lab.report.tables import comparison_text, results_table

    return "\n".join([
        "# Plan-and-solve for arithmetic", "", "*Lab:* lab · *Run:* `r1` · *Goal:* arithmetic", "",
        "## Abstract", "", abstract, "", "## 1 Introduction", "", "Small models make slips.", "",
        "## 2 Related work", "", "- [p1] *Earlier*: it reached 99% on everything.", "",
        "## 3 Method", "", "We plan first.", "", "```json", '{"sampling": {"temperature": 0.7}}', "```", "",
        "## 4 Results", "", ("Benchmark `gsm8k`; the technique was tuned on a dev split of 20 problems and evaluated "
                             "once, with the baseline, on a held-out report split. Every number in this table comes "
                             "from an evaluation record of the harness."), "",
        results_table(REPORT[:2]), comparison_text(COMPARISON), "", "### Dev-split experiments", "",
        results_table(REPORT[2:]), "## 5 Discussion", "", discussion, "", "## 6 Conclusion", "", "Planning helps.",
        "", "## Provenance", "", "Records: `ra` (job `ja`)", ""])


def _run(tmp_path, markdown, records=None, *extra):
    from typer.testing import CliRunner

    from agentlab.cli import app

    (tmp_path / "paper.md").write_text(markdown)
    (tmp_path / "records.json").write_text(json.dumps({"records": REPORT if records is None else records,
                                                       "claims": [], "citations": []}))
    return CliRunner().invoke(app, ["report", "check", str(tmp_path / "paper.md"), "--records",
                                    str(tmp_path / "records.json"), *extra])


def test_report_check_passes_a_valid_paper_and_ignores_generated_content(tmp_path):
    # the results table ("95% CI"), the McNemar line, boilerplate, related work and provenance are no claims
    res = _run(tmp_path, _paper("plan_and_solve reached 55% (11/20) on the held-out split, 10 points above "
                                "zero_shot_cot; the difference is not significant (p = 0.69)."), None, "--json")
    assert res.exit_code == 0, res.output
    claims = json.loads(res.output)
    assert {c["status"] for c in claims} == {"ok"}
    assert {c["section"] for c in claims} == {"abstract"}
    assert [c["kind"] for c in claims] == ["percent", "ratio", "points", "p_value", "direction", "strength"]


def test_report_check_flags_swapped_numbers_and_exits_1(tmp_path):
    res = _run(tmp_path, _paper("plan_and_solve reached 45% while zero_shot_cot reached 55%.",
                                "plan_and_solve significantly outperforms zero_shot_cot. It got 70%."))
    assert res.exit_code == 1
    for word in ("unsupported", "unbound", "45%", "significantly", "3 unsupported, 1 unbound"):
        assert word in res.output
    res = _run(tmp_path, _paper("plan_and_solve reached 45%."), None, "--json")
    claims = json.loads(res.output)
    assert [(c["text"], c["status"]) for c in claims] == [("45%", "unsupported")]
    assert claims[0]["expected"].startswith("plan_and_solve (report): 55.0% (11/20)")


def test_report_check_unbound_claims_do_not_fail(tmp_path):
    res = _run(tmp_path, _paper("We get 55%."), None, "--json")
    assert res.exit_code == 0 and [c["status"] for c in json.loads(res.output)] == ["unbound"]


def test_report_check_missing_and_bad_files(tmp_path):
    from typer.testing import CliRunner

    from agentlab.cli import app

    res = CliRunner().invoke(app, ["report", "check", str(tmp_path / "nope.md"), "--records", str(tmp_path / "r.json")])
    assert res.exit_code == 2 and "nope.md: no such file" in res.output
    (tmp_path / "paper.md").write_text("# t")
    (tmp_path / "r.json").write_text("{not json")
    res = CliRunner().invoke(app, ["report", "check", str(tmp_path / "paper.md"), "--records", str(tmp_path / "r.json")])
    assert res.exit_code == 2 and "not a records.json file" in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_related_work_summaries_are_checked_against_the_cited_papers_own_records():
    from agentlab.lab.report.claims import verify_related_work

    cited = {"id": "p1", "title": "Voting", "results": [dict(RECORDS[0], split="report")]}
    lit = [dict(cited, summary="self_consistency reached 45% (9/20) there."),  # true of p1
           dict(cited, id="p2", summary="Voting helps. self_consistency reached 60% there."),  # p2 says 45%
           {"id": "p3", "title": "No numbers", "results": [], "summary": "zero_shot_cot reached 30% there."}]
    clean, claims = verify_related_work(lit)
    assert clean[0]["summary"] == lit[0]["summary"]
    assert "45.0% accuracy (9/20)" in clean[1]["summary"] and "60%" not in clean[1]["summary"]
    assert clean[2]["summary"] == ""  # true of this run's records, but p3 itself reports nothing
    assert [(c["section"], c["status"]) for c in claims if c["status"] != "ok"] == [
        ("related work [p2]", "fixed"), ("related work [p3]", "removed")]


def test_review_fields_go_through_the_same_checker():
    review = {"persona": "skeptic", "summary": "zero_shot_cot reached 30%.", "strength": "clear",
              "weakness": "self_consistency is said to reach 80% without support.", "overall": 6}
    clean, claims = verify_draft(review, RECORDS, None, keys=("summary", "strength", "weakness"),
                                 section="review (skeptic)")
    assert clean["summary"] == review["summary"] and clean["overall"] == 6
    assert "80%" not in clean["weakness"]
    assert {c["section"] for c in claims} == {"review (skeptic)"}
