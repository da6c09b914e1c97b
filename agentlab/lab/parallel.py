"""Many labs at once (``agentlab labs run --parallel N``): one child process per lab, one preprint server and
one model server shared by all of them, the dashboard's model, and the registry of the last parallel run.

Each lab is an ordinary lab run in its own process (``python -m agentlab ...``), so a crash or a kill of one
lab cannot take the others down and ``agentlab lab resume RUN_ID`` works per run. The children share the
workspace (lab store, job store, GPU inventory, model-server registry) and one preprint server: the
configured ``server.url``, or a local one in the parent process on ``<workspace>/preprint`` with its own API
key per lab. The dashboard reads the labs' state from the stores by polling (``LabMonitor``), never from the
children's output, which goes to ``<workspace>/logs/labs/<run>.log``. The registry,
``<workspace>/labs_parallel.json``, names the runs of the last parallel run for ``agentlab labs resume``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agentlab.config import Settings
from agentlab.jobs.store import JobStore
from agentlab.lab.run import new_run_id
from agentlab.lab.store import LabStore
from agentlab.llm.usage import UsageLedger

REGISTRY_FILE = "labs_parallel.json"
FINISHED = ("done", "wrapped_up")


# -- the registry of the last parallel run -------------------------------------------------------------


@dataclass
class LabSlot:
    """One lab of a parallel run: its name on the server, its run id, its log file."""

    name: str
    run_id: str
    log: str


@dataclass
class Registry:
    name: str
    labs: list[LabSlot]
    server_url: str | None = None  # a configured server; None = the local server on <workspace>/preprint
    overrides: dict[str, Any] = field(default_factory=dict)  # settings the children ran with (budgets, backend)
    goal_id: str | None = None  # the goal all labs shared (--goal), else None (goals from the queue)
    lab_config: dict[str, Any] = field(default_factory=dict)  # to start a lab stopped before its run began
    created: float = field(default_factory=time.time)

    def save(self, workspace: Path) -> Path:
        path = registry_path(workspace)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2))
        return path

    @classmethod
    def load(cls, workspace: Path) -> Registry | None:
        path = registry_path(workspace)
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        data["labs"] = [LabSlot(**s) for s in data.get("labs") or []]
        return cls(**data)

    def slot(self, run_id: str) -> LabSlot | None:
        return next((s for s in self.labs if s.run_id == run_id), None)


def registry_path(workspace: Path) -> Path:
    return Path(workspace) / REGISTRY_FILE


def log_path(workspace: Path, run_id: str) -> Path:
    return (Path(workspace) / "logs" / "labs" / f"{run_id}.log").resolve()


def plan_labs(workspace: Path, name: str, n: int) -> list[LabSlot]:
    """N labs named ``<name>-1`` .. ``<name>-N`` with their run ids chosen now (so they are known before start)."""
    slots = []
    for i in range(1, n + 1):
        run_id = new_run_id()
        slots.append(LabSlot(f"{name}-{i}", run_id, str(log_path(workspace, run_id))))
    return slots


# -- the shared preprint server -------------------------------------------------------------------------


@dataclass
class SharedServer:
    url: str
    data_dir: Path | None = None  # the local server's data; None = a configured server
    configured_key: str | None = None
    stop: Callable[[], None] | None = None

    @property
    def local(self) -> bool:
        return self.data_dir is not None

    def key_for(self, lab: str) -> str | None:
        """The lab's API key: its own on the local server (created once, kept), else the configured one."""
        if self.data_dir is None:
            return self.configured_key
        from agentlab.lab.local_server import lab_key

        return lab_key(self.data_dir, lab)

    def close(self) -> None:
        if self.stop is not None:
            self.stop()
            self.stop = None


def open_server(workspace: Path, url: str | None, key: str | None, coordinator: str) -> SharedServer:
    """The configured server, or a local one on ``<workspace>/preprint`` (the same data on every start)."""
    if url:
        return SharedServer(url, configured_key=key)
    from agentlab.lab.local_server import start_for_lab

    url, _, stop, data_dir = start_for_lab(workspace, coordinator)
    return SharedServer(url, data_dir, stop=stop)


# -- goals -----------------------------------------------------------------------------------------------


def add_goal_once(client: Any, text: str, benchmark: str | None) -> Any:
    """The goal with this text and benchmark that is not closed, else a new one: all labs share its id."""
    for g in client.list_goals():
        if g.text == text and g.benchmark == benchmark and g.status != "closed":
            return g
    return client.add_goal(text, benchmark=benchmark)


