"""Fixtures for evaluation tests: a scripted OpenAI-compatible test double on loopback, and the real
embedded llama.cpp server (started once per session, for slow tests)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import pytest

from agentlab.eval.client import Endpoint
from tests.conftest import require_embedded_engine


class ScriptedLLMServer:
    """TEST DOUBLE: a real HTTP server on 127.0.0.1 that answers OpenAI chat completions with
    scripted text. ``script(body) -> str | dict(text=..., logprob=..., finish_reason=...)`` (finish_reason
    "stop" unless given); ``fail_status`` makes it answer every completion with that HTTP status."""

    def __init__(self, script: Callable[[dict], Any], port: int = 0):
        self.script = script
        self.requests: list[dict] = []
        self.fail_status: int | None = None
        self.fail_body: dict | None = None  # the body of those answers (default: a scripted failure)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, code: int, obj: Any) -> None:
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": "scripted-model", "object": "model"}]})
                else:
                    self._send(404, {"error": "not found"})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                outer.requests.append(body)
                if outer.fail_status:
                    self._send(outer.fail_status, outer.fail_body or {"error": {"message": "scripted failure"}})
                    return
                out = outer.script(body)
                if isinstance(out, str):
                    out = {"text": out}
                choice: dict[str, Any] = {"index": 0, "finish_reason": out.get("finish_reason", "stop"),
                                          "message": {"role": "assistant", "content": out["text"]}}
                if "logprob" in out and body.get("logprobs"):
                    choice["logprobs"] = {"content": [{"token": "x", "logprob": out["logprob"]}]}
                prompt = " ".join(m["content"] for m in body["messages"])
                self._send(200, {"id": "x", "object": "chat.completion", "model": body["model"],
                                 "choices": [choice],
                                 "usage": {"prompt_tokens": len(prompt.split()),
                                           "completion_tokens": len(out["text"].split()),
                                           "total_tokens": 0}})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint.openai(f"http://127.0.0.1:{self.port}/v1", "scripted-model")

    def completions(self) -> int:
        return len(self.requests)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def scripted_server():
    servers: list[ScriptedLLMServer] = []

    def make(script: Callable[[dict], Any], port: int = 0) -> ScriptedLLMServer:
        s = ScriptedLLMServer(script, port)
        servers.append(s)
        return s

    yield make
    for s in servers:
        try:
            s.stop()
        except Exception:
            pass


@pytest.fixture(scope="session")
def embedded_endpoint(tmp_path_factory):
    """The real llama.cpp server with the embedded SmolLM2-135M, once per session."""
    require_embedded_engine()
    from agentlab.llm.serving import ServerSpec, ServingManager, managed_server

    mgr = ServingManager(tmp_path_factory.mktemp("eval-serving"))
    with managed_server(mgr, ServerSpec(engine="llama.cpp", n_ctx=2048), reuse=False, timeout_s=300) as server:
        yield Endpoint.from_server(server)
