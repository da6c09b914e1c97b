"""Jobs: specs, a SQLite store, a local GPU-aware scheduler and a Ray backend.

    from agentlab.jobs import JobSpec, JobStore, LocalScheduler
    with LocalScheduler(JobStore(ws / "jobs.db"), ws, gpus=[0, 1]) as sched:
        jid = sched.submit(JobSpec(kind="eval", target="mypkg.harness:evaluate", args={"n": 20}))
        job = sched.wait(jid)          # job.state, job.result, job.error

    sched = scheduler_from_settings(settings)   # jobs.backend: LocalScheduler, or RayScheduler at jobs.ray_address
"""

# Imported lazily (PEP 562): every sandboxed job starts with ``python -m agentlab.jobs.sandbox_entry``, which
# imports this package first, and needs none of the scheduler, store or GPU code.
_EXPORTS = {
    "GpuInfo": "gpus", "detect_gpus": "gpus", "inventory": "gpus",
    "JobError": "scheduler", "LocalScheduler": "scheduler", "scheduler_from_settings": "scheduler",
    "RayScheduler": "ray_backend",
    "TERMINAL": "spec", "Job": "spec", "JobSpec": "spec", "Resources": "spec",
    "JobStore": "store",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(f"agentlab.jobs.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'agentlab.jobs' has no attribute {name!r}")

__all__ = [
    "TERMINAL",
    "GpuInfo",
    "Job",
    "JobError",
    "JobSpec",
    "JobStore",
    "LocalScheduler",
    "RayScheduler",
    "Resources",
    "detect_gpus",
    "inventory",
    "scheduler_from_settings",
]
