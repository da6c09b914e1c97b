"""No hidden truncation: stop sequences in a spec's sampling, each reply's ``finish_reason`` recorded, the
replies cut at max_tokens counted in the evaluation record and shown to the agents. Against the scripted
test double (a real loopback HTTP server) that can answer with finish_reason "length"."""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from agentlab.bench import Problem
from agentlab.eval.client import ChatClient, Endpoint
from agentlab.eval.harness import run_evaluation
from agentlab.eval.records import EvalSummary, ProblemResult, ResultStore
from agentlab.eval.shared_cache import EVAL_TARGET, JobCache
from agentlab.jobs import JobSpec
from agentlab.lab.dev_evidence import dev_evidence
from agentlab.llm.cache import request_key
from agentlab.llm.transport import RetryPolicy
from agentlab.techniques import TechniqueError, TechniqueSpec, builtin_techniques, get_technique
from agents.ml_context import evidence_text

CUT_TEXT = "Let me add the numbers one at a time, starting with the first and then"


def P(i: int) -> Problem:
    return Problem(id=f"p{i}", question=f"Q{i}: what is the number {i}?", answer=str(i), benchmark="toy",
                   grader="gsm8k")


def _qnum(body: dict) -> int:
    return int(re.search(r"Q(\d+):", body["messages"][-1]["content"]).group(1))


def cut_some(cut: set[int]):
    """A script for the test double: problems in ``cut`` run out of tokens before their answer."""
    def script(body: dict) -> dict:
        i = _qnum(body)
        if i in cut:
            return {"text": CUT_TEXT, "finish_reason": "length"}
        return {"text": f"The answer is \\boxed{{{i}}}."}
    return script


def run(spec, problems, endpoint, ws, **kw):
    return run_evaluation(spec, problems, endpoint, benchmark="toy", db_path=ws / "eval.db", timeout_s=10,
                          retry=RetryPolicy(max_retries=1), **kw)


# -- the record and the agents' evidence --------------------------------------------------------------

def test_a_truncated_answer_is_counted_in_the_record_and_shown_to_the_agents(workspace, scripted_server):
    srv = scripted_server(cut_some({1, 3}))
    problems = [P(i) for i in range(4)]
    summary = run(get_technique("direct", max_tokens=128), problems, srv.endpoint, workspace)
    assert (summary.correct, summary.calls, summary.truncated, summary.max_tokens) == (2, 4, 2, 128)
    with ResultStore(workspace / "eval.db") as store:
        results = store.results(summary.run_id)
    assert [r.truncated for r in results] == [0, 1, 0, 1]
    assert [r.chains[0]["finish_reason"] for r in results] == ["stop", "length", "stop", "length"]

    text = evidence_text(dev_evidence(summary, results, problems))
    assert "2 of 4 dev answers were cut at 128 tokens (max_tokens)" in text
    wrong = [line for line in text.splitlines() if line.startswith("[")]
    assert len(wrong) == 2 and all(f"model output (cut at max_tokens): {CUT_TEXT}" in w for w in wrong)


def test_cached_completions_keep_their_finish_reason(workspace, scripted_server):
    srv = scripted_server(cut_some({0}))
    spec = get_technique("direct", max_tokens=64)
    first = run(spec, [P(0), P(1)], srv.endpoint, workspace)
    again = run(spec, [P(0), P(1)], srv.endpoint, workspace, subset="again")  # another run, same cache
    assert srv.completions() == 2 and again.cached_calls == 2
    assert first.truncated == again.truncated == 1


def test_every_call_of_a_pipeline_counts_and_a_clean_run_says_so(workspace, scripted_server):
    """self_refine: answer, critique, revision. Only the critique is cut: the answer itself ends well."""
    def script(body: dict) -> dict:
        if "Check this solution" in body["messages"][-1]["content"]:
            return {"text": "Step one looks", "finish_reason": "length"}
        return {"text": f"The answer is \\boxed{{{_qnum(body)}}}."}

    srv = scripted_server(script)
    summary = run(get_technique("self_refine"), [P(0), P(1)], srv.endpoint, workspace)
    assert (summary.calls, summary.truncated, summary.correct) == (6, 2, 2)
    clean = run(get_technique("direct", max_tokens=200), [P(0), P(1)], srv.endpoint, workspace)
    text = evidence_text(dev_evidence(clean, [], []))
    assert "no dev answer hit max_tokens (200 tokens)" in text


def test_the_litellm_path_records_finish_reason_too(scripted_server):
    srv = scripted_server(cut_some({7}))
    endpoint = Endpoint.from_litellm("openai/scripted-model", api_base=f"http://127.0.0.1:{srv.port}/v1",
                                     api_key="sk-test")

    async def ask() -> tuple[str | None, str | None]:
        client = ChatClient(endpoint, retry=RetryPolicy(max_retries=0), timeout_s=10)
        try:
            cut = await client.chat([{"role": "user", "content": "Q7: go"}], max_tokens=16)
            done = await client.chat([{"role": "user", "content": "Q2: go"}], max_tokens=16)
            return cut.finish_reason, done.finish_reason
        finally:
            await client.aclose()

    assert asyncio.run(ask()) == ("length", "stop")


