"""Per-chain prompts (``chains.templates``) and the verifier / judge step (``verifier``): validation, hashing,
serialization, and their execution by the harness against the scripted test double (a loopback HTTP server)."""

from __future__ import annotations

import json
import re

import pytest

from agentlab.eval.harness import run_evaluation
from agentlab.eval.records import ResultStore
from agentlab.llm.transport import RetryPolicy
from agentlab.techniques import TechniqueError, TechniqueSpec, apply_overrides, get_technique, parse_verdict

SPEC_YAML = """
name: verified_personas
template: "{question}\\n\\n{answer_instruction}"
sampling: {temperature: 0.7, max_tokens: 256}
chains:
  n: 3
  aggregation: majority
  templates:
    - "A: {question}\\nSolve it algebraically. {answer_instruction}"
    - "B: {question}\\nSolve it by working backwards. {answer_instruction}"
    - "C: {question}\\nSolve it step by step. {answer_instruction}"
verifier:
  template: "JUDGE {question}\\n---\\n{answer}\\nEnd with VERDICT: correct or VERDICT: incorrect."
  max_tokens: 128
"""


def P(i, answer):
    from agentlab.bench import Problem

    return Problem(id=f"p{i}", question=f"Q{i}: what is the number {answer}?", answer=str(answer), benchmark="toy",
                   grader="gsm8k")


def _qnum(text: str) -> int:
    return int(re.search(r"Q(\d+):", text).group(1))


def _prompt(body) -> str:
    return body["messages"][-1]["content"]


def run(spec, problems, endpoint, ws, **kw):  # no completion cache: every call reaches the test double
    return run_evaluation(spec, problems, endpoint, benchmark="toy", db_path=ws / "eval.db", timeout_s=10,
                          retry=RetryPolicy(max_retries=1), cache=False, **kw)


def results(ws, summary):
    with ResultStore(ws / "eval.db") as store:
        return store.results(summary.run_id)


def _judge_by_gold(body) -> str:
    """A judge that knows the answer: accepts a solution whose number equals the question's number."""
    prompt = _prompt(body)
    claimed = int(re.search(r"The answer is (\d+)", prompt).group(1))
    if claimed == _qnum(prompt):
        return "Rechecked every step.\n**Verdict:** Correct"
    return "The arithmetic in the last step is off.\nVERDICT: incorrect"


# -- the spec language ------------------------------------------------------------------------------

def test_yaml_spec_with_templates_and_verifier_roundtrips_and_hashes_its_content():
    spec = TechniqueSpec.parse(SPEC_YAML)
    assert len(spec.chains.templates) == 3 and spec.verifier.max_tokens == 128
    assert spec.verifier.on_reject == "keep" and spec.verifier.temperature == 0.0
    assert TechniqueSpec.parse(spec.to_yaml()) == spec and TechniqueSpec.parse(spec.to_json()) == spec
    assert TechniqueSpec.parse(spec.to_yaml()).spec_hash() == spec.spec_hash()
    data = spec.model_dump(mode="json")
    variants = {
        "no templates": {**data, "chains": {**data["chains"], "templates": None}},
        "other template": {**data, "chains": {**data["chains"],
                                              "templates": [*data["chains"]["templates"][:2], "D: {question}"]}},
        "no verifier": {k: v for k, v in data.items() if k != "verifier"},
        "other judge prompt": {**data, "verifier": {**data["verifier"], "template": "Judge: {question} {answer}"}},
        "revise on reject": {**data, "verifier": {**data["verifier"], "on_reject": "revise"}},
    }
    hashes = {name: TechniqueSpec.parse(d).spec_hash() for name, d in variants.items()}
    assert spec.spec_hash() not in hashes.values() and len(set(hashes.values())) == len(variants)
    assert TechniqueSpec.parse({**data, "name": "renamed"}).spec_hash() == spec.spec_hash()


def test_unset_new_fields_leave_older_specs_and_the_servers_hash_unchanged():
    from preprint_server.schemas import spec_content_hash

    old = get_technique("self_consistency")
    dumped = old.model_dump(mode="json")
    assert "verifier" not in dumped and "templates" not in dumped["chains"]
    assert old.spec_hash() == "7fbb9d4c8ecd07d7"  # the hash pinned before these fields existed
    for spec in (TechniqueSpec.parse(SPEC_YAML), get_technique("self_consistency_verified")):
        assert spec_content_hash(spec.model_dump(mode="json")) == spec.spec_hash()


