"""Sandbox start overhead vs a plain subprocess, and local scheduler throughput.

    .venv/bin/python benchmarks/bench_sandbox.py [--runs 50] [--jobs 200]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agentlab.jobs import JobSpec, JobStore, LocalScheduler
from sandbox import Limits, SandboxOptions, run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--concurrent", type=int, default=4)
    a = ap.parse_args()
    backend = "bubblewrap" if shutil.which("bwrap") else "process"
    opts = SandboxOptions(backend=backend)
    tmp = Path(tempfile.mkdtemp(prefix="bench-sandbox-"))
    cmd = [sys.executable, "-c", "pass"]

    plain = []
    for _ in range(a.runs):
        t = time.perf_counter()
        subprocess.run(cmd, check=True)
        plain.append(time.perf_counter() - t)
    boxed = []
    for i in range(a.runs):
        t = time.perf_counter()
        r = run(command=cmd, options=opts, workdir=tmp / f"w{i}", limits=Limits(timeout_s=60))
        boxed.append(time.perf_counter() - t)
        assert r.exit_code == 0, r.stderr_tail
    mp, mb = statistics.median(plain), statistics.median(boxed)
    print(f"start overhead ({backend}, `python -c pass`, median of {a.runs}): "
          f"plain subprocess {mp * 1000:.1f} ms, sandbox {mb * 1000:.1f} ms, ratio {mb / mp:.2f}x, "
          f"added {(mb - mp) * 1000:.1f} ms")

    ws = tmp / "ws"
    sched = LocalScheduler(JobStore(ws / "jobs.db"), ws, gpus=[], max_concurrent=a.concurrent, cpus=a.concurrent,
                           sandbox_options=opts, start=False)
    ids = [sched.submit(JobSpec(command=["true"], lab=f"lab{i % 3}")) for i in range(a.jobs)]
    t = time.perf_counter()
    sched.start()
    jobs = [sched.wait(j, timeout=1200) for j in ids]
    dt = time.perf_counter() - t
    sched.shutdown()
    ok = sum(j.state == "succeeded" for j in jobs)
    print(f"scheduler throughput ({backend}, {a.jobs} trivial jobs `true`, {a.concurrent} concurrent): "
          f"{a.jobs / dt:.1f} jobs/s ({dt:.1f} s, {ok}/{a.jobs} succeeded)")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
