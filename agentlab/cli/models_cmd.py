"""`agentlab models`: serve, list and stop OpenAI-compatible model servers."""

from __future__ import annotations

import signal
import time
from typing import Optional

import typer
from rich.table import Table

from agentlab.cli.common import console, get_settings

app = typer.Typer(help="Serve models under study (llama.cpp on CPU, vLLM on GPUs, or external).", no_args_is_help=True)


def _manager():
    """The registry of the model servers running for this workspace."""
    from agentlab.llm.serving import ServingManager

    return ServingManager(get_settings().workspace)


def _gpus(value: Optional[str]) -> list[int]:
    if not value:
        return []
    try:
        return [int(g) for g in value.split(",") if g.strip()]
    except ValueError:
        raise typer.BadParameter("use comma-separated GPU ids, e.g. 0,1", param_hint="--gpus") from None


@app.command("serve")
def serve(
    engine: str = typer.Option("llama.cpp", "--engine", "-e", help="llama.cpp, vllm or external."),
    model: Optional[str] = typer.Option(None, "--model", help="GGUF path (llama.cpp; default embedded) or model id (vllm)."),
    port: Optional[int] = typer.Option(None, "--port", help="Port (default: a free one)."),
    host: str = typer.Option("127.0.0.1", "--host"),
    gpus: Optional[str] = typer.Option(None, "--gpus", help="GPU ids for vllm, e.g. 0,1."),
    tp: int = typer.Option(1, "--tensor-parallel-size", "--tp", help="vLLM tensor-parallel size."),
    url: Optional[str] = typer.Option(None, "--url", help="External endpoint URL (engine external)."),
    parallel: Optional[int] = typer.Option(
        None, "--parallel", "-np", min=1, help="llama.cpp slots decoded together (default: model_under_study.parallel, "
                                               "else 4 per core, 4 to 16)."),
    detach: bool = typer.Option(False, "--detach", "-d", help="Leave it running and return."),
) -> None:
    """Start a server and keep it running until Ctrl-C (or in the background with --detach)."""
    if engine not in {"llama.cpp", "vllm", "external"}:
        raise typer.BadParameter("use llama.cpp, vllm or external", param_hint="--engine")
    from agentlab.llm.serving import ServerSpec

    settings = get_settings()
    mgr = _manager()
    spec = ServerSpec(engine=engine, model=model, port=port, host=host, gpus=_gpus(gpus),
                      tensor_parallel_size=tp, url=url, n_ctx=settings.model_under_study.n_ctx,
                      parallel=parallel or settings.model_under_study.parallel, detach=detach)
    with console.status(f"starting {engine}..."):
        server = mgr.start(spec)
    console.print(f"[green]ready[/] {server.name}: {server.url} (model {server.served_model!r};"
                  f" litellm: {server.litellm_model}; log {server.log_path})")
    if detach or engine == "external":
        return
    stop = False

    def _stop(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stop and server.name in {s.name for s in mgr.list()}:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        mgr.stop(server)
        console.print(f"stopped {server.name}")


@app.command("list")
def list_servers() -> None:
    """List running model servers."""
    servers = _manager().list()
    if not servers:
        console.print("no model servers running")
        return
    table = Table()
    for col in ("name", "engine", "model", "url", "pid", "up"):
        table.add_column(col)
    for s in servers:
        table.add_row(s.name, s.engine, s.served_model, s.url, str(s.pid), f"{time.time() - s.started:.0f}s")
    console.print(table)


@app.command("stop")
def stop(name: str = typer.Argument(..., help="Server name from `agentlab models list`, or 'all'.")) -> None:
    """Stop a running model server."""
    mgr = _manager()
    if name == "all":
        for s in mgr.list():
            mgr.stop(s)
            console.print(f"stopped {s.name}")
        return
    if not mgr.stop_named(name):
        raise typer.BadParameter(f"no running server named {name!r}; see `agentlab models list`")
    console.print(f"stopped {name}")


@app.command("build")
def build(force: bool = typer.Option(False, "--force", help="Rebuild even when the cache has it.")) -> None:
    """Compile llama.cpp's server and quantizer once from source (`make setup` does it; ~5 min on 2 cores)."""
    from agentlab.llm import llamacpp

    where = llamacpp.build(force=force, log=lambda m: console.print(m))  # a failure is a user error: one message
    console.print(f"llama.cpp tools in {where / 'bin'} (source tree {where / 'src'})")