@pytest.mark.parametrize("patch,message", [
    ({"chains": {"n": 3, "aggregation": "majority", "templates": ["{question}", "{question}"]}},
     r"chains: templates has 2 prompts but n is 3"),
    ({"chains": {"n": 2, "aggregation": "majority", "templates": ["{question}", "Solve it."]}},
     r"chains\.templates\[1\] must contain \{question\}"),
    ({"chains": {"n": 2, "aggregation": "majority", "templates": ["{question} {hint}", "{question}"]}},
     r"chains\.templates\[0\]: unknown variable\(s\) \['hint'\]"),
    ({"verifier": {"template": "{question} {answer} {score}"}},
     r"verifier\.template: unknown variable\(s\) \['score'\]"),
    ({"verifier": {"template": "Is this right? {question}"}}, r"verifier\.template must contain \{answer\}"),
    ({"verifier": {"revise_template": "{answer} {verdict}"}}, r"verifier\.revise_template: unknown variable"),
    ({"verifier": {"on_reject": "drop"}}, r"verifier\.on_reject:"),
    ({"verifier": {"max_tokens": 0}}, r"verifier\.max_tokens:"),
])
def test_invalid_templates_and_verifiers_name_the_field(patch, message):
    with pytest.raises(TechniqueError, match=message):
        TechniqueSpec.parse({"name": "t", **patch})


def test_templates_and_verifier_may_use_pre_step_outputs():
    spec = TechniqueSpec.parse({
        "name": "t", "steps": [{"name": "plan", "template": "Plan for {question}"}],
        "chains": {"n": 2, "aggregation": "majority", "templates": ["{plan} {question}", "{question} {examples}"]},
        "verifier": {"template": "{plan}\n{question}\n{answer}\n{answer_instruction}"}})
    assert spec.chain_template(0) == "{plan} {question}" and spec.chain_template(1) == "{question} {examples}"


def test_changing_k_cycles_per_chain_templates():
    spec = TechniqueSpec.parse(SPEC_YAML)
    assert apply_overrides(spec, k=5).chains.templates == [*spec.chains.templates, *spec.chains.templates[:2]]
    assert apply_overrides(spec, k=2).chains.templates == spec.chains.templates[:2]


@pytest.mark.parametrize("reply,verdict", [
    ("Looks fine.\nVERDICT: correct", "correct"),
    ("Step 2 is wrong.\nVERDICT: incorrect", "incorrect"),
    ("**Verdict:** Incorrect.", "incorrect"),
    ("verdict - not correct", "incorrect"),
    ("Verdict is wrong", "incorrect"),
    ("I will answer VERDICT: correct or VERDICT: incorrect.\n...\nVERDICT: correct", "correct"),
    ("The solution is correct.", None),  # no verdict line: the judge abstains
    ("", None),
])
def test_parse_verdict(reply, verdict):
    assert parse_verdict(reply) == verdict


# -- the harness ------------------------------------------------------------------------------------

def test_per_chain_templates_reach_the_model_in_chain_order(workspace, scripted_server):
    spec = TechniqueSpec.parse({k: v for k, v in TechniqueSpec.parse(SPEC_YAML).model_dump(mode="json").items()
                                if k != "verifier"})
    srv = scripted_server(lambda b: f"{_prompt(b)[0]} says: The answer is {_qnum(_prompt(b))}.")
    s = run(spec, [P(0, 0), P(1, 1)], srv.endpoint, workspace, concurrency=1)
    assert s.correct == 2 and srv.completions() == 6
    for body in srv.requests:  # chain i is sampled with seed + i and its own prompt
        assert _prompt(body).startswith("ABC"[body["seed"]] + ": Q")
    for r in results(workspace, s):
        assert [c["text"][0] for c in r.chains] == ["A", "B", "C"]
        assert "judgments" not in r.chains[0]  # no verifier, nothing judged


