"""The LLM gateway: the single entry for every agent call, over litellm.

- sync (``complete``/``structured``) and async (``acomplete``/``astructured``) calls;
- retries, backoff, cost and error messages from the shared transport (``agentlab.llm.transport``),
  a per-call timeout;
- structured output (``agentlab.llm.structured``): a validated pydantic instance, using
  grammar-constrained decoding on llama.cpp, JSON schema / JSON mode where the provider supports it,
  and a bounded re-ask that shows the model its validation error;
- a usage ledger row per call (SQLite), USD/token budgets per run, an optional response cache.
  Budgets hold under concurrency: before each attempt a call reserves its worst case (prompt estimate +
  max_tokens, and what that costs per litellm's offline cost map) under a lock shared by sync and async
  calls and by every gateway of the run in this process; it settles to the real usage when it returns
  and gives the reservation back when it fails (``agentlab.llm.usage.Reservations``).

With no agents' model configured the gateway serves the embedded SmolLM2-135M with llama.cpp; an agents' model
that is a local ``.gguf`` file is served the same way (one llama.cpp server per file, shared with the model under
study when it is the same file), and both get grammar-constrained JSON. The ledger notes, per call, how the schema
was enforced and whether it was a re-ask; the agents note their fallbacks there too.
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
import time
from dataclasses import dataclass
from typing import Any, TypeVar

import litellm
from pydantic import BaseModel

import agentlab  # noqa: F401  (sets litellm's offline cost map before litellm is imported)
from agentlab.config import Settings
from agentlab.llm.cache import SqliteCache, request_key
from agentlab.llm.errors import BudgetExceeded, GatewayError, StructuredOutputError
from agentlab.llm.serving import ServerSpec, ServingManager, is_gguf, managed_server
from agentlab.llm.structured import StructuredAsk, extract_json, request_params, with_instruction
from agentlab.llm.transport import (
    GaveUp,
    RetryPolicy,
    acall_with_retries,
    call_with_retries,
    explain,
    response_cost,
    usage_tokens,
)
from agentlab.llm.usage import CallNeed, CallRecord, CallTags, Grant, Hold, Limits, UsageLedger, reservations_for

litellm.suppress_debug_info = True
litellm.telemetry = False

T = TypeVar("T", bound=BaseModel)
Messages = list[dict[str, Any]]

__all__ = ["Gateway", "GatewayError", "BudgetExceeded", "StructuredOutputError", "LLMResponse", "Target",
           "extract_json"]


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
        self._local: dict[str | None, managed_server] = {}  # GGUF path (None: embedded) -> its llama.cpp server
        self._local_lock = threading.Lock()
        self.retry_policy = RetryPolicy.from_settings(settings.llm)
        self._session_tokens = 0
        self._session_usd = 0.0
        self._reservations = reservations_for(self.ledger.path, run_id)

    # -- model resolution ------------------------------------------------------------------
    def target(self, role: str | None = None, model: str | None = None) -> Target:
        model = model or self.settings.model_for_role(role)
        cfg = self.settings.agents
        key = cfg.api_key.get_secret_value() if cfg.api_key else None
        if model and not is_gguf(model):
            _check_model(model, cfg.api_base, key)
            return Target(model=model, api_base=cfg.api_base, api_key=key)
        server = self._local_server(model)
        return Target(model=server.litellm_model, api_base=server.url, api_key="sk-local", local_llamacpp=True)

    def _local_server(self, gguf: str | None):
        """The llama.cpp server of a local GGUF (None: the embedded model): reused when the workspace already
        runs one for that file (the model under study's, another lab's), else started and owned here."""
        with self._local_lock:
            served = self._local.get(gguf)
            if served is None or served.server is None:
                mgr = ServingManager(self.settings.workspace)
                spec = ServerSpec.local(gguf, self.settings.model_under_study)
                served = self._local[gguf] = managed_server(mgr, spec, reuse=True, timeout_s=300)
                served.__enter__()
            return served.server

    def close(self) -> None:
        """Stop the local servers this gateway started."""
        with self._local_lock:
            for served in self._local.values():
                served.__exit__(None, None, None)
            self._local.clear()

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

    def _limits(self) -> Limits:
        return Limits(max_usd=self.settings.budgets.max_usd, max_tokens=self.settings.budgets.max_tokens)

    def _reserve(self, need: CallNeed) -> Grant:
        """Reserve one attempt's worst case, waiting (up to twice the call timeout) while calls in flight
        may give budget back; ``BudgetExceeded`` when it cannot fit."""
        return self._reservations.reserve(need, self._limits(), self.spent, 2 * self.settings.llm.timeout_s)

    async def _areserve(self, need: CallNeed) -> Grant:
        return await self._reservations.areserve(need, self._limits(), self.spent, 2 * self.settings.llm.timeout_s)

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

    def _finish(self, req: dict, raw: Any, started: float, role: str | None, hold: Hold, tags: CallTags) -> LLMResponse:
        latency = time.perf_counter() - started
        tin, tout = usage_tokens(getattr(raw, "usage", None))
        cost = response_cost(raw)
        text = raw.choices[0].message.content or ""
        resp = LLMResponse(text=text, model=req["model"], tokens_in=tin, tokens_out=tout, cost_usd=cost,
                           latency_s=latency)
        self._account(resp, role, tags, hold)
        return resp

    def _account(self, resp: LLMResponse, role: str | None, tags: CallTags, hold: Hold | None = None) -> None:
        """The ledger row of an answer; a call's reservation (``hold``) settles to it in the same step."""
        record = CallRecord(
            model=resp.model, role=role, lab=self.lab, run_id=self.run_id, tokens_in=resp.tokens_in,
            tokens_out=resp.tokens_out, cost_usd=resp.cost_usd, latency_s=resp.latency_s, cached=resp.cached,
            structured=tags.structured, reask=tags.reask)

        def write() -> None:
            if not resp.cached:
                self._session_tokens += resp.tokens_in + resp.tokens_out
                self._session_usd += resp.cost_usd
            self.ledger.record(record)

        if hold is None:
            write()
        else:
            self._reservations.settle(hold, write)

    def _cached(self, req: dict, role: str | None, tags: CallTags) -> tuple[str | None, LLMResponse | None]:
        if self.cache is None:
            return None, None
        key = self._cache_key(req)
        hit = self.cache.get(key)
        if hit is None:
            return key, None
        resp = LLMResponse(**{**hit, "cached": True, "latency_s": 0.0})
        self._account(resp, role, tags)
        return key, resp

    def _store(self, key: str | None, resp: LLMResponse) -> None:
        if key is not None and self.cache is not None:
            self.cache.put(key, {**resp.__dict__, "cached": False})

    def _give_up(self, failed: GaveUp, req: dict, role: str | None, tags: CallTags) -> GatewayError:
        exc = failed.cause
        self.ledger.record(CallRecord(model=req["model"], role=role, lab=self.lab, run_id=self.run_id,
                                      ok=False, error=f"{type(exc).__name__}: {exc}"[:500],
                                      structured=tags.structured, reask=tags.reask))
        return GatewayError(explain(exc, req["model"], req.get("api_base"), failed.attempts))

    def note_fallback(self, role: str | None, what: str) -> None:
        """An agent used a safe default instead of the model's answer: a ledger row of its own (no tokens)."""
        self.ledger.record(CallRecord(model=self.target_name(role), role=role, lab=self.lab, run_id=self.run_id,
                                      fallback=True, error=f"fallback: {what}"[:500]))

    def target_name(self, role: str | None) -> str:
        """The role's model as configured (no server is started for it)."""
        return self.settings.model_for_role(role) or "embedded"

    def complete(self, prompt: str | Messages, *, role: str | None = None, system: str | None = None,
                 model: str | None = None, **params: Any) -> LLMResponse:
        """One chat completion. ``params`` go to litellm (temperature, max_tokens, response_format...)."""
        target = self.target(role, model)
        return self._complete(target, _as_messages(prompt, system), role, params)

    def _complete(self, target: Target, messages: Messages, role: str | None, params: dict,
                  tags: CallTags | None = None) -> LLMResponse:
        tags = tags or CallTags()
        req = self._request(target, messages, params)
        key, hit = self._cached(req, role, tags)
        if hit:
            return hit
        need, grants = call_need(req), []

        def reserve() -> None:
            grants.append(self._reserve(need))

        def attempt() -> LLMResponse:
            grant = grants.pop()
            started = time.perf_counter()
            try:
                return self._finish(req, litellm.completion(**granted(req, grant)), started, role, grant.hold, tags)
            finally:
                self._reservations.release(grant.hold)  # a failed attempt gives it back (settled: nothing)

        try:
            resp = call_with_retries(attempt, self.retry_policy, before_attempt=reserve)
        except GaveUp as failed:
            raise self._give_up(failed, req, role, tags) from failed.cause
        self._store(key, resp)
        return resp

    async def acomplete(self, prompt: str | Messages, *, role: str | None = None, system: str | None = None,
                        model: str | None = None, **params: Any) -> LLMResponse:
        target = await asyncio.to_thread(self.target, role, model)  # may start the embedded server
        return await self._acomplete(target, _as_messages(prompt, system), role, params)

    async def _acomplete(self, target: Target, messages: Messages, role: str | None, params: dict,
                         tags: CallTags | None = None) -> LLMResponse:
        tags = tags or CallTags()
        req = self._request(target, messages, params)
        key, hit = self._cached(req, role, tags)
        if hit:
            return hit
        need, grants = call_need(req), []

        async def reserve() -> None:
            grants.append(await self._areserve(need))

        async def attempt() -> LLMResponse:
            grant = grants.pop()
            started = time.perf_counter()
            try:
                return self._finish(req, await litellm.acompletion(**granted(req, grant)), started, role, grant.hold,
                                    tags)
            finally:
                self._reservations.release(grant.hold)

        try:
            resp = await acall_with_retries(attempt, self.retry_policy, before_attempt=reserve)
        except GaveUp as failed:
            raise self._give_up(failed, req, role, tags) from failed.cause
        self._store(key, resp)
        return resp

    # -- structured output -----------------------------------------------------------------
    def _structured_ask(self, target: Target, prompt: str | Messages, system: str | None,
                        schema: type[T], params: dict[str, Any]) -> StructuredAsk[T]:
        messages = with_instruction(_as_messages(prompt, system), schema, compact=target.local_llamacpp)
        return StructuredAsk(
            schema=schema, model=target.model, tries=self.settings.llm.structured_retries + 1,
            messages=messages, params={**request_params(target.model, target.local_llamacpp, schema), **params},
        )

    def structured(self, prompt: str | Messages, schema: type[T], *, role: str | None = None,
                   system: str | None = None, model: str | None = None, **params: Any) -> T:
        """A validated ``schema`` instance; re-asks with the validation error, bounded."""
        target = self.target(role, model)
        ask = self._structured_ask(target, prompt, system, schema, params)
        for i in range(ask.tries):
            obj = ask.accept(self._complete(target, ask.messages, role, ask.params, ask.tags(i)).text)
            if obj is not None:
                return obj
        raise ask.failure()

    async def astructured(self, prompt: str | Messages, schema: type[T], *, role: str | None = None,
                          system: str | None = None, model: str | None = None, **params: Any) -> T:
        target = await asyncio.to_thread(self.target, role, model)
        ask = self._structured_ask(target, prompt, system, schema, params)
        for i in range(ask.tries):
            obj = ask.accept((await self._acomplete(target, ask.messages, role, ask.params, ask.tags(i))).text)
            if obj is not None:
                return obj
        raise ask.failure()


