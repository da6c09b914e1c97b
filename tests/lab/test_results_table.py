"""The paper's results table shows, per record, how many model replies were cut at max_tokens."""

from __future__ import annotations

from agentlab.eval.records import EvalSummary
from agentlab.lab.experiments import normalize_record
from agentlab.lab.report.latex import to_latex
from agentlab.lab.report.tables import results_table


def _summary(**kw) -> EvalSummary:
    base = {"record_id": "ev-1", "run_id": "r", "benchmark": "b", "subset": "", "model": "m",
            "technique": "cot", "spec_hash": "h", "n": 40, "n_planned": 40, "complete": True,
            "correct": 20, "accuracy": 0.5, "ci_low": 0.35, "ci_high": 0.65, "tokens_per_problem": 150.0,
            "tokens_per_correct": 300.0, "latency_p50_s": None, "latency_p95_s": None, "created": 0.0}
    return EvalSummary(**{**base, **kw})


def _cell(row: str, column: int) -> str:
    return [c.strip() for c in row.strip().strip("|").split("|")][column]


def test_the_results_table_shows_the_replies_cut_at_max_tokens_per_row():
    cut = normalize_record(_summary(calls=40, truncated=9, max_tokens=128), "report")
    code = normalize_record(_summary(technique="custom", calls=40), "report")  # a code technique: unknown
    older = {k: v for k, v in cut.dump().items() if k not in ("calls", "truncated", "max_tokens")}  # an older record
    head, _, *rows = results_table([cut, code, older]).splitlines()
    column = [c.strip() for c in head.strip("|").split("|")].index("Cut at max_tokens")
    assert [_cell(r, column) for r in rows] == ["9/40 at 128", "-", "-"]
    for_agents = results_table([cut], ids=False).splitlines()  # the table in the agents' prompts
    assert _cell(for_agents[2], column) == "9/40 at 128"


def test_the_latex_table_has_the_column_too():
    draft = {k: "x" for k in ("title", "abstract", "introduction", "method", "discussion", "conclusion")}
    tex = to_latex(draft, [normalize_record(_summary(calls=40, truncated=9, max_tokens=128), "report")], [],
                   lab_name="lab")
    assert "Cut at max\\_tokens" in tex and "& 9/40 at 128 \\\\" in tex
