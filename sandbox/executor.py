"""``run()``: execute a command or Python code under a backend, with limits, and report what happened.

One run = one workdir (the only writable place), stdout/stderr streamed through the host into
bounded log files outside the workdir, a host-side monitor enforcing the wall clock, total CPU and
disk limits, and cgroups (or rlimits) for memory and processes. The monitor never trusts anything
the program can write: limits live in the host process, logs in files the program cannot reach.

Everything here runs on the host: ``workdir`` handles the files going in and coming out, ``monitor``
watches the running program, ``_launcher`` sits between the host and the sandbox (limits, then the
backend's argv), and ``client_helper`` is the only code of this package that runs inside.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sandbox.backends.bubblewrap import JOB_DIR, LIB_DIR, SOCKET_PATH, BubblewrapBackend
from sandbox.backends.process import ProcessBackend
from sandbox.cgroups import RunCgroup
from sandbox.monitor import Monitor, OutputLog
from sandbox.types import Limits, ProxyConfig, ProxyUsage, Result, SandboxError
from sandbox.workdir import chown_tree, hit_file_limit, list_artifacts, make_run_dirs, write_files

if TYPE_CHECKING:
    from sandbox.proxy import MeteredProxy

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
    _check_request(code, command, network, proxy)
    be = _make_backend(backend_name, opts)
    env = dict(env or {})
    _check_env(env)
    workdir, log_dir = make_run_dirs(workdir, log_dir)
    _write_inputs(workdir, files, code)
    inside = backend_name == "bubblewrap"
    lib_in = _client_lib_dir(inside, log_dir)
    argv = _program_argv(code, command)
    proxy_server = _start_proxy(proxy, log_dir) if network == "proxy" else None  # type: ignore[arg-type]
    sock_path = proxy_server.socket_path if proxy_server is not None else None
    gpus = [int(g) for g in (gpus or [])]
    env_inside = _env_inside(opts, env, backend_name=backend_name, workdir=workdir, log_dir=log_dir,
                             lib_in=lib_in, sock_path=sock_path, gpus=gpus, gpu_uuids=gpu_uuids)
    drop = _drop_privileges(opts, workdir, log_dir, inside)
    plan = Plan(workdir=workdir, limits=limits, network=network, host_command=argv, sandbox_command=argv,
                uid=opts.uid, gid=opts.gid, drop_privileges=drop, proxy_socket=sock_path, gpus=gpus,
                ro_binds={str(k): str(v) for k, v in (ro_binds or {}).items()})
    prepared, cg, launch_cfg, isolation = _prepare_launch(be, plan, opts)
    ended = _launch_and_watch(prepared, launch_cfg, env_inside, limits=limits, cg=cg,
                              proxy_server=proxy_server, workdir=workdir, log_dir=log_dir,
                              cancel_event=cancel_event, on_start=on_start)
    return _result(ended, limits=limits, workdir=workdir, log_dir=log_dir, backend_name=backend_name,
                   isolation=isolation, has_cgroup=cg is not None)


# --- before the launch (host side) ----------------------------------------------------------------

def _check_request(code: str | None, command: Any, network: str, proxy: ProxyConfig | None) -> None:
    if (code is None) == (command is None):
        raise SandboxError("give exactly one of code= or command=")
    if network not in ("none", "proxy", "host"):
        raise SandboxError(f"network must be none, proxy or host, not {network!r}")
    if network == "proxy" and proxy is None:
        raise SandboxError("network='proxy' needs a ProxyConfig (the model endpoint and its budget)")


def _make_backend(name: str, opts: SandboxOptions) -> Any:
    if name == "bubblewrap":
        return BubblewrapBackend(opts.bwrap_path)
    if name == "process":
        return ProcessBackend()
    raise SandboxError(f"unknown sandbox backend {name!r}: use bubblewrap or process")


def _write_inputs(workdir: Path, files: Mapping[str, bytes | str] | None, code: str | None) -> None:
    """``files`` and, for ``code=``, the program itself as ``_main.py``."""
    files = dict(files or {})
    if code is not None:
        if CODE_FILE in files:
            raise SandboxError(f"{CODE_FILE} is reserved for code=")
        files[CODE_FILE] = code
    write_files(workdir, files)


def _client_lib_dir(inside: bool, log_dir: Path) -> str:
    """Where the program imports ``agentlab_client`` from: bound in by bubblewrap, else copied beside the logs."""
    if inside:
        return LIB_DIR
    lib_dir = log_dir / "lib"
    lib_dir.mkdir(exist_ok=True)
    shutil.copyfile(CLIENT_HELPER, lib_dir / "agentlab_client.py")
    return str(lib_dir)


def _program_argv(code: str | None, command: str | Sequence[str] | None) -> list[str]:
    if code is not None:
        argv = [sys.executable, "-u", CODE_FILE]
    elif isinstance(command, str):
        argv = shlex.split(command)
    else:
        argv = [str(c) for c in command]  # type: ignore[union-attr]
    if not argv:
        raise SandboxError("empty command")
    return argv


def _start_proxy(proxy: ProxyConfig, log_dir: Path) -> MeteredProxy:
    from sandbox.proxy import MeteredProxy

    server = MeteredProxy(proxy, log_dir / "model.sock", log_path=log_dir / "proxy_calls.jsonl")
    server.start()
    return server


def _env_inside(opts: SandboxOptions, env: dict[str, str], *, backend_name: str, workdir: Path, log_dir: Path,
                lib_in: str, sock_path: Path | None, gpus: list[int],
                gpu_uuids: Mapping[int, str] | None) -> dict[str, str]:
    """The program's whole environment: passthrough names, a fixed set, the GPUs, then ``env``."""
    inside = backend_name == "bubblewrap"
    wd_in = JOB_DIR if inside else str(workdir)
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
    full_env.update(_gpu_env(gpus, gpu_uuids))
    if "PYTHONPATH" in env:
        env = {**env, "PYTHONPATH": env["PYTHONPATH"] + ":" + lib_in}
    full_env.update(env)
    return full_env


