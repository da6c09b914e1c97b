"""Research benchmark (2 cores, one session): can a lab of small local agents find a real, significant gain,
and can a second lab build on it?

Model under study: the embedded SmolLM2-135M (llama.cpp's server) on ``arith_pm``, reasoning-gym arithmetic
with short answers (+ and -, 2-3 terms). Agents: Qwen2.5-Coder-0.5B-Instruct as first-class local agents, a
GGUF path in ``agents.model`` (``../shared/tools/fetch-qwen05b.sh``), served by llama.cpp with grammar-
constrained JSON. Two labs run one after the other through the real CLI (``agentlab lab start``), on one
preprint server and one workspace, with training allowed: lab A on the goal, then lab B, which reads lab A's
paper and re-runs lab A's best as the prior best on its own report split.

Printed, and written as JSON (``--out``): the share of proposed techniques that validated and ran; the search
tree (nodes, expansions, pruned, debugged); each lab's plan sizing, report-split gain with McNemar's p (and
lab B's gain over the prior best); the agents' calls, tokens and re-asks; the wall time. Each lab's CLI output
is kept in ``<workspace>/<lab>.log`` and its paper in ``<workspace>/labs/<run>/``.

    nice -n 5 .venv/bin/python benchmarks/bench_research.py [--agents-model PATH.gguf] [--workspace DIR]
        [--iterations 4] [--dev-n 40] [--report-n 300] [--train-max-minutes 8] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("AGENTLAB_DATA_DIR", str(REPO.parent / "shared" / "data"))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
BENCHMARK = "arith_pm"
GOAL = ("Improve the accuracy of the model under study on short arithmetic problems (additions and subtractions "
        "of 2-3 small numbers) with a better prompting or training technique.")


def agents_model(arg: str | None) -> str:
    """The agents' GGUF: --agents-model, else the shared fetch script's cached Qwen2.5-Coder-0.5B."""
    if arg:
        return arg
    out = subprocess.run(["bash", str(REPO.parent / "shared" / "tools" / "fetch-qwen05b.sh")], check=True,
                         capture_output=True, text=True).stdout.strip().splitlines()
    return out[-1]


def lab_command(args, name: str, url: str) -> list[str]:
    return [str(REPO / ".venv" / "bin" / "agentlab"), "lab", "start", "--goal", GOAL, "--benchmark", BENCHMARK,
            "--server", url, "--lab-name", name, "--run-id", name, "--dev-n", str(args.dev_n),
            "--report-n", str(args.report_n), "--iterations", str(args.iterations),
            "--max-answer-tokens", str(args.max_answer_tokens), "--allow-training",
            "--train-max-steps", str(args.train_max_steps), "--train-max-minutes", str(args.train_max_minutes)]


def run_lab(args, name: str, url: str, env: dict[str, str], ws: Path) -> float:
    """One `agentlab lab start`, its output teed to <ws>/<name>.log; its wall time."""
    started = time.perf_counter()
    with open(ws / f"{name}.log", "w") as log:
        proc = subprocess.Popen(lab_command(args, name, url), env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, cwd=ws)
        for line in proc.stdout:  # type: ignore[union-attr]
            log.write(line)
            log.flush()
            if line.strip():
                print(f"  [{name}] {line.rstrip()}", flush=True)
        proc.wait()
    if proc.returncode:
        print(f"  [{name}] agentlab lab start exited {proc.returncode}", flush=True)
    return time.perf_counter() - started


def final_state(settings, run_id: str) -> dict[str, Any]:
    """The run's last checkpointed state (what the lab's graph ended with)."""
    from agentlab.lab.graph import build_graph, checkpointer_for

    saver = checkpointer_for(settings)
    try:
        return dict(build_graph(saver).get_state({"configurable": {"thread_id": run_id}}).values)
    finally:
        saver.conn.close()


def figures(settings, run_id: str, wall_s: float) -> dict[str, Any]:
    from agentlab.lab.run import run_status

    st, status = final_state(settings, run_id), run_status(settings, run_id)
    exps = st.get("experiments") or []
    final = st.get("final") or {}
    comp, prior = final.get("comparison") or {}, final.get("comparison_prior") or {}
    roles = status.get("agent_calls") or []  # one row per role
    return {
        "run_id": run_id, "status": status["status"], "failure": st.get("failure"), "wall_s": round(wall_s, 1),
        "proposed": len(exps), "ran": sum(1 for e in exps if e.get("record")),
        "first_try": sum(1 for e in exps if e.get("record") and len(e.get("attempts") or []) <= 1),
        "training_nodes": [{"iteration": e["iteration"], "ran": bool(e.get("record")),
                            "steps": (e.get("training") or {}).get("steps")}
                           for e in exps if e.get("training_proposal") or e.get("training")],
        "extends": sorted({e["extends"] for e in exps if e.get("extends")}),
        "tree": st.get("search"),
        "dev": [{"iteration": e["iteration"], "technique": (e.get("spec") or {}).get("name"),
                 "accuracy": (e.get("record") or {}).get("accuracy"), "paired": e.get("paired")} for e in exps],
        "dev_baseline": ((st.get("dev_baseline") or {}).get("record") or {}).get("accuracy"),
        "plan_sizing": ((st.get("plan") or {}).get("sizing") or {}).get("text"),
        "sizing": final.get("sizing"), "confirmation": _confirmation(final.get("confirmation")),
        "technique": final.get("technique_name"), "baseline": _acc(final.get("baseline")),
        "best": _acc(final.get("technique")), "n": comp.get("n"), "gain": comp.get("delta"),
        "p": comp.get("p_value"), "wins": comp.get("wins"), "losses": comp.get("losses"),
        "prior": _acc(final.get("prior_best")), "prior_paper": (final.get("prior_best") or {}).get("paper_id"),
        "gain_over_prior": prior.get("delta"), "p_prior": prior.get("p_value"),
        "calls": status["llm_calls"], "tokens": status["tokens"],
        "reasks": sum(int(r.get("reasks") or 0) for r in roles),
        "fallbacks": sum(int(r.get("fallbacks") or 0) for r in roles),
        "agents": roles, "paper": (st.get("publication") or {}).get("paper_id"),
        "paper_dir": str(settings.workspace / "labs" / run_id),
    }


def _acc(record: dict | None) -> dict | None:
    return None if not record else {k: record.get(k) for k in ("accuracy", "correct", "n", "paper_id", "model_id")}


def _confirmation(c: dict | None) -> dict | None:
    return None if not c else {k: c.get(k) for k in ("n", "best", "baseline", "comparison", "ablation") if k in c}


def _pct(v: float | None, sign: str = "") -> str:
    return "-" if v is None else f"{100 * v:{sign}.1f}"


def report(name: str, f: dict[str, Any]) -> None:
    tree = f["tree"] or {}
    share = f"{f['ran']}/{f['proposed']}" + (f" ({100 * f['ran'] / f['proposed']:.0f}%)" if f["proposed"] else "")
    print(f"\n== {name}: {f['status']}, paper {f['paper']}, {f['wall_s'] / 60:.1f} min"
          + (f" - {f['failure']}" if f["failure"] else ""))
    print(f"   proposals that validated and ran: {share}, first try {f['first_try']}; training nodes "
          f"{f['training_nodes'] or '-'}; extends {f['extends'] or '-'}")
    print(f"   tree: {tree.get('nodes')} nodes, {tree.get('expansions')} expansions, {tree.get('pruned')} pruned, "
          f"{tree.get('debugged')} debugged ({tree.get('debug_nodes')} debug nodes)")
    for d in f["dev"]:
        print(f"     dev #{d['iteration']} {d['technique']}: {_pct(d['accuracy'])}% paired {d['paired']}")
    print(f"   dev baseline {_pct(f['dev_baseline'])}%; sizing: {(f['sizing'] or {}).get('text') or f['sizing']}")
    best, base = f["best"] or {}, f["baseline"] or {}
    print(f"   report split (n={f['n']}): {f['technique']} {_pct(best.get('accuracy'))}% vs baseline "
          f"{_pct(base.get('accuracy'))}%: gain {_pct(f['gain'], '+')} points, {f['wins']} wins / {f['losses']} "
          f"losses, McNemar p {f['p'] if f['p'] is None else format(f['p'], '.3g')}")
    if f["prior"]:
        print(f"   prior best (paper {f['prior_paper']}): {_pct(f['prior']['accuracy'])}%, gain over it "
              f"{_pct(f['gain_over_prior'], '+')} points, p "
              f"{f['p_prior'] if f['p_prior'] is None else format(f['p_prior'], '.3g')}")
    print(f"   agents: {f['calls']} calls, {f['tokens']:,} tokens, {f['reasks']} re-asks, {f['fallbacks']} fallbacks")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--agents-model", help="the agents' GGUF (default: Qwen2.5-Coder-0.5B from the fetch script)")
    ap.add_argument("--workspace", type=Path, help="default: a new temporary folder (kept: papers and logs)")
    ap.add_argument("--iterations", type=int, default=4, help="expansions of each lab's search")
    ap.add_argument("--dev-n", type=int, default=40)
    ap.add_argument("--report-n", type=int, default=300, help="the report split's budget (the lab sizes it)")
    ap.add_argument("--max-answer-tokens", type=int, default=128)
    ap.add_argument("--train-max-steps", type=int, default=30)
    ap.add_argument("--train-max-minutes", type=float, default=8.0)
    ap.add_argument("--labs", default="lab-a,lab-b", help="lab names, run in this order")
    ap.add_argument("--out", type=Path, help="JSON figures (default: <workspace>/bench_research.json)")
    args = ap.parse_args()

    from agentlab.config import load_settings
    from agentlab.lab.local_server import lab_key
    from preprint_server.serve import start_local_server

    ws = args.workspace or Path(tempfile.mkdtemp(prefix="bench-research-"))
    ws.mkdir(parents=True, exist_ok=True)
    model = agents_model(args.agents_model)
    env = {**os.environ, "AGENTLAB_WORKSPACE": str(ws), "AGENTLAB_AGENTS__MODEL": model, "COLUMNS": "160"}
    print(f"workspace {ws}; agents {model}; model under study: the embedded SmolLM2-135M on {BENCHMARK}", flush=True)
    url, stop = start_local_server(ws / "preprint")
    out: dict[str, Any] = {"benchmark": BENCHMARK, "agents_model": model, "args": {k: str(v) for k, v in
                                                                                   vars(args).items()}, "labs": {}}
    started = time.perf_counter()
    try:
        for name in args.labs.split(","):
            env["AGENTLAB_SERVER__API_KEY"] = lab_key(ws / "preprint", name)
            wall = run_lab(args, name, url, env, ws)
            os.environ["AGENTLAB_WORKSPACE"] = str(ws)
            out["labs"][name] = figures(load_settings(), name, wall)
            report(name, out["labs"][name])
    finally:
        stop()
    out["wall_s"] = round(time.perf_counter() - started, 1)
    labs = list(out["labs"].values())
    proposed, ran = sum(f["proposed"] for f in labs), sum(f["ran"] for f in labs)
    out["share_ran"] = ran / proposed if proposed else None
    print(f"\nall labs: {ran}/{proposed} proposals validated and ran; "
          f"{sum(f['tokens'] for f in labs):,} agent tokens, {sum(f['reasks'] for f in labs)} re-asks; "
          f"{out['wall_s'] / 60:.1f} min")
    path = args.out or ws / "bench_research.json"
    path.write_text(json.dumps(out, indent=2, default=str))
    print(f"figures: {path}")


if __name__ == "__main__":
    main()
