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
"""

from __future__ import annotations

import argparse
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agentlab.jobs.store import JobStore  # noqa: E402
from agentlab.lab.store import LabStore  # noqa: E402

GOAL = "Find a prompting technique that improves the embedded model's accuracy on basic arithmetic."


@dataclass
class Arm:
    labs: int
    workspace: Path
    wall_s: float = 0.0
    rounds: int = 0
    failed_rounds: int = 0
    stats: dict = field(default_factory=dict)


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
        return subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT).returncode


def run_arm(arm: Arm, papers: int, max_rounds: int) -> None:
    arm.workspace.mkdir(parents=True, exist_ok=True)
    log = arm.workspace / "bench_labs.log"
    t0 = time.perf_counter()
    while len(papers_on_server(arm.workspace)) < papers and arm.rounds < max_rounds:
        rc = run_round(arm, log)
        arm.rounds += 1
        arm.failed_rounds += rc != 0
        have = len(papers_on_server(arm.workspace))
        print(f"  {arm.labs} lab(s), round {arm.rounds}: exit {rc}, {have} paper(s) after "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
    arm.wall_s = time.perf_counter() - t0
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
        "jobs": len(jobs),
        "utilisation": busy_share(jobs, t0_wall, time.time()),
        "model_calls": calls,
        "cached_calls": cached,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labs", type=int, default=3, help="labs in the parallel arm")
    ap.add_argument("--papers", type=int, default=6, help="papers each arm publishes")
    ap.add_argument("--workdir", type=Path, default=None, help="where the two workspaces go (default: a temp dir)")
    ap.add_argument("--only", choices=["single", "parallel"], help="run one arm only")
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-labs-"))
    print(f"workdir {work}; {os.cpu_count()} CPUs; {args.papers} papers per arm", flush=True)
    arms = []
    if args.only != "parallel":
        arms.append(Arm(1, work / "single"))
    if args.only != "single":
        arms.append(Arm(args.labs, work / f"parallel-{args.labs}"))
    for arm in arms:
        print(f"{arm.labs} lab(s) at once:", flush=True)
        run_arm(arm, args.papers, max_rounds=2 * -(-args.papers // arm.labs) + 1)

    print(f"\nSUMMARY (load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())})")
    head = f"{'labs':>4}  {'papers':>6}  {'wall':>8}  {'papers/h':>8}  {'util':>5}  {'calls':>6}  {'cached':>6}  " \
           f"{'failed':>6}  {'5xx':>3}  {'dup':>3}  {'lost':>4}"
    print(head)
    rate = {}
    for arm in arms:
        s = arm.stats
        rate[arm.labs] = s["papers"] / (arm.wall_s / 3600)
        print(f"{arm.labs:>4}  {s['papers']:>6}  {arm.wall_s:>7.0f}s  {rate[arm.labs]:>8.1f}  {s['utilisation']:>5.0%}  "
              f"{s['model_calls']:>6}  {s['cached_calls']:>6}  {s['runs_failed']:>6}  {s['server_errors']:>3}  "
              f"{s['duplicates']:>3}  {s['lost']:>4}")
    if len(arms) == 2:
        print(f"papers per hour, {args.labs} labs / 1 lab: {rate[args.labs] / rate[1]:.2f}x (target >= 2x)")


if __name__ == "__main__":
    main()
