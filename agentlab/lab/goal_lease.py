"""A lab's hold on a goal it claimed from the preprint server's queue (``agentlab lab start --from-queue``).

``GoalHold.claim`` takes the next open goal under a lease of ``goals.lease_s`` seconds; a daemon thread
renews it every ``goals.heartbeat_s`` (a third of the lease by default); ``release`` ends it when the run
finishes or fails, and the goal goes back to the queue (unless a paper closed it). A lab killed with
SIGKILL stops heartbeating: at expiry the server ends the lease and the goal is open again, for this lab's
``lab resume`` (which claims it back when it is still free) or for another lab.
If a heartbeat finds the lease ended (it expired during a long stall, or the goal closed), the hold claims
the same goal again when it is free; otherwise it stops renewing and says why in ``lost``.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from preprint_server.client import ConflictError, PreprintClient
from preprint_server.errors import PreprintServerError

log = logging.getLogger(__name__)


class GoalHold:
    def __init__(self, url: str, api_key: str | None, lease: Any, heartbeat_s: float | None = None):
        self.url, self.api_key = url, api_key
        self.lease = lease  # the server's LeaseOut
        self.lease_s = float(lease.lease_s)
        self.heartbeat_s = heartbeat_s or self.lease_s / 3
        self.lost: str | None = None
        self.beats = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # -- claiming ------------------------------------------------------------------------------
    @classmethod
    def claim(cls, url: str, api_key: str | None, *, lease_s: float, heartbeat_s: float | None = None,
              goal: str | None = None, benchmark: str | None = None, holder: str = "") -> GoalHold | None:
        """Claim the next open goal (or `goal`) and start heartbeating; None when no goal is open."""
        with PreprintClient(url, api_key=api_key) as c:
            lease = c.claim_goal(lease_s=lease_s, goal=goal, benchmark=benchmark, holder=holder)
        if lease is None:
            return None
        hold = cls(url, api_key, lease, heartbeat_s)
        hold.start()
        return hold

    @classmethod
    def reclaim(cls, url: str, api_key: str | None, goal_id: str, *, lease_s: float,
                heartbeat_s: float | None = None, holder: str = "") -> tuple[GoalHold | None, str]:
        """Claim a resumed run's goal back: (the hold, "") or (None, why not: claimed by another lab, closed)."""
        try:
            return cls.claim(url, api_key, lease_s=lease_s, heartbeat_s=heartbeat_s, goal=goal_id, holder=holder), ""
        except ConflictError as exc:
            return None, str(exc).split(": 409 ", 1)[-1]
        except PreprintServerError as exc:  # unreachable: the run's preflight says so, or it queues its paper
            return None, str(exc)

    @property
    def goal(self) -> Any:
        return self.lease.goal

    @property
    def goal_id(self) -> str:
        return self.lease.goal_id

    # -- heartbeats -----------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=f"goal-lease-{self.goal_id}", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        timeout = max(1.0, min(30.0, self.heartbeat_s))
        with PreprintClient(self.url, api_key=self.api_key, timeout=timeout, retries=0) as c:
            while not self._stop.wait(self.heartbeat_s):
                try:
                    with self._lock:
                        if self._stop.is_set():
                            return
                        self.lease = c.heartbeat_goal(self.lease.id)
                        self.beats += 1
                except ConflictError as exc:
                    if not self._claim_again(c, exc):
                        return
                except PreprintServerError as exc:  # unreachable for a moment: the lease outlives a few misses
                    log.warning("goal lease heartbeat failed (%s); retrying", exc)

    def _claim_again(self, c: PreprintClient, exc: Exception) -> bool:
        try:
            lease = c.claim_goal(lease_s=self.lease_s, goal=self.goal_id, holder=self.lease.holder)
        except PreprintServerError as again:
            self.lost = f"{exc}; claiming it again: {again}"
            log.warning("lost the lease on goal %s: %s", self.goal_id, self.lost)
            return False
        with self._lock:
            self.lease = lease
        return True

    # -- the end ----------------------------------------------------------------------------------
    def release(self, reason: str) -> None:
        """Stop heartbeating and end the lease (its goal returns to the queue unless it closed)."""
        with self._lock:
            self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        if self.lost:
            return
        try:
            with PreprintClient(self.url, api_key=self.api_key, retries=1) as c:
                self.lease = c.release_goal(self.lease.id, reason[:500])
        except PreprintServerError as exc:  # the lease then lapses at its expiry, with the same effect
            log.warning("could not release the lease on goal %s (%s); it lapses at expiry", self.goal_id, exc)

    def __enter__(self) -> GoalHold:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self._stop.is_set():
            self.release("failed: " + f"{exc_type.__name__}: {exc}"[:400] if exc_type else "done")
