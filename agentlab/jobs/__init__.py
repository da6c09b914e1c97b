"""Jobs: specs, a SQLite store, a local GPU-aware scheduler and a Ray backend.

    from agentlab.jobs import JobSpec, JobStore, LocalScheduler
    with LocalScheduler(JobStore(ws / "jobs.db"), ws, gpus=[0, 1]) as sched:
        jid = sched.submit(JobSpec(kind="eval", target="mypkg.harness:evaluate", args={"n": 20}))
        job = sched.wait(jid)          # job.state, job.result, job.error
"""

from agentlab.jobs.gpus import GpuInfo, detect_gpus, inventory
from agentlab.jobs.scheduler import JobError, LocalScheduler
from agentlab.jobs.spec import TERMINAL, Job, JobSpec, Resources
from agentlab.jobs.store import JobStore

__all__ = [
           "TERMINAL",
           "GpuInfo",
           "Job",
           "JobError",
           "JobSpec",
           "JobStore",
           "LocalScheduler",
           "Resources",
           "detect_gpus",
           "inventory",
]
