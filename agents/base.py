"""What every role shares: prompt files, the structured call with a safe fallback, short context, and the
narrow interface roles have to the lab (``AgentContext``): the gateway's structured asks, the run's typed
configuration, notes, and experiments in terms of technique specs (``agentlab.techniques``)."""

from __future__ import annotations

import json
import string
from collections.abc import Callable
from contextvars import ContextVar
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Protocol, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    ValidationInfo,
    model_validator,
)

from agentlab.lab.models import Experiment, JobResult, SpecRequest, TrainingRequest
from agentlab.lab.view import LiteratureHit, StoredJob
from agentlab.llm.gateway import BudgetExceeded, GatewayError
from agentlab.techniques import TechniqueSpec

PROMPTS_DIR = Path(__file__).parent / "prompts"
T = TypeVar("T", bound=BaseModel)


class StructuredLLM(Protocol):
    """The gateway as roles use it (``agentlab.llm.gateway.Gateway.structured``)."""

    def structured(self, prompt: str, schema: type[T], *, role: str | None = None, system: str | None = None,
                   **params: Any) -> T: ...


class RunConfig(Protocol):
    """The run's knobs roles read (``agentlab.lab.state.LabConfig`` has them)."""

    benchmark: str
    subset: dict[str, Any]
    baseline: str
    dev_n: int
    report_n: int
    max_fix_attempts: int
    literature_top_n: int
    plan_turns: int
    context_scale: float | None
    max_tokens_per_answer: int
    max_chains: int
    agent_output_tokens: int | None
    allow_code_techniques: bool


class AgentContext(Protocol):
    """What a role needs from the workflow (``agentlab.lab.context.LabContext`` provides it)."""

    gateway: StructuredLLM
    config: RunConfig

    def note(self, text: str) -> None: ...

    def technique_names(self) -> list[str]: ...

    def build_spec(self, proposal: SpecRequest, iteration: int) -> TechniqueSpec: ...

    def spec_adjustments(self, requested: SpecRequest, spec: TechniqueSpec) -> list[str]: ...

    def simplify_spec(self, spec: TechniqueSpec) -> TechniqueSpec: ...

    def code_spec(self, code: str, iteration: int, rationale: str = "") -> TechniqueSpec: ...

    def earlier_experiment(self, key: str) -> StoredJob | None: ...

    def run_job(self, key: str, spec: TechniqueSpec, split: str, meta: dict | None = None,
                checkpoint: str | None = None) -> JobResult: ...

    # training techniques (LabConfig.allow_training)
    def trainable_techniques(self) -> list[str]: ...

    def build_recipe(self, proposal: TrainingRequest, iteration: int) -> tuple[Any, str]: ...

    def recipe_adjustments(self, requested: dict[str, Any], recipe: Any) -> list[str]: ...

    def retraining_change(self, proposed: dict[str, Any],
                          experiments: list[Experiment]) -> tuple[dict[str, Any], str] | None: ...

    def run_training(self, key: str, recipe: Any) -> JobResult: ...

    def training_eval_spec(self, technique: str, method: str, iteration: int) -> TechniqueSpec: ...

    def search_literature(self, query: str, k: int) -> list[LiteratureHit]: ...


# what validation changed in the ``Answer`` being validated: (model name, field, change); None outside one
_ADJUSTED: ContextVar[list[tuple[str, str, str]] | None] = ContextVar("adjusted", default=None)


def _report(info: ValidationInfo, change: str) -> None:
    found = _ADJUSTED.get()
    if found is not None:
        found.append((str(info.config.get("title") if info.config else ""), str(info.field_name), change))


class Answer(BaseModel):
    """An agent's structured answer that remembers what validation changed in it (a ``Text`` cut, a ``Clamp``):
    ``adjustments``, so the agent can be told and the record can say so instead of a silent change."""

    _adjusted: list[tuple[str, str, str]] = PrivateAttr(default_factory=list)

    @model_validator(mode="wrap")
    @classmethod
    def _collect_adjustments(cls, data: Any, handler: ModelWrapValidatorHandler[Any]) -> Any:
        outer, found = _ADJUSTED.get(), []
        token = _ADJUSTED.set(found)
        try:
            obj = handler(data)
        finally:
            _ADJUSTED.reset(token)
        if outer is not None:  # a nested answer (a step of a proposal): its parent reports them too
            outer.extend(found)
        obj._adjusted = found
        return obj

    @property
    def adjustments(self) -> list[str]:
        """``"temperature 3 was clamped to 1.5 (range 0 to 1.5)"``; a nested model's fields carry its name."""
        own = type(self).__name__
        return [f"{field if model == own else f'{model}.{field}'} {change}"
                for model, field, change in self._adjusted]


def Text(n: int, description: str | None = None) -> Any:
    """A string of at most ``n`` characters: ``maxLength`` in the JSON schema (llama.cpp's grammar then
    bounds the output) and longer answers from other models are cut instead of re-asked; the cut is one of
    the answer's ``adjustments`` (an ``Answer``)."""

    def cut(v: Any, info: ValidationInfo) -> Any:
        if isinstance(v, str) and len(v) > n:
            _report(info, f"was cut from {len(v)} to its limit of {n} characters")
            return v[:n]
        return v

    return Annotated[str, BeforeValidator(cut), Field(max_length=n, description=description)]


def Limited(n: int, what: str, description: str | None = None) -> Any:
    """A string of at most ``n`` characters that is never cut: a longer answer fails validation with a message
    naming the limit and by how much it was exceeded, which the structured re-ask shows the model (for code,
    where a cut would silently break it). ``maxLength`` still bounds llama.cpp's grammar."""

    def check(v: str) -> str:
        if len(v) > n:
            raise ValueError(f"{what} is {len(v)} characters, {len(v) - n} over the limit of {n}: shorten it")
        return v

    return Annotated[str, AfterValidator(check), Field(description=description, json_schema_extra={"maxLength": n})]


