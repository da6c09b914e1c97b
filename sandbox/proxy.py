"""The metered model proxy: an OpenAI-compatible forwarder on a unix socket, one per sandboxed run.

Sandboxed code has no network. When a run needs the model under study it gets this proxy's socket
bound into the sandbox (``$AGENTLAB_MODEL_SOCKET``; ``agentlab_client`` speaks to it). The proxy

* forwards only ``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings`` (POST) and
  ``/v1/models`` (GET) to the one configured upstream; any other path, absolute-URI target,
  ``CONNECT`` or method is refused (403/405) and never leaves the host;
* adds the upstream API key on the host side (the sandbox never sees it) and drops the client's
  own ``Authorization`` and other headers;
* enforces the run's request and token budgets (HTTP 429 ``budget_exhausted`` once spent) and caps
  ``max_tokens`` of each request to what is left;
* logs every call (allowed or refused) with the job id: JSONL beside the run's logs, and the
  ``proxy_calls`` SQLite table when ``ledger_path`` is set.
"""

from __future__ import annotations

import json
import os
import socket
import socketserver
import sqlite3
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx

from sandbox.types import ProxyConfig, ProxyUsage

POST_PATHS = {"/v1/chat/completions", "/v1/completions", "/v1/embeddings"}
GET_PATHS = {"/v1/models"}
MAX_BODY = 10 * 1024 * 1024


