"""Preflight: before the first LLM call, a lab checks what it will need and stops within seconds with one
line naming the fix, instead of running every phase and publishing a paper without results.

Checked, cheapest first: the benchmark data is present; the preprint server answers (unless the run
may queue its paper in the outbox); the sandbox starts this Python runtime and imports agentlab (a
trivial job, for real: a missing bubblewrap or a runtime the sandbox cannot see fails here); the model
under study answers one short request.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx

from agentlab.errors import AgentlabError

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 120.0  # a sandboxed Python start on a busy machine takes seconds, never minutes


class PreflightFailed(AgentlabError):
    """Something the lab needs does not work; the message names it and the fix."""


def sandbox_probe() -> dict[str, Any]:
    """Job target (runs INSIDE the sandbox): proves the runtime starts and agentlab imports there."""
    import sys

    import agentlab

    return {"python": sys.version.split()[0], "agentlab": agentlab.__version__}


def run_preflight(ctx: Any) -> None:
    """Raise ``PreflightFailed`` on the first check that fails; ``ctx`` is the run's ``LabContext``."""
    started = time.monotonic()
    for check in (_benchmark_data, _preprint_server, _sandbox, _model_under_study):
        check(ctx)
    log.info("preflight passed in %.1f s", time.monotonic() - started)


def _benchmark_data(ctx: Any) -> None:
    try:
        problems = ctx.experiments.problems("dev") + ctx.experiments.problems("report")
    except AgentlabError as exc:
        raise PreflightFailed(f"benchmark data: {exc}") from None
    if not problems:
        raise PreflightFailed(f"benchmark {ctx.config.benchmark!r}: the dev/report subsets are empty; "
                              "check the subset options or the data in data_dir")


def _preprint_server(ctx: Any) -> None:
    url = ctx.config.server_url
    if not url or ctx.config.queue_if_server_down:
        return
    from preprint_server.client import PreprintClient

    try:  # one try, no retries: an unreachable server should stop the lab in seconds
        with PreprintClient(url, timeout=10.0, retries=0) as client:
            client.health()
    except Exception as exc:
        raise PreflightFailed(
            f"preprint server {url} is not reachable ({type(exc).__name__}): start it (`agentlab server start`), "
            "fix server.url, or pass --queue-if-server-down to keep the paper in the outbox") from None


def _sandbox(ctx: Any) -> None:
    from agentlab.jobs import JobSpec, Resources

    sched = ctx.experiments.scheduler()
    spec = JobSpec(kind="eval", name=f"{ctx.run_id}:preflight", lab=ctx.config.lab_name, run_id=ctx.run_id,
                   target="agentlab.lab.preflight:sandbox_probe", network="none",
                   resources=Resources(cpus=0.5, memory_mb=1024, timeout_s=PROBE_TIMEOUT_S))
    job = sched.wait(sched.submit(spec))
    if job.state != "succeeded" or not isinstance(job.result, dict):
        why = (job.error or "").strip() or job.stderr_tail(600) or job.state
        raise PreflightFailed(f"the sandbox cannot run a job ({why[-400:]}); fix it, then resume the run "
                              f"(`agentlab sandbox run -- python -c 'print(1)'` shows the sandbox alone)")


def _model_under_study(ctx: Any) -> None:
    try:
        endpoint = ctx.experiments.endpoint()
    except AgentlabError as exc:
        raise PreflightFailed(f"model under study: {exc}") from None
    if endpoint.litellm or not endpoint.base_url:
        return  # a litellm provider: its key and model are checked on the first call
    headers = {"Authorization": f"Bearer {endpoint.api_key or 'sk-none'}"}
    body = {"model": endpoint.model, "messages": [{"role": "user", "content": "Say OK."}], "max_tokens": 1}
    try:
        r = httpx.post(f"{endpoint.base_url}/chat/completions", json=body, headers=headers, timeout=60.0,
                       trust_env=False)
    except httpx.HTTPError as exc:
        raise PreflightFailed(f"the model under study at {endpoint.base_url} does not answer "
                              f"({type(exc).__name__}): start it or fix model_under_study.url") from None
    if r.status_code >= 400:
        raise PreflightFailed(f"the model under study at {endpoint.base_url} refused a request (HTTP {r.status_code}: "
                              f"{r.text[:200]}): check model_under_study.model and its API key")
