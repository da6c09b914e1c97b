"""The metered proxy's budgets under concurrency: many sandboxed requests at once against a real proxy on
a unix socket and a scripted upstream that reports known usage. Reservation before forwarding keeps the
total within the budget; requests that cannot fit are refused with HTTP 429 ``budget_exhausted``."""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from sandbox import ProxyConfig
from sandbox.client_helper import BudgetExhausted, ProxyError, request
from sandbox.proxy import MIN_COMPLETION_TOKENS, MeteredProxy, prompt_tokens_estimate
from tests.sandbox.fake_upstream import FakeOpenAIUpstream

MESSAGES = [{"role": "user", "content": "What is 2+2? Answer with a number."}]


def _call(sock, max_tokens: int | None) -> tuple[str, str]:
    """("ok", reply) or ("refused", message) for one chat completion through the proxy."""
    payload = {"model": "m", "messages": MESSAGES, "user": str(max_tokens or "")}
    if max_tokens is not None:
        payload["max_tokens"] = max_tokens
    try:
        return "ok", request("POST", "/v1/chat/completions", payload, socket_path=str(sock), timeout=60)
    except BudgetExhausted as exc:
        assert exc.status == 429
        return "refused", exc.body


def _burst(sock, asks: list[int | None]) -> list[tuple[str, str]]:
    """All ``asks`` at once, one thread each, released together by a barrier."""
    start = threading.Barrier(len(asks))

    def one(max_tokens):
        start.wait(timeout=30)
        return _call(sock, max_tokens)

    with ThreadPoolExecutor(len(asks)) as pool:
        return list(pool.map(one, asks, timeout=120))


def test_concurrent_requests_never_overshoot_the_token_budget(tmp_path):
    budget, n, prompt, completion = 600, 40, 20, 30
    asks = [50, None, 20, 50] * (n // 4)  # more than, nothing, or less than a completion takes
    with FakeOpenAIUpstream(prompt_tokens=prompt, completion_tokens=completion, honour_max_tokens=True,
                            delay_s=0.2) as up:
        cfg = ProxyConfig(upstream=up.url, max_tokens=budget, max_requests=None, job_id="burst")
        with MeteredProxy(cfg, tmp_path / "p.sock") as px:
            results = _burst(px.socket_path, asks)
            left = px.remaining_tokens()
    ok = [r for r in results if r[0] == "ok"]
    refused = [msg for kind, msg in results if kind == "refused"]
    reported = sum(prompt + min(completion, q["json"]["max_tokens"]) for q in up.requests)
    assert up.in_flight_peak > 1  # the requests really overlapped at the upstream
    assert px.usage.tokens == reported <= budget
    assert len(ok) == len(up.requests) == px.usage.requests and len(ok) + len(refused) == n
    # a call takes at least prompt + 1 tokens, so at most budget // (prompt + 1) of them fit
    assert len(refused) >= n - budget // (prompt + 1) and px.usage.refused == len(refused)
    assert all('"budget_exhausted"' in m and f"token budget exhausted ({budget} tokens)" in m for m in refused)
    # refusals came only once the budget could not hold even one more minimal completion
    assert left < prompt_tokens_estimate({"messages": MESSAGES}) + MIN_COMPLETION_TOKENS
    # no request got more than it asked for (the proxy forwards the "user" field as it is)
    assert all(1 <= q["json"]["max_tokens"] <= int(q["json"]["user"] or budget) for q in up.requests)


def test_concurrent_requests_never_overshoot_the_request_budget(tmp_path):
    with FakeOpenAIUpstream(delay_s=0.1) as up:
        cfg = ProxyConfig(upstream=up.url, max_requests=15, max_tokens=None)
        with MeteredProxy(cfg, tmp_path / "p.sock") as px:
            results = _burst(px.socket_path, [16] * 40)
    refused = [msg for kind, msg in results if kind == "refused"]
    assert len(up.requests) == px.usage.requests == 15
    assert len(refused) == 25 and all("request budget exhausted (15 requests)" in m for m in refused)


def test_a_request_that_cannot_fit_yet_waits_for_the_one_in_flight(tmp_path):
    est = prompt_tokens_estimate({"messages": MESSAGES})
    room = 2 * est - 2  # after a prompt: the first request takes half, too little is left for another
    first_uses = 10 + min(30, room // 2)
    with FakeOpenAIUpstream(prompt_tokens=10, completion_tokens=30, honour_max_tokens=True, delay_s=0.5) as up:
        cfg = ProxyConfig(upstream=up.url, max_tokens=est + room)
        with MeteredProxy(cfg, tmp_path / "p.sock") as px, ThreadPoolExecutor(2) as pool:
            first = pool.submit(_call, px.socket_path, None)
            deadline = time.monotonic() + 30
            while not up.requests and time.monotonic() < deadline:
                time.sleep(0.01)
            assert px.remaining_tokens() < est + MIN_COMPLETION_TOKENS
            second = pool.submit(_call, px.socket_path, 100)  # waits instead of being refused
            assert first.result(timeout=60)[0] == "ok" and second.result(timeout=60)[0] == "ok"
    assert [q["json"]["max_tokens"] for q in up.requests] == [room // 2, (room - first_uses) // 2]
    assert px.usage.tokens <= est + room and px.usage.refused == 0


def test_an_unanswered_request_gives_its_reservation_back(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = ProxyConfig(upstream=f"http://127.0.0.1:{port}/v1", max_tokens=500, max_requests=3, timeout_s=5)
    with MeteredProxy(cfg, tmp_path / "p.sock") as px:
        for _ in range(5):  # more than max_requests: unanswered requests do not use the budget up
            try:
                _call(px.socket_path, 50)
            except ProxyError as exc:
                assert exc.status == 502
        assert px.remaining_tokens() == 500 and px.usage.requests == 0 and px.usage.tokens == 0
