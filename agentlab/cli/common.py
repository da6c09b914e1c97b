"""State shared by CLI commands: global options, the effective settings, the console."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from agentlab.config import Settings, load_settings

console = Console()
err_console = Console(stderr=True)


@dataclass
class CliState:
    config_file: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    debug: bool = False
    _settings: Settings | None = None


state = CliState()


def get_settings(**extra_overrides: Any) -> Settings:
    """The effective settings: files < env < global CLI flags < this command's flags."""
    if extra_overrides:
        return load_settings(state.config_file, {**state.overrides, **extra_overrides})
    if state._settings is None:
        state._settings = load_settings(state.config_file, state.overrides)
    return state._settings
