"""The claim checker: numbers in prose must match harness records."""

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