def _gpu_env(gpus: list[int], gpu_uuids: Mapping[int, str] | None) -> dict[str, str]:
    """CUDA variables naming the assigned GPUs (by UUID where known); no GPU visible without any."""
    if not gpus:
        return {"CUDA_VISIBLE_DEVICES": ""}
    uuids = dict(gpu_uuids or {}) or _gpu_uuids(gpus)
    visible = ",".join(uuids[g] if g in uuids else str(g) for g in gpus)
    return {"CUDA_VISIBLE_DEVICES": visible, "NVIDIA_VISIBLE_DEVICES": visible,
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}


def _drop_privileges(opts: SandboxOptions, workdir: Path, log_dir: Path, inside: bool) -> bool:
    """As root (unless configured otherwise) the program runs as ``opts.uid``: give it its writable folders."""
    drop = os.geteuid() == 0 and opts.drop_privileges
    if drop:
        chown_tree(workdir, opts.uid, opts.gid)
        if not inside:
            chown_tree(log_dir / "tmp", opts.uid, opts.gid)
    return drop


def _file_size_cap(limits: Limits) -> int:
    return (limits.max_file_mb or limits.disk_mb) * 1024 * 1024


def _rlimits(limits: Limits, cg: RunCgroup | None, gpus: list[int]) -> list[tuple[str, int, int]]:
    """What the launcher sets with setrlimit; a cgroup, where there is one, limits processes and memory."""
    cpu_limit = limits.effective_cpu_s
    fsize = _file_size_cap(limits)
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
    return rl


def _prepare_launch(be: Any, plan: Plan, opts: SandboxOptions) -> tuple[Any, RunCgroup | None, dict, list[str]]:
    """The backend's argv, the run's cgroup (None where none is writable), the launcher's config and the
    list of isolation mechanisms."""
    prepared = be.prepare(plan)
    isolation = list(prepared.isolation)
    limits = plan.limits
    mem_bytes = limits.memory_mb * 1024 * 1024
    cg = None
    if opts.use_cgroups:
        cg = RunCgroup.create(f"run-{uuid.uuid4().hex[:12]}", mem_bytes, limits.max_procs)
    rl = _rlimits(limits, cg, plan.gpus)
    if cg is not None:
        isolation.append(f"cgroup-v{cg.version}:" + ",".join(cg.features))
    isolation.append("rlimits:" + ",".join(n[7:].lower() for n, _, _ in rl))
    # parent_pid: the launcher cannot trust its own first getppid(): the host may already be dead
    launch_cfg = {"parent_pid": os.getpid(), "cgroup_procs": cg.procs_files if cg else [], "rlimits": rl,
                  "new_session": True,
                  "drop_to": list(prepared.drop_to) if prepared.drop_to else None}
    return prepared, cg, launch_cfg, isolation


# --- the launch and after it (host side) ----------------------------------------------------------

@dataclass
class _Ended:
    """What the host knows once a run is over."""

    monitor: Monitor
    out: OutputLog
    err: OutputLog
    wall: float
    stdout_tail: str
    stderr_tail: str
    peak: int | None
    cpu_total: float | None
    oom: bool
    proxy_usage: ProxyUsage | None


