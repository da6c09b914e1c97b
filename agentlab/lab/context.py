"""The lab's runtime context: what nodes and agents use besides the state (LangGraph's ``context_schema``).

``agentlab.lab.run`` builds one ``LabContext`` per session of a run (nothing here is checkpointed) and
passes it to ``graph.stream(..., context=ctx)``; a node reads it as ``runtime.context`` and hands it to the
agents, which see it through ``agents.base.AgentContext``. It holds the typed ``LabConfig`` (the one way
nodes and agents read the run's knobs), the gateway, the lab store, the experiments, the publisher, and
the run's notes, events and budgets.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentlab.config import Settings
from agentlab.errors import AgentlabError
from agentlab.lab.dev_evidence import stored_evidence
from agentlab.lab.experiments import Experiments
from agentlab.lab.models import Evidence, JobResult, Record, SpecRequest, TrainingRequest, dumped
from agentlab.lab.publishing import Publisher
from agentlab.lab.state import LabConfig
from agentlab.lab.store import LabStore
from agentlab.lab.view import LiteratureHit, StoredJob
from agentlab.llm.gateway import BudgetExceeded
from agentlab.techniques import TechniqueSpec

log = logging.getLogger(__name__)

Event = Callable[[str, dict[str, Any]], None]


class LimitReached(AgentlabError):
    """A lab budget (jobs, wall time) is exhausted: the lab wraps up."""


@dataclass
class LabContext:
    """What nodes need at run time; rebuilt on resume (nothing here is checkpointed)."""

    settings: Settings
    run_id: str
    config: LabConfig
    gateway: Any  # agentlab.llm.gateway.Gateway, or a test double with the same structured()/spent()
    store: LabStore
    experiments: Experiments
    publisher: Publisher
    out_dir: Path
    on_event: Event | None = None
    session_start: float = field(default_factory=time.monotonic)
    wall_before: float = 0.0  # wall seconds earlier sessions of this run used (lab_runs.wall_s)
    _notes: list[str] = field(default_factory=list)
    # the job budget is checked and a job counted at once: a search round's expansions start jobs from threads
    _job_lock: threading.Lock = field(default_factory=threading.Lock)

    # -- notes and events ---------------------------------------------------------------------
    def note(self, text: str) -> None:
        self._notes.append(text)
        self.emit("note", text=text)

    def pending_notes(self) -> list[str]:
        """Notes of the running node, not yet in the state (the report includes them)."""
        return list(self._notes)

    def drain_notes(self) -> list[str]:
        out, self._notes = self._notes, []
        return out

    def emit(self, kind: str, **data: Any) -> None:
        if self.on_event is not None:
            try:
                self.on_event(kind, data)
            except Exception:  # a broken display never breaks a run
                log.debug("event handler failed on %r", kind, exc_info=True)

    # -- budgets ------------------------------------------------------------------------------
    def elapsed(self) -> float:
        """Wall seconds this run has used, over every session (a resumed run keeps its clock)."""
        return self.wall_before + time.monotonic() - self.session_start

    def save_elapsed(self) -> None:
        self.store.update_run(self.run_id, wall_s=self.elapsed())

    def check_limits(self, need_job: bool = False) -> None:
        b = self.settings.budgets
        if b.max_wall_minutes is not None and self.elapsed() > 60 * b.max_wall_minutes:
            raise LimitReached(f"wall-time budget of {b.max_wall_minutes:g} min reached")
        if need_job and self.store.jobs_used(self.run_id) >= b.max_jobs:
            raise LimitReached(f"job budget of {b.max_jobs} jobs reached")

    # -- what agents call (agents.base.AgentContext) ------------------------------------------
    def technique_names(self) -> list[str]:
        return self.experiments.technique_names()

    def build_spec(self, proposal: SpecRequest, iteration: int) -> TechniqueSpec:
        return self.experiments.build_spec(proposal, iteration)

    def spec_adjustments(self, requested: SpecRequest, spec: TechniqueSpec) -> list[str]:
        return self.experiments.spec_adjustments(requested, spec)

    def simplify_spec(self, spec: TechniqueSpec) -> TechniqueSpec:
        simple = self.experiments.simplify_spec(spec)
        if simple.spec_hash() == self.experiments.baseline_spec().spec_hash():
            self.note(f"the simplified rerun of {spec.name} is the baseline itself; it runs and is recorded as the "
                      f"baseline ({simple.name}), not as a new technique")
        return simple

    def code_spec(self, code: str, iteration: int, rationale: str = "") -> TechniqueSpec:
        return self.experiments.code_spec(code, iteration, rationale)

    def trainable_techniques(self) -> list[str]:
        return self.experiments.trainable_techniques()

    def training_eval_spec(self, technique: str, method: str, iteration: int) -> TechniqueSpec:
        return self.experiments.training_eval_spec(technique, method, iteration)

    def build_recipe(self, proposal: TrainingRequest, iteration: int) -> tuple[Any, str]:
        """(a validated training recipe, "") or (None, the validation error naming the field)."""
        from agentlab.train.recipe import RecipeError

        try:
            return self.experiments.recipe(proposal, iteration), ""
        except RecipeError as exc:
            return None, str(exc)

    def recipe_adjustments(self, requested: dict[str, Any], recipe: Any) -> list[str]:
        return self.experiments.recipe_adjustments(requested, recipe)

    def retraining_change(self, proposed: dict[str, Any], experiments: list[Any]) -> tuple[dict[str, Any], str] | None:
        from agentlab.lab.training import retraining_change

        return retraining_change(proposed, experiments)

    def run_training(self, key: str, recipe: Any) -> JobResult:
        """Train once per key (a resumed run reuses a finished training run); failures are data."""
        done = self.stored_job(key)
        if done and done.status == "succeeded" and done.meta.training:
            return JobResult(status="succeeded", training=done.meta.training, job_id=done.job_id, reused=True)
        with self._job_lock:
            self.check_limits(need_job=True)
            self.store.start_experiment(self.run_id, key, "train", recipe.recipe_hash(), None, {})
        self.emit("job_started", key=key, split="train", technique=recipe.name)
        try:
            result = self.experiments.train(recipe)
        except BudgetExceeded:
            raise
        except Exception as exc:
            result = _failed(exc)
        training = dumped(result.training)
        self.store.finish_experiment(self.run_id, key, result.status, result.job_id, None, result.error,
                                     meta={"training": training})
        self.save_elapsed()
        self.emit("job_finished", key=key, status=result.status, accuracy=None, job_id=result.job_id,
                  error=result.error)
        return result

    def stored_job(self, key: str) -> StoredJob | None:
        """The lab store's row of ``key`` (a resumed run), or None."""
        row = self.store.experiment(self.run_id, key)
        return StoredJob.model_validate(row) if row else None

    def earlier_experiment(self, key: str) -> StoredJob | None:
        """The stored attempt of ``key`` (a resumed run), its spec parsed, or None."""
        row = self.stored_job(key)
        if row and row.spec:
            row.spec = TechniqueSpec.parse(row.spec)
        return row

    def search_literature(self, query: str, k: int) -> list[LiteratureHit]:
        try:
            return self.publisher.search(query, k, goal=None)
        except Exception as exc:
            self.note(f"literature search failed ({type(exc).__name__}: {exc}); continuing without it")
            return []

    def run_job(self, key: str, spec: TechniqueSpec, split: str, meta: dict | None = None,
                checkpoint: str | None = None) -> JobResult:
        """Run ``spec`` on ``split`` as a job, once per key: a finished key returns its stored result. With
        ``checkpoint`` (a training run id) the model evaluated is the one that run trained."""
        reused, seed = self._finished(key, spec, split, checkpoint)
        if reused is not None:
            return reused
        with self._job_lock:
            self.check_limits(need_job=True)
            self.store.start_experiment(self.run_id, key, split, spec.spec_hash(), spec.model_dump(mode="json"),
                                        meta)
        self.emit("job_started", key=key, split=split, technique=spec.name)
        result = self._evaluate(key, spec, split, seed, checkpoint)
        self.store.finish_experiment(self.run_id, key, result.status, result.job_id, dumped(result.record),
                                     result.error)
        self.save_elapsed()
        self.emit("job_finished", key=key, status=result.status,
                  accuracy=result.record.accuracy if result.record else None, job_id=result.job_id,
                  error=result.error)
        return result

    def _finished(self, key: str, spec: TechniqueSpec, split: str,
                  checkpoint: str | None = None) -> tuple[JobResult | None, str | None]:
        """(the result of a key that already finished, None; else None, a half-finished workdir to seed from).

        A key killed while its job ran reuses the job's result if the job finished: it is never rerun."""
        done = self.stored_job(key)
        if done and done.status == "succeeded":
            reused = done.result()
            self.emit("job_reused", key=key, job_id=done.job_id, accuracy=reused.record.accuracy)
            if split == "dev":
                reused.evidence = self._reused_evidence(reused.record)
            return reused, None
        if not (done and done.job_id):
            return None, None
        try:
            recovered, seed = self.experiments.recover(done.job_id, spec, split, checkpoint)
        except Exception:
            log.warning("could not recover job %s of %s %s; running it again", done.job_id, self.run_id, key,
                        exc_info=True)
            return None, None
        if recovered is None or not recovered.succeeded:
            return None, seed
        self.store.finish_experiment(self.run_id, key, "succeeded", recovered.job_id, dumped(recovered.record), None)
        self.emit("job_reused", key=key, job_id=recovered.job_id, accuracy=recovered.record.accuracy)
        return recovered.model_copy(update={"reused": True}), None

    def _reused_evidence(self, record: Record) -> Evidence | None:
        """A reused dev job's evidence, rebuilt from the eval db: the agents see it as they would have."""
        try:
            exps = self.experiments
            return stored_evidence(exps.eval_db, record.eval_run_id, exps.problems("dev"))
        except Exception:
            log.warning("no dev evidence for reused record %s", record.record_id, exc_info=True)
            return None

    def _evaluate(self, key: str, spec: TechniqueSpec, split: str, seed: str | None,
                  checkpoint: str | None = None) -> JobResult:
        """The experiment's result; a harness or infrastructure failure is a failed result the agents see."""
        try:
            return self.experiments.run(
                key, spec, split, on_progress=lambda **d: self.emit("job_progress", key=key, **d),
                on_submit=lambda jid: self.store.set_experiment_job(self.run_id, key, jid), seed_dir=seed,
                checkpoint=checkpoint)
        except BudgetExceeded:
            raise
        except Exception as exc:
            return _failed(exc)


def _failed(exc: BaseException) -> JobResult:
    """A harness, training or infrastructure exception as a failed result (the agents see the error)."""
    return JobResult(status="failed", job_id=None,
                     error="".join(traceback.format_exception_only(type(exc), exc)).strip())
