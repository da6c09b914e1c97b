"""Local scheduler: disjoint GPU sets (fake inventory 0..3), fairness, limits, cancel, recovery."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from agentlab.jobs import JobError, JobSpec, JobStore, LocalScheduler, Resources
from sandbox import SandboxOptions
from sandbox.executor import _gpu_uuids
from tests.sandbox.conftest import needs_bwrap
from tests.sandbox.waits import readline_within, wait_until

pytestmark = [needs_bwrap, pytest.mark.integration]
REPO = Path(__file__).resolve().parents[2]

# holds its GPUs until the test opens the gate (a host folder bound read-only at /gate), at most 120 s
GPU_PROBE = """
import os, json, time
end = time.monotonic() + 120
while not os.path.exists("/gate/open") and time.monotonic() < end:
    time.sleep(0.05)
json.dump({"cuda": os.environ["CUDA_VISIBLE_DEVICES"], "gate": os.path.exists("/gate/open")},
          open(os.environ["AGENTLAB_RESULT"], "w"))
"""

# what a job sees of the GPU device nodes inside its sandbox (name -> content of the fake node)
DEV_LISTING = """
import json, os
nodes = {n: open("/dev/" + n).read() for n in sorted(os.listdir("/dev")) if n.startswith("nvidia") and n != "nvidia-caps"}
caps = sorted(os.listdir("/dev/nvidia-caps")) if os.path.isdir("/dev/nvidia-caps") else None
json.dump({"nodes": nodes, "caps": caps}, open(os.environ["AGENTLAB_RESULT"], "w"))
"""


def sched(tmp_path, **kw):
    kw.setdefault("gpus", [0, 1, 2, 3])
    kw.setdefault("sandbox_options", SandboxOptions(backend="bubblewrap"))
    return LocalScheduler(JobStore(tmp_path / "jobs.db"), tmp_path, **kw)


def test_disjoint_gpu_sets(tmp_path):
    gate = tmp_path / "gate"
    gate.mkdir(mode=0o755)
    spec = JobSpec(code=GPU_PROBE, ro_binds={str(gate): "/gate"}, resources=Resources(gpus=2))
    with sched(tmp_path, max_concurrent=4, cpus=4) as s:
        ids = [s.submit(spec) for _ in range(3)]
        # the first two hold all four GPUs until the gate opens: the third cannot start meanwhile
        wait_until(lambda: all(s.get(i).state == "running" for i in ids[:2]), 120, "the first two jobs to start")
        assert s.get(ids[2]).state == "queued"
        (gate / "open").touch()
        jobs = [s.wait(i, timeout=120) for i in ids]
    assert all(j.state == "succeeded" and j.result["gate"] for j in jobs), [(j.error, j.result) for j in jobs]
    uuids = _gpu_uuids([0, 1, 2, 3])  # on a GPU host, real GPUs are named by UUID (none without nvidia-smi)
    for j in jobs:
        assert len(j.gpus) == 2
        assert j.result["cuda"] == ",".join(uuids.get(g, str(g)) for g in j.gpus)
    a, b, c = jobs
    assert set(a.gpus).isdisjoint(b.gpus)
    # only 4 GPUs: the third job ran after one of the first two finished, on freed GPUs
    assert c.started_at >= min(a.finished_at, b.finished_at)


def test_gpu_devices_seen_inside(monkeypatch, tmp_path):
    """Inside a real sandbox a job sees its own /dev/nvidiaN, the shared control nodes and nvidia-caps,
    and no other GPU's node (host devices: a fake tree of regular files, whatever the host has)."""
    from sandbox.backends.bubblewrap import BubblewrapBackend

    dev = tmp_path / "fake-dev"
    (dev / "nvidia-caps").mkdir(parents=True)
    control = ["nvidia-modeset", "nvidia-uvm", "nvidia-uvm-tools", "nvidiactl"]
    for name in ["nvidia0", "nvidia1", "nvidia2", *control, "nvidia-caps/nvidia-cap1", "nvidia-caps/nvidia-cap2"]:
        (dev / name).write_text(f"fake {name}")
    monkeypatch.setattr(BubblewrapBackend, "dev_root", str(dev))
    with sched(tmp_path, gpus=[0, 1, 2], start=False) as s:
        # two labs, both queued before the scheduler starts: one dispatch pass gives GPU 0 to a, GPU 1 to b
        a = s.submit(JobSpec(code=DEV_LISTING, lab="a", resources=Resources(gpus=1)))
        b = s.submit(JobSpec(code=DEV_LISTING, lab="b", resources=Resources(gpus=1)))
        s.start()
        ja, jb = s.wait(a, timeout=120), s.wait(b, timeout=120)
    assert (ja.state, jb.state) == ("succeeded", "succeeded"), (ja.error, jb.error)
    assert (ja.gpus, jb.gpus) == ([0], [1])
    for job, gpu in ((ja, "nvidia0"), (jb, "nvidia1")):
        assert job.result == {"nodes": {n: f"fake {n}" for n in sorted([gpu, *control])},
                              "caps": ["nvidia-cap1", "nvidia-cap2"]}, job.result


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
    # a shell sleeper: it starts in milliseconds, so a short limit does not race a Python start-up
    with sched(tmp_path) as s:
        job = s.wait(s.submit(JobSpec(command=["sh", "-c", "echo step 1; exec sleep 60"],
                                      resources=Resources(timeout_s=2))), 120)
    assert job.state == "timed_out" and job.killed_by == "wall_timeout"
    assert "wall-clock timeout 2 s" in job.error
    assert (Path(job.log_dir) / "stdout.log").read_text() == "step 1\n"


