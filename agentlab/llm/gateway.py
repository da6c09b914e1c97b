"""The LLM gateway: the single entry for every agent call, over litellm.

- sync (``complete``/``structured``) and async (``acomplete``/``astructured``) calls;
- bounded retries with exponential backoff and full jitter on 429, 5xx, timeouts, connection
  errors and unparseable responses; a per-call timeout;
- structured output: a validated pydantic instance, using grammar-constrained decoding on
  llama.cpp, JSON schema / JSON mode where the provider supports it, and a bounded re-ask that
  shows the model its validation error;
- a usage ledger row per call (SQLite), USD/token budgets per run, an optional response cache.

With no agents' model configured the gateway serves the embedded SmolLM2-135M with llama.cpp.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

import agentlab  # noqa: F401  (sets litellm's offline cost map before litellm is imported)
import litellm
from agentlab.llm.cache import SqliteCache, request_key
from agentlab.config import Settings
from agentlab.errors import AgentlabError
from agentlab.llm.serving import ServerSpec, ServingManager, managed_server
from agentlab.llm.usage import CallRecord, UsageLedger

litellm.suppress_debug_info = True
litellm.telemetry = False

T = TypeVar("T", bound=BaseModel)
Messages = list[dict[str, Any]]


class GatewayError(AgentlabError):
    """An agent call failed in a way the user can fix; the message names the cause and the fix."""


class BudgetExceeded(GatewayError):
    pass


class StructuredOutputError(GatewayError):
    """The model never produced a valid object within the re-ask bound."""

    def __init__(self, message: str, last_text: str = ""):
        super().__init__(message)
        self.last_text = last_text


_RETRYABLE = (
    litellm.RateLimitError,
    litellm.Timeout,
    litellm.APIConnectionError,
    litellm.InternalServerError,
    litellm.ServiceUnavailableError,
    litellm.BadGatewayError,
    litellm.APIResponseValidationError,
)


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, _RETRYABLE):
        return True
    status = getattr(exc, "status_code", None)
    return isinstance(exc, litellm.APIError) and isinstance(status, int) and (status >= 500 or status == 429)


def backoff_delay(attempt: int, base_s: float, max_s: float) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(max, base * 2**attempt)]."""
    return random.uniform(0, min(max_s, base_s * (2**attempt)))


@dataclass
class LLMResponse:
    text: str
    model: str
    tokens_in: int
    tokens_out: int
    cost_usd: float
    latency_s: float
    cached: bool = False


@dataclass
class Target:
    """Where a call goes: a litellm model string plus connection details."""

    model: str
    api_base: str | None = None
    api_key: str | None = None
    local_llamacpp: bool = False  # grammar-constrained JSON is available


def _as_messages(prompt: str | Messages, system: str | None) -> Messages:
    msgs = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if system:
        msgs = [{"role": "system", "content": system}, *msgs]
    return msgs


def extract_json(text: str) -> str:
    """The JSON object in a reply: strips code fences and prose around the outermost braces."""
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.S)
    if fenced:
        text = fenced.group(1)
    start, end = text.find("{"), text.rfind("}")
    return text[start : end + 1] if start != -1 and end > start else text.strip()


