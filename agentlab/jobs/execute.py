"""Run one job in the sandbox and turn the sandbox Result into the job's outcome (shared by all backends)."""

from __future__ import annotations

import importlib.util
import json
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import sandbox
from agentlab.jobs.sandbox_entry import CALL_FILE
from agentlab.jobs.spec import JobSpec
from sandbox import Limits, SandboxOptions

if TYPE_CHECKING:
    from agentlab.config import SandboxConfig

PY_DIR = "/opt/agentlab/py"
COLLECT_MAX_BYTES = 256 * 1024 * 1024
CODE_PACKAGES = ("agentlab", "sandbox")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def sandbox_options_for(config: SandboxConfig) -> SandboxOptions:
    """The host-side sandbox options for agentlab's ``sandbox`` config section."""
    return SandboxOptions(backend=config.backend, bwrap_path=config.bwrap_path, uid=config.uid, gid=config.gid,
                          drop_privileges=config.drop_privileges, env_passthrough=tuple(config.env_passthrough),
                          use_cgroups=config.use_cgroups)


def _package_dir(top: str) -> Path:
    spec = importlib.util.find_spec(top)
    if spec is None:
        raise sandbox.SandboxError(f"job target package {top!r} is not importable on this host")
    if spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return Path(spec.origin)  # type: ignore[arg-type]


def _entry(spec: JobSpec, backend: str) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    """run() keyword arguments for the entry, extra ro binds and env."""
    if spec.command:
        return {"command": spec.command}, {}, {}
    if spec.code is not None:
        return {"code": spec.code}, {}, {}
    top = spec.target.split(":")[0].split(".")[0]  # type: ignore[union-attr]
    binds: dict[str, str] = {}
    host_dirs: list[str] = []
    for pkg in dict.fromkeys((*CODE_PACKAGES, top)):
        d = _package_dir(pkg)
        binds[str(d)] = f"{PY_DIR}/{d.name}"
        host_dirs.append(str(d.parent))
    pythonpath = PY_DIR if backend == "bubblewrap" else ":".join(dict.fromkeys(host_dirs))
    return {"command": ["python", "-m", "agentlab.jobs.sandbox_entry"]}, binds, {"PYTHONPATH": pythonpath}


def limits_for(spec: JobSpec) -> Limits:
    r = spec.resources
    return Limits(timeout_s=r.timeout_s, cpu_s=r.cpu_s or r.timeout_s * max(r.cpus, 1) * 4,
                  memory_mb=r.memory_mb, disk_mb=r.disk_mb, max_procs=r.max_procs)


def call_file(spec: JobSpec) -> str:
    """The ``job_call.json`` of a ``target`` job."""
    return json.dumps({"target": spec.target, "args": spec.args})


def launch(spec: JobSpec, job_id: str, workdir: Path, log_dir: Path, gpus: list[int], options: SandboxOptions, *,
           files: dict[str, str], gpu_uuids: dict[int, str] | None = None,
           cancel_event: threading.Event | None = None, api_key: str | None = None,
           argv: list[str] | None = None, extra_timeout_s: float = 0.0) -> sandbox.Result:
    """Run ``spec``'s entry (or ``argv``: a warm sandbox's) in the sandbox with ``files`` in its workdir; its
    limits are the spec's (the wall clock ``extra_timeout_s`` longer). Raises SandboxError."""
    kw, binds, env = _entry(spec, options.backend)
    if argv is not None:
        kw = {"command": argv}
    proxy = spec.proxy
    if proxy is not None:
        proxy = proxy.model_copy(update={"job_id": job_id, "api_key": proxy.api_key or api_key})
    env = {**spec.env, **env, "AGENTLAB_JOB_ID": job_id}
    limits = limits_for(spec)
    if extra_timeout_s:
        limits = limits.model_copy(update={"timeout_s": limits.timeout_s + extra_timeout_s})
    return sandbox.run(**kw, files=files, limits=limits, network=spec.network, env=env, gpus=gpus,
                       gpu_uuids=gpu_uuids, workdir=workdir, log_dir=log_dir, proxy=proxy,
                       ro_binds={**spec.ro_binds, **binds}, options=options, cancel_event=cancel_event)


