"""The gateway's USD and token budgets under concurrency, against a real scripted OpenAI-compatible
server on loopback (a test double for the LLM) that counts prompt tokens as OpenAI does, stops at
``max_tokens`` and answers slowly enough for the calls to overlap. Each call reserves its worst case
before it goes out, so the run's spend per the ledger never passes the budget; calls that cannot fit
raise ``BudgetExceeded``."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import litellm
import pytest

from agentlab.config import load_settings
from agentlab.llm.gateway import BudgetExceeded, Gateway, GatewayError, call_need
from agentlab.llm.usage import MIN_COMPLETION_TOKENS
from tests.fakes import ScriptedLLMServer, signal_refusals_while_held

MODEL = "openai/gpt-4o-mini"  # priced in litellm's offline cost map
COMPLETION = 40  # what the server writes when max_tokens lets it
PADDING = "word " * 40  # ~50 prompt tokens a call, so that few calls fit a small budget


class SlowCounter:
    """The scripted server's answers: slow enough to overlap, the most answered at once recorded."""

    def __init__(self, delay_s: float = 0.2):
        self.delay_s, self.now, self.peak = delay_s, 0, 0
        self._lock = threading.Lock()

    def __call__(self, body: dict) -> str:
        with self._lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        time.sleep(self.delay_s)
        with self._lock:
            self.now -= 1
        return "ok"


def usage_like_openai(body: dict, text: str) -> tuple[int, int]:
    prompt = litellm.token_counter(model=MODEL, messages=body["messages"])
    return prompt, min(COMPLETION, body.get("max_tokens") or COMPLETION)


@pytest.fixture
def server():
    answers = SlowCounter()
    with ScriptedLLMServer(default=answers, model="gpt-4o-mini", usage=usage_like_openai) as srv:
        srv.answers = answers
        yield srv


def make_gateway(server, monkeypatch, **env) -> Gateway:
    monkeypatch.setenv("AGENTLAB_AGENTS__MODEL", MODEL)
    monkeypatch.setenv("AGENTLAB_AGENTS__API_BASE", server.url)
    monkeypatch.setenv("AGENTLAB_AGENTS__API_KEY", "sk-test")
    monkeypatch.setenv("AGENTLAB_LLM__BACKOFF_BASE_S", "0.01")
    monkeypatch.setenv("AGENTLAB_LLM__TIMEOUT_S", "60")
    for k, v in env.items():
        monkeypatch.setenv(f"AGENTLAB_{k}", str(v))
    return Gateway(load_settings(), lab="lab-b", run_id="run-burst")


def prompt(i: int) -> str:
    return f"Question {i}: {PADDING}"


def outcome(call) -> str:
    try:
        call()
        return "ok"
    except BudgetExceeded as exc:
        return str(exc)


async def agather(gw: Gateway, ids: range) -> list[str]:
    async def one(i):
        try:
            await gw.acomplete(prompt(i))
            return "ok"
        except BudgetExceeded as exc:
            return str(exc)

    return list(await asyncio.gather(*(one(i) for i in ids)))


def min_call_tokens() -> int:
    """The fewest tokens a call of this test can spend: its real prompt and one completion token."""
    return litellm.token_counter(model=MODEL, messages=[{"role": "user", "content": prompt(0)}]) + 1


