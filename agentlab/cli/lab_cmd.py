"""``agentlab lab start|resume|status|list|publish-pending`` and ``agentlab demo``.

Running a lab is the library's (``agentlab/lab/launch.py``); these commands parse the options and hand it the
terminal's side (``agentlab/cli/lab_view.py``)."""

from __future__ import annotations

import json
from typing import Optional

import typer
from rich.table import Table

from agentlab.cli.common import budget_overrides, console, err_console, get_settings
from agentlab.cli.lab_view import TerminalLabUI, agent_calls_line, lab_option, run_one
from agentlab.errors import AgentlabError
from agentlab.lab.launch import LabRequest, configured_key, demo_config
from agentlab.lab.state import LabConfig

app = typer.Typer(help="Run an autonomous research lab: literature, plan, experiments, verified report, publish.",
                  no_args_is_help=True)


def register(root: typer.Typer) -> None:
    """Adds the ``lab`` group and ``demo`` to the root CLI."""
    root.add_typer(app, name="lab")
    root.command("demo", help="Run a lab on the embedded defaults: offline, no API key, a few minutes on a CPU.")(demo)


@app.command("start")
def start(
    goal: Optional[str] = typer.Option(None, "--goal", "-g", help="The research goal, in words."),
    goal_id: Optional[str] = typer.Option(None, "--goal-id", help="Take the goal from the preprint server (`agentlab goals list`)."),
    from_queue: bool = typer.Option(False, "--from-queue", help="Claim the next open goal from the server's queue; "
                                    "the lease is renewed while the lab runs and released when it ends."),
    copilot: bool = typer.Option(False, "--copilot", help="Pause after the plan and before publishing for your approval."),
    server: Optional[str] = typer.Option(None, "--server", help="Preprint server URL (config: server.url); empty = a local server for this run."),
    benchmark: Optional[str] = typer.Option(None, "--benchmark", "-b", help="Benchmark (`agentlab eval` names: math500, "
                                            "gsm8k, basic_arithmetic, rg:TASK...); default: the goal's, else basic_arithmetic."),
    baseline: str = lab_option("baseline", "--baseline"),
    dev_n: int = lab_option("dev_n", "--dev-n"),
    report_n: int = lab_option("report_n", "--report-n"),
    min_gain: float = lab_option("min_gain", "--min-gain"),
    iterations: int = lab_option("max_iterations", "--iterations"),
    search_k: int = lab_option("search_k", "--search-k", min=1),
    confirm_n: Optional[int] = lab_option("confirm_n", "--confirm-n", min=0),
    ablate: bool = lab_option("ablate", "--ablate/--no-ablate"),
    max_answer_tokens: int = lab_option("max_tokens_per_answer", "--max-answer-tokens"),
    concurrency: int = lab_option("concurrency", "--concurrency"),
    lab_name: str = lab_option("lab_name", "--lab-name", help="this lab's name on the server"),
    allow_code: bool = lab_option("allow_code_techniques", "--allow-code"),
    allow_training: bool = lab_option("allow_training", "--allow-training"),
    train_max_steps: int = lab_option("train_max_steps", "--train-max-steps"),
    train_max_minutes: float = lab_option("train_max_minutes", "--train-max-minutes", min=0.1),
    max_usd: Optional[float] = typer.Option(None, "--max-usd", help="Agents' LLM budget in USD (budgets.max_usd)."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="Agents' LLM token budget (budgets.max_tokens)."),
    max_jobs: Optional[int] = typer.Option(None, "--max-jobs", help="Maximum jobs (budgets.max_jobs)."),
    max_wall_minutes: Optional[float] = typer.Option(None, "--max-wall-minutes", help="Wall-time budget (budgets.max_wall_minutes)."),
    run_id: Optional[str] = typer.Option(None, "--run-id", help="Use this run id (default: generated)."),
    queue_if_server_down: bool = lab_option("queue_if_server_down", "--queue-if-server-down"),
    publish_failures: bool = lab_option("publish_failures", "--publish-failures"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No live display."),
) -> None:
    """Start a lab run. It is checkpointed: `agentlab lab resume RUN_ID` continues it after a crash.

    Before the first LLM call the lab checks the benchmark data, the preprint server, the sandbox and the
    model under study, and stops within seconds with the fix if one of them does not work."""
    if from_queue and (goal or goal_id):
        raise AgentlabError("--from-queue claims its goal from the server: drop --goal/--goal-id")
    config = LabConfig(**({"benchmark": benchmark} if benchmark else {}), baseline=baseline, dev_n=dev_n, report_n=report_n,
                       min_gain=min_gain, max_iterations=iterations, search_k=search_k,
                       max_tokens_per_answer=max_answer_tokens,
                       confirm_n=confirm_n, ablate=ablate, concurrency=concurrency, lab_name=lab_name, allow_code_techniques=allow_code,
                       allow_training=allow_training, train_max_steps=train_max_steps,
                       train_max_minutes=train_max_minutes,
                       queue_if_server_down=queue_if_server_down, publish_failures=publish_failures)
    run_one(LabRequest(config, goal=goal, goal_id=goal_id, from_queue=from_queue, copilot=copilot, server_url=server,
                       run_id=run_id), quiet, budget_overrides(max_usd, max_tokens, max_jobs, max_wall_minutes))


@app.command("resume")
def resume(
    run_id: str = typer.Argument(..., help="The run to continue (`agentlab lab list`)."),
    server: Optional[str] = typer.Option(None, "--server", help="Publish to this server instead of the run's."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No live display."),
) -> None:
    """Continue a run after a crash, a kill or a copilot pause; finished jobs are not rerun, nothing is published twice.

    A run started with --from-queue claims its goal back first (it runs on without a lease when another lab holds it)."""
    from agentlab.lab.launch import resume_run

    settings = get_settings()
    if resume_run(settings, run_id, server, TerminalLabUI(settings, quiet)).status == "failed":
        raise typer.Exit(1)


@app.command("status")
def status(run_id: Optional[str] = typer.Argument(None, help="A run id (default: the latest run)."),
           as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Phase, cost, jobs and best result of a run."""
    from agentlab.lab.run import run_status

    st = run_status(get_settings(), run_id)
    if as_json:
        console.print_json(json.dumps(st, default=str))
        return
    console.print(f"[b]{st['run_id']}[/] {st['status']} · phase {st.get('phase')} · ${st['usd']:.4f} · "
                  f"{st['tokens']:,} tokens in {st['llm_calls']} calls")
    console.print(f"goal: {st['goal']}")
    if st.get("agent_calls"):
        console.print(f"agents: {agent_calls_line(st['agent_calls'])}")
    if st.get("best_accuracy") is not None:
        console.print(f"best so far (dev): {st['best_technique']} {st['best_accuracy']:.1%}")
    if st.get("paper_id"):
        console.print(f"paper: {st['paper_id']} {st.get('paper_url') or ''}")
    t = Table("job", "split", "status", "accuracy", "n", "record")
    for j in st["jobs"]:
        r = j.get("record") or {}
        t.add_row(j["key"], j["split"], j["status"], f"{r['accuracy']:.1%}" if r else "-", str(r.get("n", "-")),
                  r.get("record_id", "-"))
    console.print(t)


@app.command("list")
def list_cmd(limit: int = typer.Option(50, "--limit")) -> None:
    """Lab runs in this workspace, newest first."""
    from agentlab.lab.run import list_runs

    rows = list_runs(get_settings(), limit)
    if not rows:
        console.print("no lab runs yet: agentlab lab start --goal \"...\"")
        return
    t = Table("run", "status", "phase", "best (dev)", "paper", "goal")
    for r in rows:
        best = f"{r['best_technique']} {r['best_accuracy']:.1%}" if r.get("best_accuracy") is not None else "-"
        t.add_row(r["run_id"], r["status"], r.get("phase") or "-", best, r.get("paper_id") or "-", (r["goal"] or "")[:50])
    console.print(t)


@app.command("publish-pending")
def publish_pending(server: Optional[str] = typer.Option(None, "--server", help="Server URL (config: server.url).")) -> None:
    """Publish reports left in the outbox while the server was unreachable."""
    from agentlab.lab.outbox import Outbox
    from agentlab.lab.publishing import Publisher

    settings = get_settings()
    url = server or settings.server.url
    if not url:
        raise AgentlabError("no server: pass --server URL or set server.url")
    pub = Publisher(url, configured_key(settings), Outbox(settings.workspace))
    results = pub.flush()
    pub.close()
    if not results:
        console.print("the outbox is empty")
    for rid, res in results.items():
        console.print(f"{rid}: {res}")


DEMO = demo_config()  # the demo's sizes, its options' defaults


def demo(
    goal: str = typer.Option("Find a prompting technique that improves the embedded model's accuracy on basic arithmetic.",
                             "--goal", help="The research goal."),
    benchmark: str = typer.Option(DEMO.benchmark, "--benchmark", help="Offline benchmark (basic_arithmetic, math500, ...)."),
    dev_n: int = typer.Option(DEMO.dev_n, "--dev-n", help="Dev-split problems per experiment."),
    report_n: int = typer.Option(DEMO.report_n, "--report-n", help="Held-out report-split problems."),
    iterations: int = typer.Option(DEMO.max_iterations, "--iterations", help="Experiment iterations."),
    keep_server: float = typer.Option(0, "--keep-server", help="Keep the local server up this many seconds to browse."),
    labs: int = typer.Option(1, "--labs", help="Run this many labs at once on one local preprint server and one "
                             "embedded model server (`agentlab labs run`); they share the goal."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """A whole lab on the embedded defaults: SmolLM2 as agents and model under study, offline, tiny sizes."""
    config = demo_config(benchmark=benchmark, dev_n=dev_n, report_n=report_n, max_iterations=iterations)
    settings = get_settings()
    if settings.agents.model or settings.model_under_study.engine != "llama.cpp" or settings.model_under_study.model:
        err_console.print("[yellow]note:[/] the demo uses your configured models instead of the embedded one")
    if labs != 1:
        from agentlab.cli.labs_view import run_many
        from agentlab.lab.launch_many import LabsRequest

        run_many(LabsRequest(labs, config, goal=goal, name="demo-lab", keep_server_s=keep_server), quiet)
        return
    run_one(LabRequest(config, goal=goal, keep_server_s=keep_server), quiet)
