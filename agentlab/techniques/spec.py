"""Technique specs: the data the evaluation harness executes.

A ``prompt`` technique is prompt templates + sampling + chains + aggregation + optional pre-steps
(plan, decompose) and critique/refine rounds. A ``code`` technique is a Python ``solve(problem,
client)`` written by an agent; it runs only inside the sandbox (see ``agentlab.eval.harness``).

Templates are ``str.format`` templates. Variables: ``{question}``, ``{examples}`` (rendered few-shot
examples), ``{answer_instruction}``, every earlier pre-step's output by its name, and in refine
prompts ``{answer}`` (the current solution) and ``{critique}``. ``chains.templates`` gives each chain
its own solving prompt (same variables as ``template``). A ``verifier`` judges each chain's final
solution (``{answer}``; its revise prompt also gets the judge's reply as ``{critique}``).

Optional fields added after specs were first published (``chains.templates``, ``verifier``,
``sampling.stop``) are left out of the serialized spec when unset, so every older spec keeps its content hash.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
import string
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from agentlab.errors import AgentlabError

Aggregation = Literal["first", "majority", "weighted", "embedding_consensus"]


class TechniqueError(AgentlabError):
    """A malformed or unknown technique; the message names each bad field."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


MAX_STOPS, MAX_STOP_CHARS = 4, 64  # the OpenAI API's limit of 4; a stop sequence is a marker, not a text


class Sampling(_Model):
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(512, ge=1, le=32768)
    seed: int = Field(0, description="base seed; chain i uses seed + i (reproducible sampling)")
    stop: list[Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]] | None = Field(
        None, max_length=MAX_STOPS,
        description="stop sequences sent with every call: the reply ends before the first one it would write")

    @field_validator("stop")
    @classmethod
    def _no_stops_is_unset(cls, stop: list[str] | None) -> list[str] | None:
        return stop or None  # [] means what unset means, and hashes the same

    @model_serializer(mode="wrap")
    def _serialize(self, handler: Any) -> dict[str, Any]:
        return _drop_unset(handler(self), self, ("stop",))


class FewShotExample(_Model):
    question: str = Field(min_length=1)
    solution: str = Field(min_length=1, description="worked solution ending with the final answer")


class Step(_Model):
    """A pre-step whose output later templates can use as ``{name}`` (a plan, a decomposition)."""

    name: str = Field(pattern=r"^[a-z_][a-z0-9_]*$")
    template: str = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)


class Refine(_Model):
    """Critique-then-revise rounds applied to every chain."""

    rounds: int = Field(1, ge=0, le=8)
    critique_template: str = Field(
        "Question:\n{question}\n\nProposed solution:\n{answer}\n\n"
        "Check this solution step by step. Point out any error in reasoning or arithmetic. "
        "If it is correct, say so.")
    revise_template: str = Field(
        "Question:\n{question}\n\nProposed solution:\n{answer}\n\nFeedback:\n{critique}\n\n"
        "Write a corrected, complete solution. {answer_instruction}")
    max_tokens: int | None = Field(None, ge=1)


def _drop_unset(data: dict[str, Any], model: BaseModel, fields: tuple[str, ...]) -> dict[str, Any]:
    """``data`` without the optional ``fields`` that are unset on ``model`` (keeps older specs' hashes)."""
    for f in fields:
        if getattr(model, f) is None:
            data.pop(f, None)
    return data


class Chains(_Model):
    n: int = Field(1, ge=1, le=64, description="independent chains per problem")
    temperatures: list[float] | None = Field(
        None, description="per-chain temperatures (mixed-temperature sampling); length must equal n")
    templates: list[str] | None = Field(
        None, description="per-chain solving prompts: chain i uses templates[i] instead of the spec's "
                          "`template` (same variables, must contain {question}); length must equal n")
    aggregation: Aggregation = "first"

    @model_validator(mode="after")
    def _check(self) -> "Chains":
        if self.temperatures is not None:
            if len(self.temperatures) != self.n:
                raise ValueError(f"temperatures has {len(self.temperatures)} values but n is {self.n}")
            if any(not 0.0 <= t <= 2.0 for t in self.temperatures):
                raise ValueError("temperatures must lie in [0, 2]")
        if self.templates is not None and len(self.templates) != self.n:
            raise ValueError(f"templates has {len(self.templates)} prompts but n is {self.n}")
        if self.aggregation == "first" and self.n > 1:
            raise ValueError("n > 1 needs an aggregation other than 'first' (majority, weighted, embedding_consensus)")
        return self

    @model_serializer(mode="wrap")
    def _serialize(self, handler: Any) -> dict[str, Any]:
        return _drop_unset(handler(self), self, ("templates",))


_VERDICT = re.compile(r"\bverdict\b\W{0,6}(?:is\W{1,3})?(incorrect|not\s+correct|wrong|correct|right)\b",
                      re.IGNORECASE)


