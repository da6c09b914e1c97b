"""The ``process`` backend: a plain subprocess with rlimits (and cgroups where writable).

It isolates nothing: the program sees the host file system, network and processes. It exists for
machines without bubblewrap (macOS, locked-down containers) and warns loudly every time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

log = logging.getLogger("sandbox")

WARNING = (
    "sandbox backend 'process' ISOLATES NOTHING: the program can read host files, use the network "
    "and see other processes; only resource limits apply. Install bubblewrap for real isolation."
)


@dataclass
class Prepared:
    argv: list[str]
    cwd: str
    isolation: list[str] = field(default_factory=list)
    drop_to: tuple[int, int] | None = None


class ProcessBackend:
    name = "process"

    def prepare(self, plan) -> Prepared:  # plan: sandbox.executor.Plan
        log.warning(WARNING)
        drop = (plan.uid, plan.gid) if plan.drop_privileges else None
        iso = ["rlimits", "new-session"] + (["uid-drop"] if drop else [])
        return Prepared(argv=list(plan.host_command), cwd=str(plan.workdir), isolation=iso, drop_to=drop)
