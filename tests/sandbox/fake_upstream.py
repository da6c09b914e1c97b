"""FakeOpenAIUpstream: a test double of an OpenAI-compatible server on loopback (scripted replies)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # many concurrent requests: the default backlog of 5 resets connections


class FakeOpenAIUpstream:
    """Answers every chat completion with ``reply`` and fixed usage; records what it received.

    ``honour_max_tokens``: report ``min(completion_tokens, max_tokens)`` completion tokens, as a real
    server that stops at ``max_tokens`` does. ``delay_s``: answer that much later, so that concurrent
    requests overlap. ``in_flight_peak`` is the most requests it was answering at once."""

    def __init__(self, reply: str = "4", prompt_tokens: int = 10, completion_tokens: int = 5,
                 honour_max_tokens: bool = False, delay_s: float = 0.0) -> None:
        self.requests: list[dict] = []
        self.in_flight_peak = 0
        self._in_flight = 0
        self._lock = threading.Lock()
        outer = self

        def usage(payload: dict) -> dict:
            done = completion_tokens
            if honour_max_tokens and payload.get("max_tokens"):
                done = min(done, int(payload["max_tokens"]))
            return {"prompt_tokens": prompt_tokens, "completion_tokens": done, "total_tokens": prompt_tokens + done}

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _reply(self, obj):
                body = json.dumps(obj).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                outer.requests.append({"method": "GET", "path": self.path, "headers": dict(self.headers)})
                self._reply({"object": "list", "data": [{"id": "fake-model", "object": "model"}]})

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                payload = json.loads(self.rfile.read(n) or b"{}")
                with outer._lock:
                    outer.requests.append({"method": "POST", "path": self.path, "headers": dict(self.headers),
                                           "json": payload})
                    outer._in_flight += 1
                    outer.in_flight_peak = max(outer.in_flight_peak, outer._in_flight)
                time.sleep(delay_s)
                with outer._lock:
                    outer._in_flight -= 1
                self._reply({
                    "id": "cmpl-test", "object": "chat.completion", "model": payload.get("model"),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": reply},
                                 "finish_reason": "stop"}],
                    "usage": usage(payload),
                })

        self.server = _Server(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
