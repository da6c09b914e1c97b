"""The node side of the Ray backend (``agentlab.jobs.ray_backend``): the Ray task that runs one job in the
sandbox of the node Ray placed it on, and returns its outcome, its logs (capped) and where it ran.

Where the job works: a job that binds workspace paths (training data, a model's files) works in the folder
the driver made for this attempt under the workspace (``<workspace>/jobs/<id>/attempt-<k>``: the workspace
is on a filesystem every node mounts at the same path), so what it writes outlives its node; a node that
does not see that folder fails the job saying so (``ELSEWHERE``). Any other job works in a temporary folder
of the node.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from agentlab.jobs.cache_hooks import follow_journals
from agentlab.jobs.execute import COLLECT_MAX_BYTES, out_of_reach
from agentlab.jobs.spec import JobSpec
from sandbox import SandboxOptions

LOG_CAP = 1024 * 1024
NODE_ENV = "AGENTLAB_RAY_NODE_ID"
# what a job that binds workspace paths (training data, checkpoints, a model's files) needs on another node
ELSEWHERE = ("it runs on Ray node {here}, which does not have them: put the workspace on a filesystem every node "
             "mounts at the same path, or run these jobs with jobs.backend = \"local\"")


def work_base(job_id: str, attempt_dir: str | None, here: str) -> tuple[Path, str | None]:
    """The folder the job works in (``work/``, its logs beside), and why it cannot run here (or None): the
    attempt's folder under the workspace, which the driver made (missing: the workspace is not shared with
    this node), else a new temporary folder of this node."""
    if not attempt_dir:
        return Path(tempfile.mkdtemp(prefix=f"agentlab-{job_id}-")), None
    base = Path(attempt_dir)
    if base.is_dir():
        return base, None
    return base, (f"the job's folder in the workspace is not on this machine: {base}; " + ELSEWHERE.format(here=here))


def run_on_node(spec_json: str, job_id: str, opts: dict[str, Any], api_key: str | None,
                extra_files: dict[str, str] | None = None, collect: tuple[str, ...] = (),
                gpu_map: list[int] | None = None, journals: Any = None, journal_every_s: float = 2.0,
                driver_ip: str = "", attempt_dir: str | None = None) -> dict[str, Any]:
    """The Ray task: run the job in this node's sandbox; its outcome, logs (capped) and where it ran.
    ``journals``: the driver's ``JournalBox`` actor, sent the lines the job's ``collect`` files gain.
    ``attempt_dir``: the folder under the workspace the job works in (None: a temporary folder here)."""
    import ray

    from agentlab.jobs.execute import execute_job

    node, here = ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address()
    spec = JobSpec.model_validate_json(spec_json)
    spec = spec.model_copy(update={"env": {**spec.env, NODE_ENV: node}})
    gpus = [int(g) for g in ray.get_gpu_ids()]
    if gpu_map:  # a local Ray instance numbers its GPU resources 0..n-1: the configured indices
        gpus = [gpu_map[g] if g < len(gpu_map) else g for g in gpus]
    base, absent = work_base(job_id, attempt_dir, here)
    problem = out_of_reach(spec, here, driver_ip) or absent
    send = (lambda lines: journals.add.remote(job_id, lines)) if journals is not None else None
    stop = follow_journals(send, base / "work", collect if send and not problem else (), journal_every_s,
                           COLLECT_MAX_BYTES)
    try:
        out = {"state": "failed", "error": problem} if problem else \
            execute_job(spec, job_id, base / "work", base, gpus, SandboxOptions(**opts), api_key=api_key,
                        extra_files=extra_files, collect=tuple(collect), missing_hint=ELSEWHERE.format(here=here))
    finally:
        stop.set()
    for name in ("stdout.log", "stderr.log"):
        p = base / name
        data = p.read_bytes()[-LOG_CAP:] if p.exists() else b""
        out[name] = data.decode("utf-8", "replace")
    out.update(node_dir=str(base), gpus=gpus, node=node)
    return out
