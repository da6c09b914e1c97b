"""`agentlab config`: show the effective configuration and where each value came from."""

from __future__ import annotations

import typer
from rich.table import Table

from agentlab.cli.common import console, state

app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)


@app.command("show")
def show() -> None:
    """Print the effective config (secrets masked) and the source of each value."""
    from pydantic import SecretStr

    from agentlab.config import flatten, load_settings, user_config_path

    settings, sources = load_settings(state.config_file, state.overrides, with_sources=True)
    table = Table(title="agentlab configuration", show_lines=False)
    table.add_column("key", style="cyan")
    table.add_column("value")
    table.add_column("from", style="dim")
    for key, value in flatten(settings).items():
        shown = "********" if isinstance(value, SecretStr) else ("" if value is None else str(value))
        if key == "agents.model" and value is None:
            shown = "(embedded SmolLM2-135M via llama.cpp)"
        src = sources.get(key) or next((s for k, s in sources.items() if key.startswith(k + ".")), "default")
        table.add_row(key, shown, src)
    console.print(table)
    console.print(f"[dim]files: ./agentlab.toml, {user_config_path()}; env: AGENTLAB_<KEY> (nested with __)[/]")
