"""The local scheduler: a queue in SQLite, disjoint GPU sets, FIFO with fairness between labs.

Policy. Within a lab, jobs start in submission order (a lab's next job waits until it fits).
Between labs, the lab with the fewest running jobs goes first, then the lab this scheduler has
started the fewest jobs for (round robin), then the older head job; so one lab's burst cannot
starve the others; a job that does not fit yet does not block other labs.
A job starts when a concurrency slot, its CPU share and enough free GPUs are available; free GPUs
are the inventory minus the GPUs of every running job in the store (so two schedulers sharing a
workspace never hand out the same GPU).

Ownership. A job carries its lab and run (``JobSpec.lab``, ``run_id``) and the scheduler that queued it
(``submitted_by``). In a workspace that several schedulers share (labs in separate processes), a
scheduler starts only the jobs it queued itself, and jobs nobody runs any more (queued by hand, or by
a scheduler that is gone) that lie within its scope (``labs``/``runs``; None = any). So one lab's
scheduler never runs, and so never cancels, another lab's job; ``cancel_jobs(lab=..., run_id=...)``
cancels one lab's or one run's jobs wherever they run, which is what a lab's cleanup does on a
scheduler that serves several labs.

Recovery. Each scheduler registers itself and heartbeats. On start, running jobs whose scheduler is
gone (process dead or heartbeat stale) are marked failed with a message naming the cause; ``retry``
queues them again. Their sandboxes died with the old scheduler (die-with-parent).

Evaluation jobs. They share the workspace's completion cache (seeded before, merged after: the hook
``agentlab.eval`` registers in ``agentlab.jobs.cache_hooks``), and with ``warm_start`` the next one finds its
sandbox started and waiting (``agentlab.jobs.warm``). ``scheduler_from_settings`` gives this scheduler or, with
``jobs.backend = "ray"``, ``agentlab.jobs.ray_backend.RayScheduler``; both are ``agentlab.jobs.base.Scheduler``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from agentlab.jobs.base import JobError, Scheduler, gpu_list, settings_kwargs
from agentlab.jobs.cache_hooks import job_cache, merge_job_cache, seed_job_cache
from agentlab.jobs.execute import execute_job, sandbox_options_for
from agentlab.jobs.gpus import GpuInfo
from agentlab.jobs.spec import Job, JobSpec
from agentlab.jobs.store import JobStore, new_job_id
from agentlab.jobs.warm import DEFAULT_IDLE_S, WarmRunner, warm_key
from sandbox import SandboxOptions

log = logging.getLogger("agentlab.jobs")
__all__ = ["JobError", "LocalScheduler", "scheduler_from_settings"]  # JobError: still importable from here


class LocalScheduler(Scheduler):
    def __init__(self, store: JobStore, workspace: Path | str, *, gpus: list[int] | list[GpuInfo] | None = None,
                 max_concurrent: int = 2, cpus: float | None = None, sandbox_options: SandboxOptions | None = None,
                 heartbeat_s: float = 2.0, proxy_api_key: str | None = None, start: bool = True,
                 labs: Iterable[str] | None = None, runs: Iterable[str] | None = None,
                 share_cache: bool = True, warm_start: bool = False, warm_idle_s: float = DEFAULT_IDLE_S,
                 max_warm: int = 1) -> None:
        """``warm_start``: after an evaluation job, keep the next one's sandbox started and waiting
        (``agentlab.jobs.warm``; at most ``max_warm`` at a time, each gone after ``warm_idle_s`` unused).
        ``share_cache``: evaluation jobs share the workspace's completion cache (``agentlab.jobs.cache_hooks``)."""
        self.max_concurrent = max_concurrent
        self.cpus = cpus or float(os.cpu_count() or 1)
        self.warm_start, self.warm_idle_s, self.max_warm = warm_start, warm_idle_s, max_warm
        self._warm: dict[str, WarmRunner] = {}  # shape -> a waiting sandbox nobody took yet
        self._reserved: dict[str, WarmRunner] = {}  # job id -> the waiting sandbox it took at submit
        self._closing = False
        self._started: Counter[str] = Counter()
        self._running: dict[str, tuple[threading.Thread, threading.Event]] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        held = gpu_list(gpus)
        super().__init__(store, workspace, gpus=held, held_gpus=[g.index for g in held],
                         sandbox_options=sandbox_options, proxy_api_key=proxy_api_key, labs=labs, runs=runs,
                         heartbeat_s=heartbeat_s, share_cache=share_cache)
        if start:
            self.start()

    @classmethod
    def from_settings(cls, settings: Any, **kw: Any) -> Scheduler:
        """The scheduler the settings ask for: this local one, or with ``jobs.backend = "ray"`` a
        ``RayScheduler`` connected to ``jobs.ray_address`` (same interface; raises JobError naming the fix
        when ray is missing or the cluster cannot be reached)."""
        return scheduler_from_settings(settings, **kw)

    @classmethod
    def _local_from_settings(cls, settings: Any, **kw: Any) -> LocalScheduler:
        s = settings
        kw.setdefault("max_concurrent", s.jobs.max_concurrent)
        kw.setdefault("warm_start", s.jobs.warm_start)
        kw.setdefault("warm_idle_s", s.jobs.warm_idle_s)
        return cls(JobStore(s.jobs_db_path), s.workspace, sandbox_options=sandbox_options_for(s.sandbox),
                   **settings_kwargs(s, kw))

    # --- public API ---------------------------------------------------------------------------------
    def submit(self, spec: JobSpec) -> str:
        self._check_fits(spec)
        job_id = self._queue(spec, spec.proxy.api_key if spec.proxy is not None else None)
        self._wake.set()
        return job_id

    def _queue(self, spec: JobSpec, secret: str | None, **kw: Any) -> str:
        """Add the job to the store, under the id of a waiting sandbox of its kind when there is one."""
        runner = self._take_warm(spec, secret or self.proxy_api_key)
        try:
            job_id = self.store.add(spec, submitted_by=self.id, job_id=runner.job_id if runner else None, **kw)
        except BaseException:
            if runner is not None:
                with self._lock:
                    self._reserved.pop(runner.job_id, None)
                runner.cancel.set()
            raise
        if secret:
            self._secrets[job_id] = secret
        return job_id

    def cancel(self, job_id: str) -> str:
        state = self.store.request_cancel(self.get(job_id).id)
        with self._lock:
            entry = self._running.get(job_id)
        if entry is not None:
            entry[1].set()
        self._wake.set()
        return state or "unknown"

    def retry(self, job_id: str) -> str:
        old = self.get(job_id)
        if not old.done:
            raise JobError(f"job {job_id} is {old.state}; only finished jobs can be retried")
        spec = old.spec
        if old.id in self._secrets and spec.proxy is not None:
            spec = spec.model_copy(update={"proxy": spec.proxy.model_copy(update={"api_key": self._secrets[old.id]})})
        self._check_fits(spec)
        new_id = self._queue(spec, self._secrets.get(old.id), retry_of=old.id, attempt=old.attempt + 1)
        self._wake.set()
        return new_id

    # --- lifecycle --------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=f"scheduler-{self.id}", daemon=True)
            self._thread.start()

    def shutdown(self, wait: bool = True, cancel_running: bool = False) -> None:
        """Stop. With `cancel_running`: cancel the jobs this scheduler runs and the ones it queued (its own;
        other schedulers' jobs are never touched)."""
        with self._lock:
            self._closing = True  # no new waiting sandbox from here
        if cancel_running:
            for job_id in self.store.owned(submitted_by=self.id, states=("queued",)):
                self.store.request_cancel(job_id)
            with self._lock:
                for _, ev in self._running.values():
                    ev.set()
        if wait:
            while True:
                with self._lock:
                    threads = [t for t, _ in self._running.values()]
                if not threads:
                    break
                for t in threads:
                    t.join()
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:  # the waiting sandboxes nobody took go too
            idle = list(self._warm.values()) + list(self._reserved.values())
            self._warm.clear()
        for runner in idle:
            if runner.job_id not in self._running:
                runner.cancel.set()
        for runner in idle:
            if runner.job_id not in self._running:
                runner.thread.join()
        self.store.unregister_scheduler(self.id)

    # --- internals -----------------------------------------------------------------------------------------
    def _check_fits(self, spec: JobSpec) -> None:
        self._check_scope(spec)
        need = spec.resources.gpus
        if need > len(self.gpus):
            have = ", ".join(str(g.index) for g in self.gpus) or "none"
            raise JobError(f"job needs {need} GPU(s) but this scheduler has {len(self.gpus)} (GPUs: {have}); "
                           "set jobs.gpus in the config or request fewer")
        if spec.resources.cpus > self.cpus:
            raise JobError(f"job needs {spec.resources.cpus:g} CPUs but this scheduler has {self.cpus:g}")

    def _loop(self) -> None:
        last_beat = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now - last_beat >= self.heartbeat_s:
                self.store.heartbeat(self.id)
                last_beat = now
            try:
                for jid in self.store.cancel_requested(self.id):
                    with self._lock:
                        entry = self._running.get(jid)
                    if entry is not None:
                        entry[1].set()
                self._dispatch()
            except Exception:  # keep the scheduler alive; the error is logged
                log.exception("scheduler loop error")
            self._wake.wait(0.2)
            self._wake.clear()

    def _dispatch(self) -> None:
        with self._lock:
            mine = len(self._running)
        if mine >= self.max_concurrent:
            return
        queued = self._claimable(self.store.list(state="queued"))
        if not queued:
            return
        running = self.store.list(state="running")
        used = {g for j in running for g in j.gpus}
        free = [g.index for g in self.gpus if g.index not in used]
        cpu_used = sum(j.spec.resources.cpus for j in running if j.scheduler_id == self.id)
        per_lab = Counter(j.lab for j in running)
        heads: dict[str, Job] = {}
        for j in queued:
            heads.setdefault(j.lab, j)
        for job in sorted(heads.values(), key=lambda j: (per_lab[j.lab], self._started[j.lab], j.seq)):
            if mine >= self.max_concurrent:
                break
            r = job.spec.resources
            if r.gpus > len(free) or cpu_used + r.cpus > self.cpus + 1e-9:
                continue
            take, free = free[: r.gpus], free[r.gpus:]
            workdir = self.jobs_dir / job.id / "work"
            log_dir = self.jobs_dir / job.id
            if not self.store.claim(job.id, self.id, take, str(workdir), str(log_dir)):
                free = take + free
                continue
            mine += 1
            cpu_used += r.cpus
            per_lab[job.lab] += 1
            self._started[job.lab] += 1
            with self._lock:  # started under the lock: shutdown() may join any thread it sees here
                runner = self._reserved.pop(job.id, None)  # (and a waiting sandbox is never both or neither)
                ev = runner.cancel if runner is not None else threading.Event()
                t = threading.Thread(target=self._work, args=(job, take, workdir, log_dir, ev, runner),
                                     name=f"job-{job.id}", daemon=True)
                self._running[job.id] = (t, ev)
                t.start()

    def _claimable(self, queued: list[Job]) -> list[Job]:
        """The queued jobs this scheduler may start: its own, and in its scope the ones no live scheduler
        will run (queued by hand, or by a scheduler that has stopped or died)."""
        live: set[str] | None = None
        out = []
        for job in queued:
            if job.submitted_by == self.id:
                out.append(job)
            elif self.owns(job.spec):
                if job.submitted_by is not None and live is None:
                    live = self.store.live_schedulers(max(self.heartbeat_s * 5, 30.0))  # a dead pid: at once
                if job.submitted_by is None or job.submitted_by not in (live or set()):
                    out.append(job)
        return out

    def _work(self, job: Job, gpus: list[int], workdir: Path, log_dir: Path, ev: threading.Event,
              runner: WarmRunner | None = None) -> None:
        cache = None
        try:
            uuids = {g.index: g.uuid for g in self.gpus if g.uuid and g.index in gpus}
            cache = job_cache(job.spec, self.workspace) if self.share_cache else None
            seed, collect = seed_job_cache(cache, job.id), (cache.collect if cache else ())
            out = None
            if runner is not None:
                if runner.adopt(job.spec, seed):
                    out = runner.outcome(job.spec, collect)  # None: it ended unused just as the job came
                if out is None:
                    runner.discard(keep_dir=True)  # the cold start below gets a fresh workdir
            if out is None and ev.is_set():
                out = {"state": "cancelled", "error": "cancelled before it started"}
            elif out is None:
                out = execute_job(job.spec, job.id, workdir, log_dir, gpus, self.options, gpu_uuids=uuids,
                                  cancel_event=ev, api_key=self._secrets.get(job.id) or self.proxy_api_key,
                                  extra_files=seed, collect=collect)
            merge_job_cache(cache, job.id, out)
        except Exception as exc:  # never leave a job 'running' because of a bug
            log.exception("job %s crashed the worker", job.id)
            out = {"state": "failed", "error": f"internal error: {exc!r}"}
        state = out.pop("state")
        out.pop("collected", None)
        self.store.finish(job.id, state, **out)
        # the next job like this one finds its sandbox waiting (started now, not beside the job: on few cores
        # a sandbox warming up would slow the job down)
        try:
            self._keep_warm(job)
        except Exception:
            log.exception("could not start a warm sandbox after job %s", job.id)
        with self._lock:
            self._running.pop(job.id, None)
        self._job_finished()
        self._wake.set()

    # --- warm sandboxes (agentlab.jobs.warm) -------------------------------------------------------------
    def _take_warm(self, spec: JobSpec, api_key: str | None) -> WarmRunner | None:
        """The waiting sandbox for a job like ``spec`` (taken: its id becomes the job's), or None."""
        if not self.warm_start or self._closing:
            return None
        key = warm_key(spec, api_key)
        with self._lock:
            runner = self._warm.pop(key, None) if key else None
            if runner is not None:
                self._reserved[runner.job_id] = runner
        return runner

    def _keep_warm(self, job: Job) -> None:
        """After a job: a waiting sandbox for the next job like it, unless one waits already."""
        if not self.warm_start or self._stop.is_set():
            return
        api_key = self._secrets.get(job.id) or self.proxy_api_key
        key = warm_key(job.spec, api_key)
        if key is None:
            return
        with self._lock:
            if self._closing or key in self._warm or len(self._warm) >= self.max_warm:
                return
            runner = WarmRunner(job.spec, key, new_job_id(), self.jobs_dir, self.options, api_key,
                                self.warm_idle_s, self._warm_unused)
            try:
                runner.start()
            except Exception:
                log.exception("could not start a warm sandbox")
                runner.discard()
                return
            self._warm[key] = runner

    def _warm_unused(self, runner: WarmRunner) -> None:
        """A waiting sandbox ended with no job (idle, cancelled, failed to start)."""
        with self._lock:
            if self._warm.get(runner.key) is runner:
                del self._warm[runner.key]
            reserved = runner.job_id in self._reserved or runner.job_id in self._running
        if not reserved:  # its id never became a job's: nothing of it stays
            runner.discard()

    def warm_ready(self) -> bool:
        """A waiting sandbox has imported everything (benchmarks wait for this; labs never need to)."""
        with self._lock:
            runners = list(self._warm.values())
        return any(r.ready() for r in runners)


def scheduler_from_settings(settings: Any, **kw: Any) -> Scheduler:
    """A job scheduler for ``settings.jobs.backend``: ``LocalScheduler`` (local) or ``RayScheduler`` (ray).
    Keyword arguments are the schedulers' own (``runs``, ``labs``, ``gpus``, ...)."""
    if settings.jobs.backend == "ray":
        from agentlab.jobs.ray_backend import RayScheduler

        return RayScheduler.from_settings(settings, **kw)
    return LocalScheduler._local_from_settings(settings, **kw)
