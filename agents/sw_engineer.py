"""Software engineer: reads a failed job's error log and proposes a bounded fix of the spec."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from agents.base import Clamp, Text, ask, clip

ROLE = "sw_engineer"


class JobFix(BaseModel):
    action: Literal["retry", "reduce_tokens", "simplify", "give_up"]
    max_tokens: Annotated[int, Clamp(16, 2048)] = Field(256, ge=16, le=2048)
    explanation: Text(200) = ""


def fix(ctx: Any, spec: dict[str, Any], error: str) -> dict[str, Any] | None:
    """A changed spec to rerun, or None to give up. Unusable model output: simplify (safe default)."""
    obj, _ = ask(ctx, ROLE, "sw_engineer_fix", JobFix,
                 lambda: JobFix(action="simplify", explanation="fallback"), "job fix",
                 spec=clip(json.dumps(spec, default=str), 500), error=clip(error[-1200:], 700))
    if obj.action == "give_up":
        return None
    new = json.loads(json.dumps(spec, default=str))
    if obj.action == "reduce_tokens":
        cur = _get_max_tokens(new) or 512
        _set_max_tokens(new, min(obj.max_tokens, max(16, cur // 2)))
    elif obj.action == "simplify":
        return ctx.simplify_spec(new)
    return new


def _get_max_tokens(spec: dict) -> int | None:
    sampling = spec.get("sampling")
    if isinstance(sampling, dict) and "max_tokens" in sampling:
        return sampling["max_tokens"]
    return spec.get("max_tokens")


def _set_max_tokens(spec: dict, value: int) -> None:
    if isinstance(spec.get("sampling"), dict):
        spec["sampling"]["max_tokens"] = value
    else:
        spec["max_tokens"] = value
