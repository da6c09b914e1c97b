"""A first-come, first-served limit on how many searches run at once.

On a few cores, eight searches running together share the CPU and the GIL: each runs slower and
they finish in no useful order, so some wait twice as long as the median (p99 / p50 ~1.8 with 8
clients on 2 cores). Running one more than the core count at a time, the others waiting in arrival
order, keeps the cores as busy and evens the waits out (p99 / p50 ~1.35; `benchmarks/bench_server.py`).
A plain `threading.Semaphore` is not enough: a newcomer can take a slot just released before the
thread that waited longest wakes up.
"""

from __future__ import annotations

import threading
from collections import deque


class FifoGate:
    """`with gate:` runs the block when fewer than `slots` blocks are running, in arrival order."""

    def __init__(self, slots: int):
        if slots < 1:
            raise ValueError("a gate needs at least one slot")
        self._lock = threading.Lock()
        self._free = slots
        self._waiting: deque[threading.Event] = deque()

    def __enter__(self) -> None:
        with self._lock:
            if self._free and not self._waiting:
                self._free -= 1
                return
            turn = threading.Event()
            self._waiting.append(turn)
        turn.wait()  # the slot is handed over by __exit__, already taken for us

    def __exit__(self, *exc) -> None:
        with self._lock:
            if self._waiting:
                self._waiting.popleft().set()
            else:
                self._free += 1
