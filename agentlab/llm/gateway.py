"""The LLM gateway: the single entry for every agent call, over litellm.

- sync (``complete``/``structured``) and async (``acomplete``/``astructured``) calls;
- retries, backoff, cost and error messages from the shared transport (``agentlab.llm.transport``),
  a per-call timeout;
- structured output (``agentlab.llm.structured``): a validated pydantic instance, using
  grammar-constrained decoding on llama.cpp, JSON schema / JSON mode where the provider supports it,
  and a bounded re-ask that shows the model its validation error;
- a usage ledger row per call (SQLite), USD/token budgets per run, an optional response cache.

With no agents' model configured the gateway serves the embedded SmolLM2-135M with llama.cpp.
"""

from __future__ import annotations

import asyncio
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
from agentlab.llm.serving import ServerSpec, ServingManager, managed_server
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
from agentlab.llm.usage import CallRecord, UsageLedger

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
        self._embedded: managed_server | None = None
        self._embedded_lock = threading.Lock()
        self.retry_policy = RetryPolicy.from_settings(settings.llm)
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
        tin, tout = usage_tokens(getattr(raw, "usage", None))
        cost = response_cost(raw)
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

    def _give_up(self, failed: GaveUp, req: dict, role: str | None) -> GatewayError:
        exc = failed.cause
        self.ledger.record(CallRecord(model=req["model"], role=role, lab=self.lab, run_id=self.run_id,
                                      ok=False, error=f"{type(exc).__name__}: {exc}"[:500]))
        return GatewayError(explain(exc, req["model"], req.get("api_base"), failed.attempts))

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

        def attempt() -> LLMResponse:
            started = time.perf_counter()
            return self._finish(req, litellm.completion(**req), started, role)

        try:
            resp = call_with_retries(attempt, self.retry_policy, before_attempt=self.check_budget)
        except GaveUp as failed:
            raise self._give_up(failed, req, role) from failed.cause
        self._store(key, resp)
        return resp

    async def acomplete(self, prompt: str | Messages, *, role: str | None = None, system: str | None = None,
                        model: str | None = None, **params: Any) -> LLMResponse:
        target = await asyncio.to_thread(self.target, role, model)  # may start the embedded server
        return await self._acomplete(target, _as_messages(prompt, system), role, params)

    async def _acomplete(self, target: Target, messages: Messages, role: str | None, params: dict) -> LLMResponse:
        req = self._request(target, messages, params)
        key, hit = self._cached(req, role)
        if hit:
            return hit

        async def attempt() -> LLMResponse:
            started = time.perf_counter()
            return self._finish(req, await litellm.acompletion(**req), started, role)

        try:
            resp = await acall_with_retries(attempt, self.retry_policy, before_attempt=self.check_budget)
        except GaveUp as failed:
            raise self._give_up(failed, req, role) from failed.cause
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
