"""`agentlab goals`: research goals on the preprint server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from agentlab.cli.common import console
from agentlab.cli.papers_cmd import server_client
from agentlab.errors import AgentlabError
from preprint_server.errors import PreprintServerError

if TYPE_CHECKING:
    from preprint_server.schemas import GoalCreate

app = typer.Typer(help="Research goals labs work on (stored on the preprint server).", no_args_is_help=True)

GOAL_FIELDS = "text, benchmark, baseline"


class GoalFileError(AgentlabError):
    """A goals file that cannot be imported; the message names the file, the item and the field."""


@app.command("add")
def add(text: str = typer.Argument(..., help="The goal, e.g. \"improve accuracy on MATH-500\"."),
        benchmark: str | None = typer.Option(None, "--benchmark", help="e.g. math500"),
        baseline: float | None = typer.Option(None, "--baseline", min=0.0, max=1.0, help="Accuracy to beat, e.g. 0.702.")) -> None:
    """Add a goal (needs server.api_key)."""
    if benchmark:
        _check_benchmark(benchmark)
    with server_client() as c:
        g = c.add_goal(text, benchmark=benchmark, baseline=baseline)
    console.print(f"goal {g.id} added", highlight=False)


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="A .yaml/.yml/.json list of goals, or .jsonl with one goal per line.")],
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate the file and show what would be added; add nothing."),
) -> None:
    """Add every goal in FILE to the preprint server (needs server.url and a lab key in server.api_key).

    A goal has `text` (required), `benchmark` (math500, gsm8k, aime24, amc23, ... or rg:TASK), `baseline` (0-1).
    The whole file is validated first: a bad item stops the import before any goal is added.
    Goals already on the server (same text and benchmark) are skipped, so a second import adds nothing.
    Examples: examples/goals/ (`agentlab goals import examples/goals/math500.yaml`).
    """
    goals = read_goals_file(file)
    if dry_run:
        for i, g in enumerate(goals, 1):
            console.print(f"item {i}: would add: {_label(g)}", highlight=False, markup=False)
        console.print(f"{file}: {len(goals)} valid goal(s); nothing added (--dry-run)", highlight=False)
        return
    with server_client() as c:
        existing = {(g.text, g.benchmark) for g in c.list_goals()}
        added = 0
        for i, g in enumerate(goals, 1):
            if (g.text, g.benchmark) in existing:
                continue
            try:
                out = c.add_goal(g.text, benchmark=g.benchmark, baseline=g.baseline)
            except PreprintServerError as exc:  # the client's errors (not AgentlabErrors: the server is a layer below)
                raise GoalFileError(f"{file}: item {i}: {exc} ({added} goal(s) added before it; run the import "
                                    "again to add the rest, goals already added are skipped)") from None
            existing.add((g.text, g.benchmark))
            added += 1
            console.print(f"goal {out.id} added: {_label(g)}", highlight=False, markup=False)
    skipped = f", {len(goals) - added} already on the server" if added < len(goals) else ""
    console.print(f"{file}: {added} goal(s) added{skipped}", highlight=False)


@app.command("list")
def list_(status: str | None = typer.Option(None, "--status", help="open or closed.")) -> None:
    """Goals, newest first."""
    with server_client() as c:
        goals = c.list_goals(status=status)
    t = Table("id", "goal", "benchmark", "baseline", "status", "by")
    for g in goals:
        t.add_row(g.id, g.text, g.benchmark or "", "" if g.baseline is None else f"{g.baseline:.3f}", g.status, g.created_by)
    console.print(t)


# -- goals files ------------------------------------------------------------------------------------

def read_goals_file(path: Path) -> list[GoalCreate]:
    """Every goal in a YAML/JSON list or a JSONL file, validated; raises GoalFileError on the first bad one."""
    if not path.is_file():
        raise GoalFileError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GoalFileError(f"{path}: cannot read: {exc}") from None
    items = _jsonl_items(path, text) if path.suffix == ".jsonl" else _yaml_items(path, text)
    if not items:
        raise GoalFileError(f"{path}: no goals in the file")
    return [_validate(path, where, item) for where, item in items]


def _yaml_items(path: Path, text: str) -> list[tuple[str, Any]]:
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark is not None else ""
        raise GoalFileError(f"{path}: not valid YAML: {getattr(exc, 'problem', None) or exc}{at}") from None
    if data is None:
        return []
    if not isinstance(data, list):
        raise GoalFileError(f"{path}: expected a list of goals (one `- text: ...` item each), got {_kind(data)}")
    return [(f"item {i}", item) for i, item in enumerate(data, 1)]


def _jsonl_items(path: Path, text: str) -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for line_no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"item {len(items) + 1} (line {line_no})"
        try:
            items.append((where, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise GoalFileError(f"{path}: {where}: not valid JSON: {exc.msg} (column {exc.colno})") from None
    return items


def _validate(path: Path, where: str, item: Any) -> GoalCreate:
    from pydantic import ValidationError

    from preprint_server.schemas import GoalCreate

    if not isinstance(item, dict):
        raise GoalFileError(f"{path}: {where}: a goal is a mapping with {GOAL_FIELDS}, got {_kind(item)}")
    try:
        goal = GoalCreate.model_validate(item)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "goal"
        if err["type"] == "extra_forbidden":
            problem = f"unknown field {field!r} (a goal has {GOAL_FIELDS})"
        else:
            problem = f"{field}: {err['msg'].removeprefix('Value error, ')}"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise GoalFileError(f"{path}: {where}: {problem}{more}") from None
    if goal.benchmark:
        try:
            _check_benchmark(goal.benchmark)
        except AgentlabError as exc:
            raise GoalFileError(f"{path}: {where}: benchmark: {exc}") from None
    return goal


def _check_benchmark(name: str) -> None:
    """A goal's benchmark becomes the lab's benchmark: catch a typo now, not when a lab starts."""
    from agentlab.bench import get_benchmark

    get_benchmark(name)


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string"}.get(type(value), f"a {type(value).__name__}")


def _label(g: GoalCreate) -> str:
    text = g.text if len(g.text) <= 50 else g.text[:47] + "..."
    extra = "".join([f" [{g.benchmark}]" if g.benchmark else "",
                     f" baseline {g.baseline:.3f}" if g.baseline is not None else ""])
    return f"{text}{extra}"
