"""Tables and one-line summaries generated from harness records, never written by an agent."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from agentlab.lab.models import Confirmation, Experiment, Final, Paired, Record


def pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}%"


def truncated_cell(r: Record) -> str:
    """The model replies a record's evaluation cut at max_tokens, as ``9/40 at 128``; ``-`` when unknown
    (a code technique, an older record)."""
    if r.max_tokens is None:
        return "-"
    return f"{r.truncated or 0}/{'?' if r.calls is None else r.calls} at {r.max_tokens}"


def results_table(records: Iterable[Record | dict[str, Any]], ids: bool = True) -> str:
    """Markdown table of records (``Record``s, or their stored dicts; one row per record), generated, never written
    by an agent.

    "Cut at max_tokens": of the model replies in the evaluation, those that hit max_tokens (an unfinished
    answer reads as a wrong one; the column says how many there were). ``ids=False`` leaves out the record and
    job ids (hex strings: many prompt tokens, nothing a reviewer needs), for prompts."""
    head = "| Technique | Split | n | Correct | Accuracy | 95% CI | Tokens/problem | Cut at max_tokens |" + \
           (" Record | Job |" if ids else "") + "\n|---|---|---:|---:|---:|---|---:|---:|" + \
           ("---|---|" if ids else "") + "\n"
    rows = []
    for r in (Record.model_validate(r) for r in records):
        ci = f"[{pct(r.ci_low)}, {pct(r.ci_high)}]" if r.ci_low is not None else "-"
        tokens = "-" if r.tokens_per_problem is None else f"{r.tokens_per_problem:.0f}"
        rows.append(f"| {r.technique or '?'} | {r.split or '?'} | {r.n} | {r.correct}"
                    f" | {pct(r.accuracy)} | {ci} | {tokens} | {truncated_cell(r)} |"
                    + (f" `{_or_dash(r.record_id)}` | `{_or_dash(r.job_id)}` |" if ids else ""))
    return head + "\n".join(rows) + "\n"


def _or_dash(value: str | None) -> str:
    return "-" if value is None else value


def paired_table(experiments: list[Experiment]) -> str:
    """Markdown table: each dev experiment against the baseline on the same dev problems (wins: the experiment
    right and the baseline wrong); empty when none was paired."""
    paired = [e for e in experiments if e.paired and e.record]
    if not paired:
        return ""
    head = ("| Experiment | Technique | n | Wins | Losses | Ties | Difference | McNemar p |\n"
            "|---:|---|---:|---:|---:|---:|---:|---:|\n")
    rows = []
    for e in paired:
        p = e.paired
        rows.append(f"| {e.iteration} | {e.record.technique} | {p.n} | {p.wins} "
                    f"| {p.losses} | {p.ties} | {100 * p.delta:+.1f} points | {p.p_value:.3g} |")
    caption = "Each dev experiment against the baseline on the same dev problems:\n\n"
    return caption + head + "\n".join(rows) + "\n"


def comparison_text(comp: Paired | dict[str, Any] | None) -> str:
    """The paired comparison's line (a ``Paired`` or its stored dict)."""
    if not comp:
        return ""
    c = Paired.model_validate(comp)
    return (f"Paired comparison on the same {c.n} problems (exact McNemar test): "
            f"{c.wins} wins, {c.losses} losses, "
            f"difference {100 * (c.delta or 0):+.1f} percentage points, "
            f"p = {'-' if c.p_value is None else f'{c.p_value:.3g}'}.")


def results_summary(final: Final) -> str:
    """One line per record for prompts: the only numbers an agent is shown."""
    parts = [f"{r.technique} ({label}): accuracy {pct(r.accuracy)} ({r.correct}/{r.n})"
             for r, label in ((final.technique, "technique"), (final.baseline, "baseline"),
                              (final.prior_best, "prior best")) if r]
    if final.comparison:
        parts.append(comparison_text(final.comparison))
    if final.comparison_prior:
        parts.append("Against the prior best: " + comparison_text(final.comparison_prior))
    if final.confirmation:
        parts.append(confirmation_text(final.confirmation))
    return "; ".join(parts) or "no results"


def experiments_summary(experiments: list[Experiment]) -> str:
    """The dev experiments in one line for prompts: technique and accuracy (or failure) of each."""
    parts = []
    for e in experiments:
        rec, paired = e.record, e.paired
        parts.append(f"#{e.iteration} {e.proposal.technique}: "
                     + (f"{rec.accuracy:.3f} on {rec.n} dev problems" if rec else "failed")
                     + (f" ({paired.wins} wins, {paired.losses} losses against the baseline, "
                        f"McNemar p = {paired.p_value:.3g})" if paired else ""))
    return "; ".join(parts) or "none"


def confirmation_text(conf: Confirmation) -> str:
    """The paper's confirmation line: the best dev node against the baseline on fresh dev problems no node was
    chosen on (generated from the records' paired comparison; the claim checker skips it)."""
    t, b = conf.technique or Record(), conf.baseline or Record()
    text = (f"Confirmation on {conf.n} fresh dev problems ({conf.subset}; no node was chosen on them, "
            "none is in the report split): ")
    if conf.delta is None:
        return text + "it did not finish, so the dev gain is unconfirmed."
    text += (f"{t.technique} {pct(t.accuracy)} ({t.correct}/{t.n}) against the baseline "
             f"{b.technique} {pct(b.accuracy)} ({b.correct}/{b.n}): {conf.wins} wins, "
             f"{conf.losses} losses, difference {100 * conf.delta:+.1f} percentage points, exact McNemar "
             f"p = {conf.p_value:.3g}. ")
    return text + ("The dev gain confirmed." if conf.confirmed else
                   "The dev gain did not confirm on fresh problems; the report split decides.")


def ablation_table(conf: Confirmation) -> str:
    """Markdown table: the best node with each part removed in turn, on the confirmation problems, paired with the
    full node (change = ablated minus full; a negative change is what the part contributed); empty when none ran."""
    rows = [r for r in conf.ablation if r.record]
    if not rows:
        return ""
    full = conf.technique or Record()
    caption = (f"Ablation of {full.technique} ({pct(full.accuracy)} on the same {conf.n} "
               "confirmation problems): each part removed in turn, paired with the full node.\n\n")
    head = ("| Part removed | Technique | n | Correct | Accuracy | Change vs full | Ablated right, full wrong "
            "| Full right, ablated wrong | McNemar p |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n")
    lines = []
    for r in rows:
        rec = r.record
        lines.append(f"| {r.label} | {rec.technique} | {rec.n} | {rec.correct} | {pct(rec.accuracy)} | "
                     + (f"{100 * r.delta:+.1f} points | {r.wins} | {r.losses} | {r.p_value:.3g} |"
                        if r.delta is not None else "- | - | - | - |"))
    return caption + head + "\n".join(lines) + "\n"
