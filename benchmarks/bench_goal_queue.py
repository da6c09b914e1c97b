"""Goal queue under concurrent labs: claims per second, claim and heartbeat latency over real HTTP (uvicorn on
loopback, SQLite WAL), and that no goal is handed out twice.

    .venv/bin/python benchmarks/bench_goal_queue.py [--goals 200] [--clients 16] [--heartbeats 400]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

from preprint_server import crud
from preprint_server.client import PreprintClient
from preprint_server.core.config import ServerSettings
from preprint_server.db import Database
from preprint_server.search import default_embedder
from preprint_server.serve import local_server


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--goals", type=int, default=200)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--heartbeats", type=int, default=400)
    a = ap.parse_args()
    data = Path(tempfile.mkdtemp(prefix="bench-goal-queue-"))
    key = crud.create_key(Database(ServerSettings(data_dir=data).db_path), "bench-lab")
    with local_server(data, embedder=default_embedder()) as url:
        with PreprintClient(url, key) as c:
            for i in range(a.goals):
                c.add_goal(f"goal {i}")
        leases, latencies, start = [], [], threading.Barrier(a.clients)

        def worker() -> None:
            with PreprintClient(url, key) as c:
                start.wait()
                while True:
                    t = time.perf_counter()
                    lease = c.claim_goal(lease_s=600)
                    latencies.append(time.perf_counter() - t)
                    if lease is None:
                        return
                    leases.append(lease)

        threads = [threading.Thread(target=worker) for _ in range(a.clients)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        goals = [lease.goal_id for lease in leases]
        with PreprintClient(url, key) as c:
            beats = []
            for i in range(a.heartbeats):
                t = time.perf_counter()
                c.heartbeat_goal(leases[i % len(leases)].id)
                beats.append(time.perf_counter() - t)
    print(f"{a.goals} goals, {a.clients} concurrent clients claiming until the queue is empty")
    print(f"  claims granted {len(goals)}, distinct goals {len(set(goals))} (duplicates: {len(goals) - len(set(goals))})")
    print(f"  {len(goals) / wall:.0f} claims/s; claim latency p50 {1000 * statistics.median(latencies):.1f} ms, "
          f"p99 {1000 * pct(latencies, 0.99):.1f} ms")
    print(f"  heartbeat latency (one client) p50 {1000 * statistics.median(beats):.1f} ms, "
          f"p99 {1000 * pct(beats, 0.99):.1f} ms")


if __name__ == "__main__":
    main()
