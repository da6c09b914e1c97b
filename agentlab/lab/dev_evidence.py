"""What the agents learn from a dev-split evaluation beyond its accuracy: accuracy per level and subject,
tokens per problem, how many answers were cut at max_tokens, and a sample of wrong answers (question, the
model's output trimmed and whether it was cut, gold answer).

Only dev-split evaluations produce evidence: a report-split question or answer never reaches an agent's prompt
(the report split is evaluated once, at the end, and must stay unseen)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentlab.lab.models import Evidence, WrongAnswer

WRONG_SAMPLE = 3
OUTPUT_CHARS = 600  # of the model's output: its head and its tail, where the final answer is


def dev_evidence(summary: Any, results: list[Any], problems: list[Any], sample: int = WRONG_SAMPLE) -> Evidence:
    """Evidence of one dev evaluation (``summary``: EvalSummary, ``results``: its ProblemResults)."""
    questions = {p.id: p.question for p in problems}
    wrong = [r for r in sorted(results, key=lambda r: r.idx) if not r.correct and r.problem_id in questions]
    return Evidence(
        breakdown={dim: {k: f"{g.correct}/{g.n}" for k, g in groups.items()}
                   for dim, groups in (summary.breakdown or {}).items()},
        tokens_per_problem=round(float(summary.tokens_per_problem or 0.0), 1),
        errors=summary.errors,
        **_truncation(summary),
        wrong=[WrongAnswer(question=questions[r.problem_id], output=_trim(_output(r)), answer=r.answer, gold=r.gold,
                           **({"cut": True} if _was_cut(r) else {}), **({"error": r.error[-200:]} if r.error else {}))
               for r in wrong[:sample]],
        wrong_total=len(wrong),
    )


def stored_evidence(eval_db: Path, eval_run_id: str, problems: list[Any]) -> Evidence:
    """The evidence of a finished dev evaluation, from the eval db (a resumed run that reuses its job)."""
    from agentlab.eval.records import ResultStore

    with ResultStore(eval_db) as store:
        return dev_evidence(store.summary(eval_run_id), store.results(eval_run_id), problems)


def _truncation(summary: Any) -> dict[str, Any]:
    """How many of the evaluation's answers (model replies) hit max_tokens; nothing for a code technique,
    whose replies the harness does not see."""
    if summary.max_tokens is None:
        return {}
    return {"answers": summary.calls, "truncated": summary.truncated, "max_tokens": summary.max_tokens}


def _output(r: Any) -> str:
    chains = r.chains or []
    return str(chains[0].get("text") or "") if chains else ""


def _was_cut(r: Any) -> bool:
    """The output shown (the first chain's last reply) ended at max_tokens."""
    chains = r.chains or []
    return bool(chains) and chains[0].get("finish_reason") == "length"


def _trim(text: str, n: int = OUTPUT_CHARS) -> str:
    if len(text) <= n:
        return text
    half = n // 2
    return f"{text[:half]} [... {len(text) - n} characters cut ...] {text[-half:]}"
