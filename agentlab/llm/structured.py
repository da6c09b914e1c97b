"""Structured output: a validated pydantic object from a chat model.

How the schema reaches the model (``request_params``, ``with_instruction``): a GBNF grammar on
llama.cpp (with the numeric bounds its converter ignores rewritten by ``grammar_schema``), JSON schema
or JSON mode where the provider supports it, otherwise an instruction alone. ``StructuredAsk`` is one
request's conversation: it validates each answer and re-asks with the validation error, bounded.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from agentlab.llm.errors import StructuredOutputError
from agentlab.llm.usage import CallTags

T = TypeVar("T", bound=BaseModel)
Messages = list[dict[str, Any]]
log = logging.getLogger(__name__)


def extract_json(text: str) -> str:
    """The JSON object in a reply: strips code fences and prose around the outermost braces."""
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.S)
    if fenced:
        text = fenced.group(1)
    start, end = text.find("{"), text.rfind("}")
    return text[start : end + 1] if start != -1 and end > start else text.strip()


@dataclass
class StructuredAsk(Generic[T]):
    """One structured request's conversation: validates each answer, re-asks with the error (shared by
    the sync and async paths)."""

    schema: type[T]
    model: str
    tries: int
    messages: Messages
    params: dict[str, Any]
    last_text: str = ""
    last_error: str = ""

    def tags(self, attempt: int) -> CallTags:
        """What the ledger notes of attempt ``attempt`` (0: the first ask; later ones are re-asks)."""
        return CallTags(structured=enforcement(self.params), reask=attempt > 0)

    def accept(self, text: str) -> T | None:
        obj, error = validate(text, self.schema)
        if obj is None:
            self.last_text, self.last_error = text, error
            self.messages = reask(self.messages, text, error)
        return obj

    def failure(self) -> StructuredOutputError:
        return StructuredOutputError(
            f"{self.model} gave no valid {self.schema.__name__} after {self.tries} tries: {self.last_error}",
            self.last_text)


def compact_instruction(schema: type[BaseModel]) -> str:
    """One line naming the fields (with their descriptions), for grammar-constrained decoding."""
    fields = []
    for name, info in schema.model_fields.items():
        fields.append(f"{name} ({info.description})" if info.description else name)
    return "Answer with one JSON object with the fields: " + ", ".join(fields) + "."


# "[.]", not "\\.": llama-cpp-python emitted an escape its own grammar parser rejected (the server died)
_UNIT_INTERVAL_PATTERN = r"^(0([.][0-9]{1,4})?|1([.]0{1,4})?)$"


GRAMMAR_MAX_LENGTH = 400  # longest string a llama.cpp grammar bounds character by character


def grammar_schema(schema: Any) -> Any:
    """Rewrite numeric bounds that llama.cpp's schema-to-grammar converter ignores into forms it enforces, and
    drop string lengths it would unroll into grammars too large for the server.

    Its converter drops minimum/maximum, so a small model happily writes ``"confidence": 7``.
    Integers with a small closed range become an ``enum``; numbers bounded to [0, 1] become a
    string with a decimal pattern (pydantic's lax mode reads ``"0.75"`` as a float).
    """
    if isinstance(schema, list):
        return [grammar_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: grammar_schema(v) for k, v in schema.items()}
    lo = out.get("minimum", out.get("exclusiveMinimum"))
    hi = out.get("maximum", out.get("exclusiveMaximum"))
    if out.get("type") == "integer" and lo is not None and hi is not None:
        lo_i = int(lo) + (1 if "exclusiveMinimum" in out else 0)
        hi_i = int(hi) - (1 if "exclusiveMaximum" in out else 0)
        if 0 <= hi_i - lo_i <= 100:
            return {k: v for k, v in out.items() if k not in {"type", "minimum", "maximum", "exclusiveMinimum",
                                                             "exclusiveMaximum"}} | {"enum": list(range(lo_i, hi_i + 1))}
    if out.get("type") == "string" and out.get("maxLength", 0) > GRAMMAR_MAX_LENGTH:
        # the converter unrolls maxLength into one nested rule per character: thousands of them crash the
        # llama.cpp server. Long fields are bounded by validation instead (Text cuts, Limited re-asks).
        return {k: v for k, v in out.items() if k != "maxLength"}
    if out.get("type") == "number" and lo == 0 and hi == 1 and "minimum" in out and "maximum" in out:
        return {k: v for k, v in out.items() if k not in {"type", "minimum", "maximum"}} | {
            "type": "string", "pattern": _UNIT_INTERVAL_PATTERN}
    return out


def validate(text: str, schema: type[T]) -> tuple[T | None, str]:
    raw = extract_json(text)
    try:
        return schema.model_validate_json(raw), ""
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            # a raw newline or tab inside a string (llama.cpp's grammar lets small models write them):
            # read it leniently rather than re-ask for the whole answer
            try:
                return schema.model_validate(json.loads(raw, strict=False)), ""
            except (ValueError, ValidationError):
                pass
        errs = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in exc.errors()[:5])
        return None, errs


def reask(messages: Messages, bad: str, error: str) -> Messages:
    return [*messages, {"role": "assistant", "content": bad}, {
        "role": "user",
        "content": f"That answer is not valid: {error}. Reply again with only the corrected JSON object.",
    }]


def request_params(model: str, local_llamacpp: bool, schema: type[BaseModel]) -> dict[str, Any]:
    """The ``response_format`` that makes the model answer in ``schema`` (empty: instruction only)."""
    import litellm

    json_schema = schema.model_json_schema()
    if local_llamacpp:
        # llama.cpp's server turns a JSON schema into a GBNF grammar: output is always parseable
        return {"response_format": {"type": "json_object", "schema": grammar_schema(json_schema)}}
    try:
        if litellm.supports_response_schema(model=model):
            return {"response_format": {"type": "json_schema", "json_schema": {
                "name": schema.__name__, "schema": json_schema, "strict": False}}}
    except Exception as exc:  # a model the map does not know: fall back to JSON mode or the instruction
        log.debug("supports_response_schema(%s): %s", model, exc)
    return {"response_format": {"type": "json_object"}} if _supports_json_mode(model) else {}


def enforcement(params: dict[str, Any]) -> str:
    """How a request's answer format is enforced: ``grammar`` (llama.cpp turns the schema into a GBNF grammar),
    ``json_schema`` (the provider's structured output), ``json_mode`` or ``instruction`` (the prompt alone)."""
    fmt = params.get("response_format") or {}
    if fmt.get("type") == "json_object":
        return "grammar" if fmt.get("schema") else "json_mode"
    return "json_schema" if fmt.get("type") == "json_schema" else "instruction"


def with_instruction(messages: Messages, schema: type[BaseModel], compact: bool) -> Messages:
    """``messages`` with the answer-format instruction added to the system message. ``compact`` (a
    grammar already enforces the schema): one line naming the fields costs far fewer prompt tokens
    (prompt processing dominates a small CPU model's time) than the schema's JSON."""
    if compact:
        instruction = compact_instruction(schema)
    else:
        instruction = ("Answer with a single JSON object that matches this JSON schema, and nothing else:\n"
                       + json.dumps(schema.model_json_schema()))
    if messages and messages[0].get("role") == "system":
        return [{"role": "system", "content": messages[0]["content"] + "\n\n" + instruction}, *messages[1:]]
    return [{"role": "system", "content": instruction}, *messages]


def _supports_json_mode(model: str) -> bool:
    import litellm

    try:
        params = litellm.get_supported_openai_params(model=model) or []
    except Exception:  # unknown provider: no JSON mode
        return False
    return "response_format" in params
