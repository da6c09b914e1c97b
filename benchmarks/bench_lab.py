"""Lab benchmark: orchestration overhead and the cost of one paper.

1. A full lab run (every phase, a real preprint server on loopback) with an instant scripted test-double
   LLM and tiny evaluations: the share of the run's wall time spent outside LLM calls and jobs
   (target: at most 5%), with a breakdown.
2. Tokens and wall time per paper with the embedded SmolLM2-135M as agents and model under study
   (llama.cpp; skipped with --skip-embedded).

    .venv/bin/python benchmarks/bench_lab.py [--skip-embedded] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("AGENTLAB_DATA_DIR", str(REPO.parent / "shared" / "data"))


def _times(settings, run_id):
    from agentlab.lab.store import LabStore
    from agentlab.sqlite import connect

    conn = connect(settings.db_path)
    llm_s, calls, tokens = conn.execute(
        "SELECT COALESCE(SUM(latency_s),0), COUNT(*), COALESCE(SUM(tokens_in+tokens_out),0) FROM llm_calls"
        " WHERE run_id = ?", (run_id,)).fetchone()
    conn.close()
    store = LabStore(settings.db_path)
    jobs = store.experiments(run_id)
    store.close()
    job_s = _union([(j["started"] or 0, j["finished"]) for j in jobs if j["finished"]])
    return float(llm_s), int(calls), int(tokens), float(job_s), len(jobs)


def _union(intervals: list[tuple[float, float]]) -> float:
    """Seconds covered by the intervals: a round's expansions run their jobs together, so summing their
    durations counts the same seconds twice."""
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def _job_overhead(settings, run_id):
    """Per evaluation job: lab-side wall time minus the harness's own time inside the job (sandbox start,
    imports, proxy, scheduler polling, ingesting the results)."""
    from agentlab.jobs import JobStore
    from agentlab.lab.store import LabStore

    store = LabStore(settings.db_path)
    exps = [e for e in store.experiments(run_id) if e["finished"] and e["job_id"]]
    store.close()
    jobs = JobStore(settings.jobs_db_path)
    out = []
    for e in exps:
        job = jobs.get(e["job_id"])
        summ = (job.result or {}).get("summary") if job and isinstance(job.result, dict) else None
        if summ and summ.get("finished"):
            out.append((e["finished"] - e["started"]) - (summ["finished"] - summ["created"]))
    jobs.close()
    return out


def _fresh_workspace(prefix: str, lab: str):
    """A temporary workspace (AGENTLAB_WORKSPACE) and a preprint server on loopback with a key for
    `lab`: (key, url, stop)."""
    from agentlab.lab.local_server import lab_key
    from preprint_server.serve import start_local_server

    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ["AGENTLAB_WORKSPACE"] = str(tmp / "ws")
    data = tmp / "preprint"
    data.mkdir()
    key = lab_key(data, lab)
    url, stop = start_local_server(data)
    return key, url, stop


def overhead(runs: int) -> None:
    from agentlab.config import load_settings
    from agentlab.lab.run import start_lab
    from agentlab.lab.state import LabConfig
    from tests.lab.doubles import ScriptedLabLLM, answers_for, lab_env

    key, url, stop = _fresh_workspace("bench-lab-", "bench-lab")
    answers = answers_for("basic_arithmetic", os.environ["AGENTLAB_DATA_DIR"])
    rows, overheads = [], []
    with ScriptedLabLLM(answers) as llm:
        os.environ.update(lab_env(llm.url))
        settings = load_settings()
        cfg = LabConfig(benchmark="basic_arithmetic", dev_n=10, report_n=10, max_iterations=3, concurrency=4,
                        literature_top_n=2, lab_name="bench-lab", max_tokens_per_answer=64, max_chains=2,
                        server_url=url)
        for i in range(runs + 1):  # the first run warms imports (matplotlib, litellm, embedder)
            events: list[tuple[float, str, dict]] = []
            t0 = time.perf_counter()
            out = start_lab(settings, "Improve arithmetic accuracy", cfg, server_key=key,
                            on_event=lambda k, d: events.append((time.perf_counter(), k, d)))
            wall = time.perf_counter() - t0
            llm_s, calls, tokens, job_s, njobs = _times(settings, out.run_id)
            # publish time (HTTP + server-side indexing) from the phase events
            pub_t = next((t for t, k, d in events if k == "phase" and d.get("node") == "publish"), None)
            pub_s = (t0 + wall - pub_t) if pub_t else 0.0
            if i > 0:
                rows.append((wall, llm_s, job_s, pub_s, calls, njobs, out.status))
                overheads += _job_overhead(settings, out.run_id)
    stop()
    print("== orchestration overhead (instant test-double LLM, tiny evaluations, real local server)")
    print(f"{'run':>3} {'wall s':>7} {'llm s':>7} {'jobs s':>7} {'publish s':>9} {'other s':>8} {'other %':>8}"
          f" {'other-publish %':>15} calls jobs")
    for i, (wall, llm_s, job_s, pub_s, calls, njobs, status) in enumerate(rows, 1):
        other = wall - llm_s - job_s
        print(f"{i:>3} {wall:7.2f} {llm_s:7.2f} {job_s:7.2f} {pub_s:9.2f} {other:8.2f} {100 * other / wall:7.1f}%"
              f" {100 * (other - pub_s) / wall:14.1f}% {calls:>5} {njobs:>4}  {status}")
    w = sum(r[0] for r in rows)
    o = sum(r[0] - r[1] - r[2] for r in rows)
    p = sum(r[3] for r in rows)
    print(f"mean: outside LLM calls and jobs {100 * o / w:.1f}% of wall time "
          f"({100 * (o - p) / w:.1f}% excluding publishing to the server); target <= 5%")
    j = sum(r[2] for r in rows)
    print(f"breakdown: llm {100 * sum(r[1] for r in rows) / w:.1f}%, jobs {100 * j / w:.1f}%, "
          f"publish {100 * p / w:.1f}%, rest {100 * (o - p) / w:.1f}%")
    if overheads:
        overheads.sort()
        print(f"evaluation job overhead (sandbox + job + proxy + ingest, per evaluation): "
              f"median {overheads[len(overheads) // 2]:.2f} s, max {overheads[-1]:.2f} s over {len(overheads)} jobs")


def embedded() -> None:
    from agentlab.config import load_settings
    from agentlab.lab.run import start_lab

    for k in [k for k in os.environ if k.startswith("AGENTLAB_") and k not in ("AGENTLAB_DATA_DIR",)]:
        del os.environ[k]
    key, url, stop = _fresh_workspace("bench-lab-emb-", "demo-lab")
    settings = load_settings()
    from agentlab.lab.launch import demo_config

    cfg = demo_config(server_url=url)
    t0 = time.perf_counter()
    out = start_lab(settings, "Find a prompting technique that improves accuracy on basic arithmetic.", cfg,
                    server_key=key)
    wall = time.perf_counter() - t0
    stop()
    llm_s, calls, tokens, job_s, njobs = _times(settings, out.run_id)
    print("== embedded SmolLM2-135M (agents and model under study, llama.cpp, "
          f"{os.cpu_count()} cores; demo sizes: dev {cfg.dev_n}, report {cfg.report_n}, "
          f"{cfg.max_iterations} iterations)")
    print(f"status {out.status}, paper {out.publication.get('paper_id')}: wall {wall:.0f} s per paper, "
          f"agents' tokens {tokens:,} in {calls} calls ({llm_s:.0f} s), {njobs} jobs ({job_s:.0f} s), "
          f"fallbacks noted: {sum('safe default' in n for n in out.state.get('notes') or [])}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-embedded", action="store_true")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    overhead(args.runs)
    if not args.skip_embedded:
        embedded()
