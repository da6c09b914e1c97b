"""Gateway overhead and structured-output reliability with the embedded model (llama.cpp, CPU).

Prints:
  1. median latency of a gateway call vs a bare litellm call to the same local server, interleaved
     in the same run (target ratio <= 1.05);
  2. the share of valid structured objects over 50 prompts (target 100%).

Usage: .venv/bin/python benchmarks/bench_gateway.py [--calls 40] [--prompts 50]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel, Field

import agentlab  # noqa: F401
import litellm
from agentlab.config import load_settings
from agentlab.llm.gateway import Gateway, GatewayError
from agentlab.llm.serving import ServerSpec, ServingManager


class Proposal(BaseModel):
    """A deliberately agent-like object: the kind of thing a lab role returns."""

    title: str = Field(description="short name of the idea")
    hypothesis: str
    steps: list[str] = Field(description="2-4 concrete steps")
    confidence: float = Field(ge=0, le=1)


TOPICS = [
    "chain-of-thought prompting", "self-consistency voting", "few-shot example selection", "answer verification",
    "plan-and-solve prompting", "least-to-most decomposition", "self-refinement", "temperature mixing",
    "majority voting with equivalence classes", "program-aided reasoning",
]
ASKS = [
    "Propose an experiment that tests whether {t} improves accuracy on grade-school math.",
    "Suggest a cheap ablation of {t} for a 0.5B model.",
    "Write a research idea that combines {t} with a verifier.",
    "Describe how to measure the token cost of {t}.",
    "Propose a variant of {t} for competition math problems.",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=40, help="latency samples per side")
    ap.add_argument("--prompts", type=int, default=50, help="structured-output prompts")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    mgr = ServingManager(tmp)
    print("starting llama.cpp with the embedded SmolLM2-135M ...", flush=True)
    server = mgr.start(ServerSpec(engine="llama.cpp"))
    try:
        # no agents' model configured: the gateway takes the embedded path and reuses this server
        settings = load_settings(overrides={"workspace": str(tmp)})
        gw = Gateway(settings, run_id="bench")
        assert gw.target().api_base == server.url
        messages = [{"role": "user", "content": "Reply with one word: hello"}]
        params = dict(max_tokens=8, temperature=0.0)

        def bare() -> None:
            litellm.completion(model=server.litellm_model, api_base=server.url, api_key="sk-local",
                               messages=messages, **params)

        def gateway() -> None:
            gw.complete(messages, **params)

        for _ in range(3):  # warm up both paths (imports, prompt cache)
            bare(); gateway()
        t_bare, t_gw = [], []
        for i in range(args.calls):  # interleaved, alternating order: drift hits both sides alike
            pair = [(bare, t_bare), (gateway, t_gw)]
            for fn, out in (pair if i % 2 == 0 else pair[::-1]):
                t0 = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t0)
        med_bare, med_gw = statistics.median(t_bare), statistics.median(t_gw)
        print(f"\nlatency, {args.calls} calls each (max_tokens=8):")
        print(f"  bare litellm   median {med_bare * 1000:7.1f} ms")
        print(f"  gateway        median {med_gw * 1000:7.1f} ms  (ledger row, budget check, retries armed)")
        print(f"  ratio gateway/bare = {med_gw / med_bare:.3f}   (target <= 1.05)")

        if args.prompts <= 0:
            return
        prompts = [a.format(t=t) for a in ASKS for t in TOPICS][: args.prompts]
        sgw = Gateway(settings, run_id="bench-structured")
        valid, t0 = 0, time.perf_counter()
        for i, p in enumerate(prompts, 1):
            try:
                sgw.structured(p, Proposal, role="postdoc", max_tokens=300, temperature=0.7)
                valid += 1
            except GatewayError as exc:
                print(f"\n  invalid #{i}: {str(exc)[:160]}")
            print(f"\r  structured {i}/{len(prompts)}", end="", flush=True)
        elapsed = time.perf_counter() - t0
        calls = sgw.ledger.totals("bench-structured").calls
        print(f"\nstructured output: {valid}/{len(prompts)} valid Proposal objects = {100 * valid / len(prompts):.1f}%"
              f" (target 100%); {calls} model calls in all ({calls - len(prompts)} re-asks);"
              f" {elapsed / len(prompts):.2f} s/object")
    finally:
        mgr.stop(server)


if __name__ == "__main__":
    sys.exit(main())
