"""The search gate: at most `slots` blocks at once, the others served in arrival order."""

from __future__ import annotations

import threading
import time

import pytest

from preprint_server.search.gate import FifoGate


@pytest.mark.parametrize("slots", [1, 2])
def test_gate_limits_concurrency_and_serves_waiters_in_arrival_order(slots):
    gate = FifoGate(slots)
    running, peak, order = [0], [0], []
    lock = threading.Lock()
    release = threading.Event()

    def job(i: int) -> None:
        with gate:
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
                order.append(i)
            release.wait(10)
            with lock:
                running[0] -= 1

    threads = []
    for i in range(6):  # the first `slots` threads run; the others queue up, one after the other
        t = threading.Thread(target=job, args=(i,))
        t.start()
        threads.append(t)
        deadline = time.monotonic() + 10
        while len(order) < min(i + 1, slots) or len(gate._waiting) < i + 1 - slots:
            assert time.monotonic() < deadline, "thread did not reach the gate"
            time.sleep(0.001)
    assert order == list(range(slots)) and len(gate._waiting) == 6 - slots
    release.set()
    for t in threads:
        t.join(10)
    assert peak[0] == slots and gate._free == slots and not gate._waiting
    if slots == 1:  # one at a time: entering order is observable
        assert order == [0, 1, 2, 3, 4, 5]


def test_a_failing_block_gives_its_slot_back():
    gate = FifoGate(1)
    with pytest.raises(RuntimeError), gate:
        raise RuntimeError("search failed")
    done = threading.Event()
    t = threading.Thread(target=lambda: (gate.__enter__(), done.set(), gate.__exit__(None, None, None)))
    t.start()
    assert done.wait(10)
    t.join(10)
    with pytest.raises(ValueError):
        FifoGate(0)
