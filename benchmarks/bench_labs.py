"""Many labs on one server: N labs in parallel against one lab, on one goal, with the same per-lab sizes.

    .venv/bin/python benchmarks/bench_labs.py [--labs 3] [--papers 6] [--workdir DIR]

Everything is real and offline: the embedded stack of `agentlab demo` (SmolLM2 as agents and as the model
under study through llama.cpp, the demo's sizes), a local preprint server, sandboxed jobs. Each arm runs in a
fresh workspace of its own, with its own local server on <workspace>/preprint:

  * 1 lab:  `agentlab demo --labs 1` again and again until --papers papers are published;
  * N labs: `agentlab demo --labs N` (N lab processes, one server, one model server) in rounds until --papers.

Within its workspace an arm shares the completion cache, so the single lab's later runs reuse its own baseline
as the parallel labs reuse each other's. Printed per arm: wall time to --papers papers, papers per hour, the
scheduler's utilisation (share of the wall time with at least one job running), model calls of the evaluation
jobs and how many the shared cache answered, failed runs, server errors (HTTP 5xx in the labs' logs), duplicate
and lost papers (a run that says it published a paper the server does not have), and the speed-up.

On 2 cores the labs share the cores and one llama.cpp server, which answers one request at a time (llama-cpp-python
has no parallel slots): N labs gain by overlapping one lab's model calls with the others' jobs, searches and writing.

    .venv/bin/python benchmarks/bench_labs.py --backend ray [--labs 3] [--papers 6] [--no-fault]

compares, in the same run, N labs whose jobs run on the local scheduler with the same N labs whose jobs run on
a 3-node Ray cluster on this machine (``ray.cluster_utils.Cluster``: a head that runs no job and two workers
with this machine's cores each, so the cluster takes as many jobs at once as one lab's local scheduler), and
the same again with a fault: once a running evaluation job has paid for answers, the worker it runs on is
killed (no graceful stop) and the arm goes on with the one left. Printed per arm besides the figures above: jobs run
again after a lost node, model calls paid twice (completions the metered proxies of every attempt paid for,
minus the distinct completions in the workspace's cache: 0 when no answer is bought twice), records lost
(runs without their paper, papers without their run) and the overhead per job (the scheduler's time around
the sandbox: running time in the store minus the sandbox's own wall time).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agentlab.jobs.store import JobStore
from agentlab.lab.store import LabStore

GOAL = "Find a prompting technique that improves the embedded model's accuracy on basic arithmetic."


# a killed node is declared dead within about a second (Ray's default takes 15 s and more), as in the tests
FAST_DEATH = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 300, "health_check_failure_threshold": 3}
NODE_STORE = 100 * 1024 * 1024  # each node's object store (jobs hand back small results and capped logs)


@dataclass
class Arm:
    labs: int
    workspace: Path
    backend: str = "local"
    fault: bool = False  # kill a busy Ray worker once, mid-run
    env: dict = field(default_factory=dict)
    wall_s: float = 0.0
    rounds: int = 0
    failed_rounds: int = 0
    killed: list = field(default_factory=list)  # the Ray nodes killed during the arm
    stats: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.labs} lab(s), {self.backend}" + (", a node killed" if self.fault else "")


class BenchCluster:
    """A 3-node Ray cluster on this machine: a head that runs no job and two workers with this machine's cores
    each (so the cluster takes as many jobs at once as one lab's local scheduler is given cores)."""

    def __init__(self) -> None:
        import ray
        from ray.cluster_utils import Cluster

        self.cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 0, "object_store_memory": NODE_STORE, "include_dashboard": False,
            "_system_config": FAST_DEATH})
        self.workers = [self._add() for _ in range(2)]
        ray.init(address=self.cluster.address, include_dashboard=False, log_to_driver=False, configure_logging=False)

    def _add(self):
        return self.cluster.add_node(num_cpus=os.cpu_count(), object_store_memory=NODE_STORE)

    def env(self) -> dict:
        """What makes a lab's jobs run on this cluster (its settings, through the environment)."""
        return {"AGENTLAB_JOBS__BACKEND": "ray", "AGENTLAB_JOBS__RAY_ADDRESS": self.cluster.address}

    def kill(self, node_id: str) -> bool:
        """Kill this worker at once (no graceful stop); the cluster goes on with the other (Ray starts a node
        only from the main thread, so the one killed from the fault's thread stays away)."""
        node = next((n for n in self.workers if n.node_id == node_id), None)
        if node is not None:
            self.cluster.remove_node(node, allow_graceful=False)
            self.workers.remove(node)
        return node is not None

    def shutdown(self) -> None:
        import ray

        ray.shutdown()
        self.cluster.shutdown()