def test_concurrent_sync_and_async_calls_never_overshoot_the_token_budget(workspace, server, monkeypatch):
    budget, n = 600, 40
    gw = make_gateway(server, monkeypatch, BUDGETS__MAX_TOKENS=budget)
    start = threading.Barrier(n // 2 + 1)

    def sync_call(i):
        start.wait(timeout=30)
        return outcome(lambda: gw.complete(prompt(i)))

    def async_calls():
        start.wait(timeout=30)
        return asyncio.run(agather(gw, range(n // 2, n)))

    with ThreadPoolExecutor(n // 2 + 1) as pool:  # half from threads, half on one event loop, one budget
        from_loop = pool.submit(async_calls)
        results = list(pool.map(sync_call, range(n // 2), timeout=120)) + from_loop.result(timeout=120)
    refused = [r for r in results if r != "ok"]
    spent = gw.ledger.totals("run-burst")
    assert server.answers.peak > 1  # calls really overlapped at the server
    assert spent.tokens <= budget and spent.calls == len(server.requests) == n - len(refused)
    assert len(refused) >= n - budget // min_call_tokens()
    assert all(r.startswith(f"token budget exhausted: used {spent.tokens} of {budget} tokens") for r in refused)
    assert all("raise budgets.max_tokens" in r for r in refused)
    # refusals came only once not even a minimal call fitted, and nothing stays reserved
    need = call_need({"model": MODEL, "messages": [{"role": "user", "content": prompt(0)}]})
    assert budget - spent.tokens < need.prompt_tokens + MIN_COMPLETION_TOKENS
    assert gw._reservations.in_flight == 0 and gw._reservations.tokens == 0


def test_concurrent_async_calls_never_overshoot_the_usd_budget(workspace, server, monkeypatch):
    budget, n = 0.0002, 30  # a call costs at most ~$0.000032 here, at least ~$0.000008
    gw = make_gateway(server, monkeypatch, BUDGETS__MAX_USD=budget)
    results = asyncio.run(agather(gw, range(n)))
    refused = [r for r in results if r != "ok"]
    spent = gw.ledger.totals("run-burst")
    cheapest = litellm.cost_per_token(model=MODEL, prompt_tokens=min_call_tokens() - 1, completion_tokens=1)
    assert server.answers.peak > 1
    assert 0 < spent.cost_usd <= budget and spent.calls == len(server.requests) == n - len(refused)
    assert len(refused) >= n - int(budget / sum(cheapest))
    assert all(r.startswith("USD budget exhausted: spent $0.0001") and "raise budgets.max_usd" in r for r in refused)
    assert gw._reservations.in_flight == 0 and gw._reservations.usd == pytest.approx(0, abs=1e-12)


def test_a_failed_call_gives_its_reservation_back(workspace, server, monkeypatch):
    gw = make_gateway(server, monkeypatch, BUDGETS__MAX_TOKENS=500)
    server.push(("status", 401))  # not retried: the call fails for good
    with pytest.raises(GatewayError, match="API key was rejected"):
        gw.complete(prompt(1))
    server.push(("status", 503), ("status", 503))  # retried: each attempt reserves and gives back
    gw.complete(prompt(2))
    assert gw._reservations.in_flight == 0 and gw._reservations.tokens == 0
    est = call_need({"model": MODEL, "messages": [{"role": "user", "content": prompt(2)}]}).prompt_tokens
    assert [r["max_tokens"] for r in server.requests] == [(500 - est) // 2] * 4  # all of it there every time
    assert gw.ledger.totals("run-burst").tokens == min_call_tokens() - 1 + COMPLETION


class HoldFirst:
    """The server's answers: the first call is held until ``release`` is set; each call's max_tokens is
    recorded with whether the first was released when it arrived."""

    def __init__(self):
        self.release, self.first_arrived = threading.Event(), threading.Event()
        self.arrivals: list[tuple[int, bool]] = []
        self._lock = threading.Lock()

    def __call__(self, body: dict) -> str:
        with self._lock:
            self.arrivals.append((body.get("max_tokens"), self.release.is_set()))
            first = len(self.arrivals) == 1
        if first:
            self.first_arrived.set()
            self.release.wait(60)
        return "ok"


def test_a_call_that_cannot_fit_yet_waits_for_the_one_in_flight(workspace, server, monkeypatch):
    # Worked by hand: litellm counts 52 prompt tokens for prompt(0) (45 of text, 7 of chat format); the
    # gateway estimates int(52 * 1.25) = 65. Of a budget of 193 the first call (no max_tokens) gets half
    # of the 128 left after its prompt, 64, and reserves 65 + 64 = 129: 64 stay free, too few for the
    # second's prompt alone. Answered, the first used 52 + 40 = 92: 101 free, 36 after the second's
    # prompt, of which it gets half, 18 (it asked for 100), and uses 52 + 18 = 70. 162 in all.
    need = call_need({"model": MODEL, "messages": [{"role": "user", "content": prompt(0)}]})
    assert (min_call_tokens() - 1, need.prompt_tokens) == (52, 65)
    gw = make_gateway(server, monkeypatch, BUDGETS__MAX_TOKENS=193)
    held = server.default = HoldFirst()
    no_room = signal_refusals_while_held(gw._reservations, "_try", held.release, monkeypatch)
    with ThreadPoolExecutor(2) as pool:
        try:
            first = pool.submit(gw.complete, prompt(0))
            assert held.first_arrived.wait(30), "the first call never reached the server"
            second = pool.submit(gw.complete, prompt(0), max_tokens=100)  # waits instead of raising
            # the second reached the budget while the first was held, and found no room: it waits
            assert no_room.wait(30), "the second call never met the budget while the first was in flight"
        finally:
            held.release.set()
        first.result(timeout=60), second.result(timeout=60)
    assert held.arrivals == [(64, False), (18, True)]  # the second went out only after the first was released
    assert gw.ledger.totals("run-burst").tokens == 162
