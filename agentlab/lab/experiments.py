"""The lab's side of experiments: technique specs from agent proposals, evaluation jobs, records.

Numbers come from the harness (``agentlab.eval.harness``); this module only turns an agent's proposal into a
validated ``TechniqueSpec`` (the one place a proposal becomes a spec; specs travel as objects from here on,
dumped to JSON only for the state, the lab store and a job's arguments), runs it on the dev or report split
of the run's benchmark, and normalizes the harness's ``EvalSummary`` into the record that reports and the
preprint server carry (``agentlab.lab.models.Record``; a job's outcome is a ``JobResult``).
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
from agentlab.lab.models import Comparison, JobResult, Record, SpecRequest
from agentlab.lab.state import LabConfig
from agentlab.lab.training import TrainingExperiments, differences
from agentlab.techniques import TechniqueError, TechniqueSpec, apply_overrides, builtin_techniques, get_technique

EXEMPLAR_POOL = 8  # dev-pool problems after the dev problems that few-shot exemplars come from (the most)


def normalize_record(summary: Any, split: str, model_id: str = "") -> Record:
    """The record a report cites, from an ``EvalSummary`` (field names of the server's ResultRecord);
    ``model_id`` is the model's identity (weights hash or endpoint, ``Endpoint.identity``)."""
    return Record(
        record_id=summary.record_id, eval_run_id=summary.run_id, job_id=summary.job_id or "",
        benchmark=summary.benchmark, subset=summary.subset, split=split, model=summary.model,
        model_id=model_id, technique=summary.technique, spec_hash=summary.spec_hash, n=summary.n,
        n_planned=summary.n_planned, correct=summary.correct, accuracy=summary.accuracy,
        ci_low=summary.ci_low, ci_high=summary.ci_high, tokens_per_problem=summary.tokens_per_problem,
        complete=summary.complete, errors=summary.errors, serving=summary.serving,  # engine, quantization
        calls=summary.calls, truncated=summary.truncated, max_tokens=summary.max_tokens)


class Experiments(TrainingExperiments):
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
        self.report_size: int | None = None  # the report split once sized (lab.power); None: report_n
        self._checkpoints: dict[str, tuple[Any, Any]] = {}  # training run id -> (Endpoint, its server context)
        self.eval_db = Path(settings.workspace) / "eval" / "eval.db"

    # -- techniques -------------------------------------------------------------------------
    def technique_names(self) -> list[str]:
        return [n for n, s in builtin_techniques().items() if s.kind == "prompt"]

    def baseline_spec(self) -> TechniqueSpec:
        return get_technique(self.config.baseline, max_tokens=self.config.max_tokens_per_answer)

    def build_spec(self, proposal: SpecRequest | dict[str, Any], iteration: int) -> TechniqueSpec:
        """A validated spec from a proposal (a ``SpecRequest`` or its dict): a built-in technique (or a published or
        earlier spec, ``base_spec``) within the lab's bounds (``max_chains``, ``max_tokens_per_answer``) and with
        what the engineer wrote out. ``spec_adjustments`` says what of the proposal the spec does not do."""
        proposal = SpecRequest.model_validate(proposal)
        base = self._base(proposal)
        k = proposal.num_chains or base.chains.n  # 0: the technique's own number of chains
        k = max(1, min(k, self.config.max_chains))
        cap = self.config.max_tokens_per_answer
        overrides: dict[str, Any] = {"max_tokens": min(proposal.max_tokens or cap, cap)}
        if k != base.chains.n:
            overrides["k"] = k
        temp = proposal.temperature
        if temp is not None and not (k > 1 and temp == 0.0) and not base.chains.temperatures:
            overrides["temperature"] = temp
        spec = apply_overrides(base.model_copy(deep=True), **overrides)
        instruction = " ".join(proposal.instruction.split())[:160]
        if instruction:  # one more line after the technique's own system prompt, which stays
            spec = spec.model_copy(update={"system": "\n".join(x for x in (spec.system, instruction) if x)})
        spec = self.authored(spec, proposal)
        changed = spec.spec_hash() != base.spec_hash()
        return spec.model_copy(update={
            "name": f"{base.name}_e{iteration}" if changed else base.name,
            "description": (base.description + (" Tuned by the lab's ML engineer." if changed else ""))[:300]})

    def _base(self, proposal: SpecRequest) -> TechniqueSpec:
        """The technique a proposal starts from: a published or earlier spec (``base_spec``), else a built-in."""
        if proposal.base_spec:
            return TechniqueSpec.parse(proposal.base_spec)
        return builtin_techniques()[proposal.technique]

    def spec_adjustments(self, requested: SpecRequest | dict[str, Any], spec: TechniqueSpec) -> list[str]:
        """What the engineer asked for (``requested``: the proposal's fields it wrote, with its technique) that
        ``spec`` does not do, each as ``"field asked -> ran (why)"``: the agent is told, the record keeps them."""
        requested = SpecRequest.model_validate(requested)
        cfg, base, written = self.config, self._base(requested), requested.model_fields_set
        asked: dict[str, Any] = {}
        ran: dict[str, Any] = {}
        why: dict[str, str] = {}
        if not requested.chain_templates:  # per-chain prompts set the number of chains themselves
            asked["num_chains"] = requested.num_chains or base.chains.n
            ran["num_chains"], why["num_chains"] = spec.chains.n, f"the lab's max_chains is {cfg.max_chains}"
        if "max_tokens" in written:
            asked["max_tokens"], ran["max_tokens"] = requested.max_tokens, spec.sampling.max_tokens
            why["max_tokens"] = f"the lab's max_tokens_per_answer is {cfg.max_tokens_per_answer}"
        if "temperature" in written:
            asked["temperature"] = requested.temperature
            ran["temperature"] = spec.chains.temperatures or spec.sampling.temperature
            why["temperature"] = ("the technique samples each chain at its own temperature" if spec.chains.temperatures
                                  else "several chains at temperature 0 would all give the same answer")
        if requested.few_shot:
            asked["few_shot"], ran["few_shot"] = requested.few_shot, len(spec.few_shot)
            why["few_shot"] = "the dev pool beyond the evaluated dev problems has no more worked examples"
        if requested.aggregation:
            asked["aggregation"], ran["aggregation"] = requested.aggregation, spec.chains.aggregation
            why["aggregation"] = "one chain has nothing to combine"
        return differences(asked, ran, why)

    def authored(self, spec: TechniqueSpec, proposal: SpecRequest) -> TechniqueSpec:
        """``spec`` with what the engineer wrote itself: system prompt, solving template, per-chain prompts,
        pre-steps, few-shot exemplars (drawn by the lab from the dev pool beyond the dev split's evaluated
        problems, never from the report split), aggregation, critique/revise rounds and a verifier (judge) step.
        Raises TechniqueError naming the bad field."""
        check_written_prompts(proposal)
        update: dict[str, Any] = {}
        if proposal.system:
            update["system"] = "\n".join(x for x in (proposal.system, spec.system) if x)
        if proposal.template:
            update["template"] = proposal.template
        if proposal.steps:
            update["steps"] = [st.dump() for st in proposal.steps]
        if proposal.few_shot:
            update["few_shot"] = self.exemplars(proposal.few_shot)
            template = proposal.template or spec.template
            if "{examples}" not in template:
                update["template"] = "{examples}\n\n" + template
        update["chains"] = chains = spec.chains.model_dump(mode="json")
        if proposal.chain_templates:  # one solving prompt per chain: as many chains as prompts
            chains.update(templates=list(proposal.chain_templates), n=len(proposal.chain_templates))
            if spec.chains.temperatures and len(spec.chains.temperatures) != chains["n"]:
                chains["temperatures"] = None
            if chains["n"] > 1 and spec.chains.aggregation == "first":
                chains["aggregation"] = "majority"
        if proposal.aggregation and chains["n"] > 1:
            chains["aggregation"] = proposal.aggregation
        if proposal.verify:  # the default judge: VERDICT correct/incorrect
            update["verifier"] = spec.verifier.model_dump(mode="json") if spec.verifier else {}
        if proposal.refine_rounds:
            update["refine"] = {**(spec.refine.model_dump(mode="json") if spec.refine else {}),
                                "rounds": proposal.refine_rounds}
        return TechniqueSpec.parse({**spec.model_dump(mode="json"), **update})

    def exemplars(self, n: int) -> list[dict[str, str]]:
        """``n`` worked examples from the dev split's problems after the ones the dev evaluation uses."""
        from agentlab.bench import load_benchmark

        subset = {**self.config.subset, "split": "dev", "limit": self.config.dev_n + n, "seed": self.config.seed}
        pool = load_benchmark(self.config.benchmark, self.settings, subset=subset)[self.config.dev_n:]
        return [{"question": p.question,
                 "solution": p.metadata.get("solution") or f"The answer is \\boxed{{{p.answer}}}."} for p in pool[:n]]

    def simplify_spec(self, spec: TechniqueSpec) -> TechniqueSpec:
        """The baseline with the failing spec's token limit where that is lower (a safe rerun), named for what it
        is: the baseline itself when its content is the baseline's, never a new technique under another name."""
        base = self.baseline_spec()
        simple = apply_overrides(base, max_tokens=min(spec.sampling.max_tokens, base.sampling.max_tokens))
        if simple.spec_hash() == base.spec_hash():
            return base
        tokens = simple.sampling.max_tokens
        return simple.model_copy(update={"name": f"{base.name}_max{tokens}"[:80],
                                         "description": f"The baseline ({base.name}) with max_tokens {tokens}."})

    def code_spec(self, code: str, iteration: int, rationale: str = "") -> TechniqueSpec:
        """A validated ``code`` technique spec (raises TechniqueError with a one-line reason)."""
        return TechniqueSpec.parse({"name": f"code_e{iteration}", "kind": "code", "code": code,
                                    "description": ("Custom solve() written by the lab's ML engineer. " + rationale)[:300]})

    # -- data and model -------------------------------------------------------------------------
    def problems(self, split: str) -> list:
        """The split's problems: the report split's first ``report_size`` once sized, else up to ``report_n``
        (a superset of the sized split: training stays disjoint from it before it is sized)."""
        if split not in self._problems:
            from agentlab.bench import load_benchmark

            subset = self._selector(split)
            self._problems[split] = load_benchmark(self.config.benchmark, self.settings, subset=subset)
        if split == "report" and self.report_size:
            return self._problems[split][:self.report_size]
        return self._problems[split]

    def confirm_problems(self) -> list:
        """The confirmation problems (none when ``confirm_n`` is 0)."""
        return self.problems("confirm") if self.config.confirm_n != 0 else []

    def subset_label(self, split: str) -> str:
        from agentlab.bench import Subset

        n = self.config.dev_n if split == "dev" else (self.report_size or self.config.report_n)
        return Subset.model_validate(self._selector(split, n)).describe()

    def _selector(self, split: str, n: int | None = None) -> dict[str, Any]:
        """The subset selector of ``split``. "confirm" is fresh problems of the dev pool after the dev problems and
        the few-shot pool (``EXEMPLAR_POOL``): no node was chosen on them, no exemplar comes from them, and the
        report split is disjoint from the whole dev pool (``agentlab.lab.confirm``)."""
        cfg = self.config
        if split == "confirm":
            size = cfg.dev_n if cfg.confirm_n is None else cfg.confirm_n
            return {**cfg.subset, "split": "dev", "offset": cfg.dev_n + EXEMPLAR_POOL, "limit": max(1, size),
                    "seed": cfg.seed}
        n = n or (cfg.dev_n if split == "dev" else cfg.report_n)
        return {**cfg.subset, "split": split, "limit": n, "seed": cfg.seed}

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
                                  tensor_parallel_size=mus.tensor_parallel_size, parallel=mus.parallel)
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
        from agentlab.eval.job_args import EvalJobArgs
        from agentlab.eval.sandbox_job import SEED_DIR

        llm = self.settings.llm
        args = EvalJobArgs(spec=spec, problems=self.problems(split), model=ep.model, benchmark=self.config.benchmark,
                           subset=self.subset_label(split), concurrency=self.config.concurrency,
                           timeout_s=llm.timeout_s, max_retries=llm.max_retries,
                           model_id=ep.identity, serving=ep.serving,  # the shared cache's keys name both
                           seed_db=SEED_DIR if seed_dir else None)
        binds = {seed_dir: SEED_DIR} if seed_dir else {}
        return JobSpec(kind="eval", name=f"{self.run_id}:{key}", lab=self.lab, run_id=self.run_id,
                       target="agentlab.eval.sandbox_job:run_eval", args=args.dump(), network="proxy",
                       proxy=self._proxy(ep, None, None), ro_binds=binds,
                       resources=Resources(cpus=1.0, memory_mb=self.config.job_memory_mb,
                                           timeout_s=self.config.job_timeout_s))

    def recover(self, job_id: str | None, spec: TechniqueSpec, split: str,
                checkpoint: str | None = None) -> tuple[JobResult | None, str | None]:
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
            seed_dir: str | None = None, checkpoint: str | None = None) -> JobResult:
        """Evaluate ``spec`` on ``split`` as a scheduler job, with the model under study or, given ``checkpoint``
        (a training run id), the model that run trained (errors are data: a failed result)."""
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

    def _finish(self, job: Any, spec: TechniqueSpec, split: str, wall_s: float, ep: Any) -> JobResult:
        from agentlab.eval.records import ingest_job_result

        if job.state != "succeeded" or not isinstance(job.result, dict) or "summary" not in job.result:
            tail = job.stderr_tail()
            err = f"job {job.id} {job.state}: {job.error or 'no result'}" + (f"\n--- stderr (tail) ---\n{tail}" if tail else "")
            return JobResult(status="failed", record=None, job_id=job.id, wall_s=wall_s, error=err[-2000:])
        ids = [p.id for p in self.problems(split)]
        summary = ingest_job_result(self.eval_db, job.result, spec, ids)
        summary.job_id = job.id
        return self._outcome(summary, split, job.id, wall_s, ep)

    def _outcome(self, summary: Any, split: str, job_id: str, wall_s: float, ep: Any) -> JobResult:
        if summary.errors and summary.errors >= summary.n:
            return JobResult(status="failed", record=None, job_id=job_id, wall_s=wall_s,
                             error=f"every request failed ({summary.errors} of {summary.n} problems had errors)")
        # evidence of the dev split only: the report split's questions and answers must not reach the agents
        evidence = dev_evidence(summary, self._results(summary.run_id), self.problems("dev")) if split == "dev" else None
        return JobResult(status="succeeded", job_id=job_id, wall_s=wall_s, evidence=evidence,
                         record=normalize_record(summary, "dev" if split == "confirm" else split,
                                                 getattr(ep, "identity", "")))

    def _run_code(self, key: str, spec: TechniqueSpec, split: str, on_progress: Callable[..., None] | None,
                  on_submit: Callable[[str], None] | None, started: float, ep: Any) -> JobResult:
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
            return JobResult(status="failed", record=None, job_id=solver.job_id,
                             wall_s=time.perf_counter() - started, error=f"{type(exc).__name__}: {exc}"[-2000:])
        if solver.job_id:  # the scheduler's id of the job that ran solve()
            self._set_job_id(summary, solver.job_id)
        out = self._outcome(summary, split, summary.job_id or "", time.perf_counter() - started, ep)
        if not out.succeeded:
            errs = [r.error for r in self._results(summary.run_id) if r.error]
            out.error += ("; first error: " + errs[0][-800:]) if errs else ""
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

    def compare(self, a: Record, b: Record) -> Comparison:
        """``a`` against ``b`` on the problems both evaluated (wins: a right, b wrong; exact McNemar)."""
        from agentlab.eval.records import compare

        c = compare(a.eval_run_id, b.eval_run_id, db_path=self.eval_db)
        return Comparison(n=c.n_paired, wins=c.wins, losses=c.losses, ties=c.both_correct + c.both_wrong,
                          delta=c.delta, p_value=c.p_value, record_a=c.record_a, record_b=c.record_b)


def run_sync(coro: Any) -> Any:
    return asyncio.run(coro)


def check_written_prompts(proposal: SpecRequest) -> None:
    """Prompts the engineer wrote show the question once: a small model sometimes repeats ``{question}`` (or
    a whole line) many times, a prompt that validates and then fails every problem. Raises TechniqueError."""
    written = [("template", proposal.template),
               *((f"chain_templates[{i}]", t) for i, t in enumerate(proposal.chain_templates)),
               *((f"steps[{i}].template", st.template) for i, st in enumerate(proposal.steps))]
    for field, text in written:
        n = text.count("{question}")
        if n > 2:
            raise TechniqueError(f"{field} has {{question}} {n} times: the model would read the question {n} "
                                 "times; write it once")