def test_cancel_running_and_queued(tmp_path):
    with sched(tmp_path, max_concurrent=1) as s:
        a = s.submit(JobSpec(code="import time; print('go', flush=True); time.sleep(60)"))
        b = s.submit(JobSpec(command=["true"]))
        wait_until(lambda: s.get(a).state == "running", 120, "job a to start")
        assert s.cancel(b) == "cancelled"
        # a cancel from another process goes through the store
        JobStore(tmp_path / "jobs.db").request_cancel(a)
        ja = s.wait(a, timeout=60)
    assert ja.state == "cancelled" and s.get(b).state == "cancelled"


CRASHING_SCHEDULER = """
import sys, time
sys.path.insert(0, {repo!r})
from agentlab.jobs import JobSpec, JobStore, LocalScheduler
from sandbox import SandboxOptions
s = LocalScheduler(JobStore({db!r}), {ws!r}, gpus=[0, 1], max_concurrent=1,
                   sandbox_options=SandboxOptions(backend='bubblewrap'), heartbeat_s=0.2)
running = s.submit(JobSpec(command=['sh', '-c', 'sleep 300', {token!r}], resources={{'gpus': 1}}))
queued = s.submit(JobSpec(code="import json, os; print('ran'); json.dump({{'ran': True}}, open(os.environ['AGENTLAB_RESULT'], 'w'))"))
end = time.monotonic() + 120
while s.get(running).state == 'queued' and time.monotonic() < end:
    time.sleep(0.05)
assert s.get(running).state == 'running', s.get(running)
assert s.get(queued).state == 'queued', s.get(queued)  # max_concurrent=1: it waits behind the first
print(running, queued, flush=True)
time.sleep(300)
"""


def _leftovers(token: str) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["cmdline"]) if token in " ".join(p.info["cmdline"] or [])]


def crash_a_scheduler(tmp_path: Path, token: str) -> tuple[str, str]:
    """A real scheduler process with one running and one queued job, killed with SIGKILL: (running, queued)."""
    script = CRASHING_SCHEDULER.format(repo=str(REPO), db=str(tmp_path / "jobs.db"), ws=str(tmp_path), token=token)
    with open(tmp_path / "scheduler.err", "w") as err:
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        line = readline_within(proc.stdout, 120, "the scheduler process to report its jobs")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        proc.stdout.close()
    ids = line.split()
    assert len(ids) == 2 and all(i.startswith("job-") for i in ids), (line, (tmp_path / "scheduler.err").read_text())
    # die-with-parent is asynchronous: wait for the event (bounded), not for a fixed time
    wait_until(lambda: not _leftovers(token), 60, "the dead scheduler's sandbox to die with it")
    return ids[0], ids[1]


def test_recovery_after_scheduler_dies(tmp_path):
    jid, _ = crash_a_scheduler(tmp_path, "recover-" + os.urandom(4).hex())
    with sched(tmp_path, gpus=[0, 1], heartbeat_s=0.2, start=False) as s:
        assert s.recovered == [jid]
        old = s.get(jid)
        assert old.state == "failed" and "recovered after a restart" in old.error
        assert s.assignments() == {0: None, 1: None}  # the dead job's GPU is free again
        new = s.retry(jid)
        s.cancel(new)
        assert s.get(new).retry_of == jid and s.get(new).attempt == 2
        assert s.get(new).state == "cancelled"


def test_queued_job_runs_after_scheduler_dies(tmp_path):
    """A job still queued when its scheduler was SIGKILLed is not lost: the next scheduler runs it."""
    running, queued = crash_a_scheduler(tmp_path, "queued-" + os.urandom(4).hex())
    assert JobStore(tmp_path / "jobs.db").get(queued).state == "queued"
    with sched(tmp_path, gpus=[0, 1], heartbeat_s=0.2) as s:
        assert s.recovered == [running]  # only the running one failed; the queued one stays queued
        job = s.wait(queued, timeout=120)
    assert job.state == "succeeded" and job.result == {"ran": True}, (job.state, job.error)
    assert job.scheduler_id == s.id and job.attempt == 1 and job.retry_of is None
    assert (Path(job.log_dir) / "stdout.log").read_text() == "ran\n"
