"""Serving benchmark: llama.cpp's own server (parallel slots, continuous batching) against llama-cpp-python's
server (one sequence at a time), the same GGUF, in the same run.

    .venv/bin/python benchmarks/bench_serving.py                                  # embedded SmolLM2-135M
    .venv/bin/python benchmarks/bench_serving.py --models embedded,$(../shared/tools/fetch-qwen05b.sh | tail -1)
    .venv/bin/python benchmarks/bench_serving.py --models embedded,QWEN.gguf --eval   # + two evaluation wall times

For each model and server: aggregate generated tokens/s and time to first token (streamed) at 1, 2, 4, 8 and 16
concurrent requests (closed loop, distinct GSM8K prompts, greedy, --max-tokens each), then the weights' bytes read
per second at one sequence and the compute per second at the best level, to say what bounds the curve. ``--eval``
adds the wall time of one harness evaluation per server: 200 basic_arithmetic problems with SmolLM2 (zero-shot CoT,
256 tokens) and 200 GSM8K problems with the second model (256 tokens), harness concurrency 8, cache off.

The baseline needs llama-cpp-python's server, which agentlab no longer installs:
``.venv/bin/pip install 'llama-cpp-python[server]'`` (it compiles llama.cpp, ~5 min); without it only llama.cpp's
server is measured. ``--json FILE`` writes every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("AGENTLAB_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data"))

import httpx  # noqa: E402

from agentlab.bench import load_benchmark  # noqa: E402
from agentlab.eval.client import KEEPALIVE_S  # noqa: E402
from agentlab.llm.serving import ServerSpec, ServingManager, embedded_model_path, free_port  # noqa: E402

BASELINE = "llama-cpp-python"
ENGINE = "llama.cpp server"
ONE_SLOT = "llama.cpp 1 slot"  # the same build without batching: what the build alone changes


@contextmanager
def baseline_server(model: str, threads: int):
    """llama-cpp-python's server, as agentlab ran it before (one sequence at a time)."""
    port = free_port()
    log = open(Path(tempfile.gettempdir()) / f"bench-serving-baseline-{port}.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", model, "--model_alias", "m",
                             "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096", "--n_threads", str(threads),
                             "--n_threads_batch", str(threads), "--verbose", "False",
                             # streamed requests queue instead of cancelling each other (its default interrupts
                             # a streamed answer when the next request arrives; the harness never streams)
                             "--interrupt_requests", "False"], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        _wait(url, proc)
        yield url, "m"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@contextmanager
def engine_server(model: str, threads: int, parallel: int):
    mgr = ServingManager(Path(tempfile.mkdtemp(prefix="bench-serving-")))
    server = mgr.start(ServerSpec(engine="llama.cpp", model=model, n_threads=threads, parallel=parallel,
                                  n_ctx=4096), timeout_s=600)
    try:
        yield server.url, server.served_model
    finally:
        mgr.stop(server)


def _wait(url: str, proc: subprocess.Popen, timeout_s: float = 300) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"the baseline server exited with code {proc.returncode}")
        try:
            if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit("the baseline server did not start")