# -- what a call may use at most ------------------------------------------------------------------

def call_need(req: dict[str, Any]) -> CallNeed:
    """The worst case of one call, before it goes out: its prompt estimate, its max_tokens, the model's
    largest completion and its prices per token (litellm's offline cost map; 0 for models it does not price)."""
    model = req["model"]
    asked = [int(req[k]) for k in ("max_tokens", "max_completion_tokens") if isinstance(req.get(k), int) and req[k] > 0]
    usd_in, usd_out = _prices(model)
    return CallNeed(prompt_tokens=prompt_estimate(model, req), asked=min(asked) if asked else None,
                    model_max=_model_max(model), usd_in=usd_in, usd_out=usd_out)


def prompt_estimate(model: str, req: dict[str, Any]) -> int:
    """Prompt tokens of a call, on the high side: litellm's count of the messages (the model's tokenizer
    where litellm has it, else OpenAI's) and of any schema or tools sent with them, plus a quarter for
    servers whose tokenizer or chat template spends more."""
    extras = {k: req[k] for k in ("response_format", "tools", "functions") if req.get(k)}
    try:
        n = litellm.token_counter(model=model, messages=req["messages"])
        if extras:
            n += litellm.token_counter(model=model, text=json.dumps(extras))
    except Exception:  # content litellm cannot count: about 3 bytes a token
        n = len(json.dumps([req["messages"], extras]).encode()) // 3
    return int(n * 1.25)


