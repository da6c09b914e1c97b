"""Ray backend: the same JobSpec, run as a Ray task with ``num_cpus``/``num_gpus`` on any node of a cluster.

    sched = RayScheduler(JobStore(ws / "jobs.db"), ws, address="auto")   # or None: a local Ray
    sched.wait(sched.submit(JobSpec(kind="train", command=[...], resources=Resources(gpus=1))))

Chosen by the config: ``jobs.backend = "ray"`` makes ``LocalScheduler.from_settings`` (which every lab run,
``agentlab jobs`` and ``agentlab train`` use) return a ``RayScheduler`` connected to ``jobs.ray_address``
(empty: attach to the Ray instance running on this machine, else start a local one with ``jobs.cpus`` CPUs
and the ``jobs.gpus`` GPUs as its ``GPU`` resources).

Ray places the task (``agentlab.jobs.ray_node``) and assigns GPUs; inside the task the job runs in the node's
sandbox exactly as with the local scheduler (``CUDA_VISIBLE_DEVICES`` and device nodes = ``ray.get_gpu_ids()``,
mapped to the configured GPU indices on a local instance). The task returns the outcome plus its logs (capped),
which the driver records in the store and writes under ``workspace/jobs/<id>/`` so ``agentlab jobs logs`` works
the same for both backends. The job sees the id of its Ray node in ``AGENTLAB_RAY_NODE_ID``. A job that binds
workspace paths (a training job: its data, its model) needs the workspace on a filesystem every node mounts at
the same path, and works there, in ``workspace/jobs/<id>/attempt-<k>/work``: its outputs (a training run's
checkpoints and ``final/``) outlive its node and the driver reads them; other jobs work in a temp folder of
their node.

Evaluation jobs share the workspace's completion cache (``agentlab.jobs.cache_hooks``): the driver seeds
the task, and merges what it computed while it runs (every ``journal_every_s`` the task sends what its
cache journal gained to an actor on the driver's node) and at its end. A job whose node or Ray worker is
lost (``LOSSES``) runs again, same id, seeded with what it had computed, until it lost ``jobs.max_losses``
nodes or no node left can take it: then it ends ``failed`` saying so. A job that fails on its own is never
re-run. The attempt after a loss of a job that works in the workspace runs the spec the re-run hooks give
(``agentlab.jobs.rerun_hooks``): a training job resumes from the last checkpoint the lost attempt saved,
noted at the top of the job's ``stderr.log``.
At most ``max_concurrent`` jobs of the scheduler run at once; the others wait ``queued``, oldest first.
Both schedulers are ``agentlab.jobs.base.Scheduler``; this one also heartbeats and follows cancel requests
from other processes. Requires the ``ray`` extra (``pip install 'agentlab[ray]'``).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from agentlab.jobs.base import JobError, Scheduler, gpu_list, settings_kwargs
from agentlab.jobs.cache_hooks import JournalBox, job_cache, merge_job_cache, merge_job_lines, seed_job_cache
from agentlab.jobs.execute import killed_from_outside, sandbox_options_for
from agentlab.jobs.gpus import GpuInfo
from agentlab.jobs.ray_node import run_on_node
from agentlab.jobs.rerun_hooks import rerun_spec
from agentlab.jobs.spec import JobSpec
from agentlab.jobs.store import JobStore
from sandbox import SandboxOptions

log = logging.getLogger("agentlab.jobs")
# What ray.get raises when a task's worker or node went away (not the job's doing): the job runs again.
LOSSES = ("WorkerCrashedError", "NodeDiedError", "LocalRayletDiedError", "ObjectLostError", "OutOfMemoryError")
INSTALL_HINT = "install it with `pip install 'agentlab[ray]'`, or set jobs.backend = \"local\" (AGENTLAB_JOBS__BACKEND=local)"
_started_here = {"n": 0, "owner": False}  # RaySchedulers of this process on a Ray instance this process started
_lock = threading.Lock()


@dataclass
class _Run:
    """A job of this scheduler, from its submission until its end is recorded."""

    job_id: str
    spec: JobSpec
    cache: Any  # its side of the shared cache (``cache_hooks.JobCache``), or None
    losses: int = 0  # nodes or workers lost under it
    lost: str = ""  # what the last loss was
    merged: int = 0  # cache rows merged while it ran
    requeued: bool = False  # waiting to run again after a loss ('running' in the store meanwhile)
    homeless: int = 0  # heartbeats in a row that found no live node able to take it
    unplaceable: bool = False  # cancelled because no live node can take it any more
    workdir: Path | None = None  # its attempt's workdir under the workspace (None: a temp folder of its node)
    notes: list[str] = field(default_factory=list)  # its lost attempts, and how the next went on (top of stderr.log)


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
                 heartbeat_s: float = 2.0, share_cache: bool = True, max_concurrent: int | None = None,
                 max_losses: int = 3, journal_every_s: float = 2.0, node_death_wait_s: float = 30.0) -> None:
        """``gpus``/``cpus``: the resources of a local Ray instance this scheduler starts (ignored when it
        attaches to a running one: the cluster has its own). ``max_concurrent``: this scheduler's jobs running
        at once (None: as many as the cluster takes). ``max_losses``: a job whose node or worker is lost this
        many times ends failed. ``journal_every_s``: how often running jobs send their cache journals.
        ``node_death_wait_s``: how long a job killed from outside waits for its node to be declared dead."""
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
        self.max_concurrent, self.max_losses, self.journal_every_s = max_concurrent, max_losses, journal_every_s
        self.node_death_wait_s = node_death_wait_s
        self._driver_ip = ray.util.get_node_ip_address()
        self._remote = ray.remote(max_retries=0)(run_on_node)  # this scheduler re-runs lost tasks (_ended_by)
        self._runs: dict[str, _Run] = {}  # waiting and running jobs
        self._waiting: deque[str] = deque()  # held back by max_concurrent, in submission order
        self._refs: dict[Any, str] = {}  # ref of a running task -> its job id
        self._journals: Any = None  # the JournalBox actor, started with the first job that has a cache
        self._suspects: dict[str, tuple[dict[str, Any], float]] = {}  # job id -> outcome, decision time
        self._dispatching = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="ray-jobs", daemon=True)
        self._thread.start()

    @classmethod
    def from_settings(cls, settings: Any, **kw: Any) -> RayScheduler:
        s = settings
        kw.pop("start", None)
        for name in ("max_concurrent", "max_losses", "node_death_wait_s"):
            kw.setdefault(name, getattr(s.jobs, name))
        return cls(JobStore(s.jobs_db_path), s.workspace, address=s.jobs.ray_address or None,
                   sandbox_options=sandbox_options_for(s.sandbox), **settings_kwargs(s, kw))

    # --- the Scheduler interface ---------------------------------------------------------------------------
    def submit(self, spec: JobSpec) -> str:
        return self._add(spec, spec.proxy.api_key if spec.proxy is not None else None)

    def retry(self, job_id: str) -> str:
        old = self.get(job_id)
        if not old.done:
            raise JobError(f"job {job_id} is {old.state}; only finished jobs can be retried")
        return self._add(old.spec, self._secrets.get(old.id), retry_of=old.id, attempt=old.attempt + 1)

    def cancel(self, job_id: str) -> str:
        job_id = self.get(job_id).id
        state = self.store.request_cancel(job_id)  # a waiting job is 'queued' in the store: cancelled now
        with self._lock:
            waiting = job_id in self._waiting
            if waiting:
                self._waiting.remove(job_id)
                run = self._runs.pop(job_id)
        if waiting:
            if run.requeued:  # 'running' in the store: its run was lost, the next one not started
                self.store.finish(job_id, "cancelled", error="cancelled while waiting to run again")
                state = "cancelled"
            self._job_finished()
        self._cancel_ref(job_id)
        return state or "unknown"

    def shutdown(self, wait: bool = True, cancel_running: bool = False) -> None:
        if cancel_running:
            with self._lock:
                ids = list(self._runs)
            for job_id in ids:
                self.cancel(job_id)
        if wait:
            while True:
                with self._lock:
                    if not self._runs:
                        break
                time.sleep(0.05)
        self._stop.set()
        self._thread.join()
        if self._journals is not None:
            with contextlib.suppress(Exception):
                self._ray.kill(self._journals)
        self.store.unregister_scheduler(self.id)
        if self._counted:
            with _lock:
                _started_here["n"] -= 1
                last = _started_here["n"] == 0
                if last:
                    _started_here["owner"] = False
            if last:  # the local instance this process started goes with its last scheduler
                self._ray.shutdown()

    # --- where a job can run -------------------------------------------------------------------------------
    def _node_resources(self) -> list[dict[str, float]]:
        return [n.get("Resources", {}) for n in self._ray.nodes() if n.get("Alive")]

    def _fits_a_node(self, spec: JobSpec, nodes: list[dict[str, float]] | None = None) -> bool:
        r = spec.resources
        nodes = self._node_resources() if nodes is None else nodes
        return any(res.get("CPU", 0) >= r.cpus and res.get("GPU", 0) >= r.gpus for res in nodes)

    def _no_node_for(self, spec: JobSpec) -> str:
        r = spec.resources
        nodes = ", ".join(f"{res.get('CPU', 0):g} CPU/{int(res.get('GPU', 0))} GPU" for res in self._node_resources())
        return (f"job needs {r.cpus:g} CPU(s) and {r.gpus} GPU(s) on one node, but no node of the Ray cluster has "
                f"that much (nodes: {nodes or 'none'})")

    def _check_fits(self, spec: JobSpec) -> None:
        """Refuse a job no node can take (Ray would keep it pending for ever)."""
        self._check_scope(spec)
        if not self._fits_a_node(spec):
            raise JobError(self._no_node_for(spec))

    # --- starting jobs -------------------------------------------------------------------------------------
    def _add(self, spec: JobSpec, secret: str | None, **kw: Any) -> str:
        """Store the job and queue it here (it starts when ``max_concurrent`` allows); its id."""
        self._check_fits(spec)
        job_id = self.store.add(spec, submitted_by=self.id, **kw)
        if secret:
            self._secrets[job_id] = secret
        cache = job_cache(spec, self.workspace) if self.share_cache else None
        with self._lock:
            self._runs[job_id] = _Run(job_id, spec, cache)
            self._waiting.append(job_id)
        self._dispatch()
        return job_id

    def _dispatch(self) -> None:
        """Start waiting jobs, oldest first, while fewer than ``max_concurrent`` of this scheduler's run."""
        with self._dispatching:
            while True:
                with self._lock:
                    full = self.max_concurrent is not None and len(self._refs) >= self.max_concurrent
                    if full or not self._waiting:
                        return
                    run = self._runs[self._waiting.popleft()]
                log_dir = self.jobs_dir / run.job_id
                # 'running' from here: Ray queues the task until a node has its resources
                if run.requeued or self.store.claim(run.job_id, self.id, [], str(log_dir / "work"), str(log_dir)):
                    run.requeued = False
                    self._launch(run)
                else:  # cancelled while it waited
                    self._forget(run)

    def _launch(self, run: _Run) -> None:
        job_id, spec = run.job_id, run.spec
        key = self._secrets.get(job_id) or self.proxy_api_key
        opts = {k: getattr(self.options, k) for k in ("backend", "bwrap_path", "uid", "gid", "drop_privileges",
                                                      "use_cgroups")}
        opts["env_passthrough"] = tuple(self.options.env_passthrough)
        collect = run.cache.collect if run.cache else ()
        journals = self._journal_actor() if collect else None
        attempt = self._attempt_dir(run)
        ref = self._remote.options(num_cpus=spec.resources.cpus, num_gpus=spec.resources.gpus).remote(
            spec.model_dump_json(), job_id, opts, key, seed_job_cache(run.cache, job_id), collect, self._gpu_map,
            journals, self.journal_every_s, self._driver_ip, attempt)
        with self._lock:
            self._refs[ref] = job_id

    def _attempt_dir(self, run: _Run) -> str | None:
        """The folder under the workspace where this attempt of a job that binds workspace paths works (made
        here: a node that does not see it does not share the workspace), so that its outputs outlive its node;
        None for other jobs (a temp folder of their node)."""
        if not run.spec.ro_binds:
            return None
        base = self.jobs_dir.absolute() / run.job_id / f"attempt-{run.losses + 1}"
        base.mkdir(parents=True, exist_ok=True)
        run.workdir = base / "work"
        self.store.update(run.job_id, workdir=str(run.workdir))  # its outputs, readable while it runs
        return str(base)

    def _journal_actor(self) -> Any:
        """The ``JournalBox`` actor, on this driver's node (not merely preferred: Ray's soft affinity put it on a
        worker when the driver's node had no CPU), so it outlives the loss of any node running jobs."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        with self._lock:
            if self._journals is None:
                here = self._ray.get_runtime_context().get_node_id()
                self._journals = self._ray.remote(num_cpus=0)(JournalBox).options(
                    scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False)).remote()
            return self._journals

    def _cancel_ref(self, job_id: str) -> None:
        with self._lock:
            ref = next((r for r, j in self._refs.items() if j == job_id), None)
        if ref is not None:
            self._ray.cancel(ref, force=True)

    # --- following jobs ------------------------------------------------------------------------------------
    def _watch(self) -> None:
        last_beat = last_journal = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now - last_beat >= self.heartbeat_s:  # other schedulers of the workspace see this one alive
                try:
                    self.store.heartbeat(self.id)
                    for job_id in self.store.cancel_requested(self.id):  # `agentlab jobs cancel` elsewhere
                        self._cancel_ref(job_id)
                    self._cancel_unplaceable()
                except Exception:  # a busy db: the next beat
                    log.debug("ray scheduler heartbeat failed", exc_info=True)
                last_beat = now
            if self._journals is not None and now - last_journal >= self.journal_every_s:
                self._merge_journals()
                last_journal = now
            if self._suspects:
                self._judge_suspects()
            with self._lock:
                refs = list(self._refs)
            if not refs:
                self._stop.wait(0.05)
                continue
            ready, _ = self._ray.wait(refs, num_returns=1, timeout=0.2)
            for ref in ready:
                with self._lock:
                    job_id = self._refs.pop(ref)
                    run = self._runs[job_id]
                self._record(run, ref)
            if ready:
                self._dispatch()

    def _cancel_unplaceable(self) -> None:
        """Cancel the tasks no live node can take any more (the nodes that could are gone), seen so at two
        heartbeats in a row: Ray would keep them pending for ever. (A task that was running on a lost node
        ends by itself, as a loss, meanwhile.) They end failed, saying so (``_ended_by``)."""
        with self._lock:
            running = [(ref, self._runs[job_id]) for ref, job_id in self._refs.items()]
        nodes = self._node_resources() if running else []
        for ref, run in running:
            run.homeless = 0 if self._fits_a_node(run.spec, nodes) else run.homeless + 1
            if run.homeless >= 2 and not run.unplaceable:
                run.unplaceable = True
                self._ray.cancel(ref, force=True)

    def _merge_journals(self) -> None:
        """Merge into the shared cache the journal lines running jobs sent (``JournalBox``)."""
        try:
            got = self._ray.get(self._journals.take.remote(), timeout=10)
        except Exception as exc:  # the next look tries again; the jobs' results carry their whole journals
            log.warning("could not read the running jobs' cache journals: %s", exc)
            return
        for job_id, lines in got.items():
            with self._lock:
                run = self._runs.get(job_id)
            if run is not None:
                run.merged += merge_job_lines(run.cache, job_id, lines)

    def _record(self, run: _Run, ref: Any) -> None:
        job_id = run.job_id
        try:
            out = self._ray.get(ref)
        except Exception as exc:
            self._ended_by(run, exc)
            return
        if killed_from_outside(out):  # by its node's end? Ray may take seconds to declare the node dead
            self._suspects[job_id] = (out, time.monotonic() + self.node_death_wait_s)
            return
        self._store_outcome(run, out)

    def _judge_suspects(self) -> None:
        """A job killed from outside whose node was then declared dead was lost with it (its task could
        still answer); one whose node lives on after ``node_death_wait_s`` failed on its own."""
        alive = {n.get("NodeID") for n in self._ray.nodes() if n.get("Alive")}
        for job_id, (out, until) in list(self._suspects.items()):
            dead = out.get("node") not in alive
            if dead or time.monotonic() > until:
                del self._suspects[job_id]
                if dead:
                    self._lost(self._runs[job_id], f"its node died: {out.get('error')}")
                    self._dispatch()
                else:
                    self._store_outcome(self._runs[job_id], out)

    def _store_outcome(self, run: _Run, out: dict[str, Any]) -> None:
        job_id = run.job_id
        log_dir = self.jobs_dir / job_id
        log_dir.mkdir(parents=True, exist_ok=True)
        notes = "".join(f"[agentlab] {note}\n" for note in run.notes)
        (log_dir / "stdout.log").write_text(out.pop("stdout.log", ""))
        (log_dir / "stderr.log").write_text(notes + out.pop("stderr.log", ""))
        node_dir, gpus, node = out.pop("node_dir"), out.pop("gpus"), out.pop("node", None)
        log.debug("job %s ran on Ray node %s", job_id, node)
        merge_job_cache(run.cache, job_id, out, earlier=run.merged)
        state = out.pop("state")
        self.store.update(job_id, gpus=gpus, workdir=f"{node_dir}/work")
        self._finish(run, state, **out)

    def _ended_by(self, run: _Run, exc: Exception) -> None:
        """The task raised: cancelled, lost with its node or worker (run again while allowed), or broken."""
        if self.get(run.job_id).cancel_requested:
            self._finish(run, "cancelled", error="cancelled while running")
            return
        if isinstance(exc, tuple(getattr(self._ray.exceptions, name) for name in LOSSES)):
            self._lost(run, f"{type(exc).__name__}: {str(exc)[:300]}")
        elif run.unplaceable:
            self._finish(run, "failed", error="; ".join(filter(None, [run.lost, self._homeless(run)])))
        else:
            self._finish(run, "failed", error=f"ray task failed: {str(exc)[:500]}")

    def _homeless(self, run: _Run) -> str:
        return f"no node left can take it: {self._no_node_for(run.spec)}"

    def _lost(self, run: _Run, why: str) -> None:
        """The job's node or worker was lost: run it again while allowed, else it ends failed."""
        run.losses += 1
        if self._journals is not None:  # what it computed before the loss, so that its re-run is seeded with it
            self._merge_journals()
        run.lost = f"node lost {run.losses} time{'s' if run.losses > 1 else ''} ({why})"
        if run.losses >= self.max_losses:
            self._finish(run, "failed", error=f"{run.lost}; not run again (at most {self.max_losses} losses)")
        elif not self._fits_a_node(run.spec):  # (Ray may still count the lost node: then _cancel_unplaceable)
            self._finish(run, "failed", error=f"{run.lost}; {self._homeless(run)}")
        else:  # first in line for this scheduler's next free slot (``_watch`` dispatches at once)
            run.notes.append(f"attempt {run.losses}: {run.lost}; run again")  # kept in stderr.log whatever the end
            resumed = self._resume(run)
            log.warning("job %s: %s; running it again%s", run.job_id, run.lost, f" ({resumed})" if resumed else "")
            self.store.update(run.job_id, error="; ".join(filter(None, [f"running again after: {run.lost}", resumed])))
            run.requeued = True
            with self._lock:
                self._waiting.appendleft(run.job_id)

    def _resume(self, run: _Run) -> str:
        """Let the next attempt of a lost job that worked in the workspace go on from what the lost attempt saved
        there, as the re-run hooks say (``agentlab.jobs.rerun_hooks``: a training job from its last checkpoint);
        how, or "" (it runs its spec again)."""
        if run.workdir is None:
            return ""
        spec = rerun_spec(run.spec, run.workdir)
        if spec is None:
            return ""
        run.spec = spec
        run.notes.append(f"attempt {run.losses + 1} resumes from what attempt {run.losses} saved in {run.workdir} "
                         f"(its node was lost)")
        return run.notes[-1]

    def _finish(self, run: _Run, state: str, **fields: Any) -> None:
        self.store.finish(run.job_id, state, **fields)
        self._forget(run)
        self._job_finished()

    def _forget(self, run: _Run) -> None:
        with self._lock:
            self._runs.pop(run.job_id, None)
