"""Callables used as job targets in tests (imported inside the sandbox by agentlab.jobs.sandbox_entry)."""


def add(a, b):
    return {"sum": a + b}


def boom():
    raise ValueError("harness exploded")


def whoami(host_path: str = "", marker: str = ""):
    """What the job sees of itself: uid, working directory, whether a host path is visible."""
    import os

    return {"uid": os.getuid(), "cwd": os.getcwd(), "host_path_visible": bool(host_path) and os.path.exists(host_path),
            "job_id": os.environ.get("AGENTLAB_JOB_ID"), "marker": marker}


def nap(seconds: float):
    import time

    time.sleep(seconds)
    return {"slept": seconds}
