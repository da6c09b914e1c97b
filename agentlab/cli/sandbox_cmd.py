"""`agentlab sandbox run`: try the sandbox by hand."""

from __future__ import annotations

import dataclasses
import re
import sys

import typer

from agentlab.cli.common import err_console, get_settings

app = typer.Typer(help="Run commands in the sandbox used for agent-written code.", no_args_is_help=True)


def _mb(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", text.lower())
    if not m:
        raise typer.BadParameter(f"{text!r}: use e.g. 512M, 2G or a number of MB", param_hint="--memory")
    scale = {"": 1, "k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}[m.group(2)]
    return max(int(float(m.group(1)) * scale), 16)


@app.command("run", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run_cmd(
    command: list[str] = typer.Argument(..., help="The command, after `--`: agentlab sandbox run -- python x.py"),
    timeout: float | None = typer.Option(None, "--timeout", help="Wall-clock seconds (config sandbox.timeout_s)."),
    memory: str | None = typer.Option(None, "--memory", help="Memory limit, e.g. 512M or 2G (config sandbox.memory_mb)."),
    network: str = typer.Option("none", "--network", help="none, or proxy (the metered proxy to the model under study)."),
    workdir: str | None = typer.Option(None, "--workdir", help="Host folder to use as the workdir (default: a new temp folder)."),
    backend: str | None = typer.Option(None, "--backend", help="bubblewrap or process (config sandbox.backend)."),
    show: bool = typer.Option(False, "--report", help="Print limits hit, times and paths on stderr afterwards."),
) -> None:
    """Run COMMAND in the sandbox, print its output and exit with its exit code."""
    import sandbox
    from agentlab.jobs.execute import sandbox_options_for
    from sandbox import Limits, ProxyConfig

    if network not in ("none", "proxy"):
        raise typer.BadParameter("use none or proxy", param_hint="--network")
    s = get_settings()
    sc = s.sandbox
    opts = dataclasses.replace(sandbox_options_for(sc), backend=backend or sc.backend)
    limits = Limits(timeout_s=timeout or sc.timeout_s, memory_mb=_mb(memory) if memory else sc.memory_mb,
                    disk_mb=sc.disk_mb, max_procs=sc.max_procs, tail_chars=0)
    proxy = None
    if network == "proxy":
        mus = s.model_under_study
        if not mus.url:
            raise sandbox.SandboxError("--network proxy needs model_under_study.url (an OpenAI-compatible /v1 URL)")
        proxy = ProxyConfig(upstream=mus.url, api_key=mus.api_key.get_secret_value() if mus.api_key else None)
    res = sandbox.run(command=command, limits=limits, network=network, workdir=workdir, proxy=proxy, options=opts)
    for path, stream in ((res.stdout_path, sys.stdout.buffer), (res.stderr_path, sys.stderr.buffer)):
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 16):
                stream.write(chunk)
        stream.flush()
    if res.killed_by:
        err_console.print(f"[bold red]sandbox:[/] stopped: {res.limit_message}", highlight=False)
    if show:
        err_console.print(f"exit {res.exit_code}, wall {res.wall_s:.2f} s, cpu {res.cpu_s:.2f} s, "
                          f"peak {res.peak_rss_mb} MB, backend {res.backend}; workdir {res.workdir}; "
                          f"logs {res.stdout_path.parent}", highlight=False)
    raise typer.Exit(res.exit_code)
