"""The metered model proxy: an OpenAI-compatible forwarder on a unix socket, one per sandboxed run.

Sandboxed code has no network. When a run needs the model under study it gets this proxy's socket
bound into the sandbox (``$AGENTLAB_MODEL_SOCKET``; ``agentlab_client`` speaks to it). The proxy

* forwards only ``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings`` (POST) and
  ``/v1/models`` (GET) to the one configured upstream; any other path, absolute-URI target,
  ``CONNECT`` or method is refused (403/405) and never leaves the host;
* adds the upstream API key on the host side (the sandbox never sees it) and drops the client's
  own ``Authorization`` and other headers;
* enforces the run's request and token budgets by reserving before it forwards: under one lock a request
  reserves a request slot and its prompt estimate plus its ``max_tokens`` (capped to half of the
  unreserved remainder when it asks for more or names none), and settles to the usage the upstream
  reports when the answer arrives (a request the upstream never answered gives its reservation back).
  Concurrent requests therefore cannot together overshoot the budget. A request that cannot fit waits
  while requests in flight may still give tokens back, and is refused with HTTP 429
  ``budget_exhausted`` when even a minimal completion cannot fit;
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
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx

from sandbox.types import ProxyConfig, ProxyUsage

POST_PATHS = {"/v1/chat/completions", "/v1/completions", "/v1/embeddings"}
GET_PATHS = {"/v1/models"}
MAX_BODY = 10 * 1024 * 1024
MIN_COMPLETION_TOKENS = 1  # a request is refused when not even this many completion tokens fit
PROMPT_KEYS = ("messages", "prompt", "input", "tools", "functions", "response_format")


def prompt_tokens_estimate(payload: dict) -> int:
    """A deliberately high estimate of a request's prompt tokens, with no tokenizer at hand: a token per
    3 bytes of the request's prompt-side JSON (English text runs about 4 characters a token; the JSON
    keys stand in for the chat template) plus 3 that prime the reply."""
    prompt = {k: payload[k] for k in PROMPT_KEYS if k in payload}
    return len(json.dumps(prompt, ensure_ascii=False).encode()) // 3 + 3


def _asked_max_tokens(payload: dict) -> int | None:
    """The completion limit a request asks for (the smaller of the two spellings); None when it names none."""
    asked = []
    for key in ("max_tokens", "max_completion_tokens"):
        try:
            value = int(payload.get(key) or 0)
        except (TypeError, ValueError):
            value = 0
        if value > 0:
            asked.append(value)
    return min(asked) if asked else None


@dataclass
class _Hold:
    """What one forwarded request reserved: a request slot and ``tokens`` (prompt estimate + max_tokens)."""

    tokens: int


class _Budget:
    """The run's request and token budget: reserved before a request is forwarded, settled after.

    ``usage`` counts settled tokens and the requests forwarded (in flight included); ``reserved_tokens``
    what requests in flight may still use. Everything changes under ``lock``, so no two requests can
    reserve the same tokens."""

    def __init__(self, config: ProxyConfig, usage: ProxyUsage) -> None:
        self.config, self.usage = config, usage
        self.lock = threading.Lock()
        self._changed = threading.Condition(self.lock)
        self.reserved_tokens = 0
        self.in_flight = 0

    def free_tokens(self) -> int | None:
        """Tokens neither used nor reserved (call under ``lock``); None without a token budget."""
        if self.config.max_tokens is None:
            return None
        return max(self.config.max_tokens - self.usage.tokens - self.reserved_tokens, 0)

    def reserve(self, payload: dict, path: str) -> _Hold | str:
        """Reserve a request slot and its tokens, capping ``payload``'s max_tokens to what it got; the
        refusal reason when it cannot fit. While requests in flight may give tokens back it waits for
        them (at most the upstream timeout) instead of refusing."""
        est = prompt_tokens_estimate(payload)
        deadline = time.monotonic() + self.config.timeout_s
        with self._changed:
            while True:
                if self.config.max_requests is not None and self.usage.requests >= self.config.max_requests:
                    return f"request budget exhausted ({self.config.max_requests} requests)"
                fit = self._fit(payload, path, est)
                if fit is not None:
                    break
                left = deadline - time.monotonic()
                if self.in_flight == 0 or left <= 0:
                    return self._token_refusal(est)
                self._changed.wait(left)
            tokens, granted = fit
            if granted is not None:
                _set_max_tokens(payload, granted)
            self.usage.requests += 1
            self.reserved_tokens += tokens
            self.in_flight += 1
            return _Hold(tokens)

    def _fit(self, payload: dict, path: str, est: int) -> tuple[int, int | None] | None:
        """(tokens to reserve, max_tokens to send or None to leave the request as it is), or None when
        it does not fit now. A request may take at most half of the unreserved remainder after its prompt,
        so that concurrent requests near the end of the budget each get a part instead of waiting for the
        first one; one that asks for less keeps what it asked for."""
        free = self.free_tokens()
        if free is None:
            return 0, None
        if path == "/v1/embeddings":
            return (est, None) if est <= free else None
        room = free - est
        if room < MIN_COMPLETION_TOKENS:
            return None
        share = max(MIN_COMPLETION_TOKENS, room // 2)
        asked = _asked_max_tokens(payload)
        granted = share if asked is None else min(asked, share)
        return est + granted, granted

    def _token_refusal(self, est: int) -> str:
        c = self.config
        return (f"token budget exhausted ({c.max_tokens} tokens): {self.usage.tokens} used,"
                f" {self.reserved_tokens} reserved by requests in flight; this request needs about {est}"
                f" for its prompt and at least {MIN_COMPLETION_TOKENS} to answer")

    def settle(self, hold: _Hold, prompt_tokens: int, completion_tokens: int, answered: bool) -> None:
        """Replace ``hold`` by the real usage (call under ``lock``); a request the upstream never answered
        gives its slot back too."""
        self.usage.prompt_tokens += prompt_tokens
        self.usage.completion_tokens += completion_tokens
        self.reserved_tokens -= hold.tokens
        self.in_flight -= 1
        if not answered:
            self.usage.requests -= 1
        self._changed.notify_all()


def _set_max_tokens(payload: dict, granted: int) -> None:
    keys = [k for k in ("max_tokens", "max_completion_tokens") if k in payload] or ["max_tokens"]
    for key in keys:
        payload[key] = granted


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
    # socketserver's default backlog of 5 makes a unix-socket connect fail at once (EAGAIN) when more
    # sandboxed requests than that arrive together
    request_queue_size = 128


class MeteredProxy:
    def __init__(self, config: ProxyConfig, socket_path: Path, log_path: Path | None = None) -> None:
        self.config = config
        self.socket_path = Path(socket_path)
        self.log_path = log_path
        self.usage = ProxyUsage()
        self._budget = _Budget(config, self.usage)
        self._lock = self._budget.lock
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
    def _reserve(self, payload: dict, path: str) -> _Hold | str:
        """Reserve a request and its tokens before forwarding (see ``_Budget.reserve``)."""
        return self._budget.reserve(payload, path)

    def remaining_tokens(self) -> int | None:
        """Tokens neither used nor reserved by requests in flight; None without a token budget."""
        with self._lock:
            return self._budget.free_tokens()

    def record(self, method: str, path: str, model: str | None, status: int, usage: dict | None,
               latency: float, refused: str | None, hold: _Hold | None = None, answered: bool = True) -> None:
        """Count and log one call; a forwarded one (``hold``) settles its reservation to ``usage`` in the
        same step, so no other request ever sees the tokens neither reserved nor used."""
        pt = int((usage or {}).get("prompt_tokens") or 0)
        ct = int((usage or {}).get("completion_tokens") or 0)
        with self._lock:
            if hold is not None:
                self._budget.settle(hold, pt, ct, answered)
            else:
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
        self._discard_unread_body()
        self._send(status, json.dumps({"error": {"type": kind, "message": message}}).encode())

    def _discard_unread_body(self) -> None:
        """Read a body nobody will use before answering: closing with it unread resets the connection,
        and the client then gets a broken pipe instead of the refusal."""
        if getattr(self, "_body_read", False):
            return
        self._body_read = True
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return
        if 0 < n <= MAX_BODY:
            self.rfile.read(n)

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
            self._body_read = True
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
        hold = self.owner._reserve(payload, self.path)
        if isinstance(hold, str):
            self._refuse(429, "budget_exhausted", hold, model)
            return
        self._forward("POST", payload, model, hold)

    def do_CONNECT(self) -> None:
        self._refuse(405, "forbidden_target", "CONNECT is not allowed")

    def _other(self) -> None:
        self._refuse(405, "forbidden_method", f"method {self.command} is not allowed")

    do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _other

    def _forward(self, method: str, payload: dict | None, model: str | None, hold: _Hold | None = None) -> None:
        t0 = time.monotonic()
        try:
            resp = self.owner._client.request(method, self.path, json=payload)
        except Exception as exc:  # no answer: the reservation goes back, whatever went wrong
            self.owner.record(method, self.path, model, 502, None, time.monotonic() - t0, None, hold, answered=False)
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
        self.owner.record(method, self.path, model, resp.status_code, usage, time.monotonic() - t0, None, hold)
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
