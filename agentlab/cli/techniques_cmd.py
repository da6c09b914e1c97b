"""`agentlab techniques`: list and show reasoning techniques."""

from __future__ import annotations

import typer
from rich.table import Table

from agentlab.cli.common import console
from agentlab.techniques import builtin_techniques, get_technique

app = typer.Typer(help="Reasoning techniques the evaluation harness can run.", no_args_is_help=True)


@app.command("list")
def list_techniques() -> None:
    """List the built-in techniques."""
    table = Table()
    for col in ("name", "chains", "aggregation", "hash"):
        table.add_column(col, no_wrap=True)
    table.add_column("description")
    for name, spec in builtin_techniques().items():
        table.add_row(name, str(spec.chains.n), spec.chains.aggregation, spec.spec_hash(), spec.description)
    console.print(table)


@app.command("show")
def show(
    name: str = typer.Argument(..., help="A built-in technique name or a .yaml/.json spec file."),
    k: int = typer.Option(None, "--k", help="Show it with k chains."),
    as_json: bool = typer.Option(False, "--json", help="JSON instead of YAML."),
) -> None:
    """Print a technique's spec (YAML by default) and its content hash."""
    spec = get_technique(name, k=k)
    console.print(f"# spec_hash: {spec.spec_hash()}", highlight=False)
    console.print(spec.to_json() if as_json else spec.to_yaml(), highlight=False, markup=False, soft_wrap=True)
