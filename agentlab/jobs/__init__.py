"""Jobs: specs, a SQLite store, a local GPU-aware scheduler and a Ray backend.

    from agentlab.jobs import JobSpec, JobStore, LocalScheduler
    with LocalScheduler(JobStore(ws / "jobs.db"), ws, gpus=[0, 1]) as sched:
        jid = sched.submit(JobSpec(kind="eval", target="mypkg.harness:evaluate", args={"n": 20}))
        job = sched.wait(jid)          # job.state, job.result, job.error

    sched = scheduler_from_settings(settings)   # jobs.backend: LocalScheduler, or RayScheduler at jobs.ray_address

Both schedulers are a ``Scheduler`` (``agentlab.jobs.base``). Nothing here imports ``agentlab.eval``: evaluation
jobs' completion cache is a hook that ``agentlab.eval`` registers (``agentlab.jobs.cache_hooks``), and how a
training job goes on after a lost Ray node one that ``agentlab.train`` registers (``agentlab.jobs.rerun_hooks``).
"""

# Imported lazily (PEP 562): every sandboxed job starts with ``python -m agentlab.jobs.sandbox_entry``, which
# imports this package first, and needs none of the scheduler, store or GPU code.
_EXPORTS = {
    "GpuInfo": "gpus", "detect_gpus": "gpus", "inventory": "gpus",
    "JobError": "base", "Scheduler": "base",
    "LocalScheduler": "scheduler", "scheduler_from_settings": "scheduler",
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
    "Scheduler",
    "detect_gpus",
    "inventory",
    "scheduler_from_settings",
]
