"""The ``agentlab`` command line (typer + rich).

Each command group lives in its own module and is registered here; a command module imports no other (what
two share is in ``common``, ``lab_view``, ``labs_view``, ``eval_run``), and what a command runs on (the lab, the
gateway, litellm, LangGraph, torch...) is imported when it runs, so ``agentlab --help`` starts at once. User
mistakes end with one line on stderr and a non-zero exit code; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Optional

import typer

import agentlab  # noqa: F401  (offline environment defaults)
from agentlab.cli import chat_cmd, config_cmd, models_cmd, usage_cmd
from agentlab.cli import eval_cmd, techniques_cmd  # evaluation
from agentlab.cli import goals_cmd, papers_cmd, server_cmd  # the preprint server
from agentlab.cli import lab_cmd, labs_cmd, report_cmd  # one lab, many labs, a paper's claims
from agentlab.cli import jobs_cmd, sandbox_cmd, train_cmd  # sandbox, jobs, GPUs, training
from agentlab.cli.common import err_console, state
from agentlab.errors import AgentlabError

app = typer.Typer(
    name="agentlab",
    help="Autonomous research labs of LLM agents: run experiments, write verified reports, publish them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _global(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Config file (default: ./agentlab.toml, ~/.config/agentlab/agentlab.toml)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Benchmark data folder (config: data_dir)."),
    workspace: Optional[Path] = typer.Option(None, "--workspace", help="Workspace for labs, jobs and ledgers (config: workspace)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Agents' litellm model string (config: agents.model)."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    state.config_file = config
    state.debug = debug
    state.overrides = {k: v for k, v in {
        "data_dir": str(data_dir) if data_dir else None,
        "workspace": str(workspace) if workspace else None,
        "agents.model": model,
    }.items() if v is not None}


app.add_typer(config_cmd.app, name="config")
app.add_typer(models_cmd.app, name="models")
app.add_typer(eval_cmd.app, name="eval")
app.add_typer(techniques_cmd.app, name="techniques")
app.add_typer(server_cmd.app, name="server")
app.add_typer(papers_cmd.app, name="papers")
app.add_typer(goals_cmd.app, name="goals")
app.add_typer(jobs_cmd.app, name="jobs")
app.add_typer(sandbox_cmd.app, name="sandbox")
app.add_typer(report_cmd.app, name="report")
app.add_typer(train_cmd.app, name="train")
app.add_typer(labs_cmd.app, name="labs")
app.command("gpus")(jobs_cmd.gpus)
app.command("chat")(chat_cmd.chat)
app.command("usage")(usage_cmd.usage)
lab_cmd.register(app)  # lab start|resume|status|list, demo


def user_errors() -> tuple[type[Exception], ...]:
    """User-fixable errors: one line on stderr, no traceback (sandbox and preprint_server have their own bases;
    imported here, when an error needs them, so that the CLI starts without either)."""
    from preprint_server.errors import PreprintServerError
    from sandbox.types import SandboxError

    return AgentlabError, SandboxError, PreprintServerError


def main() -> None:
    # Ctrl-C stops a lab cleanly (jobs cancelled, run resumable), and `labs run` stops its labs with SIGINT: a
    # process started in the background by a non-interactive shell inherits SIGINT ignored, so take it back
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        app()
    except Exception as exc:
        if state.debug or not isinstance(exc, user_errors()):
            raise
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