def execute_job(spec: JobSpec, job_id: str, workdir: Path, log_dir: Path, gpus: list[int],
                options: SandboxOptions, gpu_uuids: dict[int, str] | None = None,
                cancel_event: threading.Event | None = None, api_key: str | None = None,
                extra_files: dict[str, str] | None = None, collect: tuple[str, ...] = (),
                missing_hint: str = "") -> dict[str, Any]:
    """Run the job; return the fields the store records (state, exit_code, killed_by, error, result, ...).

    ``extra_files`` are written into the workdir too (inputs the host prepares at start, kept out of the
    stored spec); the text of the workdir files named in ``collect`` comes back under ``"collected"``
    (whatever the job's end), read without following links. A job that binds host paths this machine
    lacks fails at once, naming them (``missing_hint``: what to do about it)."""
    missing = [src for src in spec.ro_binds if not Path(src).exists()]
    if missing:
        return {"state": "failed", "error": f"the job reads host paths that are not on this machine: "
                                            f"{', '.join(missing[:3])}" + (f"; {missing_hint}" if missing_hint else "")}
    try:
        files = {**spec.files, **(extra_files or {})}
        if spec.target:
            files[CALL_FILE] = call_file(spec)
        res = launch(spec, job_id, workdir, log_dir, gpus, options, files=files, gpu_uuids=gpu_uuids,
                     cancel_event=cancel_event, api_key=api_key)
    except sandbox.SandboxError as exc:
        return {"state": "failed", "error": str(exc)}
    return outcome(res, collect)


def out_of_reach(spec: JobSpec, here: str, submitted_from: str) -> str | None:
    """Why a job on the machine at address ``here`` cannot reach the model it evaluates, served on the
    loopback of the machine that submitted it (``submitted_from``), or None."""
    upstream = spec.proxy.upstream if spec.proxy is not None else ""
    if urlparse(upstream).hostname not in LOOPBACK or not submitted_from or here == submitted_from:
        return None
    return (f"the job's model is served at {upstream}, on the machine that submitted it ({submitted_from}) only, "
            f"but the job runs on Ray node {here}: serve it on an address every node reaches "
            "(model_under_study.url), or run the jobs on one machine (jobs.backend = \"local\")")


def killed_from_outside(out: dict[str, Any]) -> bool:
    """The job's program died of a SIGKILL none of its limits sent: the OOM killer, or its machine going away."""
    return out.get("state") == "failed" and out.get("killed_by") is None and out.get("exit_code") in (137, -9)


def outcome(res: sandbox.Result, collect: tuple[str, ...] = (), timed_out_s: float | None = None) -> dict[str, Any]:
    """The job's outcome from the sandbox's result (``timed_out_s``: the run was cancelled because the job
    passed this wall clock, as a warm sandbox's job is)."""
    result, note = None, None
    raw = sandbox.read_workdir_file(res.workdir, "result.json")
    if raw is not None:
        try:
            result = json.loads(raw)
        except ValueError:
            note = "result.json is not valid JSON (ignored)"
    out: dict[str, Any] = {"exit_code": res.exit_code, "killed_by": res.killed_by, "result": result,
                           "wall_s": res.wall_s, "cpu_s": res.cpu_s, "peak_rss_mb": res.peak_rss_mb}
    if collect:
        out["collected"] = {}
        for name in collect:
            data = sandbox.read_workdir_file(res.workdir, name, max_bytes=COLLECT_MAX_BYTES)
            if data is not None and len(data) <= COLLECT_MAX_BYTES:
                out["collected"][name] = data.decode("utf-8", "replace")
    if res.killed_by == "cancelled" and timed_out_s is not None:
        out.update(state="timed_out", killed_by="wall_timeout",
                   error=f"exceeded the wall-clock timeout {timed_out_s:g} s; partial logs kept")
    elif res.killed_by == "cancelled":
        out.update(state="cancelled", error="cancelled while running")
    elif res.killed_by in ("wall_timeout", "cpu"):
        out.update(state="timed_out", error=f"exceeded the {res.limit_message}; partial logs kept")
    elif res.killed_by is not None:
        out.update(state="failed", error=f"exceeded the {res.limit_message}; partial logs kept")
    elif res.exit_code != 0:
        last = next((ln for ln in reversed(res.stderr_tail.splitlines()) if ln.strip()), "")
        out.update(state="failed", error=f"exit code {res.exit_code}" + (f": {last[:300]}" if last else ""))
    else:
        out.update(state="succeeded", error=note)
    return out
