"""Harness logic against the scripted test double (a real loopback HTTP server): aggregation,
summary, cache, resume after interruption, endpoint errors, code techniques, statistics."""

from __future__ import annotations

import asyncio
import math
import re

import pytest

from agentlab.bench import Problem, load_benchmark
from agentlab.eval.client import Endpoint
from agentlab.eval.errors import EndpointError, EvalError
from agentlab.eval.harness import run_evaluation
from agentlab.eval.outputs import write_chart
from agentlab.eval.prompting import Chain, aggregate
from agentlab.eval.records import compare, load_summary
from agentlab.eval.stats import mcnemar, wilson_interval
from agentlab.llm.transport import RetryPolicy
from agentlab.techniques import TechniqueSpec, get_technique
from tests.conftest import SHARED_DATA


def P(i, answer, grader="gsm8k", **meta):
    return Problem(id=f"p{i}", question=f"Q{i}: what is the number {answer}?", answer=str(answer),
                   benchmark="toy", grader=grader, metadata=meta)


def _qnum(body) -> int:
    return int(re.search(r"Q(\d+):", body["messages"][-1]["content"]).group(1))


def run(spec, problems, endpoint, ws, **kw):
    kw.setdefault("db_path", ws / "eval.db")
    kw.setdefault("timeout_s", 10)
    kw.setdefault("retry", RetryPolicy(max_retries=1))
    return run_evaluation(spec, problems, endpoint, benchmark="toy", **kw)


# -- statistics against known values ---------------------------------------------------------------

@pytest.mark.parametrize("k,n,lo,hi", [
    (8, 10, 0.4902, 0.9433),      # textbook Wilson 95%
    (0, 10, 0.0, 0.2775),
    (10, 10, 0.7225, 1.0),
    (50, 100, 0.4038, 0.5962),
    (1, 3, 0.0615, 0.7923),
])
def test_wilson_known_values(k, n, lo, hi):
    got = wilson_interval(k, n)
    assert got[0] == pytest.approx(lo, abs=1e-4) and got[1] == pytest.approx(hi, abs=1e-4)


@pytest.mark.parametrize("b,c,p", [
    (1, 9, 0.021484375),          # 2 * (C(10,0)+C(10,1)) / 2^10
    (0, 5, 0.0625),
    (5, 5, 1.0),
    (0, 0, 1.0),
    (3, 12, 0.03515625),          # 2 * sum_{i<=3} C(15,i) / 2^15
])
def test_mcnemar_known_values(b, c, p):
    assert mcnemar(b, c) == pytest.approx(p, rel=1e-9)
    assert mcnemar(c, b) == pytest.approx(p, rel=1e-9)


@pytest.mark.requires("scipy")
def test_mcnemar_matches_scipy():
    from scipy import stats

    for b, c in [(2, 11), (7, 3), (20, 35)]:
        assert mcnemar(b, c) == pytest.approx(stats.binomtest(b, b + c, 0.5).pvalue, rel=1e-9)


# -- aggregation ------------------------------------------------------------------------------------

def test_majority_groups_graded_equivalent_answers():
    chains = [Chain("a", "0.5", 0.7), Chain("b", "3", 0.7), Chain("c", r"\frac{1}{2}", 0.7), Chain("d", "3", 0.7),
              Chain("e", "1/2", 0.7)]
    assert asyncio.run(aggregate(chains, "majority", "math")) in (0, 2, 4)
    assert chains[asyncio.run(aggregate(chains, "majority", "math"))].answer == "0.5"


def test_majority_tie_keeps_first_group_and_ignores_missing():
    chains = [Chain("a", None, 0.7), Chain("b", "7", 0.7), Chain("c", "8", 0.7)]
    assert asyncio.run(aggregate(chains, "majority", "gsm8k")) == 1


def test_weighted_vote_uses_confidence():
    lp_hi, lp_lo = math.log(0.9), math.log(0.2)
    chains = [Chain("a", "1", 0.7, lp_lo), Chain("b", "1", 0.7, lp_lo), Chain("c", "2", 0.7, lp_hi)]
    assert asyncio.run(aggregate(chains, "weighted", "gsm8k")) == 2  # 0.9 > 0.2 + 0.2
    assert asyncio.run(aggregate(chains, "majority", "gsm8k")) == 0


def test_embedding_consensus_with_injected_embedder():
    vec = {"x": [1.0, 0.0], "y": [0.9, 0.1], "z": [0.0, 1.0]}
    chains = [Chain("z", "5", 1.2), Chain("x", "4", 0.0), Chain("y", "4", 0.6)]
    idx = asyncio.run(aggregate(chains, "embedding_consensus", "gsm8k", lambda ts: [vec[t] for t in ts]))
    assert chains[idx].answer == "4"


# -- end to end against the test double --------------------------------------------------------------

