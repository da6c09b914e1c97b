"""Software engineer: reads a failed job's error log and proposes a bounded fix of the spec."""

from __future__ import annotations

import json
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from agentlab.techniques import TechniqueSpec
from agents.base import AgentContext, Clamp, Text, ask, cclip

ROLE = "sw_engineer"


class JobFix(BaseModel):
    action: Literal["retry", "reduce_tokens", "simplify", "give_up"]
    max_tokens: Annotated[int, Clamp(16, 2048)] = Field(256, ge=16, le=2048)
    explanation: Text(200) = ""


def fix(ctx: AgentContext, spec: TechniqueSpec, error: str) -> TechniqueSpec | None:
    """A changed spec to rerun, or None to give up. Unusable model output: simplify (safe default)."""
    obj, _ = ask(ctx, ROLE, "sw_engineer_fix", JobFix,
                 lambda: JobFix(action="simplify", explanation="fallback"), "job fix",
                 spec=cclip(ctx, json.dumps(spec.model_dump(mode="json"), default=str), 500),
                 error=cclip(ctx, error[-1200:], 700))
    if obj.action == "give_up":
        return None
    if obj.action == "reduce_tokens":
        max_tokens = min(obj.max_tokens, max(16, spec.sampling.max_tokens // 2))
        return spec.model_copy(update={"sampling": spec.sampling.model_copy(update={"max_tokens": max_tokens})})
    if obj.action == "simplify":
        return ctx.simplify_spec(spec)
    return spec  # retry: the same spec again
