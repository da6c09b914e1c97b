"""What every job scheduler is: ``LocalScheduler`` (``agentlab.jobs.scheduler``) and ``RayScheduler``
(``agentlab.jobs.ray_backend``) share this base, so a lab, ``agentlab jobs`` and ``agentlab train`` use either
without knowing which.

The base holds what does not depend on where jobs run: the job store and the scheduler's registration in it,
the scope (the labs and runs whose jobs it may run), looking jobs up and waiting for their end, cancelling
a lab's or a run's jobs, the GPU assignments. A backend supplies ``submit``, ``retry``, ``cancel`` and
``shutdown``, and calls ``_job_finished`` whenever it records a job's end (``wait`` wakes at once).
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Self

from agentlab.errors import AgentlabError
from agentlab.jobs.gpus import GpuInfo, inventory
from agentlab.jobs.spec import Job, JobSpec
from agentlab.jobs.store import JobStore
from sandbox import SandboxOptions


class JobError(AgentlabError):
    """A job request that cannot be accepted (unknown id, more GPUs than exist, ...)."""


def gpu_list(gpus: list[int] | list[GpuInfo] | None) -> list[GpuInfo]:
    """GPU indices (None = detect) as the inventory knows them; GpuInfo as given."""
    if gpus is None or (gpus and isinstance(gpus[0], int)):
        return inventory(gpus)  # type: ignore[arg-type]
    return list(gpus)  # type: ignore[arg-type]


def settings_kwargs(settings: Any, kw: dict[str, Any]) -> dict[str, Any]:
    """``kw`` with what both backends take from the settings (GPUs, CPUs, the model's proxy key) where unset."""
    kw.setdefault("gpus", settings.jobs.gpus)
    kw.setdefault("cpus", settings.jobs.cpus)
    key = settings.model_under_study.api_key
    kw.setdefault("proxy_api_key", key.get_secret_value() if key else None)
    return kw


class Scheduler(ABC):
    """A job scheduler over a workspace's job store (see the module's docstring)."""

    def __init__(self, store: JobStore, workspace: Path | str, *, gpus: list[GpuInfo], held_gpus: list[int],
                 sandbox_options: SandboxOptions | None, proxy_api_key: str | None,
                 labs: Iterable[str] | None, runs: Iterable[str] | None, heartbeat_s: float,
                 share_cache: bool) -> None:
        """Registers the scheduler in the store (``held_gpus``: the GPU indices it hands out itself) and
        marks failed the running jobs whose scheduler is gone (``recovered``)."""
        self.store = store
        self.workspace = Path(workspace)
        self.jobs_dir = self.workspace / "jobs"
        self.gpus = gpus
        self.options = sandbox_options or SandboxOptions()  # defaults = the config's defaults
        self.proxy_api_key = proxy_api_key
        self.labs = set(labs) if labs is not None else None  # scope: the jobs it may run (None = any)
        self.runs = set(runs) if runs is not None else None
        self.heartbeat_s = heartbeat_s
        self.share_cache = share_cache  # jobs share the workspace's caches (``agentlab.jobs.cache_hooks``)
        self._secrets: dict[str, str] = {}  # job id -> its proxy key, kept out of the store
        self._lock = threading.Lock()
        self._finished = threading.Condition()
        self.id = store.register_scheduler(held_gpus)
        self.recovered = store.recover_orphans(stale_after_s=heartbeat_s * 5, exclude=self.id)

    # --- what each backend does its own way -------------------------------------------------------------
    @abstractmethod
    def submit(self, spec: JobSpec) -> str:
        """Queue a job; its id."""

    @abstractmethod
    def retry(self, job_id: str) -> str:
        """Queue a finished job again as a new job; the new id."""

    @abstractmethod
    def cancel(self, job_id: str) -> str:
        """Cancel a job (queued or running); its state after the request."""

    @abstractmethod
    def shutdown(self, wait: bool = True, cancel_running: bool = False) -> None:
        """Stop: wait for the running jobs, or cancel this scheduler's own jobs with ``cancel_running``."""

    # --- shared ------------------------------------------------------------------------------------------
    def owns(self, spec: JobSpec) -> bool:
        """Within this scheduler's scope (labs, runs)."""
        return (self.labs is None or spec.lab in self.labs) and (self.runs is None or spec.run_id in self.runs)

    def _check_scope(self, spec: JobSpec) -> None:
        if not self.owns(spec):
            raise JobError(f"job of lab {spec.lab!r}, run {spec.run_id!r} is outside this scheduler's scope "
                           f"(labs {sorted(self.labs) if self.labs is not None else 'any'}, "
                           f"runs {sorted(self.runs) if self.runs is not None else 'any'})")

    def get(self, job_id: str) -> Job:
        job = self.store.get(job_id)
        if job is None:
            raise JobError(f"no job {job_id!r} (see `agentlab jobs list`)")
        return job

    def wait(self, job_id: str, timeout: float | None = None, poll_s: float = 0.05) -> Job:
        """Wait for a job's end: woken at once when this scheduler finishes it, else polling the store."""
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if job.done:
                return job
            if end is not None and time.monotonic() > end:
                raise TimeoutError(f"job {job_id} still {job.state} after {timeout} s")
            with self._finished:
                self._finished.wait(poll_s)

    def _job_finished(self) -> None:
        """Wake the waiters: a job's end is in the store."""
        with self._finished:
            self._finished.notify_all()

    def cancel_jobs(self, *, lab: str | None = None, run_id: str | None = None) -> list[str]:
        """Cancel the queued and running jobs of a lab or a run (both when both are given), whichever
        scheduler runs them; returns their ids. A lab's cleanup calls this, never a blanket cancel."""
        ids = self.store.owned(lab=lab, run_id=run_id)
        for job_id in ids:
            self.cancel(job_id)
        return ids

    def assignments(self) -> dict[int, str | None]:
        """GPU index -> id of the running job holding it (None = free)."""
        held = {g: j.id for j in self.store.list(state="running") for g in j.gpus}
        return {g.index: held.get(g.index) for g in self.gpus}

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown(wait=True, cancel_running=exc[0] is not None)
