"""The lab's side of experiments: technique specs from agent proposals, evaluation jobs, records.

Numbers come from the harness (``agentlab.eval.harness``); this module only turns an agent's proposal into a
validated ``TechniqueSpec`` (the one place a proposal becomes a spec; specs travel as objects from here on,
dumped to JSON only for the state, the lab store and a job's arguments), runs it on the dev or report split
of the run's benchmark, and normalizes the harness's ``EvalSummary`` into the record dict that reports and
the preprint server carry.
The model under study is an external endpoint, or the embedded/llama.cpp model that the lab starts
(and stops at the end) through ``agentlab.llm.serving``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentlab.config import Settings
from agentlab.lab.dev_evidence import dev_evidence
from agentlab.lab.state import LabConfig
from agentlab.techniques import TechniqueSpec, apply_overrides, builtin_techniques, get_technique


def normalize_record(summary: Any, split: str, model_id: str = "") -> dict[str, Any]:
    """The record a report cites, from an ``EvalSummary`` (field names of the server's ResultRecord);
    ``model_id`` is the model's identity (weights hash or endpoint, ``Endpoint.identity``)."""
    return {
        "record_id": summary.record_id, "eval_run_id": summary.run_id, "job_id": summary.job_id or "",
        "benchmark": summary.benchmark, "subset": summary.subset, "split": split, "model": summary.model,
        "model_id": model_id, "technique": summary.technique, "spec_hash": summary.spec_hash, "n": summary.n,
        "n_planned": summary.n_planned, "correct": summary.correct, "accuracy": summary.accuracy,
        "ci_low": summary.ci_low, "ci_high": summary.ci_high, "tokens_per_problem": summary.tokens_per_problem,
        "complete": summary.complete, "errors": summary.errors,
    }


class Experiments:
    """A run's experiments: specs from proposals, the splits, the model under study, evaluation jobs."""

    def __init__(self, settings: Settings, config: LabConfig, run_id: str, lab: str,
                 endpoint: Any = None, scheduler: Any = None):
        self.settings, self.config, self.run_id, self.lab = settings, config, run_id, lab
        self._endpoint = endpoint  # an agentlab.eval.client.Endpoint, or None = from settings
        self._served = None  # managed_server the lab started for the model under study
        # agentlab.jobs.LocalScheduler: one shared by several labs (given), or this run's own, started on the
        # first job and scoped to this run (it runs no other lab's jobs, so its shutdown cancels none)
        self._sched, self._shared = scheduler, scheduler is not None
        self._problems: dict[str, list] = {}
        self._checkpoints: dict[str, tuple[Any, Any]] = {}  # training run id -> (Endpoint, its server context)
        self.eval_db = Path(settings.workspace) / "eval" / "eval.db"

    # -- techniques -------------------------------------------------------------------------
    def technique_names(self) -> list[str]:
        return [n for n, s in builtin_techniques().items() if s.kind == "prompt"]

    def baseline_spec(self) -> TechniqueSpec:
        return get_technique(self.config.baseline, max_tokens=self.config.max_tokens_per_answer)

    def build_spec(self, proposal: dict[str, Any], iteration: int) -> TechniqueSpec:
        """A validated spec from a proposal: a built-in technique (or a published spec, ``base_spec``) with
        bounded overrides and what the engineer wrote out."""
        name = proposal["technique"]
        if proposal.get("base_spec"):
            base = TechniqueSpec.parse(proposal["base_spec"])
            name = base.name
        else:
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
        spec = apply_overrides(base.model_copy(deep=True), **overrides)
        instruction = " ".join(str(proposal.get("instruction") or "").split())[:160]
        if instruction:
            spec = spec.model_copy(update={"system": instruction})
        spec = self.authored(spec, proposal)
        changed = spec.spec_hash() != base.spec_hash()
        return spec.model_copy(update={
            "name": f"{name}_e{iteration}" if changed else name,
            "description": (base.description + (" Tuned by the lab's ML engineer." if changed else ""))[:300]})

    def authored(self, spec: TechniqueSpec, proposal: dict[str, Any]) -> TechniqueSpec:
        """``spec`` with what the engineer wrote itself: system prompt, solving template, per-chain prompts,
        pre-steps, few-shot exemplars (drawn by the lab from the dev pool beyond the dev split's evaluated
        problems, never from the report split), aggregation, critique/revise rounds and a verifier (judge) step.
        Raises TechniqueError naming the bad field."""
        data = spec.model_dump(mode="json")
        if proposal.get("system"):
            data["system"] = "\n".join(x for x in (proposal["system"], data.get("system")) if x)
        if proposal.get("template"):
            data["template"] = proposal["template"]
        if proposal.get("steps"):
            data["steps"] = [{"name": st.get("name"), "template": st.get("template")} for st in proposal["steps"]]
        if proposal.get("few_shot"):
            data["few_shot"] = self.exemplars(int(proposal["few_shot"]))
            if "{examples}" not in data["template"]:
                data["template"] = "{examples}\n\n" + data["template"]
        if proposal.get("chain_templates"):  # one solving prompt per chain: as many chains as prompts
            chains = data["chains"]
            chains.update(templates=list(proposal["chain_templates"]), n=len(proposal["chain_templates"]))
            if chains.get("temperatures") and len(chains["temperatures"]) != chains["n"]:
                chains["temperatures"] = None
            if chains["n"] > 1 and chains.get("aggregation", "first") == "first":
                chains["aggregation"] = "majority"
        if proposal.get("aggregation") and data["chains"]["n"] > 1:
            data["chains"]["aggregation"] = proposal["aggregation"]
        if proposal.get("verify"):
            data["verifier"] = data.get("verifier") or {}  # the default judge: VERDICT correct/incorrect
        if proposal.get("refine_rounds"):
            data["refine"] = {**(data.get("refine") or {}), "rounds": int(proposal["refine_rounds"])}
        return TechniqueSpec.parse(data)

    def exemplars(self, n: int) -> list[dict[str, str]]:
        """``n`` worked examples from the dev split's problems after the ones the dev evaluation uses."""
        from agentlab.bench import load_benchmark

        subset = {**self.config.subset, "split": "dev", "limit": self.config.dev_n + n, "seed": self.config.seed}
        pool = load_benchmark(self.config.benchmark, self.settings, subset=subset)[self.config.dev_n:]
        return [{"question": p.question,
                 "solution": p.metadata.get("solution") or f"The answer is \\boxed{{{p.answer}}}."} for p in pool[:n]]

    def simplify_spec(self, spec: TechniqueSpec) -> TechniqueSpec:
        """The baseline's single-chain form with the failing spec's token limit (a safe rerun)."""
        base = self.baseline_spec()
        sampling = base.sampling.model_copy(update={"max_tokens": min(spec.sampling.max_tokens,
                                                                      base.sampling.max_tokens)})
        return base.model_copy(update={"sampling": sampling, "name": f"{spec.name}_simple"[:80]})

    def code_spec(self, code: str, iteration: int, rationale: str = "") -> TechniqueSpec:
        """A validated ``code`` technique spec (raises TechniqueError with a one-line reason)."""
        return TechniqueSpec.parse({"name": f"code_e{iteration}", "kind": "code", "code": code,
                                    "description": ("Custom solve() written by the lab's ML engineer. " + rationale)[:300]})

    # -- training techniques ----------------------------------------------------------------------
    def trainable_model(self) -> str:
        """The weights a training technique starts from: the model under study's own (raises RecipeError)."""
        from agentlab.train.recipe import RecipeError

        mus = self.settings.model_under_study
        if mus.engine == "external":
            raise RecipeError("training techniques need the model under study's weights, and an external endpoint "
                              "has none here: serve a local model (model_under_study.engine = llama.cpp or vllm)")
        return mus.model or "embedded"

    def trainable_techniques(self) -> list[str]:
        """One-prompt techniques (no pre-steps): training renders their prompt for every training problem."""
        return [n for n, s in builtin_techniques().items()
                if s.kind == "prompt" and not s.steps and s.template and not s.chains.templates]

    def training_eval_spec(self, technique: str, method: str, iteration: int) -> TechniqueSpec:
        """The technique a trained model is evaluated with, named after the training (its records never pass as
        the untrained model's: they also name the checkpoint as the model)."""
        spec = get_technique(technique, max_tokens=self.config.max_tokens_per_answer)
        return spec.model_copy(update={"name": f"{method}_e{iteration}_{technique}"[:80],
                                       "description": f"{technique} on the model after {method} training "
                                                      f"(experiment {iteration})"})

    def recipe(self, proposal: dict[str, Any], iteration: int) -> Any:
        """A validated ``agentlab.train.Recipe`` from a training proposal: the model under study's weights, data
        the lab may train on (generated problems, or the benchmark's dev pool without the dev problems the lab
        tunes on; never the report split), the lab's step and time bounds. Raises RecipeError naming the field."""
        from agentlab.bench import Subset
        from agentlab.bench.registry import GymBenchmark, get_benchmark
        from agentlab.train.recipe import Recipe

        cfg, bench = self.config, self.config.benchmark
        sub = Subset.model_validate({**cfg.subset, "seed": cfg.seed})
        hyper = {k: proposal[k] for k in ("learning_rate", "batch_size", "num_generations") if proposal.get(k)}
        hyper["max_seq_len"] = 128 + cfg.max_tokens_per_answer
        hyper["max_completion_length"] = cfg.max_tokens_per_answer
        steps = max(1, min(int(proposal.get("max_steps") or cfg.train_max_steps), cfg.train_max_steps))
        batch = int(hyper.get("batch_size") or 8)
        if proposal.get("method") == "grpo":  # prompts x generations: a whole number of groups
            gens = int(hyper.setdefault("num_generations", 4))
            batch = hyper["batch_size"] = max(gens, batch - batch % gens)
        data: dict[str, Any] = {"size": min(steps * batch, 5000), "technique": proposal.get("evaluate_with") or "direct",
                                "target": proposal.get("target") or "boxed",
                                "protect": {"benchmark": bench, "seeds": [cfg.seed], "dev_fraction": sub.dev_fraction},
                                "exclude_ids": [p.id for p in self.problems("dev")]}
        if isinstance(get_benchmark(bench), GymBenchmark):  # fresh problems from the generator, at another seed
            data.update(source="reasoning_gym", task=bench, seed=1000 + cfg.seed + iteration)
        else:
            data.update(source="benchmark", benchmark=bench)
        gpus = 1 if self.settings.jobs.gpus else 0
        return Recipe.parse({"name": f"{proposal.get('method', 'sft')}_e{iteration}", "method": proposal.get("method", "sft"),
                             "model": self.trainable_model(), "finetune": "lora",
                             "lora": {"r": int(proposal.get("lora_r") or 16), "alpha": 2 * int(proposal.get("lora_r") or 16)},
                             "data": data, "hyper": hyper, "max_steps": steps, "max_minutes": cfg.train_max_minutes,
                             "save_steps": max(1, steps // 2), "seed": cfg.seed,
                             "resources": {"gpus": gpus, "cpus": 2.0, "memory_mb": max(cfg.job_memory_mb, 6144)}},
                            where="training recipe")

    def train(self, recipe: Any) -> dict[str, Any]:
        """Run ``recipe`` as a ``train`` job of this run (the lab's scheduler, the sandbox); {"status", "training",
        "error"}: ``training`` summarises the run (recipe, steps, final loss or reward, checkpoint hash, curve)."""
        from agentlab.train.data import check_disjoint_ids
        from agentlab.train.runner import execute_run, prepare_run
        from agentlab.train.runs import RunStore

        ws = Path(self.settings.workspace)
        run = prepare_run(recipe, ws, Path(self.settings.data_dir), eval_db=self.eval_db)
        used = RunStore(ws).manifest(run.run_id).get("problem_ids") or []
        check_disjoint_ids(used, self.problems("report"), what="the report split")  # never trains on what it reports
        check_disjoint_ids(used, self.problems("dev"), what="the dev problems it is tuned on")
        run = execute_run(run, ws, self.scheduler(), lab=self.lab, owner_run=self.run_id)
        summary = training_summary(run, ws)
        if run.status != "succeeded":
            return {"status": "failed", "training": summary, "job_id": (run.jobs or [None])[-1],
                    "error": f"training run {run.run_id} {run.status}: {run.error}"}
        return {"status": "succeeded", "training": summary, "job_id": run.jobs[-1]}

    def endpoint_for(self, checkpoint: str | None) -> Any:
        """The model under study, or (a training run id) its trained checkpoint, served once per run."""
        if checkpoint is None:
            return self.endpoint()
        if checkpoint not in self._checkpoints:
            from agentlab.train.serve import checkpoint_endpoint

            self._checkpoints[checkpoint] = checkpoint_endpoint(Path(self.settings.workspace), checkpoint, threads=2)
        return self._checkpoints[checkpoint][0]

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
        from agentlab.eval.client import Endpoint

        if self._endpoint is None:
            mus = self.settings.model_under_study
            if mus.engine == "external":
                from agentlab.llm.serving import ServingError

                if not mus.url:
                    raise ServingError("model_under_study.engine = external needs model_under_study.url")
                key = mus.api_key.get_secret_value() if mus.api_key else None
                self._endpoint = Endpoint.openai(mus.url, mus.model or "default", key)
            else:
                from agentlab.llm.serving import ServerSpec, ServingManager, managed_server

                spec = ServerSpec(engine=mus.engine, model=mus.model, n_ctx=mus.n_ctx, gpus=mus.gpus,
                                  tensor_parallel_size=mus.tensor_parallel_size)
                self._served = managed_server(ServingManager(self.settings.workspace), spec, reuse=True,
                                              timeout_s=600)
                server = self._served.__enter__()
                self._endpoint = Endpoint.from_server(server)
        return self._endpoint

    def close(self) -> None:
        """Cancel this run's jobs (only them), stop its own scheduler, stop the model it served."""
        if self._sched is not None:
            if self._shared:
                self._sched.cancel_jobs(run_id=self.run_id)
            else:
                self._sched.shutdown(wait=False, cancel_running=True)
            self._sched = None
        if self._served is not None:
            self._served.__exit__(None, None, None)
            self._served = None
        for _, server in self._checkpoints.values():
            server.__exit__(None, None, None)
        self._checkpoints.clear()

    # -- jobs -----------------------------------------------------------------------------------
    def scheduler(self):
        if self._sched is None:
            from agentlab.jobs import LocalScheduler

            self._sched = LocalScheduler.from_settings(self.settings, runs=[self.run_id])
        return self._sched

    def _proxy(self, endpoint: Any, max_requests: int | None, max_tokens: int | None):
        from sandbox import ProxyConfig

        return ProxyConfig(upstream=endpoint.base_url, api_key=endpoint.api_key, max_requests=max_requests,
                           max_tokens=max_tokens, allowed_models=[endpoint.model], default_model=endpoint.model,
                           timeout_s=self.settings.llm.timeout_s + 30)

    def _job_spec(self, key: str, spec: TechniqueSpec, split: str, seed_dir: str | None, ep: Any):
        from agentlab.jobs import JobSpec, Resources

        if ep.litellm or not ep.base_url:
            from agentlab.eval.errors import EvalError

            raise EvalError("evaluation jobs need an OpenAI-compatible model URL (model_under_study.url); "
                            f"got the litellm model {ep.model!r}")
        llm = self.settings.llm
        args = {"spec": spec.model_dump(mode="json"), "problems": [p.model_dump(mode="json") for p in self.problems(split)],
                "model": ep.model, "benchmark": self.config.benchmark, "subset": self.subset_label(split),
                "concurrency": self.config.concurrency, "timeout_s": llm.timeout_s, "max_retries": llm.max_retries,
                "model_id": ep.identity}  # the shared completion cache's keys name the model (agentlab.eval.shared_cache)
        binds = {}
        if seed_dir:
            from agentlab.eval.sandbox_job import SEED_DIR

            binds[seed_dir] = SEED_DIR
            args["seed_db"] = SEED_DIR
        return JobSpec(kind="eval", name=f"{self.run_id}:{key}", lab=self.lab, run_id=self.run_id,
                       target="agentlab.eval.sandbox_job:run_eval", args=args, network="proxy",
                       proxy=self._proxy(ep, None, None), ro_binds=binds,
                       resources=Resources(cpus=1.0, memory_mb=self.config.job_memory_mb,
                                           timeout_s=self.config.job_timeout_s))

    def recover(self, job_id: str | None, spec: TechniqueSpec, split: str,
                checkpoint: str | None = None) -> tuple[dict[str, Any] | None, str | None]:
        """An earlier attempt of a key: (its result if the job finished, else None; a workdir to seed from)."""
        if not job_id:
            return None, None
        job = self.scheduler().store.get(job_id)
        if job is None:
            return None, None
        if job.state == "succeeded" and isinstance(job.result, dict) and "summary" in job.result:
            return self._finish(job, spec, split, 0.0, self.endpoint_for(checkpoint)), None
        work = Path(job.workdir) if job.workdir else None
        return None, (str(work) if work is not None and (work / "eval.db").is_file() else None)

    def run(self, key: str, spec: TechniqueSpec, split: str,
            on_progress: Callable[..., None] | None = None, on_submit: Callable[[str], None] | None = None,
            seed_dir: str | None = None, checkpoint: str | None = None) -> dict[str, Any]:
        """Evaluate ``spec`` on ``split`` as a scheduler job, with the model under study or, given ``checkpoint``
        (a training run id), the model that run trained; {"status", "record", "job_id", "error"} (errors are data)."""
        started = time.perf_counter()
        ep = self.endpoint_for(checkpoint)
        if spec.kind == "code":
            return self._run_code(key, spec, split, on_progress, on_submit, started, ep)
        sched = self.scheduler()
        job_id = sched.submit(self._job_spec(key, spec, split, seed_dir, ep))
        if on_submit is not None:
            on_submit(job_id)
        job = self._wait(job_id, on_progress)
        return self._finish(job, spec, split, time.perf_counter() - started, ep)

    def _wait(self, job_id: str, on_progress: Callable[..., None] | None):
        """Wait for a job, passing the harness's progress lines (stdout) to ``on_progress``."""
        sched, pos, buf = self.scheduler(), 0, b""
        while True:
            job = sched.get(job_id)
            if on_progress is not None and job.log_dir:
                try:
                    with open(Path(job.log_dir) / "stdout.log", "rb") as fh:
                        fh.seek(pos)
                        chunk = fh.read()
                    pos += len(chunk)
                    buf += chunk
                    *lines, buf = buf.split(b"\n")
                    for ln in lines:
                        parts = ln.decode("utf-8", "replace").split()
                        if len(parts) == 4 and parts[0] == "progress":
                            on_progress(done=int(parts[1]), correct=int(parts[2]), total=int(parts[3]))
                except (OSError, ValueError):
                    pass
            if job.done:
                return job
            time.sleep(0.05)

    def _finish(self, job: Any, spec: TechniqueSpec, split: str, wall_s: float, ep: Any) -> dict[str, Any]:
        from agentlab.eval.records import ingest_job_result

        if job.state != "succeeded" or not isinstance(job.result, dict) or "summary" not in job.result:
            tail = job.stderr_tail()
            err = f"job {job.id} {job.state}: {job.error or 'no result'}" + (f"\n--- stderr (tail) ---\n{tail}" if tail else "")
            return {"status": "failed", "record": None, "job_id": job.id, "wall_s": wall_s, "error": err[-2000:]}
        ids = [p.id for p in self.problems(split)]
        summary = ingest_job_result(self.eval_db, job.result, spec, ids)
        summary.job_id = job.id
        return self._outcome(summary, split, job.id, wall_s, ep)

    def _outcome(self, summary: Any, split: str, job_id: str, wall_s: float, ep: Any) -> dict[str, Any]:
        if summary.errors and summary.errors >= summary.n:
            return {"status": "failed", "record": None, "job_id": job_id, "wall_s": wall_s,
                    "error": f"every request failed ({summary.errors} of {summary.n} problems had errors)"}
        out = {"status": "succeeded", "record": normalize_record(summary, split, getattr(ep, "identity", "")),
               "job_id": job_id, "wall_s": wall_s}
        if split == "dev":  # never the report split: its questions and answers must not reach the agents
            out["evidence"] = dev_evidence(summary, self._results(summary.run_id), self.problems("dev"))
        return out

    def _run_code(self, key: str, spec: TechniqueSpec, split: str, on_progress: Callable[..., None] | None,
                  on_submit: Callable[[str], None] | None, started: float, ep: Any) -> dict[str, Any]:
        """A ``code`` technique: the harness runs here (trusted: it grades, never sees agent code), and
        ``solve()`` runs for every problem in one sandboxed job behind the metered proxy, with this lab's
        per-job request/token budget (``code_max_requests``, ``code_max_tokens``)."""
        from agentlab.eval.code_technique import SandboxCodeSolver
        from agentlab.eval.harness import evaluate
        from agentlab.jobs import Resources
        from agentlab.llm.transport import RetryPolicy

        cfg = self.config
        problems = self.problems(split)
        solver = SandboxCodeSolver(
            self.scheduler(), problems, self._proxy(ep, cfg.code_max_requests, cfg.code_max_tokens), lab=self.lab,
            run_id=self.run_id, name=f"{self.run_id}:{key}", on_submit=on_submit,
            resources=Resources(cpus=1.0, memory_mb=min(cfg.job_memory_mb, 2048), timeout_s=cfg.job_timeout_s))

        def progress(res: Any, done: int, correct: int, total: int) -> None:
            if on_progress is not None:
                on_progress(done=done, correct=correct, total=total)

        try:
            summary = run_sync(evaluate(
                spec, problems, ep, benchmark=self.config.benchmark, subset=self.subset_label(split),
                db_path=self.eval_db, concurrency=self.config.concurrency, timeout_s=self.settings.llm.timeout_s,
                retry=RetryPolicy.from_settings(self.settings.llm),
                code_solver=solver, on_result=progress))
        except Exception as exc:
            return {"status": "failed", "record": None, "job_id": solver.job_id,
                    "wall_s": time.perf_counter() - started, "error": f"{type(exc).__name__}: {exc}"[-2000:]}
        if solver.job_id:  # the scheduler's id of the job that ran solve()
            self._set_job_id(summary, solver.job_id)
        out = self._outcome(summary, split, summary.job_id or "", time.perf_counter() - started, ep)
        if out["status"] == "failed":
            errs = [r.error for r in self._results(summary.run_id) if r.error]
            out["error"] += ("; first error: " + errs[0][-800:]) if errs else ""
        return out

    def _set_job_id(self, summary: Any, job_id: str) -> None:
        """The evaluation's record names the scheduler job that ran ``solve()``."""
        from agentlab.eval.records import ResultStore

        summary.job_id = job_id
        store = ResultStore(self.eval_db)
        try:
            store.conn.execute("UPDATE eval_runs SET job_id = ? WHERE run_id = ?", (job_id, summary.run_id))
            store.set_status(summary.run_id, "complete", summary)
        finally:
            store.close()

    def _results(self, eval_run_id: str) -> list:
        from agentlab.eval.records import ResultStore

        store = ResultStore(self.eval_db)
        try:
            return store.results(eval_run_id)
        finally:
            store.close()

    def compare(self, a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        from agentlab.eval.records import compare

        c = compare(a["eval_run_id"], b["eval_run_id"], db_path=self.eval_db)
        return {"n": c.n_paired, "wins": c.wins, "losses": c.losses, "delta": c.delta, "p_value": c.p_value,
                "record_a": c.record_a, "record_b": c.record_b}


def training_summary(run: Any, workspace: Path) -> dict[str, Any]:
    """What the agents and the paper see of a training run: its recipe, data, steps, last metrics and outputs."""
    from agentlab.train.outputs import CURVE_FILE, METRICS_FILE, read_metrics
    from agentlab.train.runs import RunStore

    folder = RunStore(workspace).dir(run.run_id)
    metrics = read_metrics(folder / METRICS_FILE)
    last = {k: v for k, v in (metrics[-1] if metrics else {}).items()
            if k in ("step", "loss", "reward", "learning_rate") and v is not None}
    recipe = run.recipe
    return {"run_id": run.run_id, "method": run.method, "finetune": run.finetune, "status": run.status,
            "max_steps": run.max_steps, "steps": last.get("step", 0), "last": last, "n_train": run.n_train,
            "dropped_leaks": run.dropped_leaks, "data": {k: recipe["data"].get(k) for k in ("source", "task", "benchmark",
                                                                                        "seed", "size", "technique", "target")},
            "hyper": {k: recipe["hyper"].get(k) for k in ("learning_rate", "batch_size", "max_seq_len", "num_generations")},
            "lora_r": (recipe.get("lora") or {}).get("r"), "checkpoint_hash": run.checkpoint_hash,
            "curve": str(folder / CURVE_FILE) if (folder / CURVE_FILE).is_file() else None,
            "wall_s": (run.result or {}).get("wall_s"), "recipe": recipe}


def run_sync(coro: Any) -> Any:
    return asyncio.run(coro)
