"""Tiny stdlib-only client for sandboxed code: call the model under study through the metered proxy.

Inside the sandbox this file is importable as ``agentlab_client``::

    import agentlab_client
    text = agentlab_client.complete("What is 2+2?", max_tokens=32)
    reply = agentlab_client.chat([{"role": "user", "content": "hi"}], temperature=0)

The proxy listens on the unix socket ``$AGENTLAB_MODEL_SOCKET``; it adds credentials on the host,
forwards only to the configured endpoint and enforces this job's token and request budget, also
for concurrent requests (HTTP 429 with ``budget_exhausted`` once a request cannot fit, raised here as
:class:`BudgetExhausted`; a request with no ``max_tokens``, or more than is left, is sent with a part of
what is left).
"""

import http.client
import json
import os
import socket

__all__ = ["BudgetExhausted", "ProxyError", "chat", "complete", "request"]


class ProxyError(RuntimeError):
    def __init__(self, status, body):
        super().__init__(f"model proxy answered HTTP {status}: {body[:300]}")
        self.status = status
        self.body = body


class BudgetExhausted(ProxyError):
    pass


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=600):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def request(method, path, payload=None, socket_path=None, timeout=600):
    """One HTTP request to the proxy; returns the decoded JSON answer."""
    sock = socket_path or os.environ.get("AGENTLAB_MODEL_SOCKET")
    if not sock:
        raise ProxyError(0, "no model proxy in this sandbox (run with network='proxy')")
    conn = _UnixConnection(sock, timeout=timeout)
    try:
        body = json.dumps(payload).encode() if payload is not None else None
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        text = resp.read().decode("utf-8", "replace")
    finally:
        conn.close()
    if resp.status == 429 and "budget_exhausted" in text:
        raise BudgetExhausted(resp.status, text)
    if resp.status >= 400:
        raise ProxyError(resp.status, text)
    return json.loads(text)


def chat(messages, model=None, **params):
    """POST /v1/chat/completions; returns the full OpenAI-style response dict."""
    payload = dict(params, messages=messages)
    if model:
        payload["model"] = model
    return request("POST", "/v1/chat/completions", payload)


def complete(prompt, model=None, **params):
    """Convenience: one user message in, the assistant's text out."""
    resp = chat([{"role": "user", "content": prompt}], model=model, **params)
    return resp["choices"][0]["message"]["content"]
