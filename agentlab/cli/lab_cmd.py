"""``agentlab lab start|resume|status|list|publish-pending`` and ``agentlab demo``."""

from __future__ import annotations

import json
import time
from typing import Any, Optional

import typer
from rich.live import Live
from rich.markdown import Markdown
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from agentlab.cli.common import console, err_console, get_settings
from agentlab.errors import AgentlabError
from agentlab.lab.state import PHASES, LabConfig

app = typer.Typer(help="Run an autonomous research lab: literature, plan, experiments, verified report, publish.",
                  no_args_is_help=True)


def register(root: typer.Typer) -> None:
    """Adds the ``lab`` group and ``demo`` to the root CLI."""
    root.add_typer(app, name="lab")
    root.command("demo", help="Run a lab on the embedded defaults: offline, no API key, a few minutes on a CPU.")(demo)


# -- terminal UI ---------------------------------------------------------------------------------


class LabDisplay:
    """Rich live view: phases, live cost, the running experiment's accuracy, the latest notes."""

    def __init__(self, goal: str, quiet: bool = False):
        self.goal, self.quiet = goal, quiet
        self.phase, self.done_phases = "literature_review", set()
        self.usd, self.tokens = 0.0, 0
        self.job: dict[str, Any] = {}
        self.results: list[str] = []
        self.notes: list[str] = []
        self.run_id = ""
        self.server_key: str | None = None
        self.server_url: str | None = None
        self.live = Live(self.render(), console=console, refresh_per_second=4, transient=False) if not quiet else None

    def __enter__(self) -> "LabDisplay":
        if self.live:
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.live:
            self.live.update(self.render())
            self.live.__exit__(*exc)

    def render(self) -> Panel:
        t = Table.grid(padding=(0, 1))
        for p in PHASES[:-1]:
            mark = "[green]✓[/]" if p in self.done_phases and p != self.phase else ("[yellow]▶[/]" if p == self.phase else "·")
            t.add_row(mark, p.replace("_", " "))
        side = Table.grid(padding=(0, 1))
        side.add_row("[b]cost[/]", f"${self.usd:.4f} · {self.tokens:,} tokens")
        if self.job:
            j = self.job
            acc = f"{j['correct'] / j['done']:.1%}" if j.get("done") else "-"
            side.add_row("[b]job[/]", f"{j.get('key', '')} {j.get('done', 0)}/{j.get('total', '?')} · accuracy {acc}")
        for r in self.results[-4:]:
            side.add_row("", r)
        for n in self.notes[-3:]:
            side.add_row("[dim]note[/]", f"[dim]{n[:110]}[/]")
        grid = Table.grid(padding=(0, 3))
        grid.add_row(t, side)
        return Panel(grid, title=f"lab {self.run_id}", subtitle=self.goal[:80])

    def on_event(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "run":
            self.run_id = data["run_id"]
        elif kind == "phase":
            if self.phase != data["phase"]:
                self.done_phases.add(self.phase)
            self.phase = data["phase"]
        elif kind == "node_done":
            self.usd, self.tokens = data.get("usd", self.usd), data.get("tokens", self.tokens)
        elif kind == "job_started":
            self.job = {"key": data["key"], "done": 0, "correct": 0, "total": "?"}
        elif kind == "job_progress":
            self.job = {"key": data["key"], "done": data["done"], "correct": data["correct"], "total": data["total"]}
        elif kind in ("job_finished", "job_reused"):
            acc = data.get("accuracy")
            self.results.append(f"{data['key']}: " + (f"{acc:.1%}" if acc is not None else f"[red]{data.get('status')}[/]")
                                + (" (reused)" if kind == "job_reused" else ""))
        elif kind == "note":
            self.notes.append(data["text"])
        elif kind == "plan_sizing" and not self.quiet:  # printed whole: the live panel shows notes cut short
            console.print(f"[b]plan[/] {data['text']}")
        if self.live:
            self.live.update(self.render())
        elif kind in ("phase", "job_finished", "stopped") and not self.quiet:
            console.print(f"[{kind}] {data}")


# -- copilot ---------------------------------------------------------------------------------------


def ask_human(payload: dict[str, Any]) -> dict[str, Any]:
    """Show the plan or the report and take approve / edit / feedback (/ reject) from the terminal."""
    if payload.get("kind") == "plan":
        plan = payload.get("plan") or {}
        shown = {k: plan.get(k) for k in ("hypothesis", "techniques", "rationale", "benchmark", "baseline",
                                          "dev_n", "report_n", "min_gain")}
        sizing = (plan.get("sizing") or {}).get("text", "")
        console.print(Panel(json.dumps(shown, indent=2) + f"\n\n{sizing}", title="research plan (copilot)"))
        action = typer.prompt("approve / edit / feedback", default="approve").strip().lower()
        if action.startswith("e"):
            hyp = typer.prompt("hypothesis", default=plan.get("hypothesis", ""))
            techs = typer.prompt("techniques (comma-separated)", default=",".join(plan.get("techniques", [])))
            return {"action": "edit", "plan": {"hypothesis": hyp, "techniques": [t.strip() for t in techs.split(",") if t.strip()]}}
        if action.startswith("f"):
            return {"action": "feedback", "text": typer.prompt("feedback")}
        return {"action": "approve"}
    console.print(Panel(Markdown(payload.get("markdown", "")[:4000]), title=f"report: {payload.get('title', '')}"))
    console.print(f"full report: {payload.get('path')}")
    action = typer.prompt("approve / edit / feedback / reject", default="approve").strip().lower()
    if action.startswith("e"):
        edited = typer.edit(payload.get("markdown", ""), extension=".md")
        return {"action": "edit", "markdown": edited} if edited else {"action": "approve"}
    if action.startswith("f"):
        return {"action": "feedback", "text": typer.prompt("feedback")}
    if action.startswith("r"):
        return {"action": "reject"}
    return {"action": "approve"}


# -- commands --------------------------------------------------------------------------------------


def _budget_overrides(max_usd, max_tokens, max_jobs, max_wall_minutes) -> dict[str, Any]:
    return {k: v for k, v in {"budgets.max_usd": max_usd, "budgets.max_tokens": max_tokens,
                              "budgets.max_jobs": max_jobs, "budgets.max_wall_minutes": max_wall_minutes}.items()
            if v is not None}


def _server(settings, server_url: str | None, lab_name: str, workspace) -> tuple[str | None, str | None, Any, Any]:
    """(url, key, stop, data_dir): the configured server, or a local one started for this run."""
    url = server_url or settings.server.url
    if url:
        key = settings.server.api_key.get_secret_value() if settings.server.api_key else None
        return url, key, None, None
    from agentlab.lab.local_server import start_for_lab

    console.print("[dim]no preprint server configured: starting a local one for this run...[/]")
    url, key, stop, data_dir = start_for_lab(workspace, lab_name)
    return url, key, stop, data_dir


def _drive(settings, outcome_fn, display: LabDisplay, copilot: bool):
    from agentlab.lab.run import resume_lab

    outcome = outcome_fn(display.on_event)
    while outcome.status == "paused":
        if display.live:
            display.live.stop()
        decision = ask_human(outcome.interrupt or {}) if copilot or outcome.interrupt else {"action": "approve"}
        if display.live:
            display.live.start()
        outcome = resume_lab(settings, outcome.run_id, resume=decision, on_event=display.on_event,
                             server_key=display.server_key, server_url=display.server_url)
    return outcome


def agent_calls_line(rows: list[dict[str, Any]]) -> str:
    """Per role: calls, and how structured answers went (grammar-constrained, re-asks, fallbacks to a default)."""
    return "; ".join(f"{r['key']} {r['calls']} calls ({r['grammar'] or 0} grammar, {r['reasks'] or 0} re-asks, "
                     f"{r['fallbacks'] or 0} fallbacks)" for r in rows)


def _print_outcome(outcome, data_dir=None, settings=None) -> None:
    st = outcome.state
    pub = st.get("publication") or {}
    final = st.get("final") or {}
    console.print(f"\n[b]run[/] {outcome.run_id}: {outcome.status}"
                  + (f" ([yellow]{st.get('stop_reason')}[/])" if st.get("stop_reason") else ""))
    if st.get("failure"):
        console.print(f"  [red]failed[/]: {escape(st['failure'])}")
        if not pub:
            console.print("  nothing was published (a run without report-split results is not a paper; "
                          "--publish-failures publishes it marked as a failed run)")
    for key in ("technique", "baseline"):
        r = final.get(key)
        if r:
            console.print(f"  {key:9} {r['technique']}: {r['correct']}/{r['n']} = {r['accuracy']:.1%} "
                          f"[{r['ci_low']:.1%}, {r['ci_high']:.1%}] (record {r['record_id']})")
    if settings is not None:
        from agentlab.llm.usage import UsageLedger

        with UsageLedger(settings.db_path) as ledger:
            rows = ledger.summary(group_by="role", run_id=outcome.run_id)
        if rows:
            console.print(f"  agents: {agent_calls_line(rows)}")
    files = (st.get("report") or {}).get("files") or {}
    if files:
        console.print(f"  report: {files.get('markdown')}  latex: {files.get('latex')}"
                      + (f"  pdf: {files['pdf']}" if files.get("pdf") else ""))
    if pub.get("status") == "published":
        console.print(f"  [green]published[/] paper {pub.get('paper_id')}: {pub.get('url')}")
    elif pub.get("status") == "queued":
        console.print(f"  [yellow]server unreachable[/]: kept in the outbox {pub.get('outbox')} "
                      "(published by `agentlab lab publish-pending` or the next run)")
    if data_dir:  # the run's local server stops with the command: how to read the paper afterwards
        pid = pub.get("paper_id")
        console.print(f"  read it: agentlab server start --data-dir {data_dir} --port 8000, then open "
                      + (f"http://127.0.0.1:8000/papers/{pid}" if pid else "http://127.0.0.1:8000/")
                      + (f"  (or: AGENTLAB_SERVER__URL=http://127.0.0.1:8000 agentlab papers show {pid})" if pid else ""))


def run_lab_command(goal: Optional[str], goal_id: Optional[str], copilot: bool, server_url: Optional[str],
                    config: LabConfig, overrides: dict[str, Any], quiet: bool = False,
                    run_id: Optional[str] = None, keep_server_s: float = 0, from_queue: bool = False):
    from agentlab.cli.goal_queue import claim_from_queue, release_goal
    from agentlab.lab.run import new_run_id, start_lab

    settings = get_settings(**overrides) if overrides else get_settings()
    url, key, stop, data_dir = _server(settings, server_url, config.lab_name, settings.workspace)
    hold, released = None, "interrupted"
    try:
        if from_queue:
            run_id = run_id or new_run_id()
            hold = claim_from_queue(settings, url, key, run_id)
            goal, goal_id = hold.goal.text, hold.goal_id
            if hold.goal.benchmark and "benchmark" not in config.model_fields_set:
                config.benchmark = hold.goal.benchmark
        elif goal_id is not None:
            from preprint_server.client import PreprintClient

            with PreprintClient(url, api_key=key) as client:
                goals = {str(g.id): g for g in client.list_goals()}
            if str(goal_id) not in goals:
                raise AgentlabError(f"no goal {goal_id} on {url}: see `agentlab goals list`")
            g = goals[str(goal_id)]
            goal = g.text
            if g.benchmark and "benchmark" not in config.model_fields_set:
                config.benchmark = g.benchmark
        if not goal:
            raise AgentlabError("give a research goal: --goal \"...\", --goal-id N or --from-queue")
        if "benchmark" not in config.model_fields_set:
            config.benchmark = DEFAULT_BENCHMARK
        config.server_url, config.copilot = url, copilot
        display = LabDisplay(goal, quiet=quiet)
        display.server_key, display.server_url = key, url
        with display:
            outcome = _drive(settings, lambda ev: start_lab(settings, goal, config, goal_id=goal_id, run_id=run_id,
                                                            on_event=ev, server_key=key, from_queue=from_queue),
                             display, copilot)
        released = outcome.status if outcome.status != "paused" else "interrupted"
        _print_outcome(outcome, data_dir, settings)
        if outcome.status == "failed":
            raise typer.Exit(1)
        if stop and keep_server_s:
            console.print(f"  the local server stays up at {url} for {keep_server_s:.0f}s (Ctrl-C to stop)")
            try:
                time.sleep(keep_server_s)
            except KeyboardInterrupt:
                pass
        return outcome
    except Exception as exc:
        if not isinstance(exc, typer.Exit):
            released = f"failed: {type(exc).__name__}: {exc}"
        raise
    finally:
        if hold is not None:
            release_goal(hold, released)
        if stop:
            stop()


DEFAULT_BENCHMARK = "basic_arithmetic"


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
    baseline: str = typer.Option("zero_shot_cot", "--baseline", help="Baseline technique."),
    dev_n: int = typer.Option(20, "--dev-n", help="Problems in the dev split (tuning)."),
    report_n: int = typer.Option(500, "--report-n", help="Most problems in the held-out report split (the "
                                 "budget); the lab sizes it for 80% power to detect --min-gain."),
    min_gain: float = typer.Option(0.05, "--min-gain", help="Smallest gain in accuracy worth reporting "
                                   "(0.05 = 5 points): the report split is sized to detect it."),
    iterations: int = typer.Option(3, "--iterations", help="Experiment iterations on the dev split (the search's "
                                   "expansions)."),
    search_k: int = typer.Option(2, "--search-k", min=1, help="Nodes a search round expands: the top k by paired "
                                 "dev score against the baseline (their jobs run together)."),
    confirm_n: Optional[int] = typer.Option(None, "--confirm-n", min=0, help="Fresh dev problems the best dev node "
                                            "is confirmed on before the report split (default: --dev-n; 0 = off)."),
    ablate: bool = typer.Option(True, "--ablate/--no-ablate", help="Remove each part of the best technique in turn "
                                "on the confirmation problems, when the job budget allows."),
    max_answer_tokens: int = typer.Option(512, "--max-answer-tokens", help="Max tokens per answer of the model under study."),
    concurrency: int = typer.Option(8, "--concurrency", help="Requests in flight to the model under study."),
    lab_name: str = typer.Option("agentlab", "--lab-name", help="This lab's name on the server."),
    allow_code: bool = typer.Option(False, "--allow-code", help="Let the ML engineer write code techniques "
                                    "(solve(problem, client), run in the sandbox); for capable agent models."),
    allow_training: bool = typer.Option(False, "--allow-training", help="Let the ML engineer fine-tune the model "
                                        "under study (SFT/GRPO with LoRA, a sandboxed train job) and evaluate the "
                                        "trained checkpoint; needs a local model under study."),
    train_max_steps: int = typer.Option(30, "--train-max-steps", help="Optimizer steps one training technique may run."),
    train_max_minutes: float = typer.Option(20.0, "--train-max-minutes", min=0.1,
                                            help="Wall-clock budget of one training technique."),
    max_usd: Optional[float] = typer.Option(None, "--max-usd", help="Agents' LLM budget in USD (budgets.max_usd)."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="Agents' LLM token budget (budgets.max_tokens)."),
    max_jobs: Optional[int] = typer.Option(None, "--max-jobs", help="Maximum jobs (budgets.max_jobs)."),
    max_wall_minutes: Optional[float] = typer.Option(None, "--max-wall-minutes", help="Wall-time budget (budgets.max_wall_minutes)."),
    run_id: Optional[str] = typer.Option(None, "--run-id", help="Use this run id (default: generated)."),
    queue_if_server_down: bool = typer.Option(False, "--queue-if-server-down", help="Start even if the preprint "
                                              "server is unreachable; the paper waits in the outbox."),
    publish_failures: bool = typer.Option(False, "--publish-failures", help="Publish a run in which no "
                                          "report-split evaluation finished, marked failed-run, without results."),
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
    run_lab_command(goal, goal_id, copilot, server, config,
                    _budget_overrides(max_usd, max_tokens, max_jobs, max_wall_minutes), quiet, run_id,
                    from_queue=from_queue)


@app.command("resume")
def resume(
    run_id: str = typer.Argument(..., help="The run to continue (`agentlab lab list`)."),
    server: Optional[str] = typer.Option(None, "--server", help="Publish to this server instead of the run's."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No live display."),
) -> None:
    """Continue a run after a crash, a kill or a copilot pause; finished jobs are not rerun, nothing is published twice.

    A run started with --from-queue claims its goal back first (it runs on without a lease when another lab holds it)."""
    from agentlab.cli.goal_queue import reclaim_goal, release_goal
    from agentlab.lab.run import resume_lab
    from agentlab.lab.store import LabStore

    settings = get_settings()
    with LabStore(settings.db_path) as store:
        row = store.get_run(run_id)
    if row is None:
        raise AgentlabError(f"no lab run {run_id!r}: see `agentlab lab list`")
    run_config = json.loads(row.get("config") or "{}")
    saved = run_config.get("lab") or {}
    url = server or settings.server.url
    stop = data_dir = hold = None
    released = "interrupted"
    key = settings.server.api_key.get_secret_value() if settings.server.api_key else None
    if not url:
        url, key, stop, data_dir = _server(settings, None, saved.get("lab_name", "agentlab"), settings.workspace)
    try:
        if run_config.get("from_queue") and run_config.get("goal_id") and row["status"] not in ("done", "wrapped_up"):
            hold = reclaim_goal(settings, url, key, run_config["goal_id"], run_id)
        display = LabDisplay(row["goal"], quiet=quiet)
        display.server_key, display.server_url = key, url
        copilot = bool(saved.get("copilot"))
        with display:
            outcome = _drive(settings, lambda ev: resume_lab(settings, run_id, on_event=ev, server_key=key,
                                                             server_url=url), display, copilot)
        released = outcome.status if outcome.status != "paused" else "interrupted"
        _print_outcome(outcome, data_dir, settings)
        if outcome.status == "failed":
            raise typer.Exit(1)
    except Exception as exc:
        if not isinstance(exc, typer.Exit):
            released = f"failed: {type(exc).__name__}: {exc}"
        raise
    finally:
        if hold is not None:
            release_goal(hold, released)
        if stop:
            stop()


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
    key = settings.server.api_key.get_secret_value() if settings.server.api_key else None
    pub = Publisher(url, key, Outbox(settings.workspace))
    results = pub.flush()
    pub.close()
    if not results:
        console.print("the outbox is empty")
    for rid, res in results.items():
        console.print(f"{rid}: {res}")


def demo_config(**kw: Any) -> LabConfig:
    """The demo's sizes: every phase runs for real with the embedded 135M model in a few minutes on 2 cores.

    Where a demo's time goes is the agents' LLM calls (llama.cpp, ~100 tok/s on 2 cores), mostly prompt
    processing: one plan turn, one experiment iteration, half-length context in the agents' prompts
    (``context_scale``), short answers of the model under study (64 tokens), tiny splits, one literature
    paper, and a revision round only for a clearly weak draft (mean review score below 4). Its report split
    keeps its size (no power sizing), no confirmation or ablation runs, and its paper says it is a demo-size run."""
    base: dict[str, Any] = dict(benchmark="basic_arithmetic", dev_n=3, report_n=5, max_iterations=1,
                                max_tokens_per_answer=64, concurrency=4, max_chains=2, literature_top_n=1,
                                plan_turns=1, lab_name="demo-lab", max_fix_attempts=1, review_threshold=4.0,
                                context_scale=0.5, demo=True, confirm_n=0, ablate=False)
    base.update(kw)
    return LabConfig(**base)


def demo(
    goal: str = typer.Option("Find a prompting technique that improves the embedded model's accuracy on basic arithmetic.",
                             "--goal", help="The research goal."),
    benchmark: str = typer.Option("basic_arithmetic", "--benchmark", help="Offline benchmark (basic_arithmetic, math500, ...)."),
    dev_n: int = typer.Option(3, "--dev-n", help="Dev-split problems per experiment."),
    report_n: int = typer.Option(5, "--report-n", help="Held-out report-split problems."),
    iterations: int = typer.Option(1, "--iterations", help="Experiment iterations."),
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
        from agentlab.cli.labs_cmd import LabsRequest, run_labs

        run_labs(LabsRequest(labs, config, goal=goal, name="demo-lab", quiet=quiet, keep_server_s=keep_server))
        return
    run_lab_command(goal, None, False, None, config, {}, quiet, None, keep_server)
