"""Ray backend: the same JobSpec, run as a Ray task with ``num_cpus``/``num_gpus`` on any node of a cluster.

    from agentlab.jobs.ray_backend import RayScheduler
    sched = RayScheduler(JobStore(ws / "jobs.db"), ws, address="auto")   # or None: a local Ray
    jid = sched.submit(JobSpec(kind="train", command=[...], resources=Resources(gpus=1)))
    sched.wait(jid)

Chosen by the config: ``jobs.backend = "ray"`` makes ``LocalScheduler.from_settings`` (which every lab run,
``agentlab jobs`` and ``agentlab train`` use) return a ``RayScheduler`` connected to ``jobs.ray_address``
(empty: attach to the Ray instance running on this machine, else start a local one with ``jobs.cpus`` CPUs
and the ``jobs.gpus`` GPUs as its ``GPU`` resources).

Ray places the task and assigns GPUs; inside the task the job runs in the node's sandbox exactly as
with the local scheduler (``CUDA_VISIBLE_DEVICES`` and device nodes = ``ray.get_gpu_ids()``, mapped to the
configured GPU indices on a local instance). The task returns the outcome plus its logs (capped), which
the driver records in the store and writes under ``workspace/jobs/<id>/`` so ``agentlab jobs logs`` works
the same for both backends. Evaluation jobs share the workspace's completion cache as with the local
scheduler (the driver seeds the task and merges back what it computed: ``agentlab.jobs.cache_hooks``). Both
schedulers are ``agentlab.jobs.base.Scheduler`` (scope by labs/runs, ``cancel_jobs``, ``retry``, ``wait``); this
one also heartbeats and follows cancel requests from other processes.
Requires the ``ray`` extra (``pip install 'agentlab[ray]'``).
"""

from __future__ import annotations

import logging
import socket
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from agentlab.jobs.base import JobError, Scheduler, gpu_list, settings_kwargs
from agentlab.jobs.cache_hooks import job_cache, merge_job_cache, seed_job_cache
from agentlab.jobs.execute import sandbox_options_for
from agentlab.jobs.gpus import GpuInfo
from agentlab.jobs.spec import JobSpec
from agentlab.jobs.store import JobStore
from sandbox import SandboxOptions

log = logging.getLogger("agentlab.jobs")
LOG_CAP = 1024 * 1024
INSTALL_HINT = "install it with `pip install 'agentlab[ray]'`, or set jobs.backend = \"local\" (AGENTLAB_JOBS__BACKEND=local)"
_started_here = {"n": 0, "owner": False}  # RaySchedulers of this process on a Ray instance this process started
_lock = threading.Lock()


def _run_on_node(spec_json: str, job_id: str, opts: dict[str, Any], api_key: str | None,
                 extra_files: dict[str, str] | None = None, collect: tuple[str, ...] = (),
                 gpu_map: list[int] | None = None) -> dict[str, Any]:
    import ray

    from agentlab.jobs.execute import execute_job

    spec = JobSpec.model_validate_json(spec_json)
    gpus = [int(g) for g in ray.get_gpu_ids()]
    if gpu_map:  # a local Ray instance numbers its GPU resources 0..n-1: the configured indices
        gpus = [gpu_map[g] if g < len(gpu_map) else g for g in gpus]
    base = Path(tempfile.mkdtemp(prefix=f"agentlab-{job_id}-"))
    out = execute_job(spec, job_id, base / "work", base, gpus, SandboxOptions(**opts), api_key=api_key,
                      extra_files=extra_files, collect=tuple(collect))
    for name in ("stdout.log", "stderr.log"):
        p = base / name
        data = p.read_bytes()[-LOG_CAP:] if p.exists() else b""
        out[name] = data.decode("utf-8", "replace")
    out["node_dir"] = str(base)
    out["gpus"] = gpus
    return out


def _check_reachable(address: str) -> None:
    """Fail fast, naming the fix, when a ``host:port`` (or ``ray://host:port``) address does not answer."""
    if address in ("auto", "local"):
        return
    parsed = urlparse(address if "://" in address else f"ray://{address}")
    if not parsed.hostname or not parsed.port:
        return
    try:
        with socket.create_connection((parsed.hostname, parsed.port), timeout=5):
            pass
    except OSError as exc:
        raise JobError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}): start it "
                       f"(`ray start --head --port={parsed.port}` on that host) or fix jobs.ray_address "
                       "(AGENTLAB_JOBS__RAY_ADDRESS; empty = a local Ray instance)") from None


