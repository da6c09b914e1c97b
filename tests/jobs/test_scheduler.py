"""Local scheduler: disjoint GPU sets (fake inventory 0..3), fairness, limits, cancel, recovery."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from agentlab.jobs import JobError, JobSpec, JobStore, LocalScheduler, Resources
from sandbox import SandboxOptions
from sandbox.executor import _gpu_uuids
from tests.sandbox.conftest import needs_bwrap

pytestmark = [needs_bwrap, pytest.mark.integration]
REPO = Path(__file__).resolve().parents[2]

GPU_PROBE = """
import os, json, time
time.sleep({sleep})
json.dump({{"cuda": os.environ["CUDA_VISIBLE_DEVICES"], "t": time.time()}}, open(os.environ["AGENTLAB_RESULT"], "w"))
"""


def sched(tmp_path, **kw):
    kw.setdefault("gpus", [0, 1, 2, 3])
    kw.setdefault("sandbox_options", SandboxOptions(backend="bubblewrap"))
    return LocalScheduler(JobStore(tmp_path / "jobs.db"), tmp_path, **kw)


def test_disjoint_gpu_sets(tmp_path):
    with sched(tmp_path, max_concurrent=4, cpus=4) as s:
        ids = [s.submit(JobSpec(code=GPU_PROBE.format(sleep=1.0), resources=Resources(gpus=2))) for _ in range(3)]
        jobs = [s.wait(i, timeout=120) for i in ids]
    assert all(j.state == "succeeded" for j in jobs), [j.error for j in jobs]
    uuids = _gpu_uuids([0, 1, 2, 3])  # on a GPU host, real GPUs are named by UUID (none without nvidia-smi)
    for j in jobs:
        assert len(j.gpus) == 2
        assert j.result["cuda"] == ",".join(uuids.get(g, str(g)) for g in j.gpus)
    a, b, c = jobs
    assert set(a.gpus).isdisjoint(b.gpus)
    # only 4 GPUs: the third job ran after one of the first two finished, on freed GPUs
    assert c.started_at >= min(a.finished_at, b.finished_at)


def test_gpu_device_bind_list(monkeypatch, tmp_path):
    """Only the assigned /dev/nvidiaN nodes (plus the shared control nodes) are bound into the sandbox."""
    from sandbox.backends import bubblewrap as bw
    from sandbox.executor import Plan
    from sandbox.types import Limits

    real_exists, real_isdir = os.path.exists, os.path.isdir

    def fake_tree(real):  # /dev/nvidiactl and /dev/nvidia0..N only, whatever the host has
        return lambda p: (str(p)[11:].isdigit() or str(p) == "/dev/nvidiactl") if str(p).startswith("/dev/nvidia") \
            else real(p)
    monkeypatch.setattr(bw.os.path, "exists", fake_tree(real_exists))
    monkeypatch.setattr(bw.os.path, "isdir", fake_tree(real_isdir))
    plan = Plan(workdir=tmp_path, limits=Limits(), network="none", host_command=["true"], sandbox_command=["true"],
                uid=65534, gid=65534, drop_privileges=True, gpus=[1, 3])
    argv = bw.BubblewrapBackend().prepare(plan).argv
    binds = [argv[i + 1] for i, a in enumerate(argv) if a == "--dev-bind"]
    assert binds == ["/dev/nvidiactl", "/dev/nvidia1", "/dev/nvidia3"]


def test_more_gpus_than_exist_rejected_at_submit(tmp_path):
    with sched(tmp_path) as s:
        with pytest.raises(JobError, match="needs 5 GPU"):
            s.submit(JobSpec(command=["true"], resources=Resources(gpus=5)))
        assert s.store.list() == []
    with sched(tmp_path / "nogpu", gpus=[]) as s:
        with pytest.raises(JobError, match="has 0"):
            s.submit(JobSpec(command=["true"], resources=Resources(gpus=1)))
        jid = s.submit(JobSpec(command=["true"]))  # jobs that need no GPU still run
        assert s.wait(jid, timeout=60).state == "succeeded"


def test_fairness_between_labs(tmp_path):
    s = sched(tmp_path, max_concurrent=1, start=False)
    ids = {}
    for lab, n in (("A", 4), ("B", 2)):
        for i in range(n):
            ids[f"{lab}{i}"] = s.submit(JobSpec(command=["true"], lab=lab))
    s.start()
    with s:
        jobs = {k: s.wait(v, timeout=120) for k, v in ids.items()}
    order = [k for k, _ in sorted(jobs.items(), key=lambda kv: kv[1].started_at)]
    assert order == ["A0", "B0", "A1", "B1", "A2", "A3"]


def test_concurrency_limit(tmp_path):
    with sched(tmp_path, max_concurrent=2, cpus=8) as s:
        ids = [s.submit(JobSpec(code="import time; time.sleep(0.5)")) for _ in range(4)]
        jobs = [s.wait(i, timeout=120) for i in ids]
    events = sorted([(j.started_at, 1) for j in jobs] + [(j.finished_at, -1) for j in jobs])
    level = peak = 0
    for _, d in events:
        level += d
        peak = max(peak, level)
    assert peak <= 2


def test_callable_target_result_and_failure(tmp_path):
    with sched(tmp_path) as s:
        ok = s.wait(s.submit(JobSpec(kind="eval", target="tests.jobs.callables:add", args={"a": 2, "b": 40})), 120)
        bad = s.wait(s.submit(JobSpec(kind="eval", target="tests.jobs.callables:boom")), 120)
    assert ok.state == "succeeded" and ok.result == {"sum": 42}
    assert bad.state == "failed" and "harness exploded" in bad.error
    assert "ValueError" in (Path(bad.log_dir) / "stderr.log").read_text()
    # persisted: a fresh store on the same file sees the same records
    again = JobStore(tmp_path / "jobs.db").get(ok.id)
    assert again.result == {"sum": 42} and again.spec.target == "tests.jobs.callables:add"


def test_over_memory_recorded_with_partial_logs(tmp_path):
    code = "print('before the bomb', flush=True)\nx = []\nwhile True: x.append(bytearray(8 << 20))"
    with sched(tmp_path) as s:
        job = s.wait(s.submit(JobSpec(code=code, resources=Resources(memory_mb=96))), 120)
    assert job.state == "failed" and job.killed_by == "memory"
    assert "memory limit 96 MB" in job.error
    assert "before the bomb" in (Path(job.log_dir) / "stdout.log").read_text()


def test_over_time_recorded_with_partial_logs(tmp_path):
    code = "import time\nprint('step 1', flush=True)\ntime.sleep(60)"
    with sched(tmp_path) as s:
        job = s.wait(s.submit(JobSpec(code=code, resources=Resources(timeout_s=1))), 120)
    assert job.state == "timed_out" and job.killed_by == "wall_timeout"
    assert "wall-clock timeout 1 s" in job.error
    assert "step 1" in (Path(job.log_dir) / "stdout.log").read_text()


def test_cancel_running_and_queued(tmp_path):
    with sched(tmp_path, max_concurrent=1) as s:
        a = s.submit(JobSpec(code="import time; print('go', flush=True); time.sleep(60)"))
        b = s.submit(JobSpec(command=["true"]))
        while s.get(a).state != "running":
            time.sleep(0.05)
        assert s.cancel(b) == "cancelled"
        # a cancel from another process goes through the store
        JobStore(tmp_path / "jobs.db").request_cancel(a)
        ja = s.wait(a, timeout=60)
    assert ja.state == "cancelled" and s.get(b).state == "cancelled"


def test_recovery_after_scheduler_dies(tmp_path):
    token = "recover-" + os.urandom(4).hex()
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from agentlab.jobs import JobSpec, JobStore, LocalScheduler
        from sandbox import SandboxOptions
        s = LocalScheduler(JobStore({str(tmp_path / 'jobs.db')!r}), {str(tmp_path)!r}, gpus=[0, 1],
                           sandbox_options=SandboxOptions(backend='bubblewrap'), heartbeat_s=0.2)
        jid = s.submit(JobSpec(command=['sh', '-c', 'sleep 300', {token!r}], resources={{'gpus': 1}}))
        while s.get(jid).state == 'queued':
            time.sleep(0.05)
        assert s.get(jid).state == 'running', s.get(jid)
        print(jid, flush=True)
        time.sleep(300)
        """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    jid = proc.stdout.readline().strip()
    assert jid.startswith("job-")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    def leftovers():
        return [p for p in psutil.process_iter(["cmdline"]) if token in " ".join(p.info["cmdline"] or [])]

    # die-with-parent is asynchronous: wait for the event (bounded), not for a fixed time
    deadline = time.monotonic() + 30
    while leftovers() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not leftovers(), "the dead scheduler's sandbox must die with it"
    with sched(tmp_path, gpus=[0, 1], heartbeat_s=0.2) as s:
        assert jid in s.recovered
        old = s.get(jid)
        assert old.state == "failed" and "recovered after a restart" in old.error
        assert s.assignments() == {0: None, 1: None}  # the dead job's GPU is free again
        new = s.retry(jid)
        s.cancel(new)
        assert s.get(new).retry_of == jid and s.get(new).attempt == 2