def Clamp(lo: float, hi: float) -> Any:
    """Out-of-range numbers are clamped, not re-asked: llama.cpp's grammar cannot bound a wide numeric range
    (see ``agentlab.llm.structured.grammar_schema``), and a re-ask costs a small CPU model the whole prompt again.
    The clamp is one of the answer's ``adjustments`` (an ``Answer``), so the agent hears of it afterwards.
    Use as ``Annotated[int, Clamp(32, 2048)] = Field(..., ge=32, le=2048)``."""

    def clamp(v: Any, info: ValidationInfo) -> Any:
        if isinstance(v, (int, float)) and not isinstance(v, bool) and not lo <= v <= hi:
            new = min(max(v, lo), hi)
            _report(info, f"{v:g} was clamped to {new:g} (range {lo:g} to {hi:g})")
            return new
        return v

    return BeforeValidator(clamp)


@cache
def _prompt_file(name: str) -> tuple[str, str]:
    """(system, user template) from ``prompts/<name>.md``; sections split by a line ``---``."""
    text = (PROMPTS_DIR / f"{name}.md").read_text()
    if "\n---\n" in text:
        system, user = text.split("\n---\n", 1)
    else:
        system, user = "", text
    return system.strip(), user.strip()


def render(name: str, **values: Any) -> tuple[str, str]:
    """The prompt ``name`` with ``$placeholders`` filled (missing ones stay as they are)."""
    system, user = _prompt_file(name)
    return (string.Template(system).safe_substitute(values), string.Template(user).safe_substitute(values))


def clip(text: Any, n: int = 600) -> str:
    """Short context for small models (n_ctx 4096): collapse whitespace, cut at ``n`` characters."""
    text = " ".join(str(text or "").split())
    return text if len(text) <= n else text[: n - 3] + "..."


def cclip(ctx: AgentContext, text: Any, n: int = 600) -> str:
    """``clip`` to ``n`` characters scaled by the run's ``context_scale``: the agents' context window over the
    4096 tokens the defaults were tuned for (more for a large model, less for the demo)."""
    scale = float(ctx.config.context_scale or 1.0)
    return clip(text, max(40, int(n * scale)))


ANSWER_FLOOR = 400  # tokens: a short answer to any schema here fits (and no role gets less than it always had)


def answer_budget(ctx: AgentContext, schema: type[BaseModel]) -> int:
    """max_tokens of one structured answer: room for the schema's fullest answer, within what the agents' model
    may write in one answer (``RunConfig.agent_output_tokens``, sized from the model), never below the floor."""
    need = schema_tokens(schema)
    return max(ANSWER_FLOOR, min(need, ctx.config.agent_output_tokens or need))


def schema_tokens(schema: type[BaseModel]) -> int:
    """Tokens of the schema's longest valid answer, on the high side: every string at its maxLength, every list
    at its maxItems, about 3 characters a token (JSON escapes and code cost more than prose)."""
    js = schema.model_json_schema()
    defs = js.get("$defs", {})

    def chars(node: dict[str, Any]) -> int:
        if "$ref" in node:
            return chars(defs[node["$ref"].rsplit("/", 1)[-1]])
        if "anyOf" in node:
            return max(chars(n) for n in node["anyOf"])
        if "enum" in node:
            return max(len(json.dumps(v)) for v in node["enum"])
        kind = node.get("type")
        if kind == "object":
            return 2 + sum(len(k) + 8 + chars(v) for k, v in node.get("properties", {}).items())  # quotes, space
        if kind == "array":
            return 2 + node.get("maxItems", 4) * (chars(node.get("items", {})) + 2)
        if kind == "string":
            return 2 + node.get("maxLength", 400)
        return 24  # a number, a boolean

    return chars(js) // 3 + 1


def ask(ctx: AgentContext, role: str, prompt: str, schema: type[T], fallback: Callable[[], T],
        what: str, **values: Any) -> tuple[T, bool]:
    """A validated ``schema`` from the role's model, else ``fallback()`` (noted). Returns (obj, fell_back).
    The answer may be ``values["max_tokens"]`` long, else as long as the schema and the agents' model allow.

    Budget exhaustion is not a content problem: it propagates so the workflow can wrap up.
    """
    system, user = render(prompt, **values)
    try:
        obj = ctx.gateway.structured(user, schema, role=role, system=system or None,
                                     max_tokens=values.get("max_tokens") or answer_budget(ctx, schema))
        return obj, False
    except BudgetExceeded:
        raise
    except GatewayError as exc:
        ctx.note(f"{role}: no usable {what} from the model ({_first_line(exc)}); used a safe default")
        ctx.gateway.note_fallback(role, what)
        return fallback(), True


def _first_line(exc: BaseException, n: int = 160) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= n else text[: n - 3] + "..."


def restrict_choices(schema: type[T], field: str, choices: list[str]) -> type[T]:
    """A subclass of ``schema`` whose ``field`` must be one of ``choices`` (an enum in the JSON schema,
    so llama.cpp's grammar can only produce a valid name)."""
    from typing import Literal

    from pydantic import create_model

    if not choices:
        return schema
    info = schema.model_fields[field]
    lit = Literal[tuple(choices)]  # type: ignore[valid-type]
    annotation = list[lit] if getattr(info.annotation, "__origin__", None) is list else lit
    return create_model(schema.__name__, __base__=schema,
                        **{field: (annotation, info)})  # type: ignore[call-overload]
