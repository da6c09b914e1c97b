"""The arguments of an evaluation job (``agentlab.eval.sandbox_job:run_eval``), typed.

Jobs carry JSON: the submitting side (``agentlab.lab.experiments``) builds ``EvalJobArgs`` and puts its dump in the
``JobSpec``; inside the sandbox ``run_eval`` validates what it was called with (``EvalJobArgs.parse``), so a bad or
unknown field fails the job at once, with a message naming it, instead of somewhere in the harness.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentlab.bench.registry import Problem
from agentlab.eval.errors import EvalError
from agentlab.techniques import TechniqueSpec


class EvalJobArgs(BaseModel):
    """What an evaluation job evaluates, on which model, and how."""

    model_config = ConfigDict(extra="forbid")

    spec: TechniqueSpec
    problems: list[Problem]
    model: str = Field(min_length=1, description="the served model name the requests ask for")
    benchmark: str
    subset: str = Field(description="the problems' subset label (``Subset.describe``), as the record names it")
    concurrency: int = Field(4, ge=1)
    timeout_s: float = Field(180.0, gt=0)
    max_retries: int = Field(2, ge=0)
    base_url: str | None = Field(None, description="the model's URL when the job has no metered proxy (run by hand)")
    seed_db: str | None = Field(None, description="a killed attempt's workdir (mounted) whose results are reused")
    model_id: str = Field("", description="the model's identity (``Endpoint.identity``): the completion cache's keys")
    serving: str = Field("", description="engine and quantization (``Endpoint.serving``): in the record and the keys")

    @classmethod
    def parse(cls, data: dict[str, Any]) -> EvalJobArgs:
        """Validated arguments; raises EvalError listing every bad field."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            bad = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}" for e in exc.errors())
            raise EvalError(f"invalid evaluation job arguments: {bad}") from None

    def dump(self) -> dict[str, Any]:
        """The job's JSON arguments."""
        return self.model_dump(mode="json")
