"""Ray backend: the same JobSpec, run as a Ray task with ``num_cpus``/``num_gpus`` on any node of a cluster.

    from agentlab.jobs.ray_backend import RayScheduler
    sched = RayScheduler(JobStore(ws / "jobs.db"), ws, address="auto")   # or None: a local Ray
    jid = sched.submit(JobSpec(kind="train", command=[...], resources=Resources(gpus=1)))
    sched.wait(jid)

Ray places the task and assigns GPUs; inside the task the job runs in the node's sandbox exactly as
with the local scheduler (``CUDA_VISIBLE_DEVICES`` and device nodes = ``ray.get_gpu_ids()``). The
task returns the outcome plus its logs (capped), which the driver records in the store and writes
under ``workspace/jobs/<id>/`` so ``agentlab jobs logs`` works the same for both backends.
Requires the ``ray`` extra (``pip install 'agentlab[ray]'``).
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from agentlab.jobs.scheduler import JobError
from agentlab.jobs.spec import Job, JobSpec
from agentlab.jobs.store import JobStore
from sandbox import SandboxOptions

LOG_CAP = 1024 * 1024


def _run_on_node(spec_json: str, job_id: str, opts: dict[str, Any], api_key: str | None) -> dict[str, Any]:
    import ray

    from agentlab.jobs.execute import execute_job

    spec = JobSpec.model_validate_json(spec_json)
    gpus = [int(g) for g in ray.get_gpu_ids()]
    base = Path(tempfile.mkdtemp(prefix=f"agentlab-{job_id}-"))
    out = execute_job(spec, job_id, base / "work", base, gpus, SandboxOptions(**opts), api_key=api_key)
    for name in ("stdout.log", "stderr.log"):
        p = base / name
        data = p.read_bytes()[-LOG_CAP:] if p.exists() else b""
        out[name] = data.decode("utf-8", "replace")
    out["node_dir"] = str(base)
    out["gpus"] = gpus
    return out


class RayScheduler:
    def __init__(self, store: JobStore, workspace: Path | str, *, address: str | None = None,
                 sandbox_options: SandboxOptions | None = None, init_kwargs: dict[str, Any] | None = None,
                 proxy_api_key: str | None = None) -> None:
        try:
            import ray
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise JobError("the Ray backend needs ray: pip install 'agentlab[ray]'") from exc
        self._ray = ray
        if not ray.is_initialized():
            ray.init(address=address, **(init_kwargs or {}))
        self.store = store
        self.jobs_dir = Path(workspace) / "jobs"
        self.options = sandbox_options or SandboxOptions()  # defaults = the config's defaults
        self.proxy_api_key = proxy_api_key
        self.id = store.register_scheduler([])
        self._remote = ray.remote(max_retries=0)(_run_on_node)
        self._refs: dict[Any, str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="ray-jobs", daemon=True)
        self._thread.start()

    def submit(self, spec: JobSpec) -> str:
        total = self._ray.cluster_resources()
        if spec.resources.gpus > total.get("GPU", 0):
            raise JobError(f"job needs {spec.resources.gpus} GPU(s) but the Ray cluster has {int(total.get('GPU', 0))}")
        if spec.resources.cpus > total.get("CPU", 0):
            raise JobError(f"job needs {spec.resources.cpus:g} CPUs but the Ray cluster has {total.get('CPU', 0):g}")
        job_id = self.store.add(spec)
        log_dir = self.jobs_dir / job_id
        self.store.claim(job_id, self.id, [], str(log_dir / "work"), str(log_dir))
        key = (spec.proxy.api_key if spec.proxy else None) or self.proxy_api_key
        opts = {k: getattr(self.options, k) for k in ("backend", "bwrap_path", "uid", "gid", "drop_privileges",
                                                      "use_cgroups")}
        opts["env_passthrough"] = tuple(self.options.env_passthrough)
        ref = self._remote.options(num_cpus=spec.resources.cpus, num_gpus=spec.resources.gpus).remote(
            spec.model_dump_json(), job_id, opts, key)
        with self._lock:
            self._refs[ref] = job_id
        return job_id

    def get(self, job_id: str) -> Job:
        job = self.store.get(job_id)
        if job is None:
            raise JobError(f"no job {job_id!r}")
        return job

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        end = None if timeout is None else time.monotonic() + timeout
        while not (job := self.get(job_id)).done:
            if end is not None and time.monotonic() > end:
                raise TimeoutError(f"job {job_id} still {job.state} after {timeout} s")
            time.sleep(0.05)
        return job

    def cancel(self, job_id: str) -> str:
        with self._lock:
            ref = next((r for r, j in self._refs.items() if j == job_id), None)
        if ref is not None:
            self._ray.cancel(ref, force=True)
        return self.store.request_cancel(job_id) or "unknown"

    def _watch(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                refs = list(self._refs)
            if not refs:
                time.sleep(0.1)
                continue
            ready, _ = self._ray.wait(refs, num_returns=1, timeout=0.2)
            for ref in ready:
                with self._lock:
                    job_id = self._refs.pop(ref)
                self._record(job_id, ref)

    def _record(self, job_id: str, ref: Any) -> None:
        log_dir = self.jobs_dir / job_id
        log_dir.mkdir(parents=True, exist_ok=True)
        try:
            out = self._ray.get(ref)
        except self._ray.exceptions.TaskCancelledError:
            self.store.finish(job_id, "cancelled", error="cancelled while running")
            return
        except Exception as exc:  # a worker crash, a lost node
            self.store.finish(job_id, "failed", error=f"ray task failed: {str(exc)[:500]}")
            return
        for name in ("stdout.log", "stderr.log"):
            (log_dir / name).write_text(out.pop(name, ""))
        node_dir, gpus = out.pop("node_dir"), out.pop("gpus")
        state = out.pop("state")
        self.store.update(job_id, gpus=gpus, workdir=f"{node_dir}/work")
        self.store.finish(job_id, state, **out)

    def shutdown(self) -> None:
        self._stop.set()
        self._thread.join()
        self.store.unregister_scheduler(self.id)
