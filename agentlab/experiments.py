"""The lab's side of experiments: technique specs from agent proposals, evaluation jobs, records.

Numbers come from the harness (``agentlab.evaluate``); this module only turns an agent's proposal into a
validated ``TechniqueSpec``, runs it on the dev or report split of the run's benchmark, and normalizes
the harness's ``EvalSummary`` into the record dict that reports and the preprint server carry.
The model under study is an external endpoint, or the embedded/llama.cpp model that the lab starts
(and stops at the end) through ``agentlab.serving``.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from agentlab.config import Settings
from agentlab.state import LabConfig


def normalize_record(summary: Any, split: str) -> dict[str, Any]:
    """The record a report cites, from an ``EvalSummary`` (field names of the server's ResultRecord)."""
    return {
        "record_id": summary.record_id, "eval_run_id": summary.run_id, "job_id": summary.job_id or "",
        "benchmark": summary.benchmark, "subset": summary.subset, "split": split, "model": summary.model,
        "technique": summary.technique, "spec_hash": summary.spec_hash, "n": summary.n,
        "correct": summary.correct, "accuracy": summary.accuracy, "ci_low": summary.ci_low,
        "ci_high": summary.ci_high, "tokens_per_problem": summary.tokens_per_problem,
        "complete": summary.complete, "errors": summary.errors,
    }


class ExperimentRunner:
    def __init__(self, settings: Settings, config: LabConfig, run_id: str, lab: str,
                 endpoint: Any = None):
        self.settings, self.config, self.run_id, self.lab = settings, config, run_id, lab
        self._endpoint = endpoint  # an agentlab.evaluate.Endpoint, or None = from settings
        self._served = None  # managed_server the lab started for the model under study
        self._problems: dict[str, list] = {}
        self.eval_db = Path(settings.workspace) / "eval" / "eval.db"

    # -- techniques -------------------------------------------------------------------------
    def technique_names(self) -> list[str]:
        from agentlab.techniques import builtin_techniques

        return [n for n, s in builtin_techniques().items() if s.kind == "prompt"]

    def _parse(self, spec: dict[str, Any]):
        from agentlab.techniques import TechniqueSpec

        return TechniqueSpec.parse(spec)

    def spec_hash(self, spec: dict[str, Any]) -> str:
        return self._parse(spec).spec_hash()

    def baseline_spec(self) -> dict[str, Any]:
        from agentlab.techniques import get_technique

        spec = get_technique(self.config.baseline, max_tokens=self.config.max_tokens_per_answer)
        return spec.model_dump(mode="json")

    def build_spec(self, proposal: dict[str, Any], iteration: int) -> dict[str, Any]:
        """A validated spec from a proposal: a built-in technique with bounded overrides."""
        from agentlab.techniques import builtin_techniques, get_technique

        name = proposal["technique"]
        base = builtin_techniques()[name]
        k = int(proposal.get("num_chains") or 1)
        k = base.chains.n if k <= 1 else k  # multi-chain techniques keep their k unless raised
        k = max(1, min(k, self.config.max_chains))
        overrides: dict[str, Any] = {"max_tokens": int(proposal.get("max_tokens") or self.config.max_tokens_per_answer)}
        if k != base.chains.n:
            overrides["k"] = k
        temp = proposal.get("temperature")
        if temp is not None and not (k > 1 and float(temp) == 0.0) and not base.chains.temperatures:
            overrides["temperature"] = float(temp)
        spec = get_technique(name, **overrides)
        instruction = " ".join(str(proposal.get("instruction") or "").split())[:160]
        data = spec.model_dump(mode="json")
        if instruction:
            data["system"] = instruction
        changed = self._parse(data).spec_hash() != base.spec_hash()
        data["name"] = f"{name}_e{iteration}" if changed else name
        data["description"] = (base.description + (" Tuned by the lab's ML engineer." if changed else ""))[:300]
        return self._parse(data).model_dump(mode="json")

    def simplify_spec(self, spec: dict[str, Any]) -> dict[str, Any]:
        """The baseline's single-chain form with the failing spec's token limit (a safe rerun)."""
        data = self.baseline_spec()
        data["sampling"]["max_tokens"] = min(spec.get("sampling", {}).get("max_tokens", 512),
                                             data["sampling"]["max_tokens"])
        data["name"] = f"{spec.get('name', 'technique')}_simple"[:80]
        return self._parse(data).model_dump(mode="json")

    def spec_numbers(self, state: dict) -> list[float]:
        """Settings a report may mention (temperatures, top_p) without a record behind them."""
        out: set[float] = set()
        for e in state.get("experiments") or []:
            s = e.get("spec") or {}
            samp = s.get("sampling") or {}
            for k in ("temperature", "top_p"):
                if isinstance(samp.get(k), (int, float)):
                    out.add(float(samp[k]))
            for t in (s.get("chains") or {}).get("temperatures") or []:
                out.add(float(t))
        return sorted(out)

    # -- data and model -------------------------------------------------------------------------
    def problems(self, split: str) -> list:
        if split not in self._problems:
            from agentlab.bench import load_benchmark

            n = self.config.dev_n if split == "dev" else self.config.report_n
            subset = {**self.config.subset, "split": split, "limit": n, "seed": self.config.seed}
            self._problems[split] = load_benchmark(self.config.benchmark, self.settings, subset=subset)
        return self._problems[split]

    def subset_label(self, split: str) -> str:
        from agentlab.bench import Subset

        n = self.config.dev_n if split == "dev" else self.config.report_n
        return Subset.model_validate({**self.config.subset, "split": split, "limit": n,
                                      "seed": self.config.seed}).describe()

    def endpoint(self):
        from agentlab.evaluate import Endpoint

        if self._endpoint is None:
            mus = self.settings.model_under_study
            if mus.engine == "external":
                from agentlab.serving import ServingError

                if not mus.url:
                    raise ServingError("model_under_study.engine = external needs model_under_study.url")
                key = mus.api_key.get_secret_value() if mus.api_key else None
                self._endpoint = Endpoint.openai(mus.url, mus.model or "default", key)
            else:
                from agentlab.serving import ServerSpec, ServingManager, managed_server

                spec = ServerSpec(engine=mus.engine, model=mus.model, n_ctx=mus.n_ctx, gpus=mus.gpus,
                                  tensor_parallel_size=mus.tensor_parallel_size)
                self._served = managed_server(ServingManager(self.settings.workspace), spec, reuse=True,
                                              timeout_s=600)
                server = self._served.__enter__()
                self._endpoint = Endpoint.from_server(server)
        return self._endpoint

    def close(self) -> None:
        if self._served is not None:
            self._served.__exit__(None, None, None)
            self._served = None

    # -- jobs -----------------------------------------------------------------------------------
    def run(self, key: str, spec: dict[str, Any], split: str,
            on_progress: Callable[..., None] | None = None) -> dict[str, Any]:
        """Evaluate ``spec`` on ``split``; {"status", "record", "job_id", "error"} (errors are data)."""
        from agentlab.evaluate import run_evaluation

        job_id = f"{self.run_id}:{key}"
        started = time.perf_counter()

        def progress(res: Any, done: int, correct: int, total: int) -> None:
            if on_progress is not None:
                on_progress(done=done, correct=correct, total=total)

        try:
            parsed = self._parse(spec)
            summary = run_evaluation(
                parsed, self.problems(split), self.endpoint(), benchmark=self.config.benchmark,
                subset=self.subset_label(split), settings=self.settings, db_path=self.eval_db,
                concurrency=self.config.concurrency, job_id=job_id, on_result=progress)
        except Exception as exc:
            return {"status": "failed", "record": None, "job_id": job_id, "wall_s": time.perf_counter() - started,
                    "error": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=3))[-2000:]}
        record = normalize_record(summary, split)
        if summary.errors and summary.errors >= summary.n:
            return {"status": "failed", "record": None, "job_id": job_id,
                    "error": f"every request failed ({summary.errors} of {summary.n} problems had errors)"}
        return {"status": "succeeded", "record": record, "job_id": job_id, "wall_s": time.perf_counter() - started}

    def compare(self, a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        from agentlab.evaluate import compare

        c = compare(a["eval_run_id"], b["eval_run_id"], db_path=self.eval_db)
        return {"n": c.n_paired, "wins": c.wins, "losses": c.losses, "delta": c.delta, "p_value": c.p_value,
                "record_a": c.record_a, "record_b": c.record_b}


def run_sync(coro: Any) -> Any:
    return asyncio.run(coro)
