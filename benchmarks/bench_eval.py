"""Evaluation harness benchmark: throughput vs a bare load generator and a naive serial loop, and
accuracy with CoT and self-consistency@5 on GSM8K.

    .venv/bin/python benchmarks/bench_eval.py                       # throughput + accuracy, embedded model
    .venv/bin/python benchmarks/bench_eval.py --models embedded,$(../shared/tools/fetch-qwen05b.sh | tail -1)
    .venv/bin/python benchmarks/bench_eval.py --skip-accuracy --tp-n 16 --tp-max-tokens 32

Throughput: the same chat requests (``direct`` prompts for the first --tp-n GSM8K problems, greedy,
--tp-max-tokens) at concurrency 1, 4 and 8 through (a) the harness (cache off), (b) a bare asyncio
httpx load generator at the same concurrency, and (c) a naive serial loop with the openai client,
one request at a time. All against one local llama.cpp server in the same process run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("AGENTLAB_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data"))

import httpx  # noqa: E402

from agentlab.bench import load_benchmark  # noqa: E402
from agentlab.eval.client import Endpoint  # noqa: E402
from agentlab.eval.harness import evaluate  # noqa: E402
from agentlab.llm.serving import ServerSpec, ServingManager, managed_server  # noqa: E402
from agentlab.llm.transport import RetryPolicy  # noqa: E402
from agentlab.techniques import get_technique  # noqa: E402


def _requests(problems, spec, model):
    return [{"model": model, "messages": [{"role": "user", "content": spec.render(spec.template, question=p.question)}],
             "temperature": spec.sampling.temperature, "top_p": spec.sampling.top_p,
             "max_tokens": spec.sampling.max_tokens, "seed": spec.sampling.seed, "stream": False} for p in problems]


async def bare_load(url, bodies, concurrency):
    sem = asyncio.Semaphore(concurrency)
    tokens = 0
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        async def one(body):
            nonlocal tokens
            async with sem:
                r = await client.post("/chat/completions", json=body)
                tokens += r.json()["usage"]["completion_tokens"]
        t = time.perf_counter()
        await asyncio.gather(*(one(b) for b in bodies))
        return time.perf_counter() - t, tokens


def naive_serial(url, bodies):
    from openai import OpenAI

    client = OpenAI(base_url=url, api_key="sk-none")
    tokens = 0
    t = time.perf_counter()
    for b in bodies:
        kw = {k: v for k, v in b.items() if k not in {"model", "messages", "stream"}}
        r = client.chat.completions.create(model=b["model"], messages=b["messages"], **kw)
        tokens += r.usage.completion_tokens
    return time.perf_counter() - t, tokens


async def harness(endpoint, problems, spec, concurrency, db):
    t = time.perf_counter()
    s = await evaluate(spec, problems, endpoint, benchmark="gsm8k", db_path=db, concurrency=concurrency,
                       cache=False, timeout_s=600, retry=RetryPolicy(max_retries=1))
    return time.perf_counter() - t, round(s.n * (s.tokens_per_problem) - _prompt_tokens(db, s.run_id))


def _prompt_tokens(db, run_id):
    from agentlab.eval.records import ResultStore

    st = ResultStore(db)
    try:
        return sum(r.tokens_in for r in st.results(run_id))
    finally:
        st.close()


def throughput(server, args):
    endpoint = Endpoint.from_server(server)
    problems = load_benchmark("gsm8k", os.environ["AGENTLAB_DATA_DIR"], limit=args.tp_n)
    spec = get_technique("direct", max_tokens=args.tp_max_tokens)
    bodies = _requests(problems, spec, endpoint.model)
    n = len(problems)
    print(f"\n== throughput: {n} GSM8K prompts, max_tokens={args.tp_max_tokens}, greedy, {server.served_model} "
          f"(llama.cpp, {os.cpu_count()} threads, one slot)")
    asyncio.run(bare_load(endpoint.base_url, bodies[:2], 1))  # warm up
    dt, tok = naive_serial(endpoint.base_url, bodies)
    print(f"naive serial loop (openai client)  : {n / dt:6.3f} problems/s {tok / dt:7.1f} tok/s")
    print(f"{'conc':>4} | {'harness p/s':>11} {'tok/s':>7} | {'bare p/s':>9} {'tok/s':>7} | harness/bare")
    with tempfile.TemporaryDirectory() as tmp:
        for i, c in enumerate(args.concurrency):
            db = Path(tmp) / f"tp{i}.db"
            hdt, htok = asyncio.run(harness(endpoint, problems, spec.model_copy(update={"name": f"direct-c{c}"}),
                                            c, db))
            bdt, btok = asyncio.run(bare_load(endpoint.base_url, bodies, c))
            print(f"{c:>4} | {n / hdt:11.3f} {htok / hdt:7.1f} | {n / bdt:9.3f} {btok / bdt:7.1f} | {bdt / hdt:10.2f}x")


def accuracy(server, args, label):
    endpoint = Endpoint.from_server(server)
    problems = load_benchmark("gsm8k", os.environ["AGENTLAB_DATA_DIR"], limit=args.n)
    db = Path(args.db)
    print(f"\n== accuracy: GSM8K first {len(problems)}, {label}, max_tokens={args.max_tokens}")
    for name, k in (("zero_shot_cot", None), ("self_consistency", 5)):
        spec = get_technique(name, k=k, max_tokens=args.max_tokens)
        t = time.perf_counter()
        s = asyncio.run(evaluate(spec, problems, endpoint, benchmark="gsm8k", subset=f"first={args.n}", db_path=db,
                                 concurrency=args.acc_concurrency, timeout_s=900, retry=RetryPolicy(max_retries=2)))
        print(f"{name + ('@' + str(k) if k else ''):<20} {s.correct:>3}/{s.n} = {s.accuracy:6.1%} "
              f"CI [{s.ci_low:.1%}, {s.ci_high:.1%}]  {s.tokens_per_problem:7.0f} tok/problem  "
              f"record {s.record_id}  ({time.perf_counter() - t:.0f}s)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="embedded", help="comma-separated: embedded and/or GGUF paths")
    ap.add_argument("--n", type=int, default=50, help="GSM8K problems for the accuracy runs")
    ap.add_argument("--max-tokens", type=int, default=256, help="max tokens per chain in the accuracy runs")
    ap.add_argument("--acc-concurrency", type=int, default=4)
    ap.add_argument("--tp-n", type=int, default=16, help="prompts in the throughput runs")
    ap.add_argument("--tp-max-tokens", type=int, default=32)
    ap.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 8])
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: all cores)")
    ap.add_argument("--db", default=str(Path(tempfile.gettempdir()) / "agentlab-bench-eval.db"),
                    help="results + completion cache (reruns of the accuracy part are free)")
    args = ap.parse_args()
    mgr = ServingManager(Path(tempfile.mkdtemp(prefix="bench-eval-")))
    for i, m in enumerate(args.models.split(",")):
        model = None if m == "embedded" else m
        with managed_server(mgr, ServerSpec(engine="llama.cpp", model=model, n_ctx=4096, n_threads=args.threads),
                            reuse=False, timeout_s=600) as server:
            if i == 0 and not args.skip_throughput:
                throughput(server, args)
            if not args.skip_accuracy:
                accuracy(server, args, server.served_model)


if __name__ == "__main__":
    main()