def test_self_consistency_majority_end_to_end(workspace, scripted_server):
    # chain seed s: chains 0,1 wrong for odd problems; majority of 5 is right for every problem
    def script(body):
        q, seed = _qnum(body), body["seed"]
        right = q * 10
        return f"Reasoning... The answer is {right if seed >= 2 or q % 2 == 0 else right + 1}."

    srv = scripted_server(script)
    problems = [P(i, i * 10, level=str(1 + i % 2), subject="toy") for i in range(6)]
    s = run(get_technique("self_consistency", k=5), problems, srv.endpoint, workspace, concurrency=3)
    assert (s.n, s.correct, s.complete) == (6, 6, True)
    assert srv.completions() == 30
    assert {r["seed"] for r in srv.requests} == {0, 1, 2, 3, 4}
    assert all(r["temperature"] == 0.7 for r in srv.requests)
    assert set(s.breakdown["level"]) == {"1", "2"} and s.breakdown["level"]["1"].n == 3
    assert s.tokens_per_problem > 0 and s.latency_p50_s is not None
    # first-chain aggregation on the same script gets the odd problems wrong
    first = run(get_technique("zero_shot_cot"), problems, srv.endpoint, workspace)
    assert first.correct == 3
    c = compare(s, first, db_path=workspace / "eval.db")
    assert (c.wins, c.losses, c.n_paired) == (3, 0, 6)
    assert c.p_value == pytest.approx(0.25)


def test_rerun_costs_nothing_and_ids_are_stable(workspace, scripted_server):
    srv = scripted_server(lambda b: f"#### {_qnum(b)}")
    problems = [P(i, i) for i in range(4)]
    s1 = run(get_technique("zero_shot_cot"), problems, srv.endpoint, workspace)
    assert srv.completions() == 4 and s1.accuracy == 1.0
    s2 = run(get_technique("zero_shot_cot"), problems, srv.endpoint, workspace)
    assert srv.completions() == 4  # resumed: every problem already has a result
    assert s2.record_id == s1.record_id and s2.run_id == s1.run_id
    assert load_summary(s1.record_id, db_path=workspace / "eval.db").run_id == s1.run_id
    # a fresh run of the same requests is served by the completion cache
    s3 = run(get_technique("zero_shot_cot"), problems, srv.endpoint, workspace, job_id="job-7")
    assert srv.completions() == 4 and s3.job_id == "job-7"
    other = run(get_technique("zero_shot_cot"), problems[:3], srv.endpoint, workspace)
    assert other.run_id != s1.run_id and srv.completions() == 4  # new run, cached completions


def test_resume_after_interruption(workspace, scripted_server):
    srv = scripted_server(lambda b: f"The answer is {_qnum(b)}")
    problems = [P(i, i) for i in range(8)]
    spec = get_technique("zero_shot_cot")

    class Killed(Exception):
        pass

    def kill_after_three(res, done, correct, total):
        if done == 3:
            raise Killed()

    with pytest.raises(Killed):
        run(spec, problems, srv.endpoint, workspace, concurrency=1, on_result=kill_after_three, cache=False)
    assert srv.completions() == 3
    s = run(spec, problems, srv.endpoint, workspace, concurrency=1, cache=False)
    assert srv.completions() == 8  # only the 5 unfinished problems were asked
    assert (s.n, s.correct, s.complete) == (8, 8, True)


def test_endpoint_down_is_clear_and_resumable(workspace, scripted_server):
    srv = scripted_server(lambda b: f"The answer is {_qnum(b)}")
    port = srv.port
    problems = [P(i, i) for i in range(5)]
    spec = get_technique("zero_shot_cot")
    run(spec, problems[:2], srv.endpoint, workspace)  # warm the cache for two problems
    srv.stop()
    # the two problems the cache answers are saved without the endpoint; the first one it must ask for fails
    with pytest.raises(EndpointError, match=r"not reachable.*2 of 5 problems are saved.*resume"):
        run(spec, problems, srv.endpoint, workspace)
    srv2 = scripted_server(lambda b: f"The answer is {_qnum(b)}", port=port)
    s = run(spec, problems, srv2.endpoint, workspace)
    assert s.n == 5 and s.correct == 5 and srv2.completions() == 3


def test_server_errors_mid_run_stop_with_saved_progress(workspace, scripted_server):
    srv = scripted_server(lambda b: f"The answer is {_qnum(b)}")
    problems = [P(i, i) for i in range(4)]
    spec = get_technique("zero_shot_cot")
    srv.fail_status = 503
    with pytest.raises(EndpointError, match=r"failing after 2 attempt\(s\).*HTTP 503"):
        run(spec, problems, srv.endpoint, workspace, concurrency=1, cache=False)
    srv.fail_status = None
    assert run(spec, problems, srv.endpoint, workspace, cache=False).correct == 4


def test_http_400_counts_as_an_error_not_a_crash(workspace, scripted_server):
    srv = scripted_server(lambda b: "x")
    srv.fail_status = 400
    s = run(get_technique("zero_shot_cot"), [P(0, 1), P(1, 2)], srv.endpoint, workspace)
    assert s.n == 2 and s.errors == 2 and s.correct == 0


