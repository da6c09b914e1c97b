"""State shared by CLI commands: global options, the effective settings, the consoles, the library's messages."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from agentlab.config import Settings

DEFAULT_SERVER_URL = "http://127.0.0.1:8000"


class MessageConsole(Console):
    """A console that never wraps a printed string (a result, an error, a path) at the terminal's width: a user
    copies it and a script reads it as one line, whatever the width or the checkout's path. Tables, panels and
    Markdown still fit the width."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        if "soft_wrap" not in kwargs and objects and all(isinstance(o, str) for o in objects):
            kwargs["soft_wrap"] = True
        super().print(*objects, **kwargs)


console = MessageConsole()
err_console = MessageConsole(stderr=True)


@dataclass
class CliState:
    config_file: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    debug: bool = False
    _settings: Settings | None = None


state = CliState()


def get_settings(**extra_overrides: Any) -> Settings:
    """The effective settings: files < env < global CLI flags < this command's flags."""
    from agentlab.config import load_settings

    if extra_overrides:
        return load_settings(state.config_file, {**state.overrides, **extra_overrides})
    if state._settings is None:
        state._settings = load_settings(state.config_file, state.overrides)
    return state._settings


def say(kind: str, text: str) -> None:
    """Prints a message of the library (``agentlab.lab.launch.Say``): notes (warnings) on stderr, progress dimmed."""
    if kind == "note":
        err_console.print(f"[yellow]note:[/] {escape(text)}")
    elif kind == "progress":
        console.print(f"[dim]{escape(text)}[/]")
    else:
        console.print(text, highlight=False, markup=False)


def budget_overrides(max_usd: float | None, max_tokens: int | None, max_jobs: int | None,
                     max_wall_minutes: float | None) -> dict[str, Any]:
    """The budget flags of `lab start` and `labs run` as settings overrides (only those given)."""
    return {k: v for k, v in {"budgets.max_usd": max_usd, "budgets.max_tokens": max_tokens,
                              "budgets.max_jobs": max_jobs, "budgets.max_wall_minutes": max_wall_minutes}.items()
            if v is not None}


def server_client():
    """A client for the configured preprint server (server.url, default 127.0.0.1:8000; server.api_key)."""
    from preprint_server.client import PreprintClient

    s = get_settings().server
    return PreprintClient(s.url or DEFAULT_SERVER_URL, s.api_key.get_secret_value() if s.api_key else None,
                          retries=1)
