"""Tables and one-line summaries generated from harness records, never written by an agent."""

from __future__ import annotations

from typing import Any


def pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}%"


def results_table(records: list[dict[str, Any]], ids: bool = True) -> str:
    """Markdown table of records (one row per record), generated, never written by an agent.

    ``ids=False`` leaves out the record and job ids (hex strings: many prompt tokens, nothing a reviewer
    needs), for prompts."""
    head = "| Technique | Split | n | Correct | Accuracy | 95% CI | Tokens/problem |" + \
           (" Record | Job |" if ids else "") + "\n|---|---|---:|---:|---:|---|---:|" + ("---|---|" if ids else "") + "\n"
    rows = []
    for r in records:
        ci = f"[{pct(r.get('ci_low'))}, {pct(r.get('ci_high'))}]" if r.get("ci_low") is not None else "-"
        tpp = r.get("tokens_per_problem")
        rows.append(f"| {r.get('technique', '?')} | {r.get('split', '?')} | {r.get('n', '?')} | {r.get('correct', '?')}"
                    f" | {pct(r.get('accuracy'))} | {ci} | {'-' if tpp is None else f'{tpp:.0f}'} |"
                    + (f" `{r.get('record_id', '-')}` | `{r.get('job_id', '-')}` |" if ids else ""))
    return head + "\n".join(rows) + "\n"


def comparison_text(comp: dict[str, Any] | None) -> str:
    if not comp:
        return ""
    p = comp.get("p_value")
    return (f"Paired comparison on the same {comp.get('n', '?')} problems (exact McNemar test): "
            f"{comp.get('wins', '?')} wins, {comp.get('losses', '?')} losses, "
            f"difference {100 * (comp.get('delta') or 0):+.1f} percentage points, "
            f"p = {'-' if p is None else f'{p:.3g}'}.")


def results_summary(final: dict[str, Any]) -> str:
    """One line per record for prompts: the only numbers an agent is shown."""
    parts = []
    for key, label in (("technique", "technique"), ("baseline", "baseline"), ("prior_best", "prior best")):
        r = final.get(key)
        if r:
            parts.append(f"{r['technique']} ({label}): accuracy {pct(r['accuracy'])} ({r['correct']}/{r['n']})")
    if final.get("comparison"):
        parts.append(comparison_text(final["comparison"]))
    if final.get("comparison_prior"):
        parts.append("Against the prior best: " + comparison_text(final["comparison_prior"]))
    return "; ".join(parts) or "no results"


def experiments_summary(experiments: list[dict[str, Any]]) -> str:
    """The dev experiments in one line for prompts: technique and accuracy (or failure) of each."""
    parts = []
    for e in experiments:
        rec = e.get("record")
        parts.append(f"#{e['iteration']} {e['proposal'].get('technique')}: "
                     + (f"{rec['accuracy']:.3f} on {rec['n']} dev problems" if rec else "failed"))
    return "; ".join(parts) or "none"
