"""Test doubles shared by tests: a scripted OpenAI-compatible chat server on loopback.

``ScriptedLLMServer`` is a real HTTP server (so the real litellm/openai clients are exercised) whose
answers are scripted: each request pops the next step, e.g. ``("status", 429)``, ``("sleep", 5)``,
``("invalid_json",)`` or ``("text", "hello")``; when the script is empty it answers ``default``.

``signal_refusals_while_held`` watches a budget's reservation method: an event set when it finds no room
while the first request is still held (the gateway's and the proxy's "waits for the one in flight" tests).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # concurrent-client tests connect many at once (the default backlog is 5)


class ScriptedLLMServer:
    def __init__(self, default: str | Callable[[dict], str] = "ok", model: str = "scripted-test-double",
                 usage: Callable[[dict, str], tuple[int, int]] | None = None):
        self.steps: deque = deque()
        self.default = default
        self.model = model
        self.usage = usage or (lambda body, text: (10, 5))  # (prompt, completion) tokens per answer
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> "ScriptedLLMServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def push(self, *steps: tuple) -> None:
        self.steps.extend(steps)

    def _next(self, body: dict) -> tuple:
        with self._lock:
            self.requests.append(body)
            if self.steps:
                return self.steps.popleft()
        text = self.default(body) if callable(self.default) else self.default
        return ("text", text)

    def _handler(self):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def _send(self, code: int, payload: bytes, ctype: str = "application/json") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                try:
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_GET(self):
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, json.dumps({"object": "list", "data": [{"id": outer.model, "object": "model"}]}).encode())
                else:
                    self._send(404, b'{"error": "not found"}')

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                step = outer._next(body)
                kind = step[0]
                model = body.get("model") or outer.model
                if kind == "status":
                    self._send(step[1], json.dumps({"error": {"message": f"scripted {step[1]}", "type": "x"}}).encode())
                elif kind == "sleep":
                    time.sleep(step[1])
                    self._send(200, _completion(model, "late", outer.usage(body, "late")))
                elif kind == "invalid_json":
                    self._send(200, b'{"id": "x", "choices": [ this is not json')
                elif kind == "text":
                    self._send(200, _completion(model, step[1], outer.usage(body, step[1])))
                else:
                    raise ValueError(f"unknown scripted step {step!r}")

        return Handler


def _completion(model: str, text: str, usage: tuple[int, int]) -> bytes:
    return json.dumps({
        "id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)},
    }).encode()


def signal_refusals_while_held(budget: Any, method: str, held_released: threading.Event,
                               monkeypatch: Any) -> threading.Event:
    """An event set when ``budget.<method>`` (a reservation attempt: None = no room) finds no room while
    ``held_released`` is not yet set (the first request is still held)."""
    attempt, no_room = getattr(budget, method), threading.Event()

    def watched(*args: Any) -> Any:
        got = attempt(*args)
        if got is None and not held_released.is_set():
            no_room.set()
        return got

    monkeypatch.setattr(budget, method, watched)
    return no_room