def import_goals(client: Any, goals: list[Any]) -> int:
    """Add the goals (``read_goals_file``'s) not already on the server; the number added."""
    existing = {(g.text, g.benchmark) for g in client.list_goals()}
    added = 0
    for g in goals:
        if (g.text, g.benchmark) not in existing:
            client.add_goal(g.text, benchmark=g.benchmark, baseline=g.baseline, target=g.target,
                            max_papers=g.max_papers)
            existing.add((g.text, g.benchmark))
            added += 1
    return added


# -- one model server for all labs -----------------------------------------------------------------------


def shared_model_specs(settings: Settings) -> list[Any]:
    """The llama.cpp servers the labs would each start: the agents' local models (embedded when no agents.model,
    or a .gguf file, per role too) and a llama.cpp model under study, one per file. Started once here, the labs
    find them in ``<workspace>/servers/``."""
    from agentlab.llm.serving import ServerSpec, is_gguf

    models: list[str | None] = []
    for m in [settings.agents.model, *settings.agents.roles.values()]:
        local = None if not m else m if is_gguf(m) else ""
        if local != "" and local not in models:
            models.append(local)  # None: the gateway's embedded model
    mus = settings.model_under_study
    if mus.engine == "llama.cpp" and mus.model not in models:
        models.append(mus.model)
    return [ServerSpec.local(m, mus) for m in models]


@contextmanager
def shared_models(settings: Settings) -> Iterator[list[Any]]:
    """Start (or reuse) the labs' llama.cpp servers once; stop the ones started here on exit."""
    from agentlab.llm.serving import ServingManager, managed_server

    specs = shared_model_specs(settings)
    with ExitStack() as stack:
        mgr = ServingManager(settings.workspace) if specs else None
        yield [stack.enter_context(managed_server(mgr, s, reuse=True, timeout_s=600)) for s in specs]


# -- child processes -------------------------------------------------------------------------------------


def overrides_env(overrides: dict[str, Any]) -> dict[str, str]:
    """Dotted settings as AGENTLAB_* variables: {"budgets.max_usd": 2} -> AGENTLAB_BUDGETS__MAX_USD=2."""
    return {"AGENTLAB_" + k.upper().replace(".", "__"): str(v) for k, v in overrides.items()}


def child_env(key: str | None, overrides: dict[str, Any]) -> dict[str, str]:
    env = {"COLUMNS": "200", **os.environ, **overrides_env(overrides), "PYTHONUNBUFFERED": "1"}  # unwrapped logs
    if key:
        env["AGENTLAB_SERVER__API_KEY"] = key  # never on the command line (ps shows it)
    return env


def start_argv(prefix: list[str], slot: LabSlot, server_url: str, lab_config: dict[str, Any],
               goal_id: str | None) -> list[str]:
    """``agentlab labs child``: ``lab start`` with the lab's whole LabConfig (the demo's sizes too)."""
    config = json.dumps({**lab_config, "lab_name": slot.name})
    goal = ["--goal-id", goal_id] if goal_id else ["--from-queue"]
    return [*prefix, "labs", "child", "--run-id", slot.run_id, "--server", server_url, "--lab-config", config, *goal]


def resume_argv(prefix: list[str], slot: LabSlot, server_url: str) -> list[str]:
    return [*prefix, "lab", "resume", slot.run_id, "--quiet", "--server", server_url]