class Gateway:
    def __init__(
        self,
        settings: Settings,
        *,
        lab: str | None = None,
        run_id: str | None = None,
        ledger: UsageLedger | None = None,
        cache: SqliteCache | None | bool = None,
    ):
        self.settings = settings
        self.lab, self.run_id = lab, run_id
        self.ledger = ledger or UsageLedger(settings.db_path)
        if cache is None:
            cache = settings.llm.cache
        self.cache = SqliteCache(settings.db_path, table="llm_response_cache") if cache is True else (cache or None)
        self._embedded: managed_server | None = None
        self._embedded_lock = threading.Lock()
        self._session_tokens = 0
        self._session_usd = 0.0

    # -- model resolution ------------------------------------------------------------------
    def target(self, role: str | None = None, model: str | None = None) -> Target:
        model = model or self.settings.model_for_role(role)
        cfg = self.settings.agents
        key = cfg.api_key.get_secret_value() if cfg.api_key else None
        if model:
            _check_model(model, cfg.api_base, key)
            return Target(model=model, api_base=cfg.api_base, api_key=key)
        server = self._embedded_server()
        return Target(model=server.litellm_model, api_base=server.url, api_key="sk-local", local_llamacpp=True)

    def _embedded_server(self):
        with self._embedded_lock:
            if self._embedded is None or self._embedded.server is None:
                mgr = ServingManager(self.settings.workspace)
                spec = ServerSpec(engine="llama.cpp", n_ctx=self.settings.model_under_study.n_ctx)
                self._embedded = managed_server(mgr, spec, reuse=True, timeout_s=300)
                self._embedded.__enter__()
            return self._embedded.server

    def close(self) -> None:
        """Stop the embedded server if this gateway started it."""
        with self._embedded_lock:
            if self._embedded is not None:
                self._embedded.__exit__(None, None, None)
                self._embedded = None

    def __enter__(self) -> "Gateway":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- budgets ---------------------------------------------------------------------------
    def spent(self) -> tuple[float, int]:
        """(USD, tokens) spent by this run (from the ledger) or by this gateway (no run id)."""
        if self.run_id is not None:
            t = self.ledger.totals(self.run_id)
            return t.cost_usd, t.tokens
        return self._session_usd, self._session_tokens

    def check_budget(self) -> None:
        budgets = self.settings.budgets
        usd, tokens = self.spent()
        if budgets.max_usd is not None and usd >= budgets.max_usd:
            raise BudgetExceeded(
                f"USD budget exhausted: spent ${usd:.4f} of ${budgets.max_usd:.4f}"
                f" (raise budgets.max_usd or AGENTLAB_BUDGETS__MAX_USD)"
            )
        if budgets.max_tokens is not None and tokens >= budgets.max_tokens:
            raise BudgetExceeded(
                f"token budget exhausted: used {tokens} of {budgets.max_tokens} tokens"
                f" (raise budgets.max_tokens or AGENTLAB_BUDGETS__MAX_TOKENS)"
            )

    # -- plain completions -----------------------------------------------------------------
    def _request(self, target: Target, messages: Messages, params: dict[str, Any]) -> dict[str, Any]:
        req = {"model": target.model, "messages": messages, **params}
        if target.api_base:
            req["api_base"] = target.api_base
        if target.api_key:
            req["api_key"] = target.api_key
        req.setdefault("temperature", self.settings.agents.temperature)
        req["timeout"] = params.get("timeout", self.settings.llm.timeout_s)
        req["num_retries"] = 0  # retries are ours (bounded, with jitter, recorded)
        req["max_retries"] = 0
        return req

    def _cache_key(self, req: dict[str, Any]) -> str:
        # connection details do not change the answer; the embedded server's port changes per run
        return request_key({k: v for k, v in req.items() if k not in {"api_base", "api_key", "timeout",
                                                                        "num_retries", "max_retries"}})

    def _finish(self, req: dict, raw: Any, started: float, role: str | None) -> LLMResponse:
        latency = time.perf_counter() - started
        usage = getattr(raw, "usage", None)
        tin = int(getattr(usage, "prompt_tokens", 0) or 0)
        tout = int(getattr(usage, "completion_tokens", 0) or 0)
        cost = _cost(raw)
        text = raw.choices[0].message.content or ""
        resp = LLMResponse(text=text, model=req["model"], tokens_in=tin, tokens_out=tout, cost_usd=cost,
                           latency_s=latency)
        self._account(resp, role)
        return resp

    def _account(self, resp: LLMResponse, role: str | None, error: str | None = None) -> None:
        if not resp.cached:
            self._session_tokens += resp.tokens_in + resp.tokens_out
            self._session_usd += resp.cost_usd
        self.ledger.record(CallRecord(
            model=resp.model, role=role, lab=self.lab, run_id=self.run_id, tokens_in=resp.tokens_in,
            tokens_out=resp.tokens_out, cost_usd=resp.cost_usd, latency_s=resp.latency_s,
            cached=resp.cached, ok=error is None, error=error,
        ))

    def _cached(self, req: dict, role: str | None) -> tuple[str | None, LLMResponse | None]:
        if self.cache is None:
            return None, None
        key = self._cache_key(req)
        hit = self.cache.get(key)
        if hit is None:
            return key, None
        resp = LLMResponse(**{**hit, "cached": True, "latency_s": 0.0})
        self._account(resp, role)
        return key, resp

    def _store(self, key: str | None, resp: LLMResponse) -> None:
        if key is not None and self.cache is not None:
            self.cache.put(key, {**resp.__dict__, "cached": False})

    def _give_up(self, exc: BaseException, req: dict, role: str | None, attempts: int) -> GatewayError:
        self.ledger.record(CallRecord(model=req["model"], role=role, lab=self.lab, run_id=self.run_id,
                                      ok=False, error=f"{type(exc).__name__}: {exc}"[:500]))
        return GatewayError(_explain(exc, req, attempts))

    def complete(self, prompt: str | Messages, *, role: str | None = None, system: str | None = None,
                 model: str | None = None, **params: Any) -> LLMResponse:
        """One chat completion. ``params`` go to litellm (temperature, max_tokens, response_format...)."""
        target = self.target(role, model)
        return self._complete(target, _as_messages(prompt, system), role, params)

    def _complete(self, target: Target, messages: Messages, role: str | None, params: dict) -> LLMResponse:
        req = self._request(target, messages, params)
        key, hit = self._cached(req, role)
        if hit:
            return hit
        cfg = self.settings.llm
        for attempt in range(cfg.max_retries + 1):
            self.check_budget()
            started = time.perf_counter()
            try:
                raw = litellm.completion(**req)
            except Exception as exc:
                if not is_retryable(exc) or attempt == cfg.max_retries:
                    raise self._give_up(exc, req, role, attempt + 1) from exc
                time.sleep(backoff_delay(attempt, cfg.backoff_base_s, cfg.backoff_max_s))
                continue
            resp = self._finish(req, raw, started, role)
            self._store(key, resp)
            return resp
        raise AssertionError("unreachable")

    async def acomplete(self, prompt: str | Messages, *, role: str | None = None, system: str | None = None,
                        model: str | None = None, **params: Any) -> LLMResponse:
        target = await asyncio.to_thread(self.target, role, model)  # may start the embedded server
        return await self._acomplete(target, _as_messages(prompt, system), role, params)

    async def _acomplete(self, target: Target, messages: Messages, role: str | None, params: dict) -> LLMResponse:
        req = self._request(target, messages, params)
        key, hit = self._cached(req, role)
        if hit:
            return hit
        cfg = self.settings.llm
        for attempt in range(cfg.max_retries + 1):
            self.check_budget()
            started = time.perf_counter()
            try:
                raw = await litellm.acompletion(**req)
            except Exception as exc:
                if not is_retryable(exc) or attempt == cfg.max_retries:
                    raise self._give_up(exc, req, role, attempt + 1) from exc
                await asyncio.sleep(backoff_delay(attempt, cfg.backoff_base_s, cfg.backoff_max_s))
                continue
            resp = self._finish(req, raw, started, role)
            self._store(key, resp)
            return resp
        raise AssertionError("unreachable")

    # -- structured output -----------------------------------------------------------------
    def _structured_params(self, target: Target, schema: type[BaseModel]) -> dict[str, Any]:
        json_schema = schema.model_json_schema()
        if target.local_llamacpp:
            # llama-cpp-python turns a JSON schema into a GBNF grammar: output is always parseable
            return {"response_format": {"type": "json_object", "schema": grammar_schema(json_schema)}}
        try:
            if litellm.supports_response_schema(model=target.model):
                return {"response_format": {"type": "json_schema", "json_schema": {
                    "name": schema.__name__, "schema": json_schema, "strict": False}}}
        except Exception:
            pass
        return {"response_format": {"type": "json_object"}} if _supports_json_mode(target.model) else {}

    def _structured_messages(self, messages: Messages, schema: type[BaseModel], target: Target | None = None
                             ) -> Messages:
        if target is not None and target.local_llamacpp:
            # the grammar already enforces the schema: one line naming the fields costs far fewer prompt
            # tokens (prompt processing dominates a small CPU model's time) than the schema's JSON
            instruction = compact_instruction(schema)
        else:
            instruction = (
                "Answer with a single JSON object that matches this JSON schema, and nothing else:\n"
                + json.dumps(schema.model_json_schema())
            )
        if messages and messages[0].get("role") == "system":
            return [{"role": "system", "content": messages[0]["content"] + "\n\n" + instruction}, *messages[1:]]
        return [{"role": "system", "content": instruction}, *messages]

    def _structured_ask(self, target: Target, prompt: str | Messages, system: str | None,
                        schema: type[T], params: dict[str, Any]) -> "_StructuredAsk[T]":
        return _StructuredAsk(
            schema=schema, model=target.model, tries=self.settings.llm.structured_retries + 1,
            messages=self._structured_messages(_as_messages(prompt, system), schema, target),
            params={**self._structured_params(target, schema), **params},
        )

    def structured(self, prompt: str | Messages, schema: type[T], *, role: str | None = None,
                   system: str | None = None, model: str | None = None, **params: Any) -> T:
        """A validated ``schema`` instance; re-asks with the validation error, bounded."""
        target = self.target(role, model)
        ask = self._structured_ask(target, prompt, system, schema, params)
        for _ in range(ask.tries):
            obj = ask.accept(self._complete(target, ask.messages, role, ask.params).text)
            if obj is not None:
                return obj
        raise ask.failure()

    async def astructured(self, prompt: str | Messages, schema: type[T], *, role: str | None = None,
                          system: str | None = None, model: str | None = None, **params: Any) -> T:
        target = await asyncio.to_thread(self.target, role, model)
        ask = self._structured_ask(target, prompt, system, schema, params)
        for _ in range(ask.tries):
            obj = ask.accept((await self._acomplete(target, ask.messages, role, ask.params)).text)
            if obj is not None:
                return obj
        raise ask.failure()


