"""The metered model proxy: forwards only to its endpoint, adds the key on the host, stops at its budget."""

from __future__ import annotations

import json
import textwrap

import pytest

from sandbox import Limits, ProxyConfig, run
from sandbox.client_helper import BudgetExhausted, _UnixConnection
from sandbox.proxy import MeteredProxy, prompt_tokens_estimate
from tests.sandbox.conftest import needs_bwrap
from tests.sandbox.fake_upstream import FakeOpenAIUpstream

HOST_KEY = "sk-host-only-0123456789"


def _raw(sock, method, target, body=None):
    conn = _UnixConnection(str(sock), timeout=10)
    conn.request(method, target, body=body, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    out = resp.status, resp.read()
    conn.close()
    return out


def test_refuses_other_targets_and_methods(tmp_path):
    with FakeOpenAIUpstream() as up:
        cfg = ProxyConfig(upstream=up.url, api_key=HOST_KEY, job_id="job-x")
        with MeteredProxy(cfg, tmp_path / "p.sock", log_path=tmp_path / "calls.jsonl") as px:
            for method, target in [("GET", "http://169.254.169.254/latest/meta-data"),
                                   ("POST", "http://evil.example/v1/chat/completions"),
                                   ("GET", "/v1/../admin"), ("GET", "//evil.example/v1/models"),
                                   ("GET", "/health"), ("POST", "/v1/files"), ("DELETE", "/v1/models"),
                                   ("CONNECT", "evil.example:443")]:
                status, _ = _raw(px.socket_path, method, target, b"{}" if method == "POST" else None)
                assert status in (403, 405), (method, target, status)
            status, body = _raw(px.socket_path, "GET", "/v1/models")
            assert status == 200 and b"fake-model" in body
            assert px.usage.refused == 8
        assert [r["path"] for r in up.requests] == ["/v1/models"]
        assert up.requests[0]["headers"]["Authorization"] == f"Bearer {HOST_KEY}"
        lines = [json.loads(x) for x in (tmp_path / "calls.jsonl").read_text().splitlines()]
        assert len(lines) == 9 and all(x["job_id"] == "job-x" for x in lines)


def test_budget_requests_and_tokens(tmp_path):
    msgs = [{"role": "user", "content": "2+2?"}]
    prompt = prompt_tokens_estimate({"model": "m", "messages": msgs, "max_tokens": 100})
    with FakeOpenAIUpstream(prompt_tokens=10, completion_tokens=5) as up:
        # room for one call (15 tokens), then the next call's prompt estimate and 10 completion tokens
        cfg = ProxyConfig(upstream=up.url, api_key=HOST_KEY, max_tokens=15 + prompt + 10, max_requests=10,
                          ledger_path=tmp_path / "ledger.db", job_id="j1")
        with MeteredProxy(cfg, tmp_path / "p.sock") as px:
            from sandbox.client_helper import request
            request("POST", "/v1/chat/completions", {"model": "m", "messages": msgs, "max_tokens": 100},
                    socket_path=str(px.socket_path))
            # 15 used: the next request's max_tokens is capped to half of what is left after its prompt
            request("POST", "/v1/chat/completions", {"model": "m", "messages": msgs, "max_tokens": 100},
                    socket_path=str(px.socket_path))
            assert up.requests[1]["json"]["max_tokens"] == 5
            with pytest.raises(BudgetExhausted, match="token budget"):
                request("POST", "/v1/chat/completions", {"model": "m", "messages": msgs},
                        socket_path=str(px.socket_path))
            assert px.usage.requests == 2 and px.usage.tokens == 30 and px.usage.refused == 1
        import sqlite3
        rows = sqlite3.connect(tmp_path / "ledger.db").execute(
            "SELECT job_id, status, prompt_tokens, completion_tokens, refused FROM proxy_calls ORDER BY id").fetchall()
        assert [r[1] for r in rows] == [200, 200, 429] and rows[0][0] == "j1" and rows[2][4]
        assert len(up.requests) == 2


def test_stream_and_models_policy(tmp_path):
    with FakeOpenAIUpstream() as up:
        cfg = ProxyConfig(upstream=up.url, allowed_models=["ok-model"], default_model="ok-model")
        with MeteredProxy(cfg, tmp_path / "p.sock") as px:
            st, _ = _raw(px.socket_path, "POST", "/v1/chat/completions",
                         json.dumps({"model": "other", "messages": []}).encode())
            assert st == 403
            st, _ = _raw(px.socket_path, "POST", "/v1/chat/completions",
                         json.dumps({"messages": [], "stream": True}).encode())
            assert st == 400
            st, _ = _raw(px.socket_path, "POST", "/v1/chat/completions", json.dumps({"messages": []}).encode())
            assert st == 200 and up.requests[-1]["json"]["model"] == "ok-model"


@needs_bwrap
@pytest.mark.integration
def test_sandboxed_code_reaches_model_only_through_proxy(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", HOST_KEY)
    with FakeOpenAIUpstream(reply="four") as up:
        port = up.url.split(":")[2].split("/")[0]
        code = textwrap.dedent(f"""
            import os, socket, agentlab_client
            print('key in env:', any('{HOST_KEY}' in v for v in os.environ.values()))
            print('answer:', agentlab_client.complete('2+2?', model='m'))
            print('answer:', agentlab_client.complete('2+2?', model='m'))
            try:
                agentlab_client.complete('again', model='m')
            except agentlab_client.BudgetExhausted as exc:
                print('BUDGET', exc.status)
            try:
                socket.create_connection(('127.0.0.1', {port}), timeout=2); print('DIRECT CONNECTED')
            except OSError as exc:
                print('direct blocked', type(exc).__name__)
            """)
        r = run(code=code, network="proxy", workdir=tmp_path / "w", limits=Limits(timeout_s=60),
                proxy=ProxyConfig(upstream=up.url, api_key=HOST_KEY, max_requests=2, job_id="job-7"))
    assert r.exit_code == 0, r.stderr_tail
    assert "key in env: False" in r.stdout_tail
    assert r.stdout_tail.count("answer: four") == 2
    assert "BUDGET 429" in r.stdout_tail and "direct blocked" in r.stdout_tail
    assert r.proxy_usage.requests == 2 and r.proxy_usage.refused == 1 and r.proxy_usage.tokens == 30
    assert all(q["headers"]["Authorization"] == f"Bearer {HOST_KEY}" for q in up.requests)
    assert len(up.requests) == 2
    calls = (r.stdout_path.parent / "proxy_calls.jsonl").read_text()
    assert calls.count("job-7") == 3