@dataclass
class LabProcess:
    slot: LabSlot
    argv: list[str] | None  # None: nothing to run (a finished run `labs resume` skips)
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        if self.argv is None:
            return
        log = Path(self.slot.log)
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as fh:  # own session: a Ctrl-C in the terminal reaches the parent only
            self.proc = subprocess.Popen(self.argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=self.env, start_new_session=True)

    @property
    def returncode(self) -> int | None:
        """None while it runs; its exit code; 0 when there was nothing to run."""
        return self.proc.poll() if self.proc is not None else 0

    def send(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        """SIGKILL its whole process group (the lab and what it started in it)."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()


def stop_all(procs: list[LabProcess], timeout_s: float) -> None:
    """SIGINT to every lab (a clean stop: its jobs cancelled, its goal released, its run resumable), then
    SIGKILL to the labs still running at the timeout or on a second Ctrl-C."""
    for p in procs:
        p.send(signal.SIGINT)
    deadline = time.monotonic() + timeout_s
    try:
        while any(p.returncode is None for p in procs) and time.monotonic() < deadline:
            time.sleep(0.1)
    except KeyboardInterrupt:
        pass
    for p in procs:
        p.kill()


def supervise(procs: list[LabProcess], monitor: LabMonitor, on_update: Callable[[list[LabView]], None],
              interval_s: float = 0.5) -> list[LabView]:
    """Poll the labs until every process has ended; ``on_update`` gets the views on every poll."""
    while True:
        codes = [p.returncode for p in procs]
        views = [monitor.view(p.slot, rc) for p, rc in zip(procs, codes)]
        on_update(views)
        if all(rc is not None for rc in codes):
            return views
        time.sleep(interval_s)


# -- the dashboard's model -------------------------------------------------------------------------------


@dataclass
class LabView:
    """What the dashboard shows of one lab."""

    name: str
    run_id: str
    log: str
    goal: str = ""
    goal_id: str | None = None
    phase: str = "starting"
    status: str = "starting"
    job: str = ""
    usd: float = 0.0
    tokens: int = 0
    best_dev: float | None = None
    best_report: float | None = None
    paper_id: str | None = None
    note: str = ""


class LabMonitor:
    """Reads the labs' state from the workspace's stores (lab store, job store, usage ledger)."""

    def __init__(self, settings: Settings):
        self.labs = LabStore(settings.db_path)
        self.jobs = JobStore(settings.jobs_db_path)
        self.ledger = UsageLedger(settings.db_path)

    def close(self) -> None:
        for store in (self.labs, self.jobs, self.ledger):
            store.close()

    def view(self, slot: LabSlot, returncode: int | None) -> LabView:
        v = LabView(slot.name, slot.run_id, slot.log)
        row = self.labs.get_run(slot.run_id)
        v.status = lab_status(row, returncode)
        if row is None:
            v.note = last_line(slot.log) if returncode else ""
            return v
        exps = self.labs.experiments(slot.run_id)
        totals = self.ledger.totals(slot.run_id)
        v.goal, v.goal_id, v.paper_id = row["goal"], row.get("goal_id"), row.get("paper_id")
        v.phase = row.get("phase") or "starting"
        v.best_dev, v.best_report = row.get("best_accuracy"), best_report(exps)
        v.usd, v.tokens = totals.cost_usd, totals.tokens
        v.job = self.running_job(exps) if returncode is None else ""
        if v.status in ("failed", "killed"):
            v.note = row.get("note") or last_line(slot.log) or f"exit code {returncode}"
        return v

    def running_job(self, exps: list[dict[str, Any]]) -> str:
        running = [e for e in exps if e["status"] == "running"]
        if not running:
            return ""
        e = running[-1]
        return f"{e['key']} {self.progress(e.get('job_id'))}".strip()

    def progress(self, job_id: str | None) -> str:
        """``done/total (accuracy)`` from the harness's last progress line in the job's stdout."""
        job = self.jobs.get(job_id) if job_id else None
        if job is None or not job.log_dir:
            return ""
        parts = _last_progress(Path(job.log_dir) / "stdout.log")
        if not parts:
            return ""
        done, correct, total = parts
        return f"{done}/{total}" + (f" ({correct / done:.0%})" if done else "")


def lab_status(row: dict[str, Any] | None, returncode: int | None) -> str:
    status = (row or {}).get("status")
    if returncode is None:  # its process runs
        return "paused" if status == "paused" else "running" if row else "starting"
    if status in FINISHED:
        return status
    note = (row or {}).get("note") or ""
    if returncode in (130, -signal.SIGINT, -signal.SIGTERM) or note.startswith("KeyboardInterrupt"):
        return "interrupted"
    return "killed" if returncode == -signal.SIGKILL else "failed"


def best_report(exps: list[dict[str, Any]]) -> float | None:
    """The best report-split accuracy of the lab's own techniques (not the re-run prior best)."""
    accs = [e["record"]["accuracy"] for e in exps
            if e["split"] == "report" and e.get("record") and e["key"] != "report-prior"]
    return max(accs) if accs else None


def _last_progress(path: Path) -> tuple[int, int, int] | None:
    """(done, correct, total) of the last ``progress D C T`` line."""
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, path.stat().st_size - 4096))
            lines = fh.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        parts = line.split()
        if len(parts) == 4 and parts[0] == "progress" and all(p.isdigit() for p in parts[1:]):
            return int(parts[1]), int(parts[2]), int(parts[3])
    return None


def last_line(path: str | Path) -> str:
    """The last non-empty line of a log (a failed lab's error), at most 200 characters."""
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, os.path.getsize(path) - 4096))
            lines = [ln.strip() for ln in fh.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:200] if lines else ""


def phase_line(before: LabView | None, now: LabView) -> str | None:
    """One line when a lab's phase or status changed (``--quiet``), else None."""
    if before is not None and (before.phase, before.status) == (now.phase, now.status):
        return None
    return f"{now.name} {now.run_id}: {now.phase.replace('_', ' ')} ({now.status})"
