"""What a job runs when it runs again after the loss of its node, registered by the package that owns the job's kind.

The Ray backend runs a job whose node or worker was lost again, same id. A job that binds workspace paths works
in a folder of the workspace, one per attempt (``<workspace>/jobs/<id>/attempt-<k>/work``), so the attempt after
a loss can start from what the lost one saved. The schedulers know nothing of what a job saves: a package whose
jobs can go on that way (``agentlab.train``: a training run from its last checkpoint) registers a factory here,
``factory(spec, previous_workdir)`` -> the spec the next attempt runs, or None (the same spec again). As with
``agentlab.jobs.cache_hooks``, the dependency points from that package to ``agentlab.jobs``, never back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agentlab.jobs.spec import JobSpec

log = logging.getLogger("agentlab.jobs")

RerunFactory = Callable[["JobSpec", Path], "JobSpec | None"]
_factories: list[RerunFactory] = []


def register_rerun(factory: RerunFactory) -> None:
    """Add a factory: ``factory(spec, previous_workdir)`` is the spec the attempt after a node loss runs, given
    the lost attempt's workdir (readable from the scheduler), or None for a job it does not serve."""
    if factory not in _factories:
        _factories.append(factory)


def unregister_rerun(factory: RerunFactory) -> None:
    if factory in _factories:
        _factories.remove(factory)


def rerun_spec(spec: JobSpec, previous_workdir: Path | str) -> JobSpec | None:
    """The spec the first registered factory that serves the job gives; None: none does (the same spec runs
    again). A factory that raises is logged and passed over: a hook never fails a job."""
    for factory in _factories:
        try:
            new = factory(spec, Path(previous_workdir))
        except Exception:
            log.exception("re-run hook %r failed; the job runs again as it was", factory)
            continue
        if new is not None:
            return new
    return None