def connect(address: str | None, *, num_cpus: float | None = None, num_gpus: int | None = None,
            init_kwargs: dict[str, Any] | None = None) -> tuple[Any, bool]:
    """``ray``, connected (``address``: a cluster; None/empty: attach to this machine's Ray or start a local
    one with ``num_cpus``/``num_gpus``), and whether this call started a local instance. Raises JobError."""
    try:
        import ray
    except ImportError:
        raise JobError(f"jobs.backend = \"ray\" needs the ray package: {INSTALL_HINT}") from None
    if ray.is_initialized():
        return ray, False
    kw = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False, **(init_kwargs or {})}
    if address:
        _check_reachable(address)
        try:
            ray.init(address=address, **kw)
        except Exception as exc:
            raise JobError(f"cannot connect to the Ray cluster at {address}: {type(exc).__name__}: {str(exc)[:300]}; "
                           "check that it runs (`ray status`) or fix jobs.ray_address (AGENTLAB_JOBS__RAY_ADDRESS)"
                           ) from None
        return ray, False
    res = {"num_cpus": max(1, int(num_cpus)) if num_cpus else None, "num_gpus": num_gpus}
    try:
        try:
            ray.init(**{k: v for k, v in res.items() if v is not None}, **kw)
        except ValueError as exc:
            if "existing cluster" not in str(exc):
                raise
            ray.init(**kw)  # attach to the instance `ray start` left on this machine (it has its own resources)
    except Exception as exc:
        raise JobError(f"cannot start a local Ray instance: {type(exc).__name__}: {str(exc)[:300]}; "
                       "start one with `ray start --head` and set jobs.ray_address, or use jobs.backend = \"local\""
                       ) from None
    node = getattr(ray._private.worker, "_global_node", None)  # a head node here = this process started it
    return ray, bool(getattr(node, "head", False))


