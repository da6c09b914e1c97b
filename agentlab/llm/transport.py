"""The one transport under every LLM call: bounded retries with exponential backoff and full jitter,
which failures are transient, token usage and cost of a response, and error messages that name the fix.

Both the agents' gateway (``agentlab.llm.gateway``, over litellm) and the evaluation client
(``agentlab.eval.client``, over httpx or litellm) send their calls through ``call_with_retries`` /
``acall_with_retries`` with a ``RetryPolicy`` built from the ``[llm]`` settings.
"""

from __future__ import annotations

import asyncio
import inspect
import random
import sys
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, TypeVar

T = TypeVar("T")

# litellm takes seconds to import; the evaluation job in the sandbox speaks httpx and never needs it.
# An exception can only be a litellm one if litellm is loaded, so the checks below look it up there.


def _loaded_litellm() -> Any:
    return sys.modules.get("litellm")


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 4  # retries after the first attempt
    backoff_base_s: float = 0.5
    backoff_max_s: float = 20.0

    @classmethod
    def from_settings(cls, llm: Any) -> "RetryPolicy":
        """From ``Settings.llm`` (``max_retries``, ``backoff_base_s``, ``backoff_max_s``)."""
        return cls(llm.max_retries, llm.backoff_base_s, llm.backoff_max_s)

    def delay(self, attempt: int) -> float:
        """Exponential backoff with full jitter: uniform in [0, min(max, base * 2**attempt)]."""
        return random.uniform(0, min(self.backoff_max_s, self.backoff_base_s * (2**attempt)))


class GaveUp(Exception):
    """A call failed for good: ``cause`` was not transient, or it still failed after ``attempts``."""

    def __init__(self, cause: BaseException, attempts: int):
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause, self.attempts = cause, attempts


def is_retryable(exc: BaseException) -> bool:
    """Transient litellm failures: 429, 5xx, timeouts, connection errors, unparseable responses."""
    litellm = _loaded_litellm()
    if litellm is None:
        return False
    if isinstance(exc, (litellm.RateLimitError, litellm.Timeout, litellm.APIConnectionError,
                        litellm.InternalServerError, litellm.ServiceUnavailableError, litellm.BadGatewayError,
                        litellm.APIResponseValidationError)):
        return True
    status = getattr(exc, "status_code", None)
    return isinstance(exc, litellm.APIError) and isinstance(status, int) and (status >= 500 or status == 429)


def call_with_retries(call: Callable[[], T], policy: RetryPolicy, *,
                      retryable: Callable[[BaseException], bool] = is_retryable,
                      before_attempt: Callable[[], None] | None = None) -> T:
    """``call()`` until it succeeds; raises ``GaveUp`` on a failure that is not ``retryable`` or after
    ``policy.max_retries`` retries. ``before_attempt`` runs before each attempt (budget checks) and
    may raise to stop."""
    for attempt in range(policy.max_retries + 1):
        if before_attempt is not None:
            before_attempt()
        try:
            return call()
        except Exception as exc:
            if not retryable(exc) or attempt == policy.max_retries:
                raise GaveUp(exc, attempt + 1) from exc
        time.sleep(policy.delay(attempt))
    raise AssertionError("unreachable")


async def acall_with_retries(call: Callable[[], Awaitable[T]], policy: RetryPolicy, *,
                             retryable: Callable[[BaseException], bool] = is_retryable,
                             before_attempt: Callable[[], Awaitable[None] | None] | None = None) -> T:
    """The async twin of ``call_with_retries`` (sleeps without blocking the event loop);
    ``before_attempt`` may be a coroutine function (a budget reservation that waits)."""
    for attempt in range(policy.max_retries + 1):
        if before_attempt is not None:
            pending = before_attempt()
            if inspect.isawaitable(pending):
                await pending
        try:
            return await call()
        except Exception as exc:
            if not retryable(exc) or attempt == policy.max_retries:
                raise GaveUp(exc, attempt + 1) from exc
        await asyncio.sleep(policy.delay(attempt))
    raise AssertionError("unreachable")


# -- what a response says ----------------------------------------------------------------------------

def usage_tokens(usage: Any) -> tuple[int, int]:
    """(prompt, completion) tokens from an OpenAI-style ``usage``: a dict (raw JSON) or an object."""
    if usage is None:
        return 0, 0
    if isinstance(usage, dict):
        return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    return int(getattr(usage, "prompt_tokens", 0) or 0), int(getattr(usage, "completion_tokens", 0) or 0)


def mean_logprob(lp: Any) -> float | None:
    """Mean token logprob of a choice's ``logprobs`` (chat format, or the legacy completions format)."""
    if hasattr(lp, "model_dump"):
        lp = lp.model_dump()
    if not isinstance(lp, dict):
        return None
    items = lp.get("content")
    if isinstance(items, list):
        vals = [t.get("logprob") for t in items if isinstance(t, dict) and t.get("logprob") is not None]
    else:
        vals = [v for v in (lp.get("token_logprobs") or []) if v is not None]
    return sum(vals) / len(vals) if vals else None


def response_cost(raw: Any) -> float:
    """USD of one litellm response: litellm prices it already while logging (offline cost map)."""
    hidden = getattr(raw, "_hidden_params", None) or {}
    if "response_cost" in hidden:
        # None: a model the cost map does not know (local servers): it costs nothing
        return float(hidden["response_cost"] or 0.0)
    import litellm

    try:
        return float(litellm.completion_cost(completion_response=raw) or 0.0)
    except Exception:  # an unpriced provider response: report it as free rather than fail the call
        return 0.0


# -- errors a user can act on ------------------------------------------------------------------------

def explain(exc: BaseException, model: str, api_base: str | None, attempts: int) -> str:
    """One line naming what failed and the fix."""
    where = f" at {api_base}" if api_base else ""
    litellm = _loaded_litellm()
    if litellm is None:  # not a litellm failure
        return f"{model}{where}: {type(exc).__name__}: {short(exc)}"
    if isinstance(exc, litellm.AuthenticationError):
        return f"{model}: the API key was rejected; check the provider's key variable or agents.api_key"
    if isinstance(exc, litellm.NotFoundError):
        return f"{model}{where}: model not found; check the model name"
    if isinstance(exc, litellm.ContextWindowExceededError):
        return f"{model}: the prompt is longer than the model's context window"
    if isinstance(exc, (litellm.APIConnectionError, litellm.Timeout)) or _is_connection_failure(exc):
        return f"{model}{where}: endpoint unreachable or timing out after {attempts} attempt(s); is the server running?"
    if is_retryable(exc):
        return f"{model}{where}: still failing after {attempts} attempt(s): {type(exc).__name__}: {short(exc)}"
    return f"{model}{where}: {type(exc).__name__}: {short(exc)}"


def _is_connection_failure(exc: BaseException) -> bool:
    # litellm reports a refused connection to an OpenAI-compatible server as InternalServerError
    text = str(exc)
    return "Connection error" in text or "Connection refused" in text


def short(exc: BaseException, n: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= n else text[: n - 3] + "..."
