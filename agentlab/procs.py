"""Process helpers shared by the serving manager, the job store and the lab store."""

from __future__ import annotations

import os


def pid_alive(pid: int | None) -> bool:
    """Whether a process exists and is not a zombie (a dead child not yet reaped counts as dead)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True
