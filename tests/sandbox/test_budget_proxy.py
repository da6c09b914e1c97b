"""The metered proxy's budgets under concurrency: many sandboxed requests at once against a real proxy on
a unix socket and a scripted upstream that reports known usage. Reservation before forwarding keeps the
total within the budget; requests that cannot fit are refused with HTTP 429 ``budget_exhausted``."""

from __future__ import annotations

import json
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

from sandbox import ProxyConfig
from sandbox.client_helper import BudgetExhausted, ProxyError, request
from sandbox.proxy import MIN_COMPLETION_TOKENS, MeteredProxy, prompt_tokens_estimate
from tests.fakes import signal_refusals_while_held
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


class HeldUpstream:
    """A test double of the upstream that holds the first chat completion until ``release`` is set. It
    records each request's ``max_tokens`` and whether the first was released when it arrived, and reports
    usage as a server that stops at ``max_tokens``: 10 prompt tokens, at most 30 completion tokens."""

    def __init__(self) -> None:
        self.release, self.first_arrived = threading.Event(), threading.Event()
        self.arrivals: list[tuple[int, bool]] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                payload = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                with outer._lock:
                    outer.arrivals.append((payload["max_tokens"], outer.release.is_set()))
                    first = len(outer.arrivals) == 1
                if first:
                    outer.first_arrived.set()
                    outer.release.wait(60)
                completion = min(30, payload["max_tokens"])
                body = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": "4"},
                                                "finish_reason": "stop"}],
                                   "usage": {"prompt_tokens": 10, "completion_tokens": completion,
                                             "total_tokens": 10 + completion}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> Self:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def test_a_request_that_cannot_fit_yet_waits_for_the_one_in_flight(tmp_path, monkeypatch):
    # Worked by hand: MESSAGES' prompt estimate is 81 bytes of JSON // 3 + 3 = 30 tokens. Of a budget of
    # 88 the first request (no max_tokens) gets half of the 58 left after its prompt, 29, and reserves
    # 30 + 29 = 59: 29 stay free, too few for the second's prompt alone. Answered, the first used 10 + 29
    # = 39: 49 free, 19 after the second's prompt, of which it gets half, 9 (it asked for 100), and uses
    # 10 + 9 = 19. 58 in all.
    assert prompt_tokens_estimate({"messages": MESSAGES}) == 30
    with HeldUpstream() as up, MeteredProxy(ProxyConfig(upstream=up.url, max_tokens=88), tmp_path / "p.sock") as px:
        no_room = signal_refusals_while_held(px._budget, "_fit", up.release, monkeypatch)
        with ThreadPoolExecutor(2) as pool:
            try:
                first = pool.submit(_call, px.socket_path, None)
                assert up.first_arrived.wait(30), "the first request never reached the upstream"
                assert px.remaining_tokens() == 29
                second = pool.submit(_call, px.socket_path, 100)
                # the second reached the budget while the first was held, and found no room: it waits
                assert no_room.wait(30), "the second request never met the budget while the first was in flight"
            finally:
                up.release.set()
            assert first.result(timeout=60)[0] == "ok" and second.result(timeout=60)[0] == "ok"
    assert up.arrivals == [(29, False), (9, True)]  # the second went out only after the first was released
    assert px.usage.tokens == 58 and px.usage.requests == 2 and px.usage.refused == 0


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