def parse_verdict(reply: str) -> Literal["correct", "incorrect"] | None:
    """The judge's verdict: the last ``VERDICT: correct`` / ``VERDICT: incorrect`` in ``reply`` (any case,
    markdown around it tolerated; ``wrong``/``not correct`` read as incorrect, ``right`` as correct);
    None when the reply has no verdict line (the judge abstained, or ran out of tokens before it)."""
    found = _VERDICT.findall(reply or "")
    if not found:
        return None
    return "correct" if found[-1].lower() in ("correct", "right") else "incorrect"


class Verifier(_Model):
    """A judge step: after its chain (and refine rounds) finishes, each chain's final solution is shown to
    the model with ``template``; the reply must end with ``VERDICT: correct`` or ``VERDICT: incorrect``
    (see ``parse_verdict``; no verdict line = abstain). Aggregation then votes only among chains not
    judged incorrect (all chains when every one was rejected). ``on_reject: revise`` revises each rejected
    chain once with ``revise_template`` ({critique} is the judge's reply) and judges the revision again."""

    template: str = Field(
        "Question:\n{question}\n\nProposed solution:\n{answer}\n\n"
        "You are a strict grader. Check the solution step by step: redo each calculation and make sure the "
        "final answer answers the question asked. Then end your reply with exactly one line, either "
        "\"VERDICT: correct\" or \"VERDICT: incorrect\".")
    revise_template: str = Field(
        "Question:\n{question}\n\nProposed solution:\n{answer}\n\nA grader found a problem:\n{critique}\n\n"
        "Write a corrected, complete solution. {answer_instruction}")
    max_tokens: int | None = Field(None, ge=1, description="per judge call (default: sampling.max_tokens)")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="the judge's sampling temperature")
    on_reject: Literal["keep", "revise"] = Field(
        "keep", description="keep: a rejected chain only loses its vote; revise: revise it once, judge again")


DEFAULT_ANSWER_INSTRUCTION = "Put the final answer in \\boxed{}."


