"""Adversarial claim table: wrong sentences the checker must reject, correct ones it must accept.

``WRONG`` and ``RIGHT`` are also read by ``benchmarks/bench_claims.py`` (false accepts, false rejects). Each row
ends with the number of claims the checker must find in its sentence: "every claim ok" also holds when none was
read, so a checker that reads nothing would pass every correct sentence without it.
Fixture A: plan_and_solve 55% vs zero_shot_cot 45% on the report split (McNemar p = 0.29), other values on
dev; fixture B: few_shot_cot 75% vs zero_shot_cot 30% (p = 0.0039).
"""

from __future__ import annotations

import pytest

from agentlab.lab.report.claims import check_claims


def _rec(tech, split, correct, n, lo, hi, rid, tokens=None):
    return {"record_id": rid, "technique": tech, "split": split, "n": n, "correct": correct,
            "accuracy": correct / n, "ci_low": lo, "ci_high": hi, "tokens_per_problem": tokens}


FIXTURES = {
    "A": ([_rec("plan_and_solve", "report", 11, 20, 0.342, 0.742, "ra", tokens=412.3),
           _rec("zero_shot_cot", "report", 9, 20, 0.258, 0.658, "rb", tokens=1980.0),
           _rec("plan_and_solve", "dev", 12, 20, 0.387, 0.781, "da"),
           _rec("zero_shot_cot", "dev", 8, 20, 0.219, 0.613, "db"),
           _rec("self_consistency", "dev", 6, 20, 0.145, 0.519, "dc")],
          {"n": 20, "wins": 4, "losses": 2, "delta": 0.10, "p_value": 0.29, "record_a": "ra", "record_b": "rb"}),
    "B": ([_rec("few_shot_cot", "report", 15, 20, 0.531, 0.888, "rc"),
           _rec("zero_shot_cot", "report", 6, 20, 0.145, 0.519, "rd")],
          {"n": 20, "wins": 10, "losses": 1, "delta": 0.45, "p_value": 0.0039, "record_a": "rc", "record_b": "rd"}),
}
EXTRA = [0.7, 1.0, 256.0]  # temperature, top_p, max_tokens of the specs

