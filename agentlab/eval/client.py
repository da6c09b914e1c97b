"""The client of the model under study: chat completions with a concurrency cap, timeouts, the shared
transport's retries (``agentlab.llm.transport``) and a SQLite completion cache.

An ``Endpoint`` is any OpenAI-compatible base URL (vLLM, llama.cpp; spoken to directly over httpx, no
litellm import: the evaluation job in the sandbox starts light) or a litellm provider string.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import BaseModel

from agentlab.eval.errors import EndpointError, EvalError, RequestFailed
from agentlab.llm.cache import SqliteCache, request_key
from agentlab.llm.transport import (
    GaveUp,
    RetryPolicy,
    acall_with_retries,
    is_retryable,
    mean_logprob,
    usage_tokens,
)

# what the harness is working on (``benchmark:problem_id``): completion cache rows are filed under it, so an
# evaluation job can be seeded with exactly the rows of its model and problems
cache_scope: contextvars.ContextVar[str | None] = contextvars.ContextVar("cache_scope", default=None)


def completion_request(endpoint: Endpoint, messages: list[dict[str, str]], params: dict[str, Any]) -> dict:
    """What the completion cache hashes: the served model name, the model's identity (weights hash, checkpoint,
    endpoint: so a trained checkpoint or another model never shares a key), the messages and every sampling
    parameter (temperature, top_p, max_tokens, seed, stop when set: chain i of a sampled technique has
    seed + i, so self-consistency's chains stay distinct); the serving (engine and quantization) when known,
    so the same checkpoint served by another engine never shares a key either."""
    req: dict[str, Any] = {"model": endpoint.model, "messages": messages, **params}
    if endpoint.identity:
        req["model_id"] = endpoint.identity
    if endpoint.serving:
        req["serving"] = endpoint.serving
    return req


class Endpoint(BaseModel):
    """The model under study: an OpenAI-compatible base URL + served model name (+ key), or a
    litellm model string (``litellm=True``, e.g. ``openai/gpt-4o-mini``)."""

    model: str
    base_url: str | None = None
    api_key: str | None = None
    litellm: bool = False
    uds: str | None = None  # reach base_url over this unix socket (the sandbox's metered model proxy)
    identity: str = ""  # what records name as the model: weights hash, hub id or endpoint (see RunningServer.identity)
    serving: str = ""  # what serves it: engine and quantization ("llama.cpp Q4_1"); empty when not known

    @classmethod
    def openai(cls, base_url: str, model: str, api_key: str | None = None, identity: str | None = None,
               serving: str = "") -> Endpoint:
        from agentlab.llm.serving import endpoint_identity

        url = base_url.rstrip("/")
        if not url.endswith("/v1"):
            url += "/v1"
        return cls(model=model, base_url=url, api_key=api_key,
                   identity=identity or endpoint_identity(url, model), serving=serving)

    @classmethod
    def from_litellm(cls, model: str, api_base: str | None = None, api_key: str | None = None) -> Endpoint:
        return cls(model=model, base_url=api_base, api_key=api_key, litellm=True, identity=f"api:{model}")

    @classmethod
    def from_server(cls, server: Any) -> Endpoint:
        """From an ``agentlab.llm.serving.RunningServer``."""
        from agentlab.llm.gguf_file import serving_label

        return cls.openai(server.url, server.served_model, identity=server.identity,
                          serving=serving_label(server.engine, server.model))

    @property
    def where(self) -> str:
        return f"{self.model} at {self.base_url}" if self.base_url else self.model


@dataclass
class Completion:
    text: str
    tokens_in: int = 0
    tokens_out: int = 0
    latency_s: float = 0.0
    cached: bool = False
    mean_logprob: float | None = None
    finish_reason: str | None = None  # why it ended: "stop", "length" (cut at max_tokens); None: untold

    @property
    def cut(self) -> bool:
        """The reply hit max_tokens: it is unfinished, whatever it says."""
        return self.finish_reason == "length"


class ChatClient:
    """Chat completions with a concurrency cap, timeouts, retries and a SQLite completion cache."""

    def __init__(self, endpoint: Endpoint, *, concurrency: int = 8, timeout_s: float = 180.0,
                 retry: RetryPolicy | None = None, cache: SqliteCache | None = None, probe_first: bool = False):
        """``probe_first``: probe the endpoint once, before the first request that is not answered by the
        cache (so an evaluation the cache answers entirely sends nothing at all)."""
        if concurrency < 1:
            raise EvalError("concurrency must be at least 1")
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self.cache = cache
        self._sem = asyncio.Semaphore(concurrency)
        self._http: httpx.AsyncClient | None = None if endpoint.litellm else _http_client(endpoint, concurrency,
                                                                                           timeout_s)
        self.requests = 0
        self.cache_hits = 0
        self._probe_pending = probe_first and self._http is not None
        self._probe_lock = asyncio.Lock()

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    async def probe(self) -> None:
        """Fail fast when nothing listens at the endpoint (litellm providers are not probed)."""
        if self._http is None:
            return
        try:
            await self._http.get("/models", timeout=10.0)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise EndpointError(f"endpoint {self.endpoint.where} is not reachable ({type(exc).__name__}): "
                                "start the server or fix --model-url") from None
        except httpx.HTTPError:
            pass  # reachable; some servers have no /models

    async def chat(self, messages: list[dict[str, str]], *, temperature: float = 0.0, top_p: float = 1.0,
                   max_tokens: int = 512, seed: int | None = None, logprobs: bool = False,
                   stop: list[str] | None = None) -> Completion:
        params: dict[str, Any] = {"temperature": temperature, "top_p": top_p, "max_tokens": max_tokens}
        if seed is not None:
            params["seed"] = seed
        if stop:  # only when set: a request without stop sequences keeps its cache key
            params["stop"] = list(stop)
        if logprobs:  # llama.cpp only returns logprobs when top_logprobs is set too
            params["logprobs"] = True
            params["top_logprobs"] = 1
        key = req = None
        # a sampled request without a seed is meant to be an independent draw: never answered from the cache
        if self.cache is not None and (temperature == 0 or seed is not None):
            req = completion_request(self.endpoint, messages, params)
            key = request_key(req)
            hit = self.cache.get(key)
            if hit is not None:
                self.cache_hits += 1
                return Completion(**{**hit, "cached": True})
        if self._probe_pending:
            async with self._probe_lock:
                if self._probe_pending:
                    await self.probe()
                    self._probe_pending = False
        async with self._sem:
            comp = await self._with_retries(messages, params)
        self.requests += 1
        if key is not None:
            self.cache.put(key, {**comp.__dict__, "cached": False}, model_id=self.endpoint.identity or None,
                           scope=cache_scope.get(), request=req)
        return comp

    async def _with_retries(self, messages: list, params: dict) -> Completion:
        async def attempt() -> Completion:
            started = time.perf_counter()
            call = self._http_call if self._http is not None else self._litellm_call
            comp = await call(messages, params)
            comp.latency_s = time.perf_counter() - started
            return comp

        try:  # everything but a RequestFailed is transient here: connection, timeout, 429, 5xx, bad JSON
            return await acall_with_retries(attempt, self.retry, retryable=lambda e: not isinstance(e, RequestFailed))
        except GaveUp as failed:
            if isinstance(failed.cause, RequestFailed):
                raise failed.cause from None
            last = failed.cause
            raise EndpointError(f"endpoint {self.endpoint.where} failing after {failed.attempts} attempt(s): "
                                f"{type(last).__name__}: {str(last)[:200] or 'no detail'}") from None

    async def _http_call(self, messages: list, params: dict) -> Completion:
        assert self._http is not None
        r = await self._http.post("/chat/completions", json={"model": self.endpoint.model, "messages": messages,
                                                              "stream": False, **params})
        if r.status_code == 429 and "budget_exhausted" in r.text:  # the metered proxy's refusal: final
            raise RequestFailed(f"HTTP 429: {r.text[:300]}")
        if r.status_code == 429 or r.status_code >= 500:
            raise httpx.HTTPStatusError(f"HTTP {r.status_code}: {r.text[:200]}", request=r.request, response=r)
        if r.status_code >= 400:
            raise RequestFailed(f"HTTP {r.status_code}: {r.text[:300]}")
        try:
            body = r.json()
            choice = body["choices"][0]
            text = choice["message"].get("content") or ""
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise ValueError(f"malformed completion response: {r.text[:200]}") from exc
        tokens_in, tokens_out = usage_tokens(body.get("usage"))
        return Completion(text=text, tokens_in=tokens_in, tokens_out=tokens_out,
                          mean_logprob=mean_logprob(choice.get("logprobs")),
                          finish_reason=choice.get("finish_reason"))

    async def _litellm_call(self, messages: list, params: dict) -> Completion:
        import litellm

        import agentlab  # noqa: F401  (offline cost map before litellm)

        kwargs = {"model": self.endpoint.model, "messages": messages, "timeout": self.timeout_s,
                  "num_retries": 0, **params}
        if self.endpoint.base_url:
            kwargs["api_base"] = self.endpoint.base_url
        if self.endpoint.api_key:
            kwargs["api_key"] = self.endpoint.api_key
        try:
            raw = await litellm.acompletion(**kwargs)
        except Exception as exc:
            if is_retryable(exc):
                raise
            raise RequestFailed(f"{type(exc).__name__}: {str(exc)[:300]}") from None
        choice = raw.choices[0]
        tokens_in, tokens_out = usage_tokens(getattr(raw, "usage", None))
        return Completion(text=choice.message.content or "", tokens_in=tokens_in, tokens_out=tokens_out,
                          mean_logprob=mean_logprob(getattr(choice, "logprobs", None)),
                          finish_reason=getattr(choice, "finish_reason", None))


KEEPALIVE_S = 2.0


def _http_client(endpoint: Endpoint, concurrency: int, timeout_s: float) -> httpx.AsyncClient:
    """A pooled httpx client for an OpenAI-compatible endpoint (over a unix socket: the sandbox's proxy)."""
    if not endpoint.base_url:
        raise EvalError("an OpenAI-compatible endpoint needs a base URL (e.g. http://127.0.0.1:8080/v1)")
    headers = {"Authorization": f"Bearer {endpoint.api_key or 'sk-none'}"}
    # idle connections are dropped before the server drops them (llama.cpp's server: after 5 s, httpx's own default):
    # a request sent on a connection the server is closing fails with "Server disconnected" and costs a retry
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4,
                          keepalive_expiry=KEEPALIVE_S)
    # the metered proxy's unix socket speaks plain HTTP: no TLS context (loading the CA bundle costs ~50 ms)
    transport = httpx.AsyncHTTPTransport(uds=endpoint.uds, limits=limits, verify=False) if endpoint.uds else None
    return httpx.AsyncClient(base_url=endpoint.base_url, headers=headers, limits=limits, transport=transport,
                             trust_env=not endpoint.uds, timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)))
