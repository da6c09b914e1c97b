"""What the agents are shown: context sized by their model's window, and dev-split evidence (wrong answers)."""

from __future__ import annotations

from types import SimpleNamespace

from agentlab.config import load_settings
from agentlab.eval.records import EvalSummary, GroupStats, ProblemResult
from agentlab.lab.dev_evidence import dev_evidence
from agentlab.llm.gateway import context_window
from agents.base import cclip
from agents.ml_context import evidence_text


def test_the_context_window_comes_from_the_agents_model(workspace, monkeypatch):
    assert context_window(load_settings()) == 4096  # embedded model: its n_ctx
    assert context_window(load_settings(overrides={"model_under_study.n_ctx": 8192})) == 8192
    assert context_window(load_settings(overrides={"agents.model": "openai/gpt-4o-mini"})) == 128_000  # litellm
    assert context_window(load_settings(overrides={"agents.model": "openai/served-by-vllm",
                                                   "agents.api_base": "http://127.0.0.1:9/v1"})) == 4096  # unknown
    assert context_window(load_settings(overrides={"agents.model": "openai/served-by-vllm",
                                                   "agents.context_window": 32768})) == 32768


def test_prompt_budgets_scale_with_the_window_both_ways():
    text = "word " * 2000
    ctx = lambda scale: SimpleNamespace(config=SimpleNamespace(context_scale=scale))  # noqa: E731
    assert len(cclip(ctx(1.0), text, 300)) == 300
    assert len(cclip(ctx(8.0), text, 300)) == 2400  # a large model gets more of the goal, history, evidence
    assert len(cclip(ctx(0.5), text, 300)) == 150  # the demo gets less
    assert len(cclip(ctx(None), text, 300)) == 300


def _summary(**kw):
    base = dict(record_id="ev-1", run_id="r", benchmark="b", subset="", model="m", technique="t", spec_hash="h",
                n=3, n_planned=3, complete=True, correct=1, accuracy=1 / 3, ci_low=0.0, ci_high=0.8,
                tokens_per_problem=123.456, tokens_per_correct=None, latency_p50_s=None, latency_p95_s=None,
                created=0.0, breakdown={"level": {"1": GroupStats(n=2, correct=1, accuracy=0.5),
                                                  "2": GroupStats(n=1, correct=0, accuracy=0.0)}})
    return EvalSummary(**{**base, **kw})


def test_dev_evidence_shows_wrong_answers_with_the_models_output_and_gold():
    problems = [SimpleNamespace(id=f"p{i}", question=f"What is {i} + {i}?") for i in range(3)]
    long_output = "step " * 400 + "so the answer is \\boxed{5}"
    results = [ProblemResult(problem_id="p0", idx=0, correct=True, answer="0", gold="0"),
               ProblemResult(problem_id="p1", idx=1, correct=False, answer="5", gold="2",
                             chains=[{"text": long_output}]),
               ProblemResult(problem_id="p2", idx=2, correct=False, answer=None, gold="4", error="timeout")]
    ev = dev_evidence(_summary(), results, problems)
    assert ev.breakdown == {"level": {"1": "1/2", "2": "0/1"}} and ev.tokens_per_problem == 123.5
    assert [w.question for w in ev.wrong] == ["What is 1 + 1?", "What is 2 + 2?"] and ev.wrong_total == 2
    out = ev.wrong[0].output
    assert out.startswith("step step") and out.endswith("\\boxed{5}") and "characters cut" in out  # head and tail
    assert ev.wrong[1].error == "timeout"
    text = evidence_text(ev)
    assert "accuracy by level: 1 1/2, 2 0/1" in text and "gold: 2" in text and "2 of 2 wrong answers" in text
    assert evidence_text(None) == "none yet"