def test_older_records_and_code_techniques_load_without_a_count():
    old = {"record_id": "ev-1", "run_id": "r", "benchmark": "b", "subset": "", "model": "m", "technique": "t",
           "spec_hash": "h", "n": 1, "n_planned": 1, "complete": True, "correct": 1, "accuracy": 1.0,
           "ci_low": 0.2, "ci_high": 1.0, "tokens_per_problem": 5.0, "tokens_per_correct": 5.0,
           "latency_p50_s": None, "latency_p95_s": None, "created": 0.0}
    summary = EvalSummary.model_validate(old)
    assert (summary.truncated, summary.max_tokens) == (0, None)
    assert ProblemResult.model_validate({"problem_id": "p", "idx": 0, "correct": True, "answer": "1",
                                         "gold": "1"}).truncated == 0
    assert "max_tokens" not in evidence_text(dev_evidence(summary, [], []))  # unknown: nothing claimed


def test_the_shared_cache_takes_finish_reason_from_a_job_and_still_takes_older_lines(tmp_path):
    cache = JobCache.for_job(JobSpec(kind="eval", target=EVAL_TARGET, args={
        "model_id": "gguf-sha256:aaaa", "problems": [{"id": "p0", "benchmark": "toy"}]}), tmp_path)

    def line(text: str, **extra) -> str:
        req = {"model": "m", "model_id": "gguf-sha256:aaaa", "messages": [{"role": "user", "content": text}]}
        value = {"text": text, "tokens_in": 1, "tokens_out": 1, "latency_s": 0.1, "cached": False,
                 "mean_logprob": None, **extra}
        return json.dumps({"key": request_key(req), "request": req, "value": value, "scope": "toy:p0"})

    journal = [line("a", finish_reason="length"), line("b"), line("c", finish_reason=3), line("d", extra=1)]
    accepted = cache.accept("\n".join(journal))
    assert [json.loads(value).get("finish_reason") for _, value, _, _ in accepted] == ["length", None]


# -- stop sequences in the spec -----------------------------------------------------------------------

# every built-in's hash before `sampling.stop` existed: an unset stop must leave them all unchanged
BUILTIN_HASHES = {
    "confidence_weighted": "d1573cbb3d002285", "direct": "9ab1a525b2b83a86",
    "few_shot_cot": "6cb60a6b32c2946c", "least_to_most": "6a4aebc4c7d160c6",
    "mixed_temperature_consensus": "fd93db12c43465a0", "plan_and_solve": "b43309f42e0ea726",
    "self_consistency": "7fbb9d4c8ecd07d7",
    "self_consistency_verified": "7a92b429fef29805", "self_refine": "ea94211430ef916b",
    "zero_shot_cot": "615b782aa20c44a8",
}


def test_an_unset_stop_leaves_every_builtin_specs_hash_unchanged():
    specs = builtin_techniques()
    assert {name: specs[name].spec_hash() for name in BUILTIN_HASHES} == BUILTIN_HASHES
    assert "stop" not in specs["direct"].model_dump(mode="json")["sampling"]
    no_stops = TechniqueSpec.parse({"name": "t", "sampling": {"stop": []}})
    assert no_stops.sampling.stop is None
    assert no_stops.spec_hash() == TechniqueSpec.parse({"name": "t"}).spec_hash()


def test_stop_sequences_roundtrip_and_are_part_of_the_hash():
    from preprint_server.schemas import spec_content_hash

    spec = TechniqueSpec.parse("name: t\nsampling: {max_tokens: 128, stop: [\"\\n\\nQuestion:\", \"###\"]}")
    assert spec.sampling.stop == ["\n\nQuestion:", "###"]
    assert TechniqueSpec.parse(spec.to_yaml()) == spec and TechniqueSpec.parse(spec.to_json()) == spec
    assert spec.spec_hash() != TechniqueSpec.parse({"name": "t", "sampling": {"max_tokens": 128}}).spec_hash()
    assert spec_content_hash(spec.model_dump(mode="json")) == spec.spec_hash()  # the server agrees


@pytest.mark.parametrize("stop,message", [
    (["a", "b", "c", "d", "e"], r"sampling\.stop: List should have at most 4 items"),
    (["ok", ""], r"sampling\.stop\.1: String should have at least 1 character"),
    (["x" * 65], r"sampling\.stop\.0: String should have at most 64 characters"),
    ("###", r"sampling\.stop:"),
])
def test_bad_stop_sequences_name_the_field(stop, message):
    with pytest.raises(TechniqueError, match=message):
        TechniqueSpec.parse({"name": "t", "sampling": {"stop": stop}})


def test_stop_sequences_are_sent_with_every_call_and_only_when_set(workspace, scripted_server):
    srv = scripted_server(lambda body: f"\\boxed{{{_qnum(body)}}}")
    refine = get_technique("self_refine")
    run(refine, [P(0)], srv.endpoint, workspace)
    assert srv.completions() == 3 and not any("stop" in body for body in srv.requests)
    data = refine.model_dump(mode="json")
    stopped = TechniqueSpec.parse({**data, "sampling": {**data["sampling"], "stop": ["\n\nQuestion:"]}})
    run(stopped, [P(0)], srv.endpoint, workspace)  # another request: the cache does not answer it
    assert srv.completions() == 6 and all(body["stop"] == ["\n\nQuestion:"] for body in srv.requests[3:])
