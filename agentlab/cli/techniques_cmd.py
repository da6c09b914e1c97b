"""`agentlab techniques`: list, show and pull (from published papers) reasoning techniques."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from agentlab.cli.common import console, server_client

app = typer.Typer(help="Reasoning techniques the evaluation harness can run.", no_args_is_help=True)


@app.command("list")
def list_techniques() -> None:
    """List the built-in techniques."""
    from agentlab.techniques import builtin_techniques

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
    from agentlab.techniques import get_technique

    spec = get_technique(name, k=k)
    console.print(f"# spec_hash: {spec.spec_hash()}", highlight=False)
    console.print(spec.to_json() if as_json else spec.to_yaml(), highlight=False, markup=False, soft_wrap=True)


@app.command("pull")
def pull(
    ref: str = typer.Argument(..., help="PAPER_ID (the technique the paper proposes) or PAPER_ID:NAME (any technique "
                                        "the paper evaluated, its baseline too)."),
    out: Path | None = typer.Option(None, "-o", "--output", help="Where to write the spec (default: NAME.yaml)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Save a technique a paper published as a spec file that `agentlab eval run -t FILE` and labs run as is."""
    from agentlab.techniques import TechniqueError, TechniqueSpec
    from agentlab.techniques.published import choose_published

    paper_id, _, name = ref.partition(":")
    with server_client() as c:
        published = c.techniques(paper_id)
        body = c.get_paper(paper_id).body if not name and len(published) > 1 else ""
    chosen = choose_published(paper_id, published, name, body)
    spec = TechniqueSpec.parse(chosen.spec)
    if spec.spec_hash() != chosen.spec_hash:  # the server checks this too; a different agentlab version may not
        raise TechniqueError(f"the spec of {spec.name} hashes to {spec.spec_hash()} here, published as "
                             f"{chosen.spec_hash}: this agentlab version reads it differently")
    path = out or Path(f"{spec.name}.yaml")
    if path.exists() and not force:
        raise TechniqueError(f"{path} exists (pass --force to overwrite, or -o another file)")
    path.write_text(f"# pulled from paper {paper_id} (spec_hash {spec.spec_hash()})\n" + spec.to_yaml())
    if not name and len(published) > 1:
        others = ", ".join(t.name for t in published if t is not chosen)
        console.print(f"pulled {spec.name}, the technique paper {paper_id} proposes (it also published: {others}; "
                      f"take one of those as {paper_id}:NAME)", highlight=False)
    console.print(f"wrote {path} ({spec.name}, {spec.kind}, spec_hash {spec.spec_hash()}); run it with "
                  f"`agentlab eval run -t {path}`", highlight=False)
