"""A fair prior best: the published result a lab is held to matches its benchmark, problem population and model
(by weights hash), comes from enough report-split problems or a replication, and is ranked by the lower bound of
its confidence interval, not by raw accuracy. Real preprint server on loopback, papers published through its client."""

from __future__ import annotations

from agentlab.eval.stats import wilson_interval
from agentlab.lab.outbox import Outbox
from agentlab.lab.publishing import Publisher
from agentlab.techniques import get_technique
from preprint_server.client import PreprintClient

BENCH, MODEL, WEIGHTS = "basic_arithmetic", "smollm2", "gguf-sha256:1111111111111111"
OURS = "split=report(0.3) first=200"  # this run's report split


def _publish(preprint, technique: str, n: int, correct: int, *, subset: str = "split=report(0.3) first={n}",
             model_id: str = WEIGHTS, max_tokens: int = 100) -> tuple[str, dict]:
    """A paper with one ranked report-split result of ``technique`` and its full spec; (paper id, the record)."""
    spec = get_technique("zero_shot_cot", max_tokens=max_tokens).model_copy(update={"name": technique})
    low, high = wilson_interval(correct, n)
    record = {"benchmark": BENCH, "subset": subset.format(n=n), "model": MODEL, "model_id": model_id,
              "technique": technique, "spec_hash": spec.spec_hash(), "n": n, "correct": correct,
              "accuracy": correct / n, "ci_low": low, "ci_high": high, "split": "report",
              "job_id": f"job-{technique}", "record_id": f"rec-{technique}"}
    with PreprintClient(preprint["url"], api_key=preprint["key"]) as c:
        paper = c.publish({"title": f"{technique} on arithmetic", "abstract": "A measured technique.", "body": "-",
                           "results": [record], "techniques": [{"name": technique, "spec_hash": spec.spec_hash(),
                                                                "spec": spec.model_dump(mode="json"),
                                                                "record_ids": [record["record_id"]]}]})
    return paper.id, record


def _prior(preprint, model_id: str = WEIGHTS) -> dict | None:
    pub = Publisher(preprint["url"], preprint["key"], Outbox(preprint["data_dir"].parent / "lab"), "test-lab")
    try:
        return pub.prior_best(BENCH, OURS, MODEL, model_id, min_n=100)
    finally:
        pub.close()


def test_the_prior_best_is_a_fair_bar_not_a_lucky_one(preprint):
    _publish(preprint, "lucky", 5, 5, max_tokens=101)  # 100%, but n = 5: never the bar
    _publish(preprint, "other_weights", 400, 390, model_id="gguf-sha256:2222222222222222", max_tokens=102)
    _publish(preprint, "easier_problems", 400, 396, subset="levels=1 split=report(0.3) first={n}", max_tokens=103)
    _publish(preprint, "wide", 100, 80, max_tokens=104)  # 80.0%, CI from 71.1%
    _publish(preprint, "tight", 1000, 780, max_tokens=105)  # 78.0%, CI from 75.3%: a lower accuracy, a surer one
    assert wilson_interval(80, 100)[0] < wilson_interval(780, 1000)[0]
    prior = _prior(preprint)
    assert prior is not None and prior["technique"] == "tight"  # ranked by ci_low among the qualifying ones
    assert prior["n"] == 1000 and prior["ci_low"] == wilson_interval(780, 1000)[0] and prior["replications"] == 0
    assert prior["spec"]["name"] == "tight"  # re-runnable exactly
    # other weights match nothing here; an endpoint identity says nothing of the weights: the name decides
    assert _prior(preprint, "gguf-sha256:3333333333333333") is None
    assert _prior(preprint, "endpoint:abcdef")["technique"] == "other_weights"


def test_a_replicated_small_result_qualifies_and_competes_on_its_lower_bound(preprint):
    from agentlab.lab.local_server import lab_key

    _publish(preprint, "tight", 1000, 780, max_tokens=105)  # CI from 75.3%
    small_id, small = _publish(preprint, "small_but_checked", 40, 38, max_tokens=106)  # 95%, CI from 83.5%
    assert _prior(preprint)["technique"] == "tight"  # n = 40 alone does not qualify
    other = lab_key(preprint["data_dir"], "other-lab")  # a second lab re-runs it: the authors never count
    with PreprintClient(preprint["url"], api_key=other) as c:
        out = c.replicate(small_id, {**small, "correct": 37, "accuracy": 37 / 40, "ci_low": None, "ci_high": None,
                                     "job_id": "job-rep", "record_id": "rec-rep"})
    assert out.verdict == "consistent"
    prior = _prior(preprint)
    assert prior["technique"] == "small_but_checked" and prior["replications"] == 1 and prior["n"] == 40
