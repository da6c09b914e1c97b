"""Tables and one-line summaries generated from harness records, never written by an agent."""

from __future__ import annotations

from typing import Any


def pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}%"


def truncated_cell(r: dict[str, Any]) -> str:
    """The model replies a record's evaluation cut at max_tokens, as ``9/40 at 128``; ``-`` when unknown
    (a code technique, an older record)."""
    if r.get("max_tokens") is None:
        return "-"
    return f"{r.get('truncated', 0)}/{r.get('calls', '?')} at {r['max_tokens']}"


def results_table(records: list[dict[str, Any]], ids: bool = True) -> str:
    """Markdown table of records (one row per record), generated, never written by an agent.

    "Cut at max_tokens": of the model replies in the evaluation, those that hit max_tokens (an unfinished
    answer reads as a wrong one; the column says how many there were). ``ids=False`` leaves out the record and
    job ids (hex strings: many prompt tokens, nothing a reviewer needs), for prompts."""
    head = "| Technique | Split | n | Correct | Accuracy | 95% CI | Tokens/problem | Cut at max_tokens |" + \
           (" Record | Job |" if ids else "") + "\n|---|---|---:|---:|---:|---|---:|---:|" + \
           ("---|---|" if ids else "") + "\n"
    rows = []
    for r in records:
        ci = f"[{pct(r.get('ci_low'))}, {pct(r.get('ci_high'))}]" if r.get("ci_low") is not None else "-"
        tpp = r.get("tokens_per_problem")
        tokens = "-" if tpp is None else f"{tpp:.0f}"
        rows.append(f"| {r.get('technique', '?')} | {r.get('split', '?')} | {r.get('n', '?')} | {r.get('correct', '?')}"
                    f" | {pct(r.get('accuracy'))} | {ci} | {tokens} | {truncated_cell(r)} |"
                    + (f" `{r.get('record_id', '-')}` | `{r.get('job_id', '-')}` |" if ids else ""))
    return head + "\n".join(rows) + "\n"


def paired_table(experiments: list[dict[str, Any]]) -> str:
    """Markdown table: each dev experiment against the baseline on the same dev problems (wins: the experiment
    right and the baseline wrong); empty when none was paired."""
    paired = [e for e in experiments if e.get("paired") and e.get("record")]
    if not paired:
        return ""
    head = ("| Experiment | Technique | n | Wins | Losses | Ties | Difference | McNemar p |\n"
            "|---:|---|---:|---:|---:|---:|---:|---:|\n")
    rows = []
    for e in paired:
        p = e["paired"]
        rows.append(f"| {e['iteration']} | {e['record']['technique']} | {p['n']} | {p['wins']} "
                    f"| {p['losses']} | {p['ties']} | {100 * p['delta']:+.1f} points | {p['p_value']:.3g} |")
    caption = "Each dev experiment against the baseline on the same dev problems:\n\n"
    return caption + head + "\n".join(rows) + "\n"


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
    if final.get("confirmation"):
        parts.append(confirmation_text(final["confirmation"]))
    return "; ".join(parts) or "no results"


def experiments_summary(experiments: list[dict[str, Any]]) -> str:
    """The dev experiments in one line for prompts: technique and accuracy (or failure) of each."""
    parts = []
    for e in experiments:
        rec = e.get("record")
        paired = e.get("paired")
        parts.append(f"#{e['iteration']} {e['proposal'].get('technique')}: "
                     + (f"{rec['accuracy']:.3f} on {rec['n']} dev problems" if rec else "failed")
                     + (f" ({paired['wins']} wins, {paired['losses']} losses against the baseline, "
                        f"McNemar p = {paired['p_value']:.3g})" if paired else ""))
    return "; ".join(parts) or "none"


def confirmation_text(conf: dict[str, Any]) -> str:
    """The paper's confirmation line: the best dev node against the baseline on fresh dev problems no node was
    chosen on (generated from the records' paired comparison; the claim checker skips it)."""
    t, b = conf.get("technique") or {}, conf.get("baseline") or {}
    text = (f"Confirmation on {conf['n']} fresh dev problems ({conf.get('subset')}; no node was chosen on them, "
            "none is in the report split): ")
    if "delta" not in conf:
        return text + "it did not finish, so the dev gain is unconfirmed."
    text += (f"{t.get('technique')} {pct(t.get('accuracy'))} ({t.get('correct')}/{t.get('n')}) against the baseline "
             f"{b.get('technique')} {pct(b.get('accuracy'))} ({b.get('correct')}/{b.get('n')}): {conf['wins']} wins, "
             f"{conf['losses']} losses, difference {100 * conf['delta']:+.1f} percentage points, exact McNemar "
             f"p = {conf['p_value']:.3g}. ")
    return text + ("The dev gain confirmed." if conf.get("confirmed") else
                   "The dev gain did not confirm on fresh problems; the report split decides.")


def ablation_table(conf: dict[str, Any]) -> str:
    """Markdown table: the best node with each part removed in turn, on the confirmation problems, paired with the
    full node (change = ablated minus full; a negative change is what the part contributed); empty when none ran."""
    rows = [r for r in conf.get("ablation") or [] if r.get("record")]
    if not rows:
        return ""
    full = conf.get("technique") or {}
    caption = (f"Ablation of {full.get('technique')} ({pct(full.get('accuracy'))} on the same {conf['n']} "
               "confirmation problems): each part removed in turn, paired with the full node.\n\n")
    head = ("| Part removed | Technique | n | Correct | Accuracy | Change vs full | Ablated right, full wrong "
            "| Full right, ablated wrong | McNemar p |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n")
    lines = []
    for r in rows:
        rec, paired = r["record"], "delta" in r
        lines.append(f"| {r['label']} | {rec['technique']} | {rec['n']} | {rec['correct']} | {pct(rec['accuracy'])} | "
                     + (f"{100 * r['delta']:+.1f} points | {r['wins']} | {r['losses']} | {r['p_value']:.3g} |"
                        if paired else "- | - | - | - |"))
    return caption + head + "\n".join(lines) + "\n"
