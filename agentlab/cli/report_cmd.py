"""`agentlab report check`: every claim of a paper's prose against the records.json a lab wrote."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from agentlab.cli.common import console, err_console

app = typer.Typer(help="Reports: check a paper's claims against its records.", no_args_is_help=True)

_MCNEMAR = re.compile(r"Paired comparison on the same (\d+) problems \(exact McNemar test\): (\d+) wins, (\d+) losses,"
                      r" difference ([+-]?[\d.]+) percentage points")
_SETTING = re.compile(r'"(?:temperature|top_p)":\s*([\d.]+)|"temperatures":\s*\[([\d.,\s]*)\]')


def _fail(msg: str) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {msg}", highlight=False, soft_wrap=True)
    return typer.Exit(2)


def _load(paper: Path, records: Path) -> tuple[str, dict[str, Any]]:
    for p in (paper, records):
        if not p.is_file():
            raise _fail(f"{p}: no such file")
    try:
        data = json.loads(records.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(f"{records}: not a records.json file ({exc})") from None
    if isinstance(data, list):
        data = {"records": data}
    if not isinstance(data, dict) or not isinstance(data.get("records"), list):
        raise _fail(f"{records}: expected a JSON object with a 'records' list (the records.json a lab writes)")
    try:
        return paper.read_text(), data
    except (OSError, UnicodeDecodeError) as exc:
        raise _fail(f"{paper}: cannot read it ({exc})") from None


def _specs(records: Path) -> dict[str, Any] | None:
    """The techniques.json the lab wrote beside records.json (spec_hash -> spec): method descriptions are
    checked against it; None when it is missing or unreadable (then only what the records carry)."""
    try:
        specs = json.loads((records.parent / "techniques.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return specs if isinstance(specs, dict) else None


def _comparison(markdown: str, data: dict[str, Any]) -> dict[str, Any] | None:
    """The paired comparison: from records.json when it has one, else the paper's generated McNemar line (its p
    recomputed from the wins and losses, not read from the paper)."""
    if isinstance(data.get("comparison"), dict):
        return data["comparison"]
    m = _MCNEMAR.search(markdown)
    if not m:
        return None
    from agentlab.eval.stats import mcnemar

    n, wins, losses = int(m.group(1)), int(m.group(2)), int(m.group(3))
    return {"n": n, "wins": wins, "losses": losses, "delta": float(m.group(4)) / 100, "p_value": mcnemar(wins, losses)}


def _settings(markdown: str) -> list[float]:
    """Sampling settings of the technique specs the paper prints (temperatures, top_p)."""
    out: list[float] = []
    for m in _SETTING.finditer(markdown):
        out += [float(m.group(1))] if m.group(1) else [float(x) for x in re.findall(r"[\d.]+", m.group(2))]
    return out


@app.command("check")
def check(paper: Path = typer.Argument(..., help="The paper's Markdown (paper.md)."),
          records: Path = typer.Option(..., "--records", "-r", help="The records.json the lab wrote."),
          as_json: bool = typer.Option(False, "--json", help="Print the claims as JSON.")) -> None:
    """Every claim in the paper's prose with its status (ok, unsupported, unbound); exit 1 if any is unsupported."""
    from agentlab.lab.report.claims import check_paper

    markdown, data = _load(paper, records)
    recs = [r for r in data["records"] if isinstance(r, dict)]
    claims = check_paper(markdown, recs, _comparison(markdown, data), _settings(markdown), specs=_specs(records))
    if as_json:
        keys = ("section", "sentence", "text", "kind", "status", "bound", "expected")
        console.print_json(json.dumps([{k: c[k] for k in keys} for c in claims], default=str))
    else:
        _print_table(claims)
    if any(c["status"] == "unsupported" for c in claims):
        raise typer.Exit(1)


def _print_table(claims: list[dict[str, Any]]) -> None:
    table = Table(title="Claims", show_lines=False)
    for col in ("section", "claim", "status", "records say", "sentence"):
        table.add_column(col, overflow="fold")
    style = {"ok": "green", "unsupported": "bold red", "unbound": "yellow"}
    for c in claims:
        table.add_row(c["section"], c["text"], f"[{style.get(c['status'], '')}]{c['status']}[/]",
                      c["expected"] if c["status"] != "ok" else "", c["sentence"])
    console.print(table)
    counts = {s: sum(c["status"] == s for c in claims) for s in ("ok", "unsupported", "unbound")}
    console.print(f"{len(claims)} claim(s): " + ", ".join(f"{v} {k}" for k, v in counts.items()), highlight=False)
