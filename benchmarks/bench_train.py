"""Training benchmark (CPU): SFT of the embedded SmolLM2-135M on generated reasoning-gym problems, disjoint
from the report split, and its report-split accuracy before and after, paired (exact McNemar).

The base model and the checkpoint are served the same way: llama.cpp's server, the base from its GGUF (Q4_1)
and the checkpoint from a GGUF converted at Q8_0 (agentlab.train.gguf: a 4-bit grid rounds the training away;
the conversion is timed), greedy; a control serves the untrained base the checkpoint's way (Q8_0) to show what
the serving alone changes; both are evaluated by the same harness on the same report-split problems, and each record
names its engine and quantization. Training runs as a real sandboxed `train` job through the local
scheduler, with the recipe in examples/train/.

    nice -n 10 .venv/bin/python benchmarks/bench_train.py [--n 200] [--max-steps 60] [--max-minutes 18] [--workspace DIR]

The task ``arith_pm`` (a registered benchmark) is reasoning-gym ``basic_arithmetic`` with + and - only (2-3
terms of 1-2 digits, no parentheses or negation); training problems come from seed 1000, the report
split from seed 0, and any training question equal to a report question is dropped. The SFT target is a
worked solution (one operation a line, then the boxed answer); ``--target boxed`` trains the bare answer.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TASK = "arith_pm"


def register_task(size: int) -> None:
    """``arith_pm`` (registered in agentlab.bench) generating ``size`` problems, so the report split has --n."""
    import dataclasses

    from agentlab.bench.registry import BENCHMARKS

    BENCHMARKS[TASK] = dataclasses.replace(BENCHMARKS[TASK], size=size)


def train(args, ws: Path, data_dir: Path, report_size: int):
    from agentlab.jobs import JobStore, LocalScheduler
    from agentlab.train.recipe import Recipe
    from agentlab.train.runner import execute_run, prepare_run
    from sandbox import SandboxOptions

    base = Recipe.load(REPO / "examples" / "train" / "sft_smollm2_cpu.yaml").model_dump(mode="json")
    base["data"].update(task=TASK, size=args.train_size, target=args.target,
                        protect={"benchmark": TASK, "seeds": [0], "size": report_size})
    base["hyper"].update(batch_size=args.batch, learning_rate=args.lr)
    base.update(max_steps=args.max_steps, save_steps=max(10, args.max_steps // 3), max_minutes=args.max_minutes)
    recipe = Recipe.parse(base)
    run = prepare_run(recipe, ws, data_dir)
    print(f"training data: {run.n_train} rows, {run.dropped_leaks} dropped as report-split leaks", flush=True)
    backend = "bubblewrap" if _has_bwrap() else "process"
    sched = LocalScheduler(JobStore(ws / "jobs.db"), ws, gpus=[], cpus=2, sandbox_options=SandboxOptions(backend=backend))
    with sched:
        last = [0.0]

        def progress(step, total, rec):
            if time.monotonic() - last[0] > 60:
                last[0] = time.monotonic()
                print(f"  step {step}/{total} loss {rec.get('loss', '-')}", flush=True)

        run = execute_run(run, ws, sched, on_progress=progress, poll_s=2.0)
    if run.status != "succeeded":
        raise SystemExit(f"training failed: {run.error}")
    return run, backend


def _has_bwrap() -> bool:
    import shutil

    return shutil.which("bwrap") is not None


def base_endpoint(ws: Path):
    """(endpoint, server context) of the untrained base: its GGUF on llama.cpp's server."""
    from agentlab.eval.client import Endpoint
    from agentlab.llm.serving import ServerSpec, ServingManager, managed_server

    managed = managed_server(ServingManager(ws), ServerSpec(engine="llama.cpp"), reuse=False)
    return Endpoint.from_server(managed.__enter__()), managed


def base_at_q8_endpoint(ws: Path):
    """(endpoint, server context) of the untrained base re-served as a checkpoint of a 4-bit base is (Q8_0,
    agentlab.train.gguf): the control that shows what the serving alone changes."""
    import json

    from agentlab.eval.client import Endpoint
    from agentlab.llm.serving import ServerSpec, ServingManager, embedded_model_path, managed_server
    from agentlab.train.gguf import checkpoint_gguf
    from agentlab.train.models import META_FILE, load_base

    folder = ws / "control" / "checkpoint"
    if not (folder / META_FILE).is_file():
        model, tok = load_base(str(embedded_model_path()))
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
        (folder / META_FILE).write_text(json.dumps({"base": "embedded", "method": "none", "finetune": "full"}))
    managed = managed_server(ServingManager(ws), ServerSpec(engine="llama.cpp", model=str(checkpoint_gguf(folder))),
                             reuse=False)
    return Endpoint.from_server(managed.__enter__()), managed


