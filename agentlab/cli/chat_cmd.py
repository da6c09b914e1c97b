"""`agentlab chat`: one call through the gateway."""

from __future__ import annotations

from typing import Optional

import typer

from agentlab.cli.common import console, err_console, get_settings


def chat(
    prompt: str = typer.Argument(..., help="The message to send."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="litellm model string (default: config, else embedded)."),
    role: Optional[str] = typer.Option(None, "--role", help="Use this role's model override."),
    system: Optional[str] = typer.Option(None, "--system", help="A system prompt."),
    max_tokens: int = typer.Option(256, "--max-tokens", help="Most tokens to generate."),
    temperature: float = typer.Option(0.0, "--temperature", "-t"),
) -> None:
    """Send one prompt to the agents' model (offline embedded model when none is configured)."""
    from agentlab.llm.gateway import Gateway  # lazy: litellm takes seconds to import

    settings = get_settings()
    with Gateway(settings) as gw:
        if not (model or settings.model_for_role(role)):
            err_console.print("[dim]using the embedded SmolLM2-135M (llama.cpp, CPU)...[/]")
        resp = gw.complete(prompt, role=role, system=system, model=model, max_tokens=max_tokens,
                           temperature=temperature)
    console.print(resp.text.strip(), highlight=False, markup=False)
    err_console.print(f"[dim]{resp.model} · {resp.tokens_in}+{resp.tokens_out} tokens · ${resp.cost_usd:.5f}"
                      f" · {resp.latency_s:.2f}s{' · cached' if resp.cached else ''}[/]")
