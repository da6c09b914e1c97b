"""``agentlab labs run|resume``: many labs at once on one preprint server, watched on one dashboard.

Starting, watching and continuing the labs is ``agentlab/lab/launch_many.py`` (processes and the registry:
``agentlab/lab/parallel.py``); this module parses the options and hands the terminal's side
(``agentlab/cli/labs_view.py``) to the library.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from agentlab.cli.common import budget_overrides, get_settings, say
from agentlab.cli.lab_view import lab_option, run_one
from agentlab.cli.labs_view import TerminalLabsUI, argv_prefix, exit_for, run_many
from agentlab.errors import AgentlabError
from agentlab.lab.goals_file import read_goals_file
from agentlab.lab.launch import LabRequest
from agentlab.lab.launch_many import LabsRequest, labs_to_resume, resume_labs
from agentlab.lab.state import LabConfig

app = typer.Typer(help="Run many labs at once: they share one preprint server, the workspace (jobs, GPUs) and "
                       "one model server, on one dashboard.", no_args_is_help=True)

BACKENDS = ("local", "ray")

RUN_HELP = (
    "Run N labs at once on one preprint server, on one dashboard; Ctrl-C stops them all (resumable).\n\n"
    "Goals: exactly one of --goal TEXT (all labs on one goal), --goals-file FILE or --from-queue (each lab claims "
    "a goal of its own from the server's queue).\n\n"
    "Each lab is a child process with its own run id (`agentlab lab status RUN_ID`) and a log under "
    "<workspace>/logs/labs/. Continue stopped labs with `agentlab labs resume`."
)


@app.command("run", help=RUN_HELP)
def run(
    parallel: int = typer.Option(2, "--parallel", "-n", help="How many labs to run at once (named NAME-1 .. NAME-N)."),
    goal: Optional[str] = typer.Option(None, "--goal", "-g", help="One research goal for every lab: added to the "
                                       "server once, all labs work on the same goal id."),
    goals_file: Optional[Path] = typer.Option(None, "--goals-file", help="Import these goals (YAML or JSONL, "
                                              "as `agentlab goals import` reads); each lab claims one from the queue."),
    from_queue: bool = typer.Option(False, "--from-queue", help="Each lab claims the next open goal from the "
                                    "server's queue (`agentlab goals add`)."),
    server: Optional[str] = typer.Option(None, "--server", help="Preprint server URL (config: server.url); empty = "
                                         "a local server on <workspace>/preprint, one API key per lab."),
    name: str = typer.Option("agentlab", "--name", help="Lab name prefix: the labs are NAME-1 .. NAME-N (on the "
                             "local server each has its own API key; a configured server sees server.api_key's lab)."),
    benchmark: Optional[str] = typer.Option(None, "--benchmark", "-b", help="Benchmark (default: the goal's, else "
                                            "basic_arithmetic)."),
    baseline: str = lab_option("baseline", "--baseline"),
    dev_n: int = lab_option("dev_n", "--dev-n"),
    report_n: int = lab_option("report_n", "--report-n"),
    iterations: int = lab_option("max_iterations", "--iterations"),
    max_answer_tokens: int = lab_option("max_tokens_per_answer", "--max-answer-tokens"),
    concurrency: int = lab_option("concurrency", "--concurrency"),
    allow_code: bool = lab_option("allow_code_techniques", "--allow-code"),
    max_usd: Optional[float] = typer.Option(None, "--max-usd", help="Agents' LLM budget in USD per lab "
                                            "(budgets.max_usd)."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="Agents' token budget per lab "
                                             "(budgets.max_tokens)."),
    max_jobs: Optional[int] = typer.Option(None, "--max-jobs", help="Maximum jobs per lab (budgets.max_jobs)."),
    max_wall_minutes: Optional[float] = typer.Option(None, "--max-wall-minutes", help="Wall time per lab "
                                                     "(budgets.max_wall_minutes)."),
    backend: Optional[str] = typer.Option(None, "--backend", help="Where the labs' jobs run: local or ray "
                                          "(config jobs.backend); default: as configured."),
    stop_timeout: float = typer.Option(60.0, "--stop-timeout", help="After Ctrl-C, seconds the labs get to stop "
                                       "cleanly before they are killed."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No dashboard: one line per phase change."),
) -> None:
    _check_request(parallel, goal, goals_file, from_queue, backend)
    goals = read_goals_file(goals_file) if goals_file else None  # the whole file is checked before anything starts
    config = LabConfig(**({"benchmark": benchmark} if benchmark else {}), baseline=baseline, dev_n=dev_n,
                       report_n=report_n, max_iterations=iterations, max_tokens_per_answer=max_answer_tokens,
                       concurrency=concurrency, allow_code_techniques=allow_code)
    overrides = {**budget_overrides(max_usd, max_tokens, max_jobs, max_wall_minutes),
                 **({"jobs.backend": backend} if backend else {})}
    run_many(LabsRequest(parallel, config, goal=goal, goals=goals, server_url=server, name=name, overrides=overrides,
                         stop_timeout=stop_timeout), quiet)


@app.command("resume")
def resume(
    run_ids: Optional[list[str]] = typer.Argument(None, help="Runs to continue (default: the runs of the last "
                                                  "`agentlab labs run`)."),
    server: Optional[str] = typer.Option(None, "--server", help="Publish to this server instead of the runs' own."),
    stop_timeout: float = typer.Option(60.0, "--stop-timeout", help="After Ctrl-C, seconds the labs get to stop "
                                       "cleanly before they are killed."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No dashboard: one line per phase change."),
) -> None:
    """Continue labs in parallel (after Ctrl-C, a crash or a kill), against the server they started on.

    Finished runs are shown, not rerun; finished jobs are not rerun and nothing is published twice. A local
    server started by `labs run` is started again on the same data."""
    base = get_settings()
    reg, slots = labs_to_resume(base, run_ids, say)
    settings = get_settings(**reg.overrides) if reg and reg.overrides else base  # the settings they ran with
    exit_for(*resume_labs(settings, reg, slots, server, TerminalLabsUI(quiet), stop_timeout, argv_prefix()))


@app.command("child", hidden=True)
def child(
    run_id: str = typer.Option(..., "--run-id"),
    server: str = typer.Option(..., "--server"),
    lab_config: str = typer.Option(..., "--lab-config", help="The lab's LabConfig as JSON."),
    goal_id: Optional[str] = typer.Option(None, "--goal-id"),
    from_queue: bool = typer.Option(False, "--from-queue"),
) -> None:
    """One lab of `labs run` (run as a child process): `lab start --quiet` with its whole LabConfig."""
    config = LabConfig.model_validate_json(lab_config)  # only the fields given count as set (benchmark)
    run_one(LabRequest(config, goal_id=goal_id, from_queue=from_queue, server_url=server, run_id=run_id), quiet=True)


def _check_request(parallel: int, goal: str | None, goals_file: Path | None, from_queue: bool,
                   backend: str | None) -> None:
    if parallel < 1:
        raise AgentlabError(f"--parallel: give the number of labs to run (1 or more), not {parallel}")
    given = [flag for flag, value in (("--goal", goal), ("--goals-file", goals_file), ("--from-queue", from_queue))
             if value]
    if len(given) != 1:
        raise AgentlabError("give exactly one source of goals: --goal TEXT, --goals-file FILE or --from-queue"
                            + (f" (got {' and '.join(given)})" if given else ""))
    if backend is not None and backend not in BACKENDS:
        raise AgentlabError(f"--backend: use local or ray, not {backend!r}")