def _connect_ledger(path: Path, timeout_s: float = 30.0) -> sqlite3.Connection:
    """The call-log database, shared with other processes: WAL, a busy timeout, autocommit, any thread."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=timeout_s, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
    return conn


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allow_reuse_address = True


class MeteredProxy:
    def __init__(self, config: ProxyConfig, socket_path: Path, log_path: Path | None = None) -> None:
        self.config = config
        self.socket_path = Path(socket_path)
        self.log_path = log_path
        self.usage = ProxyUsage()
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        base = config.upstream.rstrip("/")
        self._base = base.removesuffix("/v1")
        headers = {"Content-Type": "application/json"}
        if config.api_key:
            headers["Authorization"] = f"Bearer {config.api_key}"
        self._client = httpx.Client(base_url=self._base, headers=headers, timeout=config.timeout_s,
                                    follow_redirects=False, trust_env=False)
        self._db = None
        if config.ledger_path is not None:
            self._db = _connect_ledger(config.ledger_path)
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS proxy_calls (id INTEGER PRIMARY KEY, ts REAL, job_id TEXT, method TEXT,"
                " path TEXT, model TEXT, status INTEGER, prompt_tokens INTEGER, completion_tokens INTEGER,"
                " latency_s REAL, refused TEXT)"
            )

    # --- lifecycle --------------------------------------------------------------------------------
    def start(self) -> MeteredProxy:
        if self.socket_path.exists():
            self.socket_path.unlink()
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = _Server(str(self.socket_path), Handler)
        os.chmod(self.socket_path, 0o666)  # the sandboxed uid must be able to connect
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="metered-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self._client.close()
        if self._db is not None:
            self._db.close()
            self._db = None
        try:
            self.socket_path.unlink()
        except FileNotFoundError:
            pass

    def __enter__(self) -> MeteredProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- accounting -------------------------------------------------------------------------------
    def _reserve(self) -> str | None:
        """Count a request against the budget; the refusal reason if none is left."""
        c = self.config
        with self._lock:
            if c.max_requests is not None and self.usage.requests >= c.max_requests:
                return f"request budget exhausted ({c.max_requests} requests)"
            if c.max_tokens is not None and self.usage.tokens >= c.max_tokens:
                return f"token budget exhausted ({c.max_tokens} tokens)"
            self.usage.requests += 1
            return None

    def remaining_tokens(self) -> int | None:
        if self.config.max_tokens is None:
            return None
        with self._lock:
            return max(self.config.max_tokens - self.usage.tokens, 0)

    def record(self, method: str, path: str, model: str | None, status: int, usage: dict | None,
               latency: float, refused: str | None) -> None:
        pt = int((usage or {}).get("prompt_tokens") or 0)
        ct = int((usage or {}).get("completion_tokens") or 0)
        with self._lock:
            self.usage.prompt_tokens += pt
            self.usage.completion_tokens += ct
            if refused:
                self.usage.refused += 1
            entry = {"ts": time.time(), "job_id": self.config.job_id, "method": method, "path": path[:200],
                     "model": model, "status": status, "prompt_tokens": pt, "completion_tokens": ct,
                     "latency_s": round(latency, 4), "refused": refused}
            if self.log_path is not None:
                with open(self.log_path, "a") as fh:
                    fh.write(json.dumps(entry) + "\n")
            if self._db is not None:
                self._db.execute(
                    "INSERT INTO proxy_calls (ts, job_id, method, path, model, status, prompt_tokens,"
                    " completion_tokens, latency_s, refused) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    tuple(entry.values()),
                )


class _Handler(BaseHTTPRequestHandler):
    owner: MeteredProxy
    protocol_version = "HTTP/1.1"
    server_version = "agentlab-metered-proxy"

    def address_string(self) -> str:  # unix socket: no client address
        return "sandbox"

    def log_message(self, format, *args) -> None:
        pass

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def _refuse(self, status: int, kind: str, message: str, model: str | None = None) -> None:
        self.owner.record(self.command, self.path, model, status, None, 0.0, message)
        self._send(status, json.dumps({"error": {"type": kind, "message": message}}).encode())

    def _target_ok(self, allowed: set[str]) -> bool:
        path = self.path
        if not path.startswith("/") or "//" in path or ".." in path or "?" in path or "%" in path:
            self._refuse(403, "forbidden_target", "the proxy forwards only to its configured model endpoint")
            return False
        if path not in allowed:
            self._refuse(403, "forbidden_target", f"path {path[:100]} is not an allowed model API path")
            return False
        return True

    def do_GET(self) -> None:
        if not self._target_ok(GET_PATHS):
            return
        self._forward("GET", None, None)

    def do_POST(self) -> None:
        if not self._target_ok(POST_PATHS):
            return
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            n = -1
        if n < 0 or n > MAX_BODY:
            self._refuse(413, "invalid_request", f"body must be 0..{MAX_BODY} bytes")
            return
        try:
            payload = json.loads(self.rfile.read(n) or b"{}")
            assert isinstance(payload, dict)
        except (ValueError, AssertionError):
            self._refuse(400, "invalid_request", "body must be a JSON object")
            return
        cfg = self.owner.config
        if payload.get("stream"):
            self._refuse(400, "invalid_request", "streaming is not supported by the metered proxy", payload.get("model"))
            return
        if not payload.get("model") and cfg.default_model:
            payload["model"] = cfg.default_model
        model = payload.get("model")
        if cfg.allowed_models is not None and model not in cfg.allowed_models:
            self._refuse(403, "forbidden_model", f"model {model!r} is not allowed for this job", model)
            return
        refusal = self.owner._reserve()
        if refusal:
            self._refuse(429, "budget_exhausted", refusal, model)
            return
        left = self.owner.remaining_tokens()
        if left is not None and self.path != "/v1/embeddings":
            for key in ("max_tokens", "max_completion_tokens"):
                if key in payload:
                    payload[key] = max(1, min(int(payload[key] or left), left))
            if "max_tokens" not in payload and "max_completion_tokens" not in payload:
                payload["max_tokens"] = max(1, left)
        self._forward("POST", payload, model)

    def do_CONNECT(self) -> None:
        self._refuse(405, "forbidden_target", "CONNECT is not allowed")

    def _other(self) -> None:
        self._refuse(405, "forbidden_method", f"method {self.command} is not allowed")

    do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _other

    def _forward(self, method: str, payload: dict | None, model: str | None) -> None:
        t0 = time.monotonic()
        try:
            resp = self.owner._client.request(method, self.path, json=payload)
        except httpx.HTTPError as exc:
            self.owner.record(method, self.path, model, 502, None, time.monotonic() - t0, None)
            self._send(502, json.dumps({"error": {"type": "upstream_error", "message": str(exc)[:300]}}).encode())
            return
        body = resp.content
        usage = None
        try:
            data = resp.json()
            usage = data.get("usage") if isinstance(data, dict) else None
        except ValueError:
            pass
        if usage is None and payload is not None and resp.status_code < 400:
            # no usage reported: estimate ~4 characters a token so the budget still binds
            usage = {"prompt_tokens": len(json.dumps(payload)) // 4, "completion_tokens": len(body) // 4}
        self.owner.record(method, self.path, model, resp.status_code, usage, time.monotonic() - t0, None)
        self._send(resp.status_code, body, resp.headers.get("content-type", "application/json"))


def unix_socket_ok(path: Path) -> bool:
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()