def test_a_spent_proxy_budget_is_final_not_retried(workspace, scripted_server):
    srv = scripted_server(lambda b: "x")
    srv.fail_status, srv.fail_body = 429, {"error": {"type": "budget_exhausted", "message": "token budget exhausted"}}
    s = run(get_technique("direct"), [P(0, 1)], srv.endpoint, workspace, retry=RetryPolicy(max_retries=3))
    assert s.errors == 1 and "budget_exhausted" in run_results(workspace, s)[0].error
    assert len(srv.requests) == 1  # a plain 429 would have been tried 4 times


def run_results(ws, summary):
    from agentlab.eval.records import ResultStore

    with ResultStore(ws / "eval.db") as store:
        return store.results(summary.run_id)


def test_pipeline_techniques_send_their_steps(workspace, scripted_server):
    def script(body):
        text = body["messages"][-1]["content"]
        if "subquestions that lead" in text:
            return "1. What is the number?"
        if "Check this solution" in text:
            return "The solution is wrong; the answer should be the number itself."
        if "Feedback:" in text:
            return f"Corrected: the answer is {_qnum(body) + 1}."
        return "The answer is 0."

    srv = scripted_server(script)
    problems = [P(i, i + 1) for i in range(2)]
    ltm = run(get_technique("least_to_most"), problems, srv.endpoint, workspace)
    assert srv.completions() == 4 and "What is the number?" in srv.requests[-1]["messages"][-1]["content"]
    assert ltm.correct == 0
    refine = run(get_technique("self_refine"), problems, srv.endpoint, workspace)
    assert refine.correct == 2  # the revision fixes the answer
    assert srv.completions() == 4 + 6


def test_confidence_weighted_requests_logprobs(workspace, scripted_server):
    def script(body):
        q, seed = _qnum(body), body["seed"]
        if seed == 4:
            return {"text": f"The answer is {q}", "logprob": math.log(0.95)}
        return {"text": f"The answer is {q + 1}", "logprob": math.log(0.1)}

    srv = scripted_server(script)
    s = run(get_technique("confidence_weighted"), [P(i, i) for i in range(3)], srv.endpoint, workspace)
    assert all(r.get("logprobs") for r in srv.requests)
    assert s.correct == 3  # one confident chain outweighs four unsure ones


def test_mixed_temperatures_are_sent(workspace, scripted_server):
    srv = scripted_server(lambda b: f"The answer is {_qnum(b)}")
    run(get_technique("mixed_temperature_consensus", k=3), [P(0, 0)], srv.endpoint, workspace,
        embedder=lambda ts: [[1.0, float(i)] for i, _ in enumerate(ts)])
    assert sorted(r["temperature"] for r in srv.requests) == [0.0, 0.6, 1.2]


def test_chart_is_written(workspace, scripted_server, tmp_path):
    srv = scripted_server(lambda b: f"The answer is {_qnum(b)}")
    problems = [P(i, i if i % 3 else -1, level=str(i % 3 + 1)) for i in range(6)]
    a = run(get_technique("zero_shot_cot"), problems, srv.endpoint, workspace)
    b = run(get_technique("plan_and_solve"), problems, srv.endpoint, workspace)
    png = write_chart(a, tmp_path / "acc.png", baseline=b)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- bad input ------------------------------------------------------------------------------------

def test_code_technique_refused_outside_sandbox(workspace, scripted_server):
    spec = TechniqueSpec.parse({"name": "mine", "kind": "code",
                                "code": "def solve(problem, client):\n    return '42'\n"})
    srv = scripted_server(lambda b: "")
    with pytest.raises(EvalError, match="runs only in the sandbox"):
        run(spec, [P(0, 42)], srv.endpoint, workspace)
    assert srv.completions() == 0


def test_code_technique_with_a_code_solver(workspace, scripted_server):
    spec = TechniqueSpec.parse({"name": "mine", "kind": "code", "code": "def solve(problem, client):\n    return '42'\n"})

    class FakeSandbox:  # TEST DOUBLE for the sandbox package's runner
        async def solve(self, spec, problem, endpoint):
            return f"#### {problem.answer}", 3

    srv = scripted_server(lambda b: "")
    s = run(spec, [P(0, 42), P(1, 7)], srv.endpoint, workspace, code_solver=FakeSandbox())
    assert s.correct == 2


def test_unknown_run_and_empty_subset(workspace):
    with pytest.raises(EvalError, match="no problems"):
        run(get_technique("direct"), [], Endpoint.openai("http://x", "m"),
            workspace)
    from agentlab.eval.records import ResultStore

    store = ResultStore(workspace / "eval.db")
    with pytest.raises(EvalError, match="no evaluation run"):
        store.resolve("run-nope")


def test_real_benchmark_problems_flow(workspace, scripted_server):
    problems = load_benchmark("math500", SHARED_DATA, limit=3)
    answers = {p.question: p.answer for p in problems}
    srv = scripted_server(lambda b: "So we get $\\boxed{" + next(a for q, a in answers.items()
                                                                  if q in b["messages"][-1]["content"]) + "}$")
    s = run(get_technique("few_shot_cot"), problems, srv.endpoint, workspace)
    assert s.correct == 3 and "subject" in s.breakdown and "level" in s.breakdown
