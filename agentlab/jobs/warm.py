"""Warm sandboxes: the next evaluation job's sandbox, started before the job exists.

An evaluation job spends most of its start in Python's imports (pydantic, httpx, asyncio, the harness) and
in the sandbox's own start, before it sends its first model request. After it starts a job of a kind that
comes back (an ``eval`` job with a ``target`` and no GPU), ``LocalScheduler`` (``warm_start=True``) starts
one more sandbox of that kind, exactly as the next such job would get it (same bubblewrap isolation, limits,
read-only binds, environment, metered proxy and budget), under a job id chosen beforehand. Inside,
``agentlab.jobs.sandbox_entry --warm`` imports the target's module, calls its ``warm(hint)`` and waits on a
FIFO. The next matching ``submit()`` takes that id; when the job starts, the host writes its inputs
(``job_call.json``, its files, the shared-cache seed) into the waiting sandbox's workdir and signals: the job
runs at once, with everything imported. Unused, a warm sandbox exits after ``idle_s`` and leaves nothing.

The job's wall clock limit still counts from its own start (a timer cancels it, recorded as ``timed_out``);
its recorded wall time leaves out the wait. The host writes into the live workdir as it writes before a cold
start, but without following any link the sandbox could have put there (new names, O_EXCL|O_NOFOLLOW, then
a rename inside the directory); the FIFO is opened O_NOFOLLOW|O_NONBLOCK and written only if it is a FIFO.
A warm sandbox that exits unused just as its job starts is caught (exit status 75: it never read the call):
the job then starts cold.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sandbox
from agentlab.jobs.execute import call_file, launch, outcome
from agentlab.jobs.sandbox_entry import CALL_FILE, WARM_FIFO, WARM_HINT, WARM_IDLE_EXIT, WARM_READY
from agentlab.jobs.spec import JobSpec
from sandbox import SandboxOptions

log = logging.getLogger("agentlab.jobs")

DEFAULT_IDLE_S = 300.0


def warm_key(spec: JobSpec, api_key: str | None) -> str | None:
    """What must be equal for a job to take a warm sandbox (None: this job never runs warm)."""
    if spec.kind != "eval" or not spec.target or spec.resources.gpus:
        return None
    if any("/" in name or name.startswith(".") or name == CALL_FILE for name in spec.files):
        return None  # only plain file names are written into a live workdir
    d = spec.model_dump(mode="json", include={"kind", "target", "env", "network", "proxy", "ro_binds", "resources"})
    if d.get("proxy"):
        d["proxy"].pop("job_id", None)
        d["proxy"]["api_key"] = (spec.proxy.api_key if spec.proxy else None) or api_key
    return json.dumps(d, sort_keys=True)


def _hint(spec: JobSpec) -> dict[str, str]:
    """``.agentlab_warm.json`` from the target module's ``warm_hint(args)``, when it has one."""
    import importlib

    module = spec.target.partition(":")[0]  # type: ignore[union-attr]
    try:
        fn = getattr(importlib.import_module(module), "warm_hint", None)
        return {WARM_HINT: json.dumps(fn(spec.args))} if callable(fn) else {}
    except Exception:  # a hint is an optimisation: never a reason not to warm up
        log.debug("no warm hint for %s", module, exc_info=True)
        return {}


def _write_into(workdir: Path, files: dict[str, str]) -> None:
    """Write ``files`` (plain names) into a workdir a running sandbox can write too, following no link."""
    dfd = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for name, text in files.items():
            tmp = f".agentlab-in-{uuid.uuid4().hex}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=dfd)
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
            os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    finally:
        os.close(dfd)


def _signal(workdir: Path) -> None:
    """Wake the waiting entry: one byte into its FIFO (nothing when it is gone or not a FIFO any more)."""
    dfd = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        fd = os.open(WARM_FIFO, os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW, dir_fd=dfd)
    except OSError:  # ENXIO: nobody reads it (the entry is not there yet: it looks for the call itself)
        return
    finally:
        os.close(dfd)
    try:
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            os.write(fd, b"g")
    except OSError:
        pass
    finally:
        os.close(fd)