WRONG = [  # (fixture, sentence, what is wrong, claims found)
    ("A", "zero_shot_cot reached 55% while plan_and_solve reached 45%.", "swapped numbers", 2),
    ("A", "Accuracy was 45% for plan_and_solve and 55% for zero_shot_cot.", "swapped, number before name", 2),
    ("A", "plan_and_solve reached 55% and zero_shot_cot reached 55%.", "second number wrong", 2),
    ("A", "plan_and_solve reached 45% on the held-out split.", "the other technique's number", 1),
    ("A", "plan_and_solve reached 60% on the held-out split.", "dev number as report", 1),
    ("A", "plan_and_solve reached 60%.", "dev number, no split named (report by default)", 1),
    ("A", "On the dev split, plan_and_solve reached 55%.", "report number as dev", 1),
    ("A", "On the development split, zero_shot_cot reached 45%.", "report number as dev", 1),
    ("A", "zero_shot_cot solved 11/20 problems.", "the other technique's count", 1),
    ("A", "zero_shot_cot solved 11 out of 20 problems.", "the other technique's count", 1),
    ("A", "plan_and_solve answered 12 of 20 held-out problems correctly.", "dev count as report", 1),
    ("A", "plan_and_solve reached 55% (12/20).", "wrong count", 2),
    ("A", "plan_and_solve improves on zero_shot_cot by 20 percentage points.", "dev difference as report", 2),
    ("A", "plan_and_solve beats zero_shot_cot by 15 points.", "difference across splits", 2),
    ("A", "plan_and_solve gained ten points over zero_shot_cot on the dev split.", "report difference as dev", 1),
    ("A", "plan_and_solve improves on zero_shot_cot by 30%.", "neither points nor relative", 2),
    ("A", "plan_and_solve improves on zero_shot_cot by 22 percentage points.", "relative change as points", 2),
    ("A", "plan_and_solve is 2x as accurate as zero_shot_cot.", "fold", 1),
    ("A", "plan_and_solve is 1.5-fold better than zero_shot_cot on the held-out split.", "fold", 2),
    ("A", "plan_and_solve doubled the accuracy of zero_shot_cot.", "fold in words", 1),
    ("A", "plan_and_solve reached fifty percent.", "words for numbers", 1),
    ("A", "plan_and_solve solved nineteen of twenty problems.", "words for counts", 1),
    ("A", "plan_and_solve's 95% confidence interval is 30% to 74%.", "CI bound", 2),
    ("A", "The interval for zero_shot_cot spans 34.2% to 74.2%.", "the other technique's CI", 2),
    ("A", "zero_shot_cot reached 0.55 accuracy.", "decimal of the other technique", 1),
    ("A", "plan_and_solve reached 0.45 accuracy on the report split.", "decimal of the other technique", 1),
    ("A", "plan-and-solve prompting reached 45%.", "name written with hyphens", 1),
    ("A", "plan_and_solve significantly outperforms zero_shot_cot.", "significance with p = 0.29", 2),
    ("A", "plan_and_solve outperforms zero_shot_cot (p = 0.03).", "wrong p-value", 2),
    ("A", "The difference between plan_and_solve and zero_shot_cot is significant at p < 0.05.", "wrong p bound", 2),
    ("A", "zero_shot_cot outperforms plan_and_solve on the held-out split.", "wrong direction", 1),
    ("A", "plan_and_solve is worse than zero_shot_cot.", "wrong direction", 1),
    ("A", "There was no significant difference between plan_and_solve and zero_shot_cot on the dev split.",
     "no test on the dev split", 2),
    ("A", "self_consistency reached 30% on the held-out split.", "no report record", 1),
    ("A", "Our technique reached 45% on the held-out split.", "role bound to the technique", 1),
    ("A", "The baseline reached 55%.", "role bound to the baseline", 1),
    ("A", "The technique reached 97.5% accuracy on every subset.", "invented number", 1),
    ("A", "The results table shows plan_and_solve at 40%.", "another record's dev number", 1),
    ("A", "Our method reaches 92.5% accuracy.", "invented number", 1),
    ("B", "few_shot_cot reached 30% while zero_shot_cot reached 75%.", "swapped numbers", 2),
    ("B", "There was no significant difference between few_shot_cot and zero_shot_cot.", "p = 0.0039", 2),
    ("B", "few_shot_cot is 3-fold more accurate than zero_shot_cot.", "fold 2.5 as 3", 2),
    ("B", "few_shot_cot outperforms zero_shot_cot by 40 percentage points.", "wrong difference", 2),
    ("B", "few_shot_cot is significantly worse than zero_shot_cot.", "wrong direction", 2),
    ("B", "The difference is significant (p = 0.04).", "wrong p-value", 2),
    ("B", "zero_shot_cot was outperformed by few_shot_cot by 45 points, p > 0.05.", "wrong p bound", 3),
    ("B", "few_shot_cot solved ninety percent of the problems.", "words for numbers", 1),
    ("B", "zero_shot_cot solved half of the problems.", "half", 1),
    ("B", "The baseline reached 75%.", "role bound to the baseline", 1),
    ("A", "plan_and_solve used 1,980 tokens per problem.", "the other technique's token count", 1),
    ("A", "zero_shot_cot used 412 tokens per problem while plan_and_solve used about 2k tokens.", "swapped tokens", 2),
    ("A", "plan_and_solve needed only 300 tokens per problem.", "invented token count", 1),
    ("A", "plan_and_solve and zero_shot_cot reached 45% and 55%, respectively.", "swapped, respectively", 2),
    ("A", "plan_and_solve and zero_shot_cot solved 9/20 and 11/20 problems, respectively.", "swapped counts", 2),
]

