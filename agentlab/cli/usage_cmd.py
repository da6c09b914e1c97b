"""`agentlab usage`: summarize the LLM usage ledger."""

from __future__ import annotations

import time
from typing import Optional

import typer
from rich.table import Table

from agentlab.cli.common import console, get_settings


def usage(
    by: str = typer.Option("model", "--by", help="Group by model, role, lab or run_id."),
    run_id: Optional[str] = typer.Option(None, "--run", help="Only this run."),
    days: Optional[float] = typer.Option(None, "--days", help="Only the last N days."),
) -> None:
    """Summarize agents' LLM calls: calls, tokens, cost, latency, and how structured answers went (grammar-
    constrained calls, re-asks after an invalid answer, fallbacks to a safe default)."""
    from agentlab.llm.usage import UsageLedger

    if by not in {"model", "role", "lab", "run_id", "run"}:
        raise typer.BadParameter("use model, role, lab or run", param_hint="--by")
    by = "run_id" if by == "run" else by
    settings = get_settings()
    ledger = UsageLedger(settings.db_path)
    since = time.time() - days * 86400 if days else None
    rows = ledger.summary(group_by=by, run_id=run_id, since=since)
    if not rows:
        console.print(f"no LLM calls recorded yet in {settings.db_path}")
        return
    table = Table(title=f"LLM usage by {by}")
    for col in (by, "calls", "cached", "errors", "grammar", "re-asks", "fallbacks", "tokens in", "tokens out",
                "cost (USD)", "mean latency (s)"):
        table.add_column(col, justify="left" if col == by else "right")
    for r in rows:
        table.add_row(str(r["key"]), *(str(r[k] or 0) for k in ("calls", "cached", "errors", "grammar", "reasks",
                                                                  "fallbacks")),
                      f"{r['tokens_in'] or 0:,}", f"{r['tokens_out'] or 0:,}", f"{r['cost_usd'] or 0:.4f}",
                      f"{r['mean_latency_s'] or 0:.2f}")
    t = ledger.totals(run_id)
    console.print(table)
    console.print(f"total: {t.calls} billed calls, {t.tokens:,} tokens, ${t.cost_usd:.4f}")