class WarmRunner:
    """One waiting sandbox for jobs like ``template``, under the id ``job_id`` (the job that takes it gets it)."""

    def __init__(self, template: JobSpec, key: str, job_id: str, jobs_dir: Path, options: SandboxOptions,
                 api_key: str | None, idle_s: float, on_unused: Callable[[WarmRunner], None]) -> None:
        self.template, self.key, self.job_id = template, key, job_id
        self.log_dir = Path(jobs_dir) / job_id
        self.workdir = self.log_dir / "work"
        self.options, self.api_key, self.idle_s, self.on_unused = options, api_key, idle_s, on_unused
        self.cancel = threading.Event()  # the job's cancel event once it is taken
        self.timed_out = False
        self._lock = threading.Lock()
        self._taken = False
        self._ended = False
        self._res: sandbox.Result | None = None
        self._err: str | None = None
        self._started = 0.0
        self._adopted = 0.0
        self._timer: threading.Timer | None = None
        self.thread = threading.Thread(target=self._run, name=f"warm-{job_id}", daemon=True)

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        os.mkfifo(self.workdir / WARM_FIFO, 0o600)  # the sandbox's uid owns the workdir tree from its start
        self._started = time.monotonic()
        self.thread.start()

    def ready(self) -> bool:
        """The entry has imported everything and waits for its job."""
        return os.path.lexists(self.workdir / WARM_READY)

    @property
    def alive(self) -> bool:
        return not self._ended

    def _run(self) -> None:
        module = self.template.target.partition(":")[0]  # type: ignore[union-attr]
        argv = ["python", "-m", "agentlab.jobs.sandbox_entry", "--warm", module, f"{self.idle_s:g}"]
        try:
            self._res = launch(self.template, self.job_id, self.workdir, self.log_dir, [], self.options,
                               files=_hint(self.template), cancel_event=self.cancel, api_key=self.api_key,
                               argv=argv, extra_timeout_s=self.idle_s)
        except sandbox.SandboxError as exc:
            self._err = str(exc)
        except Exception as exc:  # never leave a taken job without an outcome
            log.exception("warm sandbox %s crashed", self.job_id)
            self._err = f"internal error: {exc!r}"
        with self._lock:
            self._ended = True
            taken = self._taken
        if not taken:
            self.on_unused(self)

    def adopt(self, spec: JobSpec, files: dict[str, str]) -> bool:
        """Hand the waiting sandbox its job (``spec``'s call, its files and ``files``); False when it is gone."""
        with self._lock:
            if self._ended or self._taken:
                return False
            self._taken = True
            self._adopted = time.monotonic()
        limit = spec.resources.timeout_s
        self._timer = threading.Timer(limit, self._time_out)
        self._timer.daemon = True
        self._timer.start()
        try:
            _write_into(self.workdir, {**spec.files, **files, CALL_FILE: call_file(spec)})
            _signal(self.workdir)
        except OSError:  # the entry then waits until its idle end: outcome() says so and the job starts cold
            log.exception("could not hand job %s to its warm sandbox", self.job_id)
        return True

    def _time_out(self) -> None:
        self.timed_out = True
        self.cancel.set()

    def outcome(self, spec: JobSpec, collect: tuple[str, ...]) -> dict[str, Any] | None:
        """Wait for the taken job's end; its outcome, or None when the sandbox ended without reading the call."""
        self.thread.join()
        if self._timer is not None:
            self._timer.cancel()
        if self._err is not None:
            return {"state": "failed", "error": self._err}
        res = self._res
        assert res is not None
        if res.exit_code == WARM_IDLE_EXIT and res.killed_by is None:
            return None
        out = outcome(res, collect, timed_out_s=spec.resources.timeout_s if self.timed_out else None)
        out["wall_s"] = round(max(0.0, res.wall_s - (self._adopted - self._started)), 4)
        return out

    def discard(self, keep_dir: bool = False) -> None:
        """Remove what an ended warm sandbox left: its folder, or (``keep_dir``: its job starts cold there) the
        workdir the sandbox could write, so that the cold start writes into a fresh one."""
        shutil.rmtree(self.workdir if keep_dir else self.log_dir, ignore_errors=True)