RIGHT = [  # (fixture, sentence, claims found)
    ("A", "plan_and_solve used 412 tokens per problem while zero_shot_cot used about 2k tokens.", 2),
    ("A", "zero_shot_cot spent 1,980 tokens per problem on the held-out split.", 1),
    ("A", "Each answer was capped at 256 tokens.", 1),
    ("A", "plan_and_solve and zero_shot_cot reached 55% and 45%, respectively.", 2),
    ("A", "The accuracies of plan_and_solve and zero_shot_cot were 55% (11/20) and 45% (9/20), respectively.", 4),
    ("A", "plan_and_solve reached 55% while zero_shot_cot reached 45%.", 2),
    ("A", "plan_and_solve reached 55.0% (11/20) on the held-out split.", 2),
    ("A", "zero_shot_cot solved 9 out of 20 held-out problems.", 1),
    ("A", "On the dev split, plan_and_solve reached 60% and zero_shot_cot 40%.", 2),
    ("A", "plan_and_solve improves on zero_shot_cot by 10 percentage points.", 2),
    ("A", "plan_and_solve is 10 points above zero_shot_cot on the held-out split.", 2),
    ("A", "plan_and_solve improves on zero_shot_cot by 22% relative.", 2),
    ("A", "plan_and_solve's 95% confidence interval is 34.2% to 74.2%.", 2),
    ("A", "The difference between plan_and_solve and zero_shot_cot is not significant (p = 0.29).", 2),
    ("A", "There was no significant difference between plan_and_solve and zero_shot_cot.", 2),
    ("A", "Accuracy was 55% for plan_and_solve and 45% for zero_shot_cot.", 2),
    ("A", "plan_and_solve reached fifty-five percent.", 1),
    ("A", "zero_shot_cot solved nine of twenty problems.", 1),
    ("A", "On the development split, plan_and_solve solved 12/20 problems.", 1),
    ("A", "plan_and_solve outperforms zero_shot_cot on the dev split by 20 points.", 2),
    ("A", "Our technique reached 55% and the baseline 45%.", 2),
    ("A", "zero_shot_cot is outperformed by plan_and_solve.", 1),
    ("A", "zero_shot_cot reached 0.45 accuracy.", 1),
    ("A", "plan_and_solve's accuracy of 0.55 lies within its interval 0.34 to 0.74.", 2),
    ("A", "self_consistency reached 30% on the dev split.", 1),
    ("A", "self_consistency reached 30%.", 1),
    ("A", "plan_and_solve did not significantly outperform zero_shot_cot (p = 0.29).", 2),
    ("A", "plan_and_solve is about 1.2x as accurate as zero_shot_cot.", 1),
    ("A", "We used temperature 0.7 for sampling.", 1),
    ("A", "plan-and-solve prompting reached 55% on the held-out split.", 1),
    ("A", "zero_shot_cot's interval spans 25.8% to 65.8%.", 2),
    ("A", "plan_and_solve reached 60% on the dev split but 55% on the held-out split.", 2),
    ("A", "zero_shot_cot reached 45% (CI 25.8% to 65.8%).", 3),
    ("A", "zero_shot_cot, the baseline, reached 45% on the held-out split.", 1),
    ("A", "The gap between plan_and_solve and zero_shot_cot was 10 points on the held-out split and 20 points "
          "on the dev split.", 2),
    ("A", "Both techniques were evaluated on the same held-out problems.", 0),
    ("A", "plan_and_solve reached 55.0% accuracy (11/20) on the report split.", 2),
    ("B", "few_shot_cot significantly outperforms zero_shot_cot (p = 0.004).", 3),
    ("B", "few_shot_cot is 2.5 times as accurate as zero_shot_cot.", 1),
    ("B", "few_shot_cot is 2.5-fold better than zero_shot_cot.", 2),
    ("B", "few_shot_cot improves on zero_shot_cot by 45 percentage points (p < 0.01).", 3),
    ("B", "few_shot_cot reached 75% (15/20) while zero_shot_cot reached 30% (6/20).", 4),
    ("B", "zero_shot_cot is significantly worse than few_shot_cot.", 2),
    ("B", "few_shot_cot solved fifteen out of twenty problems.", 1),
    ("B", "The difference is statistically significant (p = 0.0039).", 2),
    ("B", "few_shot_cot more than doubles the accuracy of zero_shot_cot.", 1),
    ("B", "few_shot_cot outperforms the baseline by 45 points.", 2),
    ("B", "The baseline reached 30%.", 1),
    ("B", "Our technique answered 75% of held-out problems correctly.", 1),
    ("B", "few_shot_cot reached seventy-five percent accuracy.", 1),
    ("B", "zero_shot_cot's 30% is 45 points below few_shot_cot's 75%.", 4),
    ("B", "few_shot_cot improves accuracy by 150% relative to zero_shot_cot.", 2),
]


def judge(fixture: str, sentence: str) -> list:
    records, comparison = FIXTURES[fixture]
    return check_claims(sentence, records, comparison, EXTRA, fix=False).claims


def accepted(claims: list) -> bool:
    return all(c.status == "ok" for c in claims)


def test_table_sizes():
    assert len(WRONG) >= 40 and len(RIGHT) >= 40
    assert sum(found for *_, found in RIGHT) >= len(RIGHT)  # the correct sentences carry claims to check


@pytest.mark.parametrize("fixture,sentence,why,found", WRONG, ids=[w[1][:50] for w in WRONG])
def test_wrong_sentence_is_rejected(fixture, sentence, why, found):
    claims = judge(fixture, sentence)
    assert len(claims) == found, [(c.kind, c.text) for c in claims]
    assert not accepted(claims), f"accepted ({why}): {[(c.text, c.status) for c in claims]}"


@pytest.mark.parametrize("fixture,sentence,found", RIGHT, ids=[r[1][:50] for r in RIGHT])
def test_correct_sentence_passes(fixture, sentence, found):
    claims = judge(fixture, sentence)
    assert len(claims) == found, [(c.kind, c.text) for c in claims]
    assert accepted(claims), [(c.text, c.status, c.expected) for c in claims]


def test_fixing_never_substitutes_another_records_value():
    # the old fix wrote the dev accuracy (60%) of the best technique into a held-out claim
    records, comparison = FIXTURES["A"]
    res = check_claims("plan_and_solve reached 71% on the held-out split.", records, comparison)
    assert res.text == "plan_and_solve reached 55.0% accuracy (11/20) on the report split."
    res = check_claims("zero_shot_cot reached 55% while plan_and_solve reached 45%. Done.", records, comparison)
    assert res.text == "Done." and {c.status for c in res.claims} == {"removed"}
    assert all(c.note for c in res.claims)