def papers_on_server(workspace: Path) -> list[tuple[str, str | None, str | None]]:
    """(paper id, lab name, idempotency key) of the papers in the arm's local server, read from its SQLite file."""
    db = workspace / "preprint" / "preprints.db"
    if not db.exists():
        return []
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT p.id, l.name, p.idempotency_key FROM papers p JOIN labs l ON l.id = p.lab_id "
                           "WHERE p.status != 'retracted'").fetchall()
    finally:
        con.close()


def run_round(arm: Arm, log: Path) -> int:
    cmd = [sys.executable, "-m", "agentlab", "--workspace", str(arm.workspace), "demo", "--labs", str(arm.labs),
           "--quiet", "--goal", GOAL]
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        return subprocess.run(cmd, check=False, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                              env={**os.environ, **arm.env}).returncode


def jobs_running_here() -> dict[str, str]:
    """Job id -> the Ray node it runs on, for the sandboxed jobs running on this machine (from their
    processes' environment: the scheduler gives each job AGENTLAB_JOB_ID and AGENTLAB_RAY_NODE_ID)."""
    found = {}
    for env_file in Path("/proc").glob("[0-9]*/environ"):
        try:
            env = dict(v.split(b"=", 1) for v in env_file.read_bytes().split(b"\0") if b"=" in v)
        except OSError:  # gone, or not ours to read
            continue
        if b"AGENTLAB_JOB_ID" in env and b"AGENTLAB_RAY_NODE_ID" in env:
            found[env[b"AGENTLAB_JOB_ID"].decode()] = env[b"AGENTLAB_RAY_NODE_ID"].decode()
    return found


def answers_paid(job_id: str) -> int:
    """Completions the running attempt of a job has paid for so far (its cache journal, in the node's temp dir)."""
    journals = sorted(Path(tempfile.gettempdir()).glob(f"agentlab-{job_id}-*/work/cache_new.jsonl"),
                      key=lambda p: p.stat().st_mtime)
    return len(journals[-1].read_text().splitlines()) if journals else 0


def kill_a_node_mid_run(arm: Arm, cluster: BenchCluster, stop: threading.Event) -> None:
    """Once a running evaluation job has paid for answers, kill the worker it runs on (once)."""
    while not stop.wait(0.2):
        for job_id, node in jobs_running_here().items():
            if (paid := answers_paid(job_id)) and cluster.kill(node):
                arm.killed.append(node)
                print(f"  killed Ray worker {node[:12]} under {job_id} ({paid} answer(s) paid)", flush=True)
                return