@dataclass
class _StructuredAsk(Generic[T]):
    """One structured request's conversation: validates each answer, re-asks with the error (shared by
    the sync and async paths)."""

    schema: type[T]
    model: str
    tries: int
    messages: Messages
    params: dict[str, Any]
    last_text: str = ""
    last_error: str = ""

    def accept(self, text: str) -> T | None:
        obj, error = _validate(text, self.schema)
        if obj is None:
            self.last_text, self.last_error = text, error
            self.messages = _reask(self.messages, text, error)
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


# "[.]", not "\\.": llama-cpp-python emits an escape its own grammar parser rejects (and the server dies)
_UNIT_INTERVAL_PATTERN = r"^(0([.][0-9]{1,4})?|1([.]0{1,4})?)$"


def grammar_schema(schema: Any) -> Any:
    """Rewrite numeric bounds that llama.cpp's schema-to-grammar converter ignores into forms it enforces.

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
    if out.get("type") == "number" and lo == 0 and hi == 1 and "minimum" in out and "maximum" in out:
        return {k: v for k, v in out.items() if k not in {"type", "minimum", "maximum"}} | {
            "type": "string", "pattern": _UNIT_INTERVAL_PATTERN}
    return out


def _cost(raw: Any) -> float:
    """USD of one response: litellm prices it already while logging (offline cost map); reuse that."""
    hidden = getattr(raw, "_hidden_params", None) or {}
    if "response_cost" in hidden:
        # None: a model the cost map does not know (local servers): it costs nothing
        return float(hidden["response_cost"] or 0.0)
    try:
        return float(litellm.completion_cost(completion_response=raw) or 0.0)
    except Exception:
        return 0.0


def _validate(text: str, schema: type[T]) -> tuple[T | None, str]:
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


def _reask(messages: Messages, bad: str, error: str) -> Messages:
    return [*messages, {"role": "assistant", "content": bad}, {
        "role": "user",
        "content": f"That answer is not valid: {error}. Reply again with only the corrected JSON object.",
    }]


def _supports_json_mode(model: str) -> bool:
    try:
        params = litellm.get_supported_openai_params(model=model) or []
    except Exception:
        return False
    return "response_format" in params


def _check_model(model: str, api_base: str | None, api_key: str | None) -> None:
    """Fail fast, with the fix, on unknown model strings and missing API keys."""
    try:
        _, provider, _, _ = litellm.get_llm_provider(model=model, api_base=api_base)
    except Exception:
        raise GatewayError(
            f"unknown model {model!r}: use a litellm model string such as openai/gpt-4o-mini,"
            " anthropic/claude-3-5-haiku-latest or hosted_vllm/NAME (with agents.api_base)"
        ) from None
    if api_key or api_base:
        return
    env = litellm.validate_environment(model=model)
    if not env.get("keys_in_environment", True) and env.get("missing_keys"):
        keys = ", ".join(env["missing_keys"])
        raise GatewayError(f"missing API key for {provider} model {model!r}: set {keys} (or agents.api_key)")


def _explain(exc: BaseException, req: dict, attempts: int) -> str:
    model, base = req["model"], req.get("api_base")
    where = f" at {base}" if base else ""
    if isinstance(exc, litellm.AuthenticationError):
        return f"{model}: the API key was rejected; check the provider's key variable or agents.api_key"
    if isinstance(exc, litellm.NotFoundError):
        return f"{model}{where}: model not found; check the model name"
    if isinstance(exc, litellm.ContextWindowExceededError):
        return f"{model}: the prompt is longer than the model's context window"
    if isinstance(exc, (litellm.APIConnectionError, litellm.Timeout)) or _is_connection_failure(exc):
        return f"{model}{where}: endpoint unreachable or timing out after {attempts} attempt(s); is the server running?"
    if is_retryable(exc):
        return f"{model}{where}: still failing after {attempts} attempt(s): {type(exc).__name__}: {_short(exc)}"
    return f"{model}{where}: {type(exc).__name__}: {_short(exc)}"


def _is_connection_failure(exc: BaseException) -> bool:
    # litellm reports a refused connection to an OpenAI-compatible server as InternalServerError
    text = str(exc)
    return "Connection error" in text or "Connection refused" in text


def _short(exc: BaseException, n: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= n else text[: n - 3] + "..."