@functools.lru_cache(maxsize=256)
def _prices(model: str) -> tuple[float, float]:
    try:
        usd_in, usd_out = litellm.cost_per_token(model=model, prompt_tokens=1, completion_tokens=1)
        return float(usd_in or 0.0), float(usd_out or 0.0)
    except Exception:  # not in the cost map (local servers): free
        return 0.0, 0.0


BASE_CONTEXT_TOKENS = 4096  # the window the agents' default prompt sizes were tuned for


def context_window(settings: Settings, role: str | None = None) -> int:
    """Tokens the agents' model reads: configured, else litellm's model info, else the embedded model's n_ctx
    (4096 for a model litellm does not know, such as a local server behind an OpenAI-compatible URL)."""
    if settings.agents.context_window:
        return settings.agents.context_window
    model = settings.model_for_role(role)
    if not model or is_gguf(model):  # served by our llama.cpp at the model under study's n_ctx
        return settings.model_under_study.n_ctx
    try:
        info = litellm.get_model_info(model)
        return int(info.get("max_input_tokens") or info.get("max_tokens") or BASE_CONTEXT_TOKENS)
    except Exception:
        return BASE_CONTEXT_TOKENS


@functools.lru_cache(maxsize=256)
def _model_max(model: str) -> int | None:
    try:
        return int(litellm.get_model_info(model).get("max_output_tokens") or 0) or None
    except Exception:
        return None


def granted(req: dict[str, Any], grant: Grant) -> dict[str, Any]:
    """The request as it goes out: with the completion limit its reservation allows."""
    if grant.max_tokens is None:
        return req
    out = {**req, "max_tokens": grant.max_tokens}
    if "max_completion_tokens" in req:
        out["max_completion_tokens"] = grant.max_tokens
    return out


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