def run_arm(arm: Arm, papers: int, max_rounds: int, cluster: BenchCluster | None = None) -> None:
    arm.workspace.mkdir(parents=True, exist_ok=True)
    log = arm.workspace / "bench_labs.log"
    stop = threading.Event()
    if arm.fault:
        threading.Thread(target=kill_a_node_mid_run, args=(arm, cluster, stop), daemon=True).start()
    t0 = time.perf_counter()
    while len(papers_on_server(arm.workspace)) < papers and arm.rounds < max_rounds:
        rc = run_round(arm, log)
        arm.rounds += 1
        arm.failed_rounds += rc != 0
        have = len(papers_on_server(arm.workspace))
        print(f"  {arm.labs} lab(s), round {arm.rounds}: exit {rc}, {have} paper(s) after "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
    arm.wall_s = time.perf_counter() - t0
    stop.set()
    arm.stats = measure(arm.workspace, t0_wall=time.time() - arm.wall_s)


def busy_share(jobs, start: float, end: float) -> float:
    """Share of [start, end] during which at least one job ran (union of the jobs' run intervals)."""
    spans = sorted((max(j.started_at, start), min(j.finished_at or end, end)) for j in jobs if j.started_at)
    busy, cur_s, cur_e = 0.0, None, None
    for s, e in spans:
        if cur_e is None or s > cur_e:
            busy += (cur_e - cur_s) if cur_e is not None else 0.0
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    busy += (cur_e - cur_s) if cur_e is not None else 0.0
    return busy / max(1e-9, end - start)


def attempt_workdirs(workspace: Path, job_id: str) -> list[Path]:
    """The working folders of every attempt of a job: in the workspace (local scheduler; Ray jobs that bind
    workspace paths) or in the temp dir of the node that ran it (Ray; this machine's nodes share /tmp)."""
    jobs = workspace / "jobs" / job_id
    found = [jobs / "work", *jobs.glob("attempt-*/work"), *Path(tempfile.gettempdir()).glob(f"agentlab-{job_id}-*/work")]
    return [d for d in found if d.is_dir()]


def paid_twice(workspace: Path, job_ids: list[str]) -> int:
    """Completions a job paid for in more than one of its attempts (its cache journals list what each paid)."""
    twice = 0
    for job_id in job_ids:
        paid: dict[str, int] = {}
        for work in attempt_workdirs(workspace, job_id):
            journal = work / "cache_new.jsonl"
            keys = {json.loads(line)["key"] for line in journal.read_text().splitlines() if line.strip()} \
                if journal.exists() else set()
            for key in keys:
                paid[key] = paid.get(key, 0) + 1
        twice += sum(n - 1 for n in paid.values())
    return twice


def lost_attempts(workspace: Path, job_id: str) -> int:
    """Attempts of a job lost with their node (the Ray scheduler notes each at the top of its stderr.log)."""
    log = workspace / "jobs" / job_id / "stderr.log"
    head = log.read_text(errors="replace").splitlines()[:10] if log.exists() else []
    return sum(line.startswith("[agentlab] attempt ") and "node lost" in line for line in head)


def lost_in_flight(workspace: Path, job_ids: list[str]) -> int:
    """Model answers a job's lost attempts got from the model but never stored (in flight as the node died):
    each attempt's metered proxy logged the call, its cache journal has no line for it."""
    lost = 0
    for job_id in job_ids:
        attempts = sorted(attempt_workdirs(workspace, job_id), key=lambda w: w.stat().st_mtime)
        for work in attempts[:-1]:  # the last attempt is the one that ended
            calls = work.parent / "proxy_calls.jsonl"
            answered = sum('"/v1/chat/completions"' in line and '"status": 200' in line
                           for line in calls.read_text().splitlines()) if calls.exists() else 0
            journal = work / "cache_new.jsonl"
            lost += max(0, answered - (len(journal.read_text().splitlines()) if journal.exists() else 0))
    return lost


def overhead_s(jobs) -> float:
    """Median seconds a job spends running in the store around its sandbox's own wall time."""
    around = [j.finished_at - j.started_at - j.wall_s for j in jobs
              if j.state == "succeeded" and j.started_at and j.finished_at and j.wall_s]
    return statistics.median(around) if around else float("nan")


def measure(workspace: Path, t0_wall: float) -> dict:
    with LabStore(workspace / "agentlab.db") as labs:
        runs = labs.list_runs(10_000)
    store = JobStore(workspace / "jobs.db")
    jobs = store.list()
    store.close()
    calls = cached = 0
    for j in jobs:
        cache = (j.result or {}).get("cache") if isinstance(j.result, dict) else None
        if cache:
            calls += cache.get("calls", 0)
            cached += cache.get("cached_calls", 0)
    evals = [j.id for j in jobs if j.spec.kind == "eval"]
    on_server = papers_on_server(workspace)
    ids = [p[0] for p in on_server]
    claimed = [r["paper_id"] for r in runs if r.get("paper_id")]
    logs = list((workspace / "logs").rglob("*.log")) + [workspace / "bench_labs.log"]
    server_errors = sum(len(re.findall(r"\b5\d\d (?:Internal Server Error|Server Error|Service Unavailable)\b|"
                                       r"status(?:_code)?[ =:]+5\d\d\b", p.read_text(errors="replace")))
                        for p in logs if p.exists())
    return {
        "papers": len(on_server),
        "runs": len(runs),
        "runs_failed": sum(r["status"] == "failed" for r in runs),
        "duplicates": len(ids) - len(set(ids)) + len(claimed) - len(set(claimed)),
        "lost": sum(pid not in set(ids) for pid in claimed),
        "server_errors": server_errors,
        "runs_unfinished": sum(r["status"] in ("running", "paused") for r in runs),
        "jobs": len(jobs),
        "retried": sum(lost_attempts(workspace, j.id) for j in jobs),
        "paid_twice": paid_twice(workspace, evals),
        "lost_in_flight": lost_in_flight(workspace, evals),
        "overhead_s": overhead_s(jobs),
        "utilisation": busy_share(jobs, t0_wall, time.time()),
        "model_calls": calls,
        "cached_calls": cached,
    }


def make_arms(args, work: Path, cluster: BenchCluster | None) -> list[Arm]:
    if cluster is None:  # one lab against N labs, local scheduler
        return [arm for arm in (Arm(1, work / "single"), Arm(args.labs, work / f"parallel-{args.labs}"))
                if args.only != ("parallel" if arm.labs == 1 else "single")]
    arms = [] if args.fault_only else [Arm(args.labs, work / "ray", "ray", env=cluster.env()),
                                       Arm(args.labs, work / "local")]
    if not args.no_fault:
        arms.append(Arm(args.labs, work / "ray-fault", "ray", fault=True, env=cluster.env()))
    return arms


def print_summary(arms: list[Arm], args) -> None:
    print(f"\nSUMMARY (load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())})")
    print(f"{'arm':<28}  {'papers':>6}  {'wall':>7}  {'papers/h':>8}  {'util':>4}  {'calls':>5}  {'cached':>6}  "
          f"{'failed':>6}  {'5xx':>3}  {'dup':>3}  {'lost':>4}  {'unfin':>5}  {'retried':>7}  {'paid 2x':>7}  "
          f"{'overhead/job':>12}")
    rate = {}
    for arm in arms:
        s = arm.stats
        rate[arm.name] = s["papers"] / (arm.wall_s / 3600)
        print(f"{arm.name:<28}  {s['papers']:>6}  {arm.wall_s:>6.0f}s  {rate[arm.name]:>8.1f}  {s['utilisation']:>4.0%}  "
              f"{s['model_calls']:>5}  {s['cached_calls']:>6}  {s['runs_failed']:>6}  {s['server_errors']:>3}  "
              f"{s['duplicates']:>3}  {s['lost']:>4}  {s['runs_unfinished']:>5}  {s['retried']:>7}  "
              f"{s['paid_twice']:>7}  {s['overhead_s']:>11.2f}s")
    local, ray = (next((a for a in arms if a.backend == b and not a.fault), None) for b in ("local", "ray"))
    if local and ray:
        print(f"papers per hour, Ray cluster / local scheduler: {rate[ray.name] / rate[local.name]:.2f}x "
              "(target >= 0.9x)")
    elif len(arms) == 2:
        print(f"papers per hour, {args.labs} labs / 1 lab: {rate[arms[1].name] / rate[arms[0].name]:.2f}x "
              "(target >= 2x)")
    for arm in (a for a in arms if a.fault):
        print(f"{arm.name}: {len(arm.killed)} worker(s) killed, {arm.stats['retried']} job(s) run again, "
              f"{arm.stats['paid_twice']} stored answer(s) paid twice (target 0), "
              f"{arm.stats['lost_in_flight']} answer(s) lost in flight with the node (asked again), records lost "
              f"{arm.stats['lost'] + arm.stats['runs_unfinished']} (target 0)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labs", type=int, default=3, help="labs in the parallel arm (each arm with --backend ray)")
    ap.add_argument("--papers", type=int, default=6, help="papers each arm publishes")
    ap.add_argument("--workdir", type=Path, default=None, help="where the workspaces go (default: a temp dir)")
    ap.add_argument("--only", choices=["single", "parallel"], help="run one arm only (local scheduler)")
    ap.add_argument("--backend", choices=["local", "ray"], default="local",
                    help="ray: N labs on the local scheduler against N labs on a 3-node Ray cluster")
    ap.add_argument("--no-fault", action="store_true", help="with --backend ray: skip the node-kill arm")
    ap.add_argument("--fault-only", action="store_true", help="with --backend ray: the node-kill arm only")
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-labs-"))
    print(f"workdir {work}; {os.cpu_count()} CPUs; {args.papers} papers per arm", flush=True)
    cluster = BenchCluster() if args.backend == "ray" else None
    try:
        arms = make_arms(args, work, cluster)
        for arm in arms:
            print(f"{arm.name}:", flush=True)
            run_arm(arm, args.papers, max_rounds=2 * -(-args.papers // arm.labs) + 1, cluster=cluster)
    finally:
        if cluster is not None:
            cluster.shutdown()
    print_summary(arms, args)


if __name__ == "__main__":
    main()
