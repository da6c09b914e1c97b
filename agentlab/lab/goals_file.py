"""Goals files (``agentlab goals import FILE``, ``agentlab labs run --goals-file FILE``): a YAML/JSON list or a
JSONL file of goals, every item validated as the server's ``GoalCreate`` before any goal is added."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentlab.errors import AgentlabError

if TYPE_CHECKING:
    from preprint_server.schemas import GoalCreate

GOAL_FIELDS = "text, benchmark, baseline, target, max_papers"


class GoalFileError(AgentlabError):
    """A goals file that cannot be imported; the message names the file, the item and the field."""


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


def check_benchmark(name: str) -> None:
    """A goal's benchmark becomes the lab's benchmark: catch a typo now, not when a lab starts."""
    from agentlab.bench import get_benchmark

    get_benchmark(name)


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
            check_benchmark(goal.benchmark)
        except AgentlabError as exc:
            raise GoalFileError(f"{path}: {where}: benchmark: {exc}") from None
    return goal


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string"}.get(type(value), f"a {type(value).__name__}")
