"""Host side, while the program runs: its output goes to capped log files the program cannot reach,
and the run ends at the first limit it passes (wall clock, total CPU, disk, cancellation)."""

from __future__ import annotations

import collections
import os
import selectors
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from sandbox.cgroups import RunCgroup
from sandbox.types import Limits
from sandbox.workdir import disk_usage


class OutputLog:
    """One output stream: written to its log up to a cap, last ``tail`` characters kept in memory."""

    def __init__(self, path: Path, cap: int, tail: int) -> None:
        self.fh = path.open("wb")
        self.cap = cap
        self.written = 0
        self.truncated = False
        self.tail = collections.deque(maxlen=max(tail, 1) * 4)
        self.tail_chars = tail

    def feed(self, data: bytes) -> None:
        room = self.cap - self.written
        if room > 0:
            chunk = data[:room]
            self.fh.write(chunk)
            self.fh.flush()
            self.written += len(chunk)
        if len(data) > max(room, 0):
            self.truncated = True
        self.tail.extend(data[-self.tail.maxlen:])

    def close(self) -> str:
        if self.truncated:
            self.fh.write(b"\n[sandbox: output truncated at the log size limit]\n")
        self.fh.close()
        text = bytes(self.tail).decode("utf-8", "replace")
        return text[-self.tail_chars:] if self.tail_chars else ""


class Monitor:
    """Watches one launched run: drains its pipes, reaps it, kills its whole tree at a limit.

    Afterwards ``status``/``rusage`` are the launcher's wait status and resource usage (None if it
    was never reaped) and ``killed_by`` names the limit the monitor enforced, if any.
    """

    def __init__(self, proc: subprocess.Popen, out: OutputLog, err: OutputLog, *, limits: Limits,
                 cgroup: RunCgroup | None, workdir: Path, cancel_event: threading.Event | None,
                 start: float) -> None:
        self.proc = proc
        self.cgroup = cgroup
        self.workdir = workdir
        self.cancel_event = cancel_event
        self.streams = {proc.stdout.fileno(): out, proc.stderr.fileno(): err}  # type: ignore[union-attr]
        self.deadline = start + limits.timeout_s
        self.cpu_limit = limits.effective_cpu_s
        self.disk_cap = limits.disk_mb * 1024 * 1024
        self.next_check = 0.0
        self.drain_until: float | None = None
        self.status: int | None = None
        self.rusage: Any = None
        self.killed_by: str | None = None

    def watch(self) -> None:
        """Return once the program has exited and its output is drained (at most 2 s after the exit)."""
        sel = selectors.DefaultSelector()
        for fd in self.streams:
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ)
        while True:
            self._read_output(sel)
            now = time.monotonic()
            if self.status is None:
                self._reap(now)
            if self.status is not None:
                if not sel.get_map() or now > (self.drain_until or now):
                    break
                continue
            if self.killed_by is None:
                self._enforce_limits(now)
        sel.close()
        self.proc.stdout.close()  # type: ignore[union-attr]
        self.proc.stderr.close()  # type: ignore[union-attr]

    def kill_tree(self) -> None:
        for kill in (os.killpg, os.kill):
            try:
                kill(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self.cgroup is not None:
            self.cgroup.kill_all()

    def _read_output(self, sel: selectors.BaseSelector) -> None:
        for key, _ in sel.select(timeout=0.05):
            try:
                data = os.read(key.fd, 65536)
            except BlockingIOError:
                continue
            if data:
                self.streams[key.fd].feed(data)
            else:
                sel.unregister(key.fd)

    def _reap(self, now: float) -> None:
        pid, st, ru = os.wait4(self.proc.pid, os.WNOHANG)
        if pid:
            self.status, self.rusage = st, ru
            self.proc.returncode = 0  # reaped here; keep Popen from waiting again
            # whatever is left of the tree (process backend daemons) goes with the run
            self.kill_tree()
            self.drain_until = now + 2.0

    def _enforce_limits(self, now: float) -> None:
        if now >= self.deadline:
            self.killed_by = "wall_timeout"
        elif self.cancel_event is not None and self.cancel_event.is_set():
            self.killed_by = "cancelled"
        elif now >= self.next_check:
            self.killed_by = self._poll_usage(now)
        if self.killed_by is not None:
            self.kill_tree()

    def _poll_usage(self, now: float) -> str | None:
        """``cpu`` or ``disk`` when the run is past that limit; schedules the next poll."""
        cpu = self.cgroup.cpu_seconds() if self.cgroup is not None else None
        used = disk_usage(self.workdir, self.disk_cap)
        # the disk limit is polled: look 5x as often past half of it, so that a fast
        # writer overshoots by ~50 ms of writing, not 250 ms
        self.next_check = now + (0.05 if used > self.disk_cap // 2 else 0.25)
        if cpu is not None and cpu > self.cpu_limit:
            return "cpu"
        if used > self.disk_cap:
            return "disk"
        return None
