"""Research benchmark: do labs with local models only propose techniques that run, find gains, and build on
each other? Lab A works on a goal; lab B then starts with lab A's paper on the server (it may extend lab A's
published technique, and it re-runs lab A's best as the prior best on its own report split).

Agents and model under study: Qwen2.5-Coder-0.5B-Instruct (`../shared/tools/fetch-qwen05b.sh`) through one
llama.cpp server. Printed per lab: the share of proposed techniques that validated and ran (and ran on the
first try), the best dev accuracy, the report-split gain over the baseline with McNemar's p (and over the prior
best for lab B), the agents' tokens and the wall time.

    .venv/bin/python benchmarks/bench_research.py [--model PATH.gguf] [--benchmark gsm8k]
        [--dev-n 20] [--report-n 200] [--iterations 3] [--max-tokens 256]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("AGENTLAB_DATA_DIR", str(REPO.parent / "shared" / "data"))
GOAL = "Improve the model's accuracy on grade-school math word problems with a better reasoning technique."


def _model_path(arg: str | None) -> str:
    if arg:
        return arg
    out = subprocess.run(["bash", str(REPO.parent / "shared" / "tools" / "fetch-qwen05b.sh")], check=True,
                         capture_output=True, text=True).stdout.strip().splitlines()
    return out[-1]


def _settings(workspace: Path, url: str, served: str, n_ctx: int):
    from agentlab.config import load_settings

    os.environ["AGENTLAB_WORKSPACE"] = str(workspace)
    return load_settings(overrides={
        "agents.model": f"openai/{served}", "agents.api_base": url, "agents.api_key": "sk-local",
        "agents.context_window": n_ctx, "model_under_study.engine": "external", "model_under_study.url": url,
        "model_under_study.model": served, "budgets.max_usd": None, "llm.timeout_s": 900})


def _figures(out, settings) -> dict:
    from agentlab.llm.usage import UsageLedger

    st = out.state
    exps = st.get("experiments") or []
    ran = [e for e in exps if e.get("record")]
    first_try = [e for e in ran if (e.get("attempts") or [{}])[0].get("status") == "succeeded"]
    final = st.get("final") or {}
    comp, prior = final.get("comparison") or {}, final.get("comparison_prior") or {}
    return {
        "status": out.status, "experiments": len(exps), "ran": len(ran), "first_try": len(first_try),
        "written_out": sum(bool(e["proposal"].get("template") or e["proposal"].get("steps")
                                or e["proposal"].get("few_shot")) for e in exps),
        "extends": sorted({e["extends"] for e in exps if e.get("extends")}),
        "best_dev": max((e["record"]["accuracy"] for e in ran), default=None),
        "technique": final.get("technique"), "baseline": final.get("baseline"), "prior": final.get("prior_best"),
        "delta": comp.get("delta"), "p": comp.get("p_value"), "delta_prior": prior.get("delta"),
        "p_prior": prior.get("p_value"), "tokens": UsageLedger(settings.db_path).totals(out.run_id).tokens,
        "paper": (st.get("publication") or {}).get("paper_id"),
    }


def _acc(r: dict | None) -> str:
    return "-" if not r else f"{100 * r['accuracy']:.1f}% ({r['correct']}/{r['n']})"


def _num(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def _print(name: str, f: dict, wall_s: float) -> None:
    share = f"{f['ran']}/{f['experiments']}" + (f" ({100 * f['ran'] / f['experiments']:.0f}%)" if f["experiments"] else "")
    best = None if f["best_dev"] is None else 100 * f["best_dev"]
    gain = None if f["delta"] is None else 100 * f["delta"]
    print(f"\n== {name}: {f['status']}, paper {f['paper']}, {wall_s / 60:.1f} min, agents' tokens {f['tokens']}")
    print(f"   techniques that validated and ran: {share}; on the first try: {f['first_try']}; "
          f"written out (template/steps/few-shot): {f['written_out']}; extends: {f['extends'] or '-'}")
    print(f"   best dev accuracy: {_num(best, '.1f')}%")
    print(f"   report split: technique {_acc(f['technique'])}, baseline {_acc(f['baseline'])}, "
          f"gain {_num(gain, '+.1f')} points, McNemar p {_num(f['p'], '.3g')}")
    if f["prior"]:
        gain_prior = None if f["delta_prior"] is None else 100 * f["delta_prior"]
        print(f"   prior best (paper {f['prior']['paper_id']}): {_acc(f['prior'])}, gain over it "
              f"{_num(gain_prior, '+.1f')} points, McNemar p {_num(f['p_prior'], '.3g')}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="GGUF of the agents' model and the model under study (default: fetch Qwen 0.5B)")
    ap.add_argument("--benchmark", default="gsm8k")
    ap.add_argument("--dev-n", type=int, default=20)
    ap.add_argument("--report-n", type=int, default=200)
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--n-ctx", type=int, default=8192)
    args = ap.parse_args()

    from agentlab.lab.local_server import lab_key
    from agentlab.lab.run import start_lab
    from agentlab.lab.state import LabConfig
    from agentlab.llm.serving import ServerSpec, ServingManager, managed_server
    from preprint_server.serve import start_local_server

    model = _model_path(args.model)
    with tempfile.TemporaryDirectory(prefix="bench-research-") as tmp:
        root = Path(tmp)
        with managed_server(ServingManager(root / "servers"), ServerSpec(engine="llama.cpp", model=model,
                                                                         n_ctx=args.n_ctx), timeout_s=600) as server:
            url, stop = start_local_server(root / "preprint")
            try:
                for name, lit in (("lab-a", 0), ("lab-b", 2)):
                    settings = _settings(root / name, server.url, server.served_model, args.n_ctx)
                    cfg = LabConfig(benchmark=args.benchmark, dev_n=args.dev_n, report_n=args.report_n,
                                    max_iterations=args.iterations, literature_top_n=lit, lab_name=name,
                                    max_tokens_per_answer=args.max_tokens, concurrency=2, server_url=url)
                    started = time.perf_counter()
                    out = start_lab(settings, GOAL, cfg, server_key=lab_key(root / "preprint", name))
                    _print(name, _figures(out, settings), time.perf_counter() - started)
            finally:
                stop()


if __name__ == "__main__":
    main()
