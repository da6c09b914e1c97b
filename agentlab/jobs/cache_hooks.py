"""Host-side caches a job can share with the workspace, registered by the package that owns the job's kind.

The schedulers know nothing of what a job computes. A package whose jobs share a cache with the workspace
(``agentlab.eval``: evaluation jobs and the workspace's completion cache, ``agentlab.eval.shared_cache``)
registers a factory here; for each job the scheduler asks the factories for the job's cache, seeds the job's
workdir with its files before the start and hands it the files the job wrote when it ends. So the dependency
points from that package to ``agentlab.jobs``, never back.

The files a job writes for its cache are journals (they only grow, by whole lines), so a scheduler may also
merge them while the job runs: ``JournalFollower`` reads, where the job runs, the lines gained since its last
look. The Ray backend does, so that what a job computed survives the loss of its node, and its re-run is
seeded with it (a re-run never pays twice for a completion).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
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


def unregister_job_cache(factory: JobCacheFactory) -> None:
    if factory in _factories:
        _factories.remove(factory)


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


def merge_job_cache(cache: JobCache | None, job_id: str, out: dict[str, Any], earlier: int = 0) -> None:
    """Merge what the job computed into the shared cache; the job's result says how much (``cache.merged``,
    with the ``earlier`` rows merged while it ran: ``merge_job_lines``)."""
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
        result["cache"]["merged"] = merged + earlier


def merge_job_lines(cache: JobCache | None, job_id: str, lines: dict[str, str]) -> int:
    """Merge the lines a running job's journals gained (``JournalFollower.new_lines``); the new rows."""
    if cache is None or not lines:
        return 0
    try:
        return cache.merge_collected(lines)
    except Exception:
        log.exception("job %s: could not merge its partial results into the shared cache", job_id)
        return 0


class JournalFollower:
    """Where a job runs: the whole lines its journals (the cache's ``collect`` files) gained since the last look."""

    def __init__(self, workdir: Path, names: Iterable[str], max_bytes: int):
        self.workdir, self.max_bytes = Path(workdir), max_bytes
        self._sent = dict.fromkeys(names, 0)  # name -> bytes already handed on

    def new_lines(self) -> dict[str, str]:
        from sandbox import read_workdir_file  # never following a link the job may have put there

        out = {}
        for name, sent in self._sent.items():
            try:
                data = read_workdir_file(self.workdir, name, self.max_bytes) or b""
            except OSError:  # the workdir is not there yet
                continue
            end = data.rfind(b"\n") + 1  # a line being written waits for the next look
            if end > sent:
                out[name] = data[sent:end].decode("utf-8", "replace")
                self._sent[name] = end
        return out


def follow_journals(send: Callable[[dict[str, str]], None], workdir: Path, names: Iterable[str], every_s: float,
                    max_bytes: int) -> threading.Event:
    """Where a job runs: ``send`` the lines its journals gained, every ``every_s`` (from a thread), until the
    returned event is set. The job's own end brings the whole journals back: this is for a job that never ends."""
    stop = threading.Event()
    names = tuple(names)
    if not names:
        return stop
    follower = JournalFollower(workdir, names, max_bytes)

    def loop() -> None:
        while not stop.wait(every_s):
            if lines := follower.new_lines():
                send(lines)

    threading.Thread(target=loop, name="journal-follower", daemon=True).start()
    return stop


class JournalBox:
    """The lines running jobs' journals gained, by job and file, kept until taken (the Ray backend runs one
    as an actor on the driver's node, so what a job computed outlives the loss of the node it ran on)."""

    def __init__(self) -> None:
        self._lines: dict[str, dict[str, list[str]]] = {}

    def add(self, job_id: str, lines: dict[str, str]) -> None:
        for name, text in lines.items():
            self._lines.setdefault(job_id, {}).setdefault(name, []).append(text)

    def take(self) -> dict[str, dict[str, str]]:
        got, self._lines = self._lines, {}
        return {job: {name: "".join(parts) for name, parts in files.items()} for job, files in got.items()}