class TechniqueSpec(_Model):
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$", max_length=80)
    description: str = ""
    kind: Literal["prompt", "code"] = "prompt"
    system: str | None = None
    template: str | None = Field("{question}\n\n{answer_instruction}", description="the solving prompt")
    answer_instruction: str = DEFAULT_ANSWER_INSTRUCTION
    few_shot: list[FewShotExample] = Field(default_factory=list)
    steps: list[Step] = Field(default_factory=list, description="pre-steps run before solving")
    sampling: Sampling = Field(default_factory=Sampling)
    chains: Chains = Field(default_factory=Chains)
    refine: Refine | None = None
    verifier: Verifier | None = Field(None, description="a judge step that filters the chains' vote")
    code: str | None = Field(None, description="code techniques: Python defining solve(problem, client)")

    @model_validator(mode="after")
    def _check(self) -> "TechniqueSpec":
        if self.kind == "code":
            if not self.code:
                raise ValueError("a code technique needs `code` defining solve(problem, client)")
            _check_code(self.code)
            return self
        if self.code:
            raise ValueError("`code` is only allowed with kind: code")
        if not self.template:
            raise ValueError("a prompt technique needs a `template`")
        known = {"question", "examples", "answer_instruction"}
        for step in self.steps:
            _check_template(step.template, known, f"steps[{step.name}].template")
            if step.name in known:
                raise ValueError(f"step name {step.name!r} clashes with a template variable")
            known = known | {step.name}
        _check_template(self.template, known, "template")
        if "{question}" not in self.template:
            raise ValueError("template must contain {question}")
        for i, t in enumerate(self.chains.templates or []):
            _check_template(t, known, f"chains.templates[{i}]")
            if "{question}" not in t:
                raise ValueError(f"chains.templates[{i}] must contain {{question}}")
        rk = known | {"answer", "critique"}
        if self.refine:
            _check_template(self.refine.critique_template, rk, "refine.critique_template")
            _check_template(self.refine.revise_template, rk, "refine.revise_template")
        if self.verifier:
            _check_template(self.verifier.template, known | {"answer"}, "verifier.template")
            if "{answer}" not in self.verifier.template:
                raise ValueError("verifier.template must contain {answer} (the solution it judges)")
            _check_template(self.verifier.revise_template, rk, "verifier.revise_template")
        return self

    @model_serializer(mode="wrap")
    def _serialize(self, handler: Any) -> dict[str, Any]:
        return _drop_unset(handler(self), self, ("verifier",))

    def chain_template(self, i: int) -> str:
        """The solving prompt of chain ``i``: ``chains.templates[i]`` when given, else ``template``."""
        return self.chains.templates[i] if self.chains.templates else str(self.template)

    # -- identity and serialization -----------------------------------------------------------
    def content(self) -> dict[str, Any]:
        """What determines behaviour: everything but the name and description."""
        return self.model_dump(mode="json", exclude={"name", "description"})

    def spec_hash(self) -> str:
        """Stable content hash (16 hex digits): key order, name and description do not matter."""
        blob = json.dumps(self.content(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_json(self, indent: int | None = 2) -> str:
        return self.model_dump_json(indent=indent, exclude_none=True)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", exclude_none=True), sort_keys=False, allow_unicode=True,
                              width=10_000)

    @classmethod
    def parse(cls, data: dict[str, Any] | str) -> "TechniqueSpec":
        """Validate a dict, or JSON/YAML text; raises TechniqueError with field-level messages."""
        if isinstance(data, str):
            try:
                data = yaml.safe_load(data)  # YAML is a superset of JSON
            except yaml.YAMLError as exc:
                raise TechniqueError(f"technique spec is not valid JSON/YAML: {exc}") from None
        if not isinstance(data, dict):
            raise TechniqueError("technique spec must be a mapping of fields")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise TechniqueError(format_validation_error(exc)) from None

    from_json = parse
    from_yaml = parse

    @classmethod
    def load(cls, path: Path | str) -> "TechniqueSpec":
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise TechniqueError(f"cannot read technique spec {path}: {exc.strerror}") from None
        try:
            return cls.parse(text)
        except TechniqueError as exc:
            raise TechniqueError(f"{path}: {exc}") from None

    def render(self, template: str, **values: Any) -> str:
        examples = "\n\n".join(f"Question: {e.question}\nSolution: {e.solution}" for e in self.few_shot)
        return template.format(examples=examples, answer_instruction=self.answer_instruction, **values)


def format_validation_error(exc: ValidationError) -> str:
    """One message listing every bad field: ``invalid technique spec: chains.n: ...; sampling...``."""
    parts = []
    for e in exc.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "invalid technique spec: " + "; ".join(parts)


def _check_template(template: str, known: set[str], where: str) -> None:
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise ValueError(f"{where}: bad template ({exc}); write literal braces as {{{{ and }}}}") from None
    unknown = {f for f in fields if f.split(".")[0].split("[")[0] not in known}
    if "" in fields:
        unknown.add("{}")
    if unknown:
        raise ValueError(f"{where}: unknown variable(s) {sorted(unknown)}; available: {sorted(known)}")


def _check_code(code: str) -> None:
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        raise ValueError(f"code: syntax error on line {exc.lineno}: {exc.msg}") from None
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "solve":
            if len(node.args.args) != 2:
                raise ValueError("code: solve must take exactly two arguments (problem, client)")
            return
    raise ValueError("code: must define a top-level function solve(problem, client)")


ABLATION_PARTS = {"steps": "pre-steps", "few_shot": "few-shot examples", "chains": "extra chains (one chain)",
                  "refine": "refine rounds", "verifier": "verifier", "system": "custom system prompt"}


def ablations(spec: TechniqueSpec, baseline_system: str | None = None) -> list[tuple[str, TechniqueSpec]]:
    """``spec`` with each of its parts removed in turn, as (part, ablated spec): pre-steps, few-shot examples,
    extra chains (one chain, the first chain's prompt and temperature), refine rounds, the verifier, and a system
    prompt other than the baseline's (``baseline_system`` instead). A code technique has no parts."""
    if spec.kind != "prompt":
        return []
    data, out = spec.model_dump(mode="json"), []

    def without(part: str, **update: Any) -> None:
        out.append((part, TechniqueSpec.parse({**data, **update, "name": f"{spec.name}_no_{part}"[:80],
                                                "description": f"{spec.name} without its {ABLATION_PARTS[part]}."})))

    if spec.steps:
        without("steps", steps=[], **_drop_vars(data, [s.name for s in spec.steps]))
    if spec.few_shot:
        without("few_shot", few_shot=[], **_drop_vars(data, ["examples"]))
    if spec.chains.n > 1:
        temps = spec.chains.temperatures
        without("chains", template=spec.chain_template(0), chains={"n": 1, "aggregation": "first"},
                sampling={**data["sampling"], **({"temperature": temps[0]} if temps else {})})
    if spec.refine and spec.refine.rounds:
        without("refine", refine=None)
    if spec.verifier is not None:
        without("verifier", verifier=None)
    if (spec.system or None) != (baseline_system or None):
        without("system", system=baseline_system)
    return out


def _drop_vars(data: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """The spec's templates with the variables ``names`` taken out (a removed part leaves no placeholder)."""
    rx = re.compile(r"(?<!\{)\{(?:" + "|".join(map(re.escape, names)) + r")\}(?!\})\n*")

    def clean(x: Any) -> Any:
        if isinstance(x, str):
            return rx.sub("", x)
        if isinstance(x, list):
            return [clean(v) for v in x]
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        return x

    return {k: clean(data[k]) for k in ("template", "chains", "refine", "verifier") if data.get(k) is not None}