def _launch_and_watch(prepared: Any, launch_cfg: dict, env: dict[str, str], *, limits: Limits,
                      cg: RunCgroup | None, proxy_server: MeteredProxy | None, workdir: Path, log_dir: Path,
                      cancel_event: threading.Event | None, on_start: Any) -> _Ended:
    """Start the launcher and watch the run to its end; the cgroup and the proxy go with it, even on errors."""
    log_cap = int(limits.max_log_mb * 1024 * 1024)
    out = OutputLog(log_dir / "stdout.log", log_cap, limits.tail_chars)
    err = OutputLog(log_dir / "stderr.log", log_cap, limits.tail_chars)
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", str(LAUNCHER), json.dumps(launch_cfg), "--", *prepared.argv],
            cwd=prepared.cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, close_fds=True,
        )
        if on_start:
            on_start(proc.pid)
        monitor = Monitor(proc, out, err, limits=limits, cgroup=cg, workdir=workdir, cancel_event=cancel_event,
                          start=start)
        monitor.watch()
    finally:
        wall = time.monotonic() - start
        stdout_tail, stderr_tail = out.close(), err.close()
        peak, cpu_total, oom = _release_cgroup(cg)
        usage = None
        if proxy_server is not None:
            proxy_server.stop()
            usage = proxy_server.usage
    return _Ended(monitor, out, err, wall, stdout_tail, stderr_tail, peak, cpu_total, oom, usage)


def _release_cgroup(cg: RunCgroup | None) -> tuple[int | None, float | None, bool]:
    """Kill what is left in the run's cgroup, read its peak memory, CPU time and OOM flag, remove it."""
    if cg is None:
        return None, None, False
    cg.kill_all()
    peak = cg.peak_bytes()
    cpu_total = cg.cpu_seconds()
    oom = cg.oom_killed()
    cg.destroy()
    return peak, cpu_total, oom


def _exit_status(status: int | None, inside: bool) -> tuple[int, int | None]:
    """Shell-style exit code and the signal that ended the program (137 when it was never reaped)."""
    if status is not None and os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return 128 + sig, sig
    if status is not None:
        exit_code = os.WEXITSTATUS(status)
        if inside and exit_code > 128:
            return exit_code, exit_code - 128  # bwrap reports a signalled child as 128+N
        return exit_code, None
    return 137, None


def _limit_behind_exit(*, exit_code: int, sig: int | None, cpu_s: float, oom: bool, stderr_tail: str,
                       limits: Limits, workdir: Path, has_cgroup: bool) -> str | None:
    """The limit that ended a run the monitor did not stop: the kernel's signals, a full disk, an OOM."""
    if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu_s >= limits.effective_cpu_s):
        return "cpu"
    fsize = _file_size_cap(limits)
    if sig == signal.SIGXFSZ or (exit_code != 0 and hit_file_limit(workdir, fsize, limits.disk_mb)):
        return "disk"
    if oom or (not has_cgroup and exit_code != 0 and ("MemoryError" in stderr_tail or sig == signal.SIGKILL)):
        return "memory"
    return None


def _limit_message(killed_by: str | None, limits: Limits) -> str | None:
    messages = {
        "wall_timeout": f"wall-clock timeout {limits.timeout_s:g} s",
        "cpu": f"CPU time limit {limits.effective_cpu_s:g} s",
        "memory": f"memory limit {limits.memory_mb} MB",
        "disk": f"disk limit {limits.disk_mb} MB (largest file {_file_size_cap(limits) // (1024 * 1024)} MB)",
        "cancelled": "cancelled",
    }
    return messages.get(killed_by) if killed_by else None


def _result(ended: _Ended, *, limits: Limits, workdir: Path, log_dir: Path, backend_name: str,
            isolation: list[str], has_cgroup: bool) -> Result:
    m = ended.monitor
    exit_code, sig = _exit_status(m.status, backend_name == "bubblewrap")
    rusage = m.rusage
    cpu_s = ended.cpu_total
    if cpu_s is None:
        cpu_s = rusage.ru_utime + rusage.ru_stime if rusage else 0.0
    peak = ended.peak
    if peak is None and rusage is not None:
        peak = rusage.ru_maxrss * 1024
    killed_by = m.killed_by
    if killed_by is None:
        killed_by = _limit_behind_exit(exit_code=exit_code, sig=sig, cpu_s=cpu_s, oom=ended.oom,
                                       stderr_tail=ended.stderr_tail, limits=limits, workdir=workdir,
                                       has_cgroup=has_cgroup)
    return Result(
        exit_code=exit_code, signal=sig, stdout_tail=ended.stdout_tail, stderr_tail=ended.stderr_tail,
        stdout_path=log_dir / "stdout.log", stderr_path=log_dir / "stderr.log",
        stdout_truncated=ended.out.truncated, stderr_truncated=ended.err.truncated,
        workdir=workdir, artifacts_dir=workdir, artifacts=list_artifacts(workdir),
        wall_s=round(ended.wall, 4), cpu_s=round(cpu_s, 4),
        peak_rss_mb=round(peak / (1024 * 1024), 2) if peak else None,
        timed_out=killed_by in ("wall_timeout", "cpu"), killed_by=killed_by,
        limit_message=_limit_message(killed_by, limits),
        backend=backend_name, isolation=isolation, proxy_usage=ended.proxy_usage,
    )
