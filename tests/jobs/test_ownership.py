"""Labs don't hurt each other: two scheduler processes share one workspace; each runs only the jobs it
queued, and one lab's cleanup (shutdown with cancel) cancels its own jobs and never the other's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agentlab.jobs import JobError, JobSpec, JobStore, LocalScheduler
from sandbox import SandboxOptions
from tests.sandbox.conftest import needs_bwrap
from tests.sandbox.waits import readline_within, wait_until

pytestmark = [needs_bwrap, pytest.mark.integration]
REPO = Path(__file__).resolve().parents[2]
DEADLINE_S = 120

# one lab's scheduler in a process of its own, driven by lines on stdin:
#   "gate NAME" queues a job that waits for the file <ws>/gate/NAME; "quick" queues a job that ends at once;
#   "stop" is the lab's cleanup: shutdown(cancel_running=True), as Experiments.close does. Each answer is one line on stdout.
LAB_PROCESS = """
import sys
sys.path.insert(0, {repo!r})
from agentlab.jobs import JobSpec, JobStore, LocalScheduler
from sandbox import SandboxOptions
lab, run, slots, ws = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
s = LocalScheduler(JobStore(ws + '/jobs.db'), ws, gpus=[], cpus=4, max_concurrent=slots, runs=[run],
                   sandbox_options=SandboxOptions(backend='bubblewrap'), heartbeat_s=0.2)
print(s.id, flush=True)
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == 'gate':
        wait = 'while [ ! -e /gate/' + cmd[1] + ' ]; do sleep 0.05; done'
        print(s.submit(JobSpec(lab=lab, run_id=run, command=['sh', '-c', wait], ro_binds={{ws + '/gate': '/gate'}})),
              flush=True)
    elif cmd[0] == 'quick':
        print(s.submit(JobSpec(lab=lab, run_id=run, command=['true'])), flush=True)
    elif cmd[0] == 'stop':
        s.shutdown(wait=True, cancel_running=True)  # waits for its cancelled job to be recorded
        print('stopped', flush=True)
        break
"""


class LabProcess:
    def __init__(self, ws: Path, lab: str, run: str, slots: int):
        script = LAB_PROCESS.format(repo=str(REPO))
        self.proc = subprocess.Popen([sys.executable, "-c", script, lab, run, str(slots), str(ws)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.id = self.ask(None)

    def ask(self, command: str | None) -> str:
        if command is not None:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        return readline_within(self.proc.stdout, DEADLINE_S, f"an answer to {command!r}").strip()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(DEADLINE_S)


def test_two_lab_processes_share_a_workspace_without_touching_each_others_jobs(tmp_path):
    store = JobStore(tmp_path / "jobs.db")
    (tmp_path / "gate").mkdir(mode=0o755)
    a = LabProcess(tmp_path, "lab-a", "run-a", slots=1)
    b = LabProcess(tmp_path, "lab-b", "run-b", slots=2)
    try:
        # lab a: one job running, three queued behind its single slot
        a_jobs = [a.ask("gate open-a") for _ in range(4)]
        wait_until(lambda: store.get(a_jobs[0]).state == "running", DEADLINE_S, "lab a's first job to start")
        # lab b has a free slot and sees lab a's queue, yet runs only its own job
        b_quick = b.ask("quick")
        wait_until(lambda: store.get(b_quick).done, DEADLINE_S, "lab b's job to finish")
        assert store.get(b_quick).state == "succeeded", store.get(b_quick).error
        b_long = b.ask("gate open-b")
        wait_until(lambda: store.get(b_long).state == "running", DEADLINE_S, "lab b's long job to start")
        assert [store.get(j).state for j in a_jobs] == ["running", "queued", "queued", "queued"]
        assert {store.get(j).scheduler_id for j in a_jobs[:1]} == {a.id}
        assert store.get(b_quick).scheduler_id == store.get(b_long).scheduler_id == b.id

        # lab a's cleanup: its running job and its queued jobs are cancelled; lab b's job runs on
        assert a.ask("stop") == "stopped"
        wait_until(lambda: all(store.get(j).state == "cancelled" for j in a_jobs), DEADLINE_S,
                   "lab a's jobs to be cancelled")
        assert store.get(b_long).state == "running" and not store.get(b_long).cancel_requested
        (tmp_path / "gate" / "open-b").touch()
        wait_until(lambda: store.get(b_long).state == "succeeded", DEADLINE_S, "lab b's job to finish")
    finally:
        a.close()
        b.close()


def test_scope_decides_which_orphans_a_scheduler_adopts(tmp_path):
    """Queued jobs of a scheduler that is gone: a run's scheduler takes its own run's, never another run's."""
    store = JobStore(tmp_path / "jobs.db")
    mine = store.add(JobSpec(lab="lab-a", run_id="run-a", command=["true"]), submitted_by="sched-gone")
    theirs = store.add(JobSpec(lab="lab-b", run_id="run-b", command=["true"]), submitted_by="sched-gone")
    opts = SandboxOptions(backend="bubblewrap")
    with LocalScheduler(store, tmp_path, gpus=[], cpus=2, runs=["run-a"], sandbox_options=opts) as s:
        assert s.wait(mine, timeout=DEADLINE_S).state == "succeeded"
        with pytest.raises(JobError, match="outside this scheduler's scope"):
            s.submit(JobSpec(lab="lab-b", run_id="run-b", command=["true"]))
        assert s.get(theirs).state == "queued"
    # a scheduler serving several labs (one process, shared) cancels one run's jobs, not the other's
    with LocalScheduler(store, tmp_path, gpus=[], cpus=2, sandbox_options=opts, start=False) as shared:
        gated = shared.submit(JobSpec(lab="lab-a", run_id="run-a", command=["sleep", "60"]))
        assert shared.cancel_jobs(run_id="run-b") == [theirs]
        assert store.get(theirs).state == "cancelled" and store.get(gated).state == "queued"
        assert shared.cancel_jobs(lab="lab-a") == [gated]
