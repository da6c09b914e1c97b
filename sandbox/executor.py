"""``run()``: execute a command or Python code under a backend, with limits, and report what happened.

One run = one workdir (the only writable place), stdout/stderr streamed through the host into
bounded log files outside the workdir, a host-side monitor enforcing the wall clock, total CPU and
disk limits, and cgroups (or rlimits) for memory and processes. The monitor never trusts anything
the program can write: limits live in the host process, logs in files the program cannot reach.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import re
import selectors
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox.backends.bubblewrap import JOB_DIR, LIB_DIR, SOCKET_PATH, BubblewrapBackend
from sandbox.backends.process import ProcessBackend
from sandbox.cgroups import RunCgroup
from sandbox.types import Limits, ProxyConfig, Result, SandboxError

log = logging.getLogger("sandbox")

HERE = Path(__file__).resolve().parent
LAUNCHER = HERE / "_launcher.py"
CLIENT_HELPER = HERE / "client_helper.py"
CODE_FILE = "_main.py"
RESULT_FILE = "result.json"

# names of variables that must never be handed to untrusted code
SECRET_NAME = re.compile(r"(API_?KEY|SECRET|PASSW|TOKEN(?!S)|CREDENTIAL|PRIVATE_?KEY|AUTH|COOKIE|SESSION)", re.IGNORECASE)
DEFAULT_PASSTHROUGH = ("LANG", "LC_ALL", "LC_CTYPE", "TZ", "TERM")


@dataclass
class SandboxOptions:
    """Host-side settings of the sandbox; agentlab builds them from its config section ``sandbox``."""

    backend: str = "bubblewrap"
    bwrap_path: str | None = None
    uid: int = 65534
    gid: int = 65534
    drop_privileges: bool = True
    env_passthrough: Sequence[str] = DEFAULT_PASSTHROUGH
    use_cgroups: bool = True


@dataclass
class Plan:
    workdir: Path
    limits: Limits
    network: str
    host_command: list[str]
    sandbox_command: list[str]
    uid: int
    gid: int
    drop_privileges: bool
    client_helper: Path = CLIENT_HELPER
    proxy_socket: Path | None = None
    gpus: list[int] = field(default_factory=list)
    ro_binds: dict[str, str] = field(default_factory=dict)

    @property
    def gpu_indices(self) -> list[int]:
        return self.gpus


def _gpu_uuids(indices: Sequence[int]) -> dict[int, str]:
    """Host index -> UUID from nvidia-smi (empty without it): UUIDs survive device renumbering."""
    smi = shutil.which("nvidia-smi")
    if not smi or not indices:
        return {}
    try:
        out = subprocess.run([smi, "--query-gpu=index,uuid", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    found = {}
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0].isdigit():
            found[int(parts[0])] = parts[1]
    return {i: found[i] for i in indices if i in found}


def _check_env(env: Mapping[str, str]) -> None:
    for name in env:
        if SECRET_NAME.search(name):
            raise SandboxError(
                f"refusing to pass environment variable {name!r} into the sandbox: it looks like a secret "
                "(sandboxed code reaches models only through the metered proxy, which adds credentials on the host)"
            )


def _write_files(workdir: Path, files: Mapping[str, bytes | str]) -> None:
    root = workdir.resolve()
    for name, data in files.items():
        rel = Path(name)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise SandboxError(f"file name {name!r} must be a relative path inside the workdir")
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            data = data.encode()
        dest.write_bytes(data)


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    os.lchown(root, uid, gid)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for n in dirnames + filenames:
            os.lchown(os.path.join(dirpath, n), uid, gid)


def _disk_usage(root: Path, cap: int) -> int:
    """Bytes allocated under root (never following links); stops counting once past cap."""
    total = 0
    stack = [str(root)]
    while stack:
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                for e in it:
                    try:
                        st = e.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    total += max(st.st_blocks * 512, st.st_size if stat.S_ISREG(st.st_mode) else 0)
                    if stat.S_ISDIR(st.st_mode):
                        stack.append(e.path)
                    if total > cap:
                        return total
        except OSError:
            continue
    return total


def _hit_file_limit(workdir: Path, fsize: int, disk_mb: int) -> bool:
    """A file at the RLIMIT_FSIZE cap, or the workdir over its quota (Python ignores SIGXFSZ: EFBIG)."""
    cap = disk_mb * 1024 * 1024
    if _disk_usage(workdir, cap) > cap:
        return True
    for dirpath, _, filenames in os.walk(workdir, followlinks=False):
        for n in filenames:
            try:
                st = os.lstat(os.path.join(dirpath, n))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and st.st_size >= fsize:
                return True
    return False


def list_artifacts(workdir: Path, limit: int = 10_000) -> list[str]:
    """Regular files under workdir, relative; symbolic links are never followed nor listed."""
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(workdir, followlinks=False):
        for n in filenames:
            p = os.path.join(dirpath, n)
            try:
                if stat.S_ISREG(os.lstat(p).st_mode):
                    out.append(os.path.relpath(p, workdir))
            except OSError:
                continue
            if len(out) >= limit:
                return sorted(out)
    return sorted(out)


def read_workdir_file(workdir: Path, name: str, max_bytes: int = 10 * 1024 * 1024) -> bytes | None:
    """Read a file the program left in its workdir without following links (None if absent/unsafe)."""
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts:
        return None
    dirfd = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        fd = dirfd
        for part in rel.parts[:-1]:
            nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            if fd != dirfd:
                os.close(fd)
            fd = nfd
        try:
            f = os.open(rel.parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
        except OSError:
            return None
        finally:
            if fd != dirfd:
                os.close(fd)
        try:
            if not stat.S_ISREG(os.fstat(f).st_mode):
                return None
            with os.fdopen(f, "rb", closefd=False) as fh:
                return fh.read(max_bytes + 1)[: max_bytes + 1]
        finally:
            os.close(f)
    finally:
        os.close(dirfd)


class _Stream:
    """One output stream: written to its log up to a cap, last ``tail`` characters kept in memory."""

    def __init__(self, path: Path, cap: int, tail: int) -> None:
        self.fh = path.open("wb")
        self.cap = cap
        self.written = 0
        self.truncated = False
        self.tail = collections.deque(maxlen=max(tail, 1) * 4)
        self.tail_chars = tail

    def feed(self, data: bytes) -> None:
        room = self.cap - self.written
        if room > 0:
            chunk = data[:room]
            self.fh.write(chunk)
            self.fh.flush()
            self.written += len(chunk)
        if len(data) > max(room, 0):
            self.truncated = True
        self.tail.extend(data[-self.tail.maxlen:])

    def close(self) -> str:
        if self.truncated:
            self.fh.write(b"\n[sandbox: output truncated at the log size limit]\n")
        self.fh.close()
        text = bytes(self.tail).decode("utf-8", "replace")
        return text[-self.tail_chars:] if self.tail_chars else ""


def run(
    code: str | None = None,
    command: str | Sequence[str] | None = None,
    *,
    files: Mapping[str, bytes | str] | None = None,
    limits: Limits | None = None,
    network: str = "none",
    env: Mapping[str, str] | None = None,
    gpus: Sequence[int] | None = None,
    gpu_uuids: Mapping[int, str] | None = None,
    workdir: str | Path | None = None,
    log_dir: str | Path | None = None,
    proxy: ProxyConfig | None = None,
    ro_binds: Mapping[str, str] | None = None,
    backend: str | None = None,
    options: SandboxOptions | None = None,
    cancel_event: threading.Event | None = None,
    on_start: Any = None,
) -> Result:
    """Run ``command`` (argv list or shell-like string) or Python ``code`` in a sandbox.

    ``files`` are written into the workdir first. ``network``: ``none`` (default, no network at all),
    ``proxy`` (no network, but the metered model proxy's socket at ``$AGENTLAB_MODEL_SOCKET``; needs
    ``proxy``), ``host`` (the host network: trusted code only). ``gpus`` are host GPU indices; only
    their device nodes are visible and ``CUDA_VISIBLE_DEVICES`` names them. ``ro_binds`` maps host
    paths to read-only paths inside (for example a data folder). ``cancel_event`` stops the run.
    ``options`` default to ``SandboxOptions()``.
    """
    opts = options or SandboxOptions()
    limits = limits or Limits()
    backend_name = backend or opts.backend
    if (code is None) == (command is None):
        raise SandboxError("give exactly one of code= or command=")
    if network not in ("none", "proxy", "host"):
        raise SandboxError(f"network must be none, proxy or host, not {network!r}")
    if network == "proxy" and proxy is None:
        raise SandboxError("network='proxy' needs a ProxyConfig (the model endpoint and its budget)")
    if backend_name == "bubblewrap":
        be: Any = BubblewrapBackend(opts.bwrap_path)
    elif backend_name == "process":
        be = ProcessBackend()
    else:
        raise SandboxError(f"unknown sandbox backend {backend_name!r}: use bubblewrap or process")
    env = dict(env or {})
    _check_env(env)

    # --- workdir and logs ---------------------------------------------------------------------
    if workdir is None:
        base = Path(tempfile.mkdtemp(prefix="agentlab-sandbox-"))
        workdir = base / "work"
        log_dir = Path(log_dir) if log_dir else base
    else:
        workdir = Path(workdir)
        log_dir = Path(log_dir) if log_dir else workdir.with_name(workdir.name + ".logs")
    workdir = workdir.absolute()
    log_dir = log_dir.absolute()
    if log_dir == workdir or workdir in log_dir.parents:
        raise SandboxError("log_dir must be outside the workdir (the program could rewrite its own logs)")
    workdir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    files = dict(files or {})
    if code is not None:
        if CODE_FILE in files:
            raise SandboxError(f"{CODE_FILE} is reserved for code=")
        files[CODE_FILE] = code
    _write_files(workdir, files)

    inside = backend_name == "bubblewrap"
    wd_in = JOB_DIR if inside else str(workdir)
    lib_in = LIB_DIR
    if not inside:
        lib_dir = log_dir / "lib"
        lib_dir.mkdir(exist_ok=True)
        shutil.copyfile(CLIENT_HELPER, lib_dir / "agentlab_client.py")
        lib_in = str(lib_dir)
    if code is not None:
        argv = [sys.executable, "-u", CODE_FILE]
    elif isinstance(command, str):
        argv = shlex.split(command)
    else:
        argv = [str(c) for c in command]  # type: ignore[union-attr]
    if not argv:
        raise SandboxError("empty command")

    # --- proxy ------------------------------------------------------------------------------------
    proxy_server = None
    sock_path: Path | None = None
    if network == "proxy":
        from sandbox.proxy import MeteredProxy

        sock_path = log_dir / "model.sock"
        proxy_server = MeteredProxy(proxy, sock_path, log_path=log_dir / "proxy_calls.jsonl")  # type: ignore[arg-type]
        proxy_server.start()

    # --- environment ------------------------------------------------------------------------------
    venv_bin = str(Path(sys.executable).parent)
    full_env = {k: os.environ[k] for k in opts.env_passthrough if k in os.environ and not SECRET_NAME.search(k)}
    full_env.update({
        "PATH": f"{venv_bin}:/usr/local/bin:/usr/bin:/bin",
        "HOME": "/tmp" if inside else str(workdir),
        "TMPDIR": "/tmp" if inside else str(log_dir / "tmp"),
        "LANG": full_env.get("LANG", "C.UTF-8"),
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONPATH": lib_in,
        "AGENTLAB_SANDBOX": backend_name,
        "AGENTLAB_WORKDIR": wd_in,
        "AGENTLAB_RESULT": f"{wd_in}/{RESULT_FILE}",
        "MPLBACKEND": "Agg",
    })
    if not inside:
        (log_dir / "tmp").mkdir(exist_ok=True)
    if sock_path is not None:
        full_env["AGENTLAB_MODEL_SOCKET"] = SOCKET_PATH if inside else str(sock_path)
    gpus = [int(g) for g in (gpus or [])]
    if gpus:
        uuids = dict(gpu_uuids or {}) or _gpu_uuids(gpus)
        visible = ",".join(uuids[g] if g in uuids else str(g) for g in gpus)
        full_env["CUDA_VISIBLE_DEVICES"] = visible
        full_env["NVIDIA_VISIBLE_DEVICES"] = visible
        full_env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    else:
        full_env["CUDA_VISIBLE_DEVICES"] = ""
    if "PYTHONPATH" in env:
        env["PYTHONPATH"] = env["PYTHONPATH"] + ":" + lib_in
    full_env.update(env)

    # --- privileges, cgroups, rlimits -------------------------------------------------------------
    root = os.geteuid() == 0
    drop = root and opts.drop_privileges
    if drop:
        _chown_tree(workdir, opts.uid, opts.gid)
        if not inside:
            _chown_tree(log_dir / "tmp", opts.uid, opts.gid)
    plan = Plan(workdir=workdir, limits=limits, network=network, host_command=argv, sandbox_command=argv,
                uid=opts.uid, gid=opts.gid, drop_privileges=drop, proxy_socket=sock_path, gpus=gpus,
                ro_binds={str(k): str(v) for k, v in (ro_binds or {}).items()})
    prepared = be.prepare(plan)
    isolation = list(prepared.isolation)

    mem_bytes = limits.memory_mb * 1024 * 1024
    cg = RunCgroup.create(f"run-{uuid.uuid4().hex[:12]}", mem_bytes, limits.max_procs) if opts.use_cgroups else None
    cpu_limit = limits.effective_cpu_s
    fsize = (limits.max_file_mb or limits.disk_mb) * 1024 * 1024
    rl: list[tuple[str, int, int]] = [
        ("RLIMIT_CORE", 0, 0),
        ("RLIMIT_CPU", int(cpu_limit) + 1, int(cpu_limit) + 2),
        ("RLIMIT_FSIZE", fsize, fsize),
        ("RLIMIT_NOFILE", limits.max_open_files, limits.max_open_files),
    ]
    if cg is None or "pids" not in cg.features:
        rl.append(("RLIMIT_NPROC", limits.max_procs, limits.max_procs))
    as_limit = limits.address_space_mb or (None if cg is not None else limits.memory_mb)
    if as_limit and not gpus:
        rl.append(("RLIMIT_AS", as_limit * 1024 * 1024, as_limit * 1024 * 1024))
    if cg is not None:
        isolation.append(f"cgroup-v{cg.version}:" + ",".join(cg.features))
    isolation.append("rlimits:" + ",".join(n[7:].lower() for n, _, _ in rl))
    # parent_pid: the launcher cannot trust its own first getppid(): the host may already be dead
    launch_cfg = {"parent_pid": os.getpid(), "cgroup_procs": cg.procs_files if cg else [], "rlimits": rl,
                  "new_session": True,
                  "drop_to": list(prepared.drop_to) if prepared.drop_to else None}

    out = _Stream(log_dir / "stdout.log", int(limits.max_log_mb * 1024 * 1024), limits.tail_chars)
    err = _Stream(log_dir / "stderr.log", int(limits.max_log_mb * 1024 * 1024), limits.tail_chars)
    killed_by: str | None = None
    start = time.monotonic()
    status = None
    rusage = None
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", str(LAUNCHER), json.dumps(launch_cfg), "--", *prepared.argv],
            cwd=prepared.cwd, env=full_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, close_fds=True,
        )
        if on_start:
            on_start(proc.pid)

        def kill_tree() -> None:
            for fn in (lambda: os.killpg(proc.pid, signal.SIGKILL), lambda: os.kill(proc.pid, signal.SIGKILL)):
                try:
                    fn()
                except (ProcessLookupError, PermissionError):
                    pass
            if cg is not None:
                cg.kill_all()

        sel = selectors.DefaultSelector()
        streams = {proc.stdout.fileno(): out, proc.stderr.fileno(): err}  # type: ignore[union-attr]
        for fd in streams:
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ)
        deadline = start + limits.timeout_s
        next_check = 0.0
        disk_cap = limits.disk_mb * 1024 * 1024
        drain_until: float | None = None
        while True:
            for key, _ in sel.select(timeout=0.05):
                try:
                    data = os.read(key.fd, 65536)
                except BlockingIOError:
                    continue
                if data:
                    streams[key.fd].feed(data)
                else:
                    sel.unregister(key.fd)
            now = time.monotonic()
            if status is None:
                pid, st, ru = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    status, rusage = st, ru
                    proc.returncode = 0  # reaped here; keep Popen from waiting again
                    # whatever is left of the tree (process backend daemons) goes with the run
                    kill_tree()
                    drain_until = now + 2.0
            if status is not None and (not sel.get_map() or now > (drain_until or now)):
                break
            if status is not None:
                continue
            if killed_by is None:
                if now >= deadline:
                    killed_by = "wall_timeout"
                elif cancel_event is not None and cancel_event.is_set():
                    killed_by = "cancelled"
                elif now >= next_check:
                    cpu = cg.cpu_seconds() if cg is not None else None
                    used = _disk_usage(workdir, disk_cap)
                    # the disk limit is polled: look 5x as often past half of it, so that a fast
                    # writer overshoots by ~50 ms of writing, not 250 ms
                    next_check = now + (0.05 if used > disk_cap // 2 else 0.25)
                    if cpu is not None and cpu > cpu_limit:
                        killed_by = "cpu"
                    elif used > disk_cap:
                        killed_by = "disk"
                if killed_by is not None:
                    kill_tree()
        sel.close()
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
    finally:
        wall = time.monotonic() - start
        stdout_tail, stderr_tail = out.close(), err.close()
        peak = cpu_total = None
        oom = False
        if cg is not None:
            cg.kill_all()
            peak = cg.peak_bytes()
            cpu_total = cg.cpu_seconds()
            oom = cg.oom_killed()
            cg.destroy()
        usage = None
        if proxy_server is not None:
            proxy_server.stop()
            usage = proxy_server.usage

    sig = None
    if status is not None and os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        exit_code = 128 + sig
    elif status is not None:
        exit_code = os.WEXITSTATUS(status)
        if inside and exit_code > 128:
            sig = exit_code - 128  # bwrap reports a signalled child as 128+N
    else:
        exit_code = 137
    cpu_s = cpu_total if cpu_total is not None else (rusage.ru_utime + rusage.ru_stime if rusage else 0.0)
    if peak is None and rusage is not None:
        peak = rusage.ru_maxrss * 1024
    if killed_by is None:
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu_s >= cpu_limit):
            killed_by = "cpu"
        elif sig == signal.SIGXFSZ or (exit_code != 0 and _hit_file_limit(workdir, fsize, limits.disk_mb)):
            killed_by = "disk"
        elif oom or cg is None and exit_code != 0 and ("MemoryError" in stderr_tail or sig == signal.SIGKILL):
            killed_by = "memory"
    messages = {
        "wall_timeout": f"wall-clock timeout {limits.timeout_s:g} s",
        "cpu": f"CPU time limit {cpu_limit:g} s",
        "memory": f"memory limit {limits.memory_mb} MB",
        "disk": f"disk limit {limits.disk_mb} MB (largest file {fsize // (1024 * 1024)} MB)",
        "cancelled": "cancelled",
    }
    return Result(
        exit_code=exit_code, signal=sig, stdout_tail=stdout_tail, stderr_tail=stderr_tail,
        stdout_path=log_dir / "stdout.log", stderr_path=log_dir / "stderr.log",
        stdout_truncated=out.truncated, stderr_truncated=err.truncated,
        workdir=workdir, artifacts_dir=workdir, artifacts=list_artifacts(workdir),
        wall_s=round(wall, 4), cpu_s=round(cpu_s, 4),
        peak_rss_mb=round(peak / (1024 * 1024), 2) if peak else None,
        timed_out=killed_by in ("wall_timeout", "cpu"), killed_by=killed_by,
        limit_message=messages.get(killed_by) if killed_by else None,
        backend=backend_name, isolation=isolation, proxy_usage=usage,
    )