async def one_stream(client: httpx.AsyncClient, model: str, prompt: str, max_tokens: int) -> tuple[float, int]:
    """(seconds to the first generated token, generated tokens): one streamed chunk per token."""
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0.0, "stream": True}
    t0, first, tokens = time.perf_counter(), None, 0
    async with client.stream("POST", "/chat/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line.strip() == "data: [DONE]":
                continue
            choices = json.loads(line[6:]).get("choices") or [{}]
            if (choices[0].get("delta") or {}).get("content"):
                tokens += 1
                first = first or time.perf_counter() - t0
    return (first or time.perf_counter() - t0), tokens


async def closed_loop(url: str, model: str, prompts: list[str], concurrency: int, max_tokens: int) -> dict:
    """``concurrency`` clients, each sending its next prompt when its last answer ends."""
    queue = list(prompts)
    ttfts: list[float] = []
    total = 0

    retries = 0

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal total, retries
        while queue:
            prompt = queue.pop()
            for attempt in range(4):
                try:
                    ttft, n = await one_stream(client, model, prompt, max_tokens)
                    break
                except (httpx.RemoteProtocolError, httpx.ConnectError):  # dropped before answering: send it again
                    retries += 1
                    if attempt == 3:
                        raise
            ttfts.append(ttft)
            total += n

    limits = httpx.Limits(max_connections=concurrency + 2, keepalive_expiry=KEEPALIVE_S)  # see eval/client.py
    async with httpx.AsyncClient(base_url=url, timeout=900, limits=limits) as client:
        t = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
        wall = time.perf_counter() - t
    ttfts.sort()
    return {"concurrency": concurrency, "requests": len(prompts), "tokens": total, "wall_s": round(wall, 2),
            "tok_s": round(total / wall, 1), "ttft_median_s": round(ttfts[len(ttfts) // 2], 3),
            "ttft_max_s": round(ttfts[-1], 3), "retries": retries}


def curve(url: str, model: str, prompts: list[str], levels: list[int], max_tokens: int, label: str) -> list[dict]:
    asyncio.run(closed_loop(url, model, prompts[:1], 1, 8))  # warm up (weights paged in)
    rows = []
    for c in levels:
        n = max(4, 2 * c)
        row = asyncio.run(closed_loop(url, model, prompts[:n], c, max_tokens))
        rows.append(row)
        print(f"  {label:<18} c={c:>2}: {row['tok_s']:7.1f} tok/s  TTFT median {row['ttft_median_s']:6.2f} s "
              f"max {row['ttft_max_s']:6.2f} s  ({row['requests']} requests, {row['tokens']} tokens, "
              f"{row['wall_s']:.1f} s" + (f", {row['retries']} dropped and resent" if row["retries"] else "") + ")", flush=True)
    return rows


def bounds(model: str, one: float, best: float) -> dict:
    """What the figures say about the limits: bytes of weights read per second at one sequence (each token
    reads them all) and floating-point work per second at the best level (~2 FLOPs per weight per token)."""
    size = Path(model).stat().st_size
    params = _parameters(model)
    out = {"weights_mb": round(size / 1e6), "params_m": round(params / 1e6) if params else None,
           "weights_gb_s_at_1": round(size * one / 1e9, 1)}
    if params:
        out["gflop_s_at_best"] = round(2 * params * best / 1e9, 1)
    print(f"  weights {out['weights_mb']} MB read per token: {out['weights_gb_s_at_1']} GB/s at one sequence; "
          + (f"{out['params_m']}M parameters x 2 FLOPs x {best:.0f} tok/s = {out.get('gflop_s_at_best')} GFLOP/s "
             "at the best level" if params else ""))
    return out


def _parameters(model: str) -> int | None:
    try:
        from gguf import GGUFReader
    except ImportError:
        return None
    import numpy as np

    return int(sum(int(np.prod(t.shape)) for t in GGUFReader(model).tensors))


def eval_wall(url: str, served: str, bench: str, n: int, max_tokens: int) -> dict:
    """One harness evaluation (zero-shot CoT, cache off, concurrency 8): its wall time and accuracy."""
    from agentlab.eval.client import Endpoint
    from agentlab.eval.harness import evaluate
    from agentlab.llm.transport import RetryPolicy
    from agentlab.techniques import get_technique

    problems = load_benchmark(bench, os.environ["AGENTLAB_DATA_DIR"], limit=n)
    spec = get_technique("zero_shot_cot", max_tokens=max_tokens)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        s = asyncio.run(evaluate(spec, problems, Endpoint.openai(url, served), benchmark=bench,
                                 db_path=Path(tmp) / "r.db", concurrency=8, cache=False, timeout_s=1800,
                                 retry=RetryPolicy(max_retries=1)))
        wall = time.perf_counter() - t
    print(f"  eval {bench} n={s.n} max_tokens={max_tokens}: {wall:.0f} s, {s.correct}/{s.n} correct", flush=True)
    return {"benchmark": bench, "n": s.n, "max_tokens": max_tokens, "wall_s": round(wall, 1), "correct": s.correct}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="embedded", help="comma-separated: embedded and/or GGUF paths")
    ap.add_argument("--levels", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4, 8, 16])
    ap.add_argument("--max-tokens", type=int, default=128, help="generated tokens per request (at most)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--eval", action="store_true", help="also time one 200-problem evaluation per model and server")
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--one-slot", action="store_true", help="also llama.cpp's server with one slot (no batching)")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    has_baseline = find_spec("llama_cpp") is not None and not args.skip_baseline
    if not has_baseline and not args.skip_baseline:
        print("note: llama-cpp-python is not installed: measuring llama.cpp's server alone "
              "(pip install 'llama-cpp-python[server]' for the baseline)")
    questions = [p.question + "\nSolve it step by step." for p in
                 load_benchmark("gsm8k", os.environ["AGENTLAB_DATA_DIR"], limit=2 * max(args.levels))]
    report: dict = {"cores": os.cpu_count(), "threads": args.threads, "max_tokens": args.max_tokens, "models": {}}
    for i, m in enumerate(args.models.split(",")):
        model = str(embedded_model_path()) if m == "embedded" else m
        print(f"\n== {Path(model).name} ({args.threads} threads, {os.cpu_count()} cores)")
        servers = [(ENGINE, lambda: engine_server(model, args.threads, max(args.levels)))]
        if args.one_slot:
            servers.append((ONE_SLOT, lambda: engine_server(model, args.threads, 1)))
        if has_baseline:
            servers.insert(0, (BASELINE, lambda: baseline_server(model, args.threads)))
        entry: dict = {}
        for label, start in servers:
            with start() as (url, served):
                rows = curve(url, served, questions, args.levels, args.max_tokens, label)
                entry[label] = {"curve": rows, "bounds": bounds(model, rows[0]["tok_s"], max(r["tok_s"] for r in rows))}
                if args.eval and label != ONE_SLOT:
                    bench, n_tokens = ("basic_arithmetic", 256) if i == 0 else ("gsm8k", 256)
                    entry[label]["eval"] = eval_wall(url, served, bench, 200, n_tokens)
        if has_baseline:
            for c in (r["concurrency"] for r in entry[ENGINE]["curve"]):
                new = next(r["tok_s"] for r in entry[ENGINE]["curve"] if r["concurrency"] == c)
                old = next(r["tok_s"] for r in entry[BASELINE]["curve"] if r["concurrency"] == c)
                print(f"  c={c:>2}: {new / old:5.2f}x the baseline's aggregate tok/s")
            if args.eval:
                print(f"  eval wall time: {entry[ENGINE]['eval']['wall_s'] / entry[BASELINE]['eval']['wall_s']:.2f}x "
                      "the baseline's")
        report["models"][Path(model).name] = entry
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