def evaluate_model(problems, ws: Path, served, max_tokens: int, concurrency: int):
    """Evaluate on the report split with ``served`` = (endpoint, server context); stops the server."""
    from agentlab.eval.harness import evaluate
    from agentlab.eval.records import ResultStore
    from agentlab.techniques import get_technique

    endpoint, server = served
    spec = get_technique("direct", max_tokens=max_tokens, temperature=0.0)
    try:
        summary = asyncio.run(evaluate(spec, problems, endpoint, db_path=ws / "eval" / "eval.db",
                                       benchmark=TASK, subset="split=report(0.3)", concurrency=concurrency,
                                       cache=False))
    finally:
        server.__exit__(None, None, None)
    store = ResultStore(ws / "eval" / "eval.db")
    try:
        results = {r.problem_id: r.correct for r in store.results(summary.run_id)}
    finally:
        store.close()
    return summary, results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="report-split problems evaluated")
    ap.add_argument("--max-steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--target", default="worked", help="SFT target: worked (one +/- step a line), boxed or gold")
    ap.add_argument("--max-minutes", type=float, default=18.0, help="training time budget")
    ap.add_argument("--train-size", type=int, default=2000)
    ap.add_argument("--max-tokens", type=int, default=48, help="completion budget of both evaluations")
    ap.add_argument("--concurrency", type=int, default=8, help="requests in flight (llama.cpp's slots)")
    ap.add_argument("--workspace", type=Path, default=None)
    args = ap.parse_args()
    t0 = time.monotonic()
    from agentlab.bench.registry import load_benchmark
    from agentlab.eval.stats import mcnemar, wilson_interval
    from agentlab.train.serve import checkpoint_endpoint

    data_dir = Path(os.environ.get("AGENTLAB_DATA_DIR", REPO.parent / "shared" / "data"))
    ws = args.workspace or Path(tempfile.mkdtemp(prefix="bench-train-"))
    report_size = int(args.n / 0.65) + 20
    register_task(report_size)
    problems = load_benchmark(TASK, data_dir, split="report", seed=0)[: args.n]
    print(f"workspace {ws}; {len(problems)} report-split problems of {TASK}", flush=True)
    run, backend = train(args, ws, data_dir, report_size)
    t_train = time.monotonic() - t0
    t1 = time.monotonic()
    before, res_b = evaluate_model(problems, ws, base_endpoint(ws), args.max_tokens, args.concurrency)
    t2 = time.monotonic()
    served = checkpoint_endpoint(ws, run.run_id)  # converted to GGUF (Q8_0 for this Q4_1 base), then served
    t_convert = time.monotonic() - t2
    after, res_a = evaluate_model(problems, ws, served, args.max_tokens, args.concurrency)
    t3 = time.monotonic()
    control, res_c = evaluate_model(problems, ws, base_at_q8_endpoint(ws), args.max_tokens, args.concurrency)
    wins, losses = paired(res_a, res_b)
    r = run.result or {}
    print("\n== bench_train (SFT, LoRA, CPU)")
    for label, s in (("before (base)", before), ("after (SFT)", after), ("base at Q8_0", control)):
        lo, hi = wilson_interval(s.correct, s.n)
        print(f"{label:14s} {s.correct}/{s.n} = {s.correct / s.n:.1%}  95% CI [{lo:.1%}, {hi:.1%}]  "
              f"model {s.model} served by {s.serving}, {s.truncated} of {s.calls} replies cut at "
              f"{args.max_tokens} tokens")
    print(f"paired: SFT-only correct {wins}, base-only correct {losses}; exact McNemar p = {mcnemar(wins, losses):.3g}")
    c_wins, c_losses = paired(res_c, res_b)
    print(f"control (the serving alone): the base at Q8_0 against Q4_1: {c_wins} wins, {c_losses} losses, exact "
          f"McNemar p = {mcnemar(c_wins, c_losses):.3g}")
    print(f"training: {r.get('steps')} steps x batch {args.batch}, {run.n_train} rows ({run.dropped_leaks} leaks "
          f"dropped), final loss {r.get('final_loss'):.4f}, {r.get('tokens_per_s')} tokens/s, peak memory "
          f"{r.get('peak_memory_mb')} MB, train {r.get('train_wall_s')} s (job {r.get('wall_s', 0):.0f} s, {backend})")
    print(f"checkpoint sha256 {run.checkpoint_hash}; wall time: training phase {t_train:.0f} s, evaluation "
          f"before {t2 - t1:.0f} s (0 when resumed from an earlier run in --workspace), after {t3 - t2:.0f} s "
          f"(GGUF conversion and server start {t_convert:.0f} s of it), total {time.monotonic() - t0:.0f} s")
    return 0


def paired(ours: dict, theirs: dict) -> tuple[int, int]:
    """(problems only ``ours`` got right, problems only ``theirs`` got right)."""
    return (sum(1 for k in ours if ours[k] and not theirs.get(k, False)),
            sum(1 for k in ours if not ours[k] and theirs.get(k, False)))


if __name__ == "__main__":
    sys.exit(main())
