"""Host-side caches a job can share with the workspace, registered by the package that owns the job's kind.

The schedulers know nothing of what a job computes. A package whose jobs share a cache with the workspace
(``agentlab.eval``: evaluation jobs and the workspace's completion cache, ``agentlab.eval.shared_cache``)
registers a factory here; for each job the scheduler asks the factories for the job's cache, seeds the job's
workdir with its files before the start and hands it the files the job wrote when it ends. So the dependency
points from that package to ``agentlab.jobs``, never back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from agentlab.jobs.spec import JobSpec

log = logging.getLogger("agentlab.jobs")


class JobCache(Protocol):
    """One job's side of a shared cache."""

    collect: tuple[str, ...]  # the workdir files the scheduler brings back when the job ends

    def seed_files(self) -> dict[str, str]:
        """Files (name -> text) written into the job's workdir before it starts."""
        ...

    def merge_collected(self, collected: dict[str, str]) -> int:
        """Merge what the job wrote (the ``collect`` files that exist) into the shared cache; the new rows."""
        ...


JobCacheFactory = Callable[["JobSpec", Path], "JobCache | None"]
_factories: list[JobCacheFactory] = []


def register_job_cache(factory: JobCacheFactory) -> None:
    """Add a factory: ``factory(spec, workspace)`` is the job's cache, or None for a job it does not serve."""
    if factory not in _factories:
        _factories.append(factory)


def job_cache(spec: JobSpec, workspace: Path | str | None) -> JobCache | None:
    """The shared cache of a ``target`` job as the registered factories see it (the first that serves it);
    None for every other job."""
    if not spec.target or workspace is None:
        return None
    for factory in _factories:
        cache = factory(spec, Path(workspace))
        if cache is not None:
            return cache
    return None


def seed_job_cache(cache: JobCache | None, job_id: str) -> dict[str, str]:
    """The files that seed a job with the shared cache's rows ({} when none or on an error: it runs uncached)."""
    if cache is None:
        return {}
    try:
        return cache.seed_files()
    except Exception:  # a locked or broken cache db never fails a job
        log.exception("job %s: could not read the shared cache", job_id)
        return {}


def merge_job_cache(cache: JobCache | None, job_id: str, out: dict[str, Any]) -> None:
    """Merge what the job computed into the shared cache; the job's result says how much (``cache.merged``)."""
    collected = out.pop("collected", None) or {}
    if cache is None:
        return
    try:
        merged = cache.merge_collected(collected)
    except Exception:
        log.exception("job %s: could not merge its results into the shared cache", job_id)
        return
    result = out.get("result")
    if isinstance(result, dict) and isinstance(result.get("cache"), dict):
        result["cache"]["merged"] = merged