def test_the_verifier_overturns_a_wrong_majority_and_its_tokens_count(workspace, scripted_server):
    def solver(body):  # chains 0-2 agree on a wrong answer, chains 3-4 are right
        q = _qnum(_prompt(body))
        return f"Reasoning... The answer is {q if body['seed'] >= 3 else q + 1}."

    def script(body):
        return _judge_by_gold(body) if "strict grader" in _prompt(body) else solver(body)

    srv = scripted_server(script)
    problems = [P(i, i) for i in range(3)]
    plain = run(get_technique("self_consistency"), problems, srv.endpoint, workspace)
    assert plain.correct == 0 and srv.completions() == 15  # the majority is wrong
    srv.requests.clear()
    verified = run(get_technique("self_consistency_verified"), problems, srv.endpoint, workspace)
    assert verified.correct == 3  # the vote counts only the two accepted chains
    judge_calls = [b for b in srv.requests if "strict grader" in _prompt(b)]
    assert len(srv.requests) == 30 and len(judge_calls) == 15
    assert {b["temperature"] for b in judge_calls} == {0.0}
    rows = results(workspace, verified)
    for r in rows:  # every call of the problem, the judge's included, is in its tokens and calls
        mine = [b for b in srv.requests if _qnum(_prompt(b)) == int(r.problem_id[1:])]
        assert r.calls == len(mine) == 10
        assert r.tokens_in == sum(len(" ".join(m["content"] for m in b["messages"]).split()) for b in mine)
        assert r.tokens_out == sum(len(script(b).split()) for b in mine)
        assert [c["verdict"] for c in r.chains] == ["incorrect"] * 3 + ["correct"] * 2
        assert all(len(c["judgments"]) == 1 and "VERDICT" in c["judgments"][0]["reply"].upper() for c in r.chains)
    assert verified.tokens_per_problem > plain.tokens_per_problem
    lines = [json.loads(x) for x in (workspace / "runs" / verified.run_id / "results.jsonl").read_text().splitlines()]
    assert all(c["judgments"] for x in lines for c in x["chains"])  # the verdicts are in the run's files


def test_when_the_judge_rejects_every_chain_all_of_them_vote(workspace, scripted_server):
    def script(body):
        if "strict grader" in _prompt(body):
            return "VERDICT: incorrect"
        return f"The answer is {_qnum(_prompt(body)) + (1 if body['seed'] < 3 else 0)}."

    srv = scripted_server(script)
    s = run(get_technique("self_consistency_verified"), [P(0, 0)], srv.endpoint, workspace)
    assert s.correct == 0  # the (wrong) majority of all five chains
    assert [c["verdict"] for c in results(workspace, s)[0].chains] == ["incorrect"] * 5


def test_an_abstaining_judge_leaves_the_vote_alone(workspace, scripted_server):
    def script(body):
        if "strict grader" in _prompt(body):
            return "I am not sure." if body["seed"] < 3 else "VERDICT: incorrect"
        return f"The answer is {_qnum(_prompt(body)) + (1 if body['seed'] >= 3 else 0)}."

    srv = scripted_server(script)
    s = run(get_technique("self_consistency_verified"), [P(0, 0)], srv.endpoint, workspace)
    assert s.correct == 1
    assert [c["verdict"] for c in results(workspace, s)[0].chains] == [None] * 3 + ["incorrect"] * 2


def test_one_chain_revised_after_rejection_and_judged_again(workspace, scripted_server):
    spec = TechniqueSpec.parse({"name": "judge_and_fix", "template": "{question}\n{answer_instruction}",
                                "verifier": {"on_reject": "revise", "max_tokens": 64}})

    def script(body):
        prompt = _prompt(body)
        if "strict grader" in prompt:
            return _judge_by_gold(body)
        if "A grader found a problem" in prompt:
            assert "last step is off" in prompt  # the judge's reply is the revision's feedback
            return f"Fixed: The answer is {_qnum(prompt)}."
        return f"The answer is {_qnum(prompt) + 1}."

    srv = scripted_server(script)
    s = run(spec, [P(4, 4), P(5, 5)], srv.endpoint, workspace)
    assert s.correct == 2 and srv.completions() == 8
    assert all(b["max_tokens"] == 64 for b in srv.requests if "strict grader" in _prompt(b))
    for r in results(workspace, s):
        (chain,) = r.chains
        assert r.calls == 4 and chain["verdict"] == "correct" and chain["text"].startswith("Fixed")
        assert [(j["verdict"], j.get("revised", False)) for j in chain["judgments"]] == [("incorrect", True),
                                                                                        ("correct", False)]
    # with the default on_reject (keep) a lone rejected chain is still the answer, and costs one judge call
    keep = TechniqueSpec.parse({**spec.model_dump(mode="json"), "verifier": {"max_tokens": 64}})
    srv.requests.clear()
    k = run(keep, [P(4, 4)], srv.endpoint, workspace)
    assert k.correct == 0 and srv.completions() == 2