class RayScheduler(Scheduler):
    def __init__(self, store: JobStore, workspace: Path | str, *, address: str | None = None,
                 sandbox_options: SandboxOptions | None = None, init_kwargs: dict[str, Any] | None = None,
                 proxy_api_key: str | None = None, gpus: list[int] | list[GpuInfo] | None = None,
                 cpus: float | None = None, labs: Iterable[str] | None = None, runs: Iterable[str] | None = None,
                 heartbeat_s: float = 2.0, share_cache: bool = True, max_concurrent: int | None = None) -> None:
        """``gpus``/``cpus``: the resources of a local Ray instance this scheduler starts (ignored when it
        attaches to a running one: the cluster has its own). ``max_concurrent`` is the local scheduler's knob:
        Ray runs as many jobs as the cluster's resources allow."""
        gpu_info = gpu_list(gpus)
        self._ray, started = connect(address, num_cpus=cpus, num_gpus=len(gpu_info), init_kwargs=init_kwargs)
        ray = self._ray
        with _lock:
            if started:
                _started_here.update(owner=True)
            if _started_here["owner"]:
                _started_here["n"] += 1
        self._counted = bool(_started_here["owner"])
        self._gpu_map = [g.index for g in gpu_info] if started else None
        # Ray hands out the GPUs: this scheduler holds none itself
        super().__init__(store, workspace, gpus=gpu_info, held_gpus=[], sandbox_options=sandbox_options,
                         proxy_api_key=proxy_api_key, labs=labs, runs=runs, heartbeat_s=heartbeat_s,
                         share_cache=share_cache)
        self._remote = ray.remote(max_retries=0)(_run_on_node)
        self._refs: dict[Any, tuple[str, Any]] = {}  # ref -> (job id, its shared-cache side)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="ray-jobs", daemon=True)
        self._thread.start()

    @classmethod
    def from_settings(cls, settings: Any, **kw: Any) -> RayScheduler:
        s = settings
        kw.pop("start", None)
        return cls(JobStore(s.jobs_db_path), s.workspace, address=s.jobs.ray_address or None,
                   sandbox_options=sandbox_options_for(s.sandbox), **settings_kwargs(s, kw))

    # --- the Scheduler interface ---------------------------------------------------------------------------
    def submit(self, spec: JobSpec) -> str:
        self._check_fits(spec)
        job_id = self.store.add(spec, submitted_by=self.id)
        if spec.proxy is not None and spec.proxy.api_key:
            self._secrets[job_id] = spec.proxy.api_key
        self._launch(job_id, spec)
        return job_id

    def retry(self, job_id: str) -> str:
        old = self.get(job_id)
        if not old.done:
            raise JobError(f"job {job_id} is {old.state}; only finished jobs can be retried")
        spec = old.spec
        self._check_fits(spec)
        new_id = self.store.add(spec, retry_of=old.id, attempt=old.attempt + 1, submitted_by=self.id)
        if old.id in self._secrets:
            self._secrets[new_id] = self._secrets[old.id]
        self._launch(new_id, spec)
        return new_id

    def cancel(self, job_id: str) -> str:
        job_id = self.get(job_id).id
        state = self.store.request_cancel(job_id)
        self._cancel_ref(job_id)
        return state or "unknown"

    def shutdown(self, wait: bool = True, cancel_running: bool = False) -> None:
        if cancel_running:
            with self._lock:
                ids = [j for j, _ in self._refs.values()]
            for job_id in ids:
                self.store.request_cancel(job_id)
                self._cancel_ref(job_id)
        if wait:
            while True:
                with self._lock:
                    if not self._refs:
                        break
                time.sleep(0.05)
        self._stop.set()
        self._thread.join()
        self.store.unregister_scheduler(self.id)
        if self._counted:
            with _lock:
                _started_here["n"] -= 1
                last = _started_here["n"] == 0
                if last:
                    _started_here["owner"] = False
            if last:  # the local instance this process started goes with its last scheduler
                self._ray.shutdown()

    # --- internals ----------------------------------------------------------------------------------------
    def _check_fits(self, spec: JobSpec) -> None:
        self._check_scope(spec)
        total = self._ray.cluster_resources()
        if spec.resources.gpus > total.get("GPU", 0):
            raise JobError(f"job needs {spec.resources.gpus} GPU(s) but the Ray cluster has {int(total.get('GPU', 0))}")
        if spec.resources.cpus > total.get("CPU", 0):
            raise JobError(f"job needs {spec.resources.cpus:g} CPUs but the Ray cluster has {total.get('CPU', 0):g}")

    def _launch(self, job_id: str, spec: JobSpec) -> None:
        log_dir = self.jobs_dir / job_id
        # the job is 'running' from here: Ray queues it until the cluster has its resources
        self.store.claim(job_id, self.id, [], str(log_dir / "work"), str(log_dir))
        key = self._secrets.get(job_id) or self.proxy_api_key
        opts = {k: getattr(self.options, k) for k in ("backend", "bwrap_path", "uid", "gid", "drop_privileges",
                                                      "use_cgroups")}
        opts["env_passthrough"] = tuple(self.options.env_passthrough)
        cache = job_cache(spec, self.workspace) if self.share_cache else None
        ref = self._remote.options(num_cpus=spec.resources.cpus, num_gpus=spec.resources.gpus).remote(
            spec.model_dump_json(), job_id, opts, key, seed_job_cache(cache, job_id),
            cache.collect if cache else (), self._gpu_map)
        with self._lock:
            self._refs[ref] = (job_id, cache)

    def _cancel_ref(self, job_id: str) -> None:
        with self._lock:
            ref = next((r for r, (j, _) in self._refs.items() if j == job_id), None)
        if ref is not None:
            self._ray.cancel(ref, force=True)

    def _watch(self) -> None:
        last_beat = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now - last_beat >= self.heartbeat_s:  # other schedulers of the workspace see this one alive
                try:
                    self.store.heartbeat(self.id)
                    for job_id in self.store.cancel_requested(self.id):  # `agentlab jobs cancel` elsewhere
                        self._cancel_ref(job_id)
                except Exception:  # a busy db: the next beat
                    log.debug("ray scheduler heartbeat failed", exc_info=True)
                last_beat = now
            with self._lock:
                refs = list(self._refs)
            if not refs:
                self._stop.wait(0.05)
                continue
            ready, _ = self._ray.wait(refs, num_returns=1, timeout=0.2)
            for ref in ready:
                with self._lock:
                    job_id, cache = self._refs[ref]
                self._record(job_id, ref, cache)
                with self._lock:
                    self._refs.pop(ref, None)
                self._job_finished()

    def _record(self, job_id: str, ref: Any, cache: Any) -> None:
        log_dir = self.jobs_dir / job_id
        log_dir.mkdir(parents=True, exist_ok=True)
        try:
            out = self._ray.get(ref)
        except (self._ray.exceptions.TaskCancelledError, self._ray.exceptions.WorkerCrashedError) as exc:
            if self.get(job_id).cancel_requested:
                self.store.finish(job_id, "cancelled", error="cancelled while running")
            else:
                self.store.finish(job_id, "failed", error=f"ray task failed: {str(exc)[:500]}")
            return
        except Exception as exc:  # a lost node
            self.store.finish(job_id, "failed", error=f"ray task failed: {str(exc)[:500]}")
            return
        for name in ("stdout.log", "stderr.log"):
            (log_dir / name).write_text(out.pop(name, ""))
        node_dir, gpus = out.pop("node_dir"), out.pop("gpus")
        merge_job_cache(cache, job_id, out)
        state = out.pop("state")
        self.store.update(job_id, gpus=gpus, workdir=f"{node_dir}/work")
        self.store.finish(job_id, state, **out)
