"""RayScheduler on a real multi-node Ray cluster on this machine (``ray.cluster_utils.Cluster``): a head
that runs nothing, a CPU worker and a worker with one (fake) GPU, one CPU each.

Jobs spread over both workers; a GPU job lands on the GPU node and sees its GPU; ``max_concurrent`` holds
across the cluster; a job whose node is killed runs again on the other one, seeded with what it had
computed (merged while it ran): a real evaluation job pays only for the problems not yet answered; a
training-like job (it binds workspace paths, so it works in the workspace) goes on from its last checkpoint;
a job no node left can take ends failed, saying why.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from agentlab.jobs import JobError, JobSpec, JobStore, Resources
from agentlab.jobs.cache_hooks import register_job_cache, unregister_job_cache
from agentlab.jobs.rerun_hooks import register_rerun, unregister_rerun
from sandbox import SandboxOptions
from tests.jobs.ray_callables import JOURNAL, SEED
from tests.sandbox.waits import wait_until

pytestmark = [pytest.mark.requires("bubblewrap", "ray"), pytest.mark.slow, pytest.mark.integration,
              pytest.mark.timeout(240)]
WHERE, ANSWER = "tests.jobs.ray_callables:where", "tests.jobs.ray_callables:answer_all"
DIE_ONCE, CHECKPOINTING = "tests.jobs.ray_callables:die_once", "tests.jobs.ray_callables:checkpointing"
SMALL_STORE = 80 * 1024 * 1024
# a killed node is declared dead within about a second (Ray's default takes 15 s and more)
FAST_DEATH = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 300, "health_check_failure_threshold": 3}
DEADLINE_S = 180.0  # waiting for jobs on 2 busy cores (never a measured limit)


@dataclass
class LocalCluster:
    """The cluster and its two workers; a test that kills one calls ``restore`` when done."""

    cluster: Any
    nodes: dict[str, Any] = field(default_factory=dict)  # "cpu" | "gpu" -> the node

    def add(self, kind: str) -> None:
        gpus = {"num_gpus": 1} if kind == "gpu" else {}
        self.nodes[kind] = self.cluster.add_node(num_cpus=1, resources={f"{kind}_node": 1},
                                                 object_store_memory=SMALL_STORE, **gpus)

    def id(self, kind: str) -> str:
        return self.nodes[kind].node_id

    def kill(self, node_id: str) -> str:
        """Kill the worker with this id at once (no graceful stop); its kind."""
        kind = next(k for k, n in self.nodes.items() if n.node_id == node_id)
        self.cluster.remove_node(self.nodes.pop(kind), allow_graceful=False)
        return kind

    def restore(self) -> None:
        for kind in ("cpu", "gpu"):
            if kind not in self.nodes:
                self.add(kind)


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[LocalCluster]:
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "object_store_memory": SMALL_STORE, "include_dashboard": False, "_system_config": FAST_DEATH})
    try:
        tc = LocalCluster(cluster)
        tc.restore()
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        yield tc
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture
def schedulers(ray_cluster, tmp_path) -> Iterator[Callable[..., Any]]:
    """``make(**kw)``: a RayScheduler on the cluster (shut down after the test, its jobs cancelled)."""
    from agentlab.jobs.ray_backend import RayScheduler

    made = []

    def make(**kw):
        made.append(RayScheduler(JobStore(tmp_path / "jobs.db"), tmp_path, sandbox_options=SandboxOptions(),
                                 journal_every_s=0.3, **kw))
        return made[-1]

    yield make
    for sched in made:
        sched.shutdown(wait=True, cancel_running=True)
    ray_cluster.restore()


class AnsweredItems:
    """The shared cache of ``answer_all`` jobs: the items answered so far, and the nodes that ran them."""

    collect = (JOURNAL,)

    def __init__(self) -> None:
        self.items: set[str] = set()
        self.nodes: list[str] = []

    def seed_files(self) -> dict[str, str]:
        return {SEED: "".join(f"{i}\n" for i in sorted(self.items))} if self.items else {}

    def merge_collected(self, collected: dict[str, str]) -> int:
        new = 0
        for line in collected.get(JOURNAL, "").split():
            if line.startswith("node:"):
                self.nodes += [line[5:]] if line[5:] not in self.nodes else []
            elif line not in self.items:
                self.items.add(line)
                new += 1
        return new


@pytest.fixture
def answered() -> Iterator[AnsweredItems]:
    cache = AnsweredItems()

    def factory(spec, workspace):
        return cache if spec.target in (ANSWER, DIE_ONCE) else None

    register_job_cache(factory)
    try:
        yield cache
    finally:
        unregister_job_cache(factory)


@pytest.fixture
def resumes_from_checkpoints() -> Iterator[None]:
    """``checkpointing`` jobs go on after a node loss as training jobs do (the training wing's own re-run)."""
    from agentlab.train.runner import resume_from

    def factory(spec, previous_workdir):
        return resume_from(spec, previous_workdir) if spec.target == CHECKPOINTING else None

    register_rerun(factory)
    try:
        yield
    finally:
        unregister_rerun(factory)


def _where(seconds: float, **resources) -> JobSpec:
    return JobSpec(target=WHERE, args={"seconds": seconds}, resources=Resources(timeout_s=120, **resources))


def _answer(items: list[str], gpus: int = 0) -> JobSpec:
    return JobSpec(target=ANSWER, args={"items": items, "seconds_each": 0.4}, resources=Resources(timeout_s=120, gpus=gpus))


def test_jobs_spread_over_both_workers_and_a_gpu_job_gets_the_gpu_node(ray_cluster, schedulers, tmp_path):
    sched = schedulers()
    plain = [sched.submit(_where(1.0)) for _ in range(4)]
    gpu = sched.submit(_where(0.0, gpus=1))
    with pytest.raises(JobError, match=r"needs 1 CPU\(s\) and 2 GPU\(s\) on one node.*1 CPU/1 GPU"):
        sched.submit(_where(0.0, gpus=2))
    # a job that reads a path its node lacks (a workspace that is not shared) is told so
    absent = sched.submit(JobSpec(target=WHERE, ro_binds={str(tmp_path / "absent"): "/data"}))
    jobs = [sched.wait(j, timeout=DEADLINE_S) for j in (*plain, gpu)]
    assert all(j.state == "succeeded" for j in jobs), [(j.error, j.stderr_tail()) for j in jobs]
    assert {j.result["node"] for j in jobs[:4]} == {ray_cluster.id("cpu"), ray_cluster.id("gpu")}
    assert all(j.result["cuda"] == "" for j in jobs[:4])
    assert jobs[4].result["node"] == ray_cluster.id("gpu") and jobs[4].result["cuda"] == "0"
    job = sched.wait(absent, timeout=DEADLINE_S)
    assert job.state == "failed" and job.error.startswith(f"the job reads host paths that are not on this machine: "
                                                          f"{tmp_path / 'absent'}; it runs on Ray node ")
    assert "a filesystem every node mounts at the same path" in job.error


def test_a_model_on_the_submitting_machines_loopback_is_out_of_reach_elsewhere():
    from agentlab.jobs.execute import out_of_reach
    from sandbox import ProxyConfig

    spec = JobSpec(target=WHERE, network="proxy", proxy=ProxyConfig(upstream="http://127.0.0.1:8080/v1"))
    assert out_of_reach(spec, "10.0.0.7", "10.0.0.7") is None  # the same machine
    assert out_of_reach(spec.model_copy(update={"proxy": ProxyConfig(upstream="http://10.0.0.5:8080/v1")}),
                         "10.0.0.9", "10.0.0.7") is None
    problem = out_of_reach(spec, "10.0.0.9", "10.0.0.7")
    assert problem.startswith("the job's model is served at http://127.0.0.1:8080/v1, on the machine that "
                              "submitted it (10.0.0.7) only, but the job runs on Ray node 10.0.0.9")


def test_max_concurrent_holds_across_the_cluster(schedulers):
    sched = schedulers(max_concurrent=1)
    ids = [sched.submit(_where(0.5)) for _ in range(3)]
    assert sched.get(ids[2]).state == "queued"  # held in the driver while the first runs
    dropped = sched.submit(_where(0.0))
    assert sched.cancel(dropped) == "cancelled" and sched.wait(dropped, timeout=5).state == "cancelled"
    jobs = [sched.wait(j, timeout=DEADLINE_S) for j in ids]
    assert all(j.state == "succeeded" for j in jobs), [(j.error, j.stderr_tail()) for j in jobs]
    runs = sorted((j.result["start"], j.result["end"]) for j in jobs)
    assert all(later[0] >= earlier[1] for earlier, later in pairwise(runs)), runs  # one at a time
    spans = sorted((j.started_at, j.finished_at) for j in jobs)
    assert all(later[0] >= earlier[1] for earlier, later in pairwise(spans)), spans


def test_a_job_whose_node_is_killed_runs_again_on_the_other_keeping_its_answers(ray_cluster, schedulers, answered):
    sched = schedulers()
    items = [f"q{i}" for i in range(30)]  # 12 s: on busy cores merging lags seconds; the job must outlive it
    job_id = sched.submit(_answer(items))
    wait_until(lambda: len(answered.items) >= 3, DEADLINE_S,
               "answers merged into the shared cache while the job runs")
    first = answered.nodes[0]
    before = set(answered.items)
    ray_cluster.kill(first)
    job = sched.wait(job_id, timeout=DEADLINE_S)
    assert job.state == "succeeded", (job.error, job.stderr_tail())
    assert job.result["node"] != first and answered.nodes == [first, job.result["node"]]
    seeded, again = set(job.result["seeded"]), set(job.result["answered"])
    assert seeded >= before and seeded | again == set(items)  # the re-run asked only what was not answered
    assert answered.items == set(items)
    note = (Path(job.log_dir) / "stderr.log").read_text().splitlines()[0]  # the loss outlives the success
    assert note.startswith("[agentlab] attempt 1: node lost 1 time (") and note.endswith("; run again")


def _checkpoints(workdir: Path) -> list[int]:
    """The steps of the complete checkpoints in a job's ``output``."""
    return sorted(int(p.parent.name.split("-")[1]) for p in workdir.glob("output/checkpoint-*/trainer_state.json"))


def test_a_training_job_whose_node_is_killed_resumes_from_its_last_checkpoint_on_the_other(
        ray_cluster, schedulers, resumes_from_checkpoints, tmp_path):
    sched = schedulers()
    (tmp_path / "data").mkdir()  # a workspace path it binds (as a training job its data): it works in the workspace
    job_id = sched.submit(JobSpec(kind="train", target=CHECKPOINTING, args={"steps": 30, "seconds_each": 0.4},
                                  ro_binds={str(tmp_path / "data"): "/data"}, resources=Resources(timeout_s=120)))
    first, second = (tmp_path / "jobs" / job_id / f"attempt-{k}" / "work" for k in (1, 2))
    wait_until(lambda: len(_checkpoints(first)) >= 2 or sched.get(job_id).done, DEADLINE_S,
               "the job's checkpoints in the workspace")
    assert not sched.get(job_id).done  # 12 s of steps: the kill lands while it runs
    saved = _checkpoints(first)[-1]
    lost = (first / "node.txt").read_text()
    ray_cluster.kill(lost)
    job = sched.wait(job_id, timeout=DEADLINE_S)
    assert job.state == "succeeded", (job.error, job.stderr_tail())
    [other] = ray_cluster.nodes.values()
    assert job.result["node"] == other.node_id != lost and job.workdir == str(second)
    start = job.result["start"]  # the last checkpoint the lost attempt completed (it may have saved one more)
    assert start >= saved > 0 and start in _checkpoints(first)
    assert job.result["last"] == 30 and _checkpoints(second) == list(range(start + 1, 31))
    lost_note, resumed_note = (Path(job.log_dir) / "stderr.log").read_text().splitlines()[:2]
    assert lost_note.startswith("[agentlab] attempt 1: node lost 1 time (") and lost_note.endswith("; run again")
    assert resumed_note == f"[agentlab] attempt 2 resumes from what attempt 1 saved in {first} (its node was lost)"


def test_a_job_no_node_left_can_take_ends_failed_saying_why(ray_cluster, schedulers, answered):
    sched = schedulers()
    running = sched.submit(_answer([f"g{i}" for i in range(50)], gpus=1))
    wait_until(lambda: answered.nodes, DEADLINE_S, "the GPU job started")
    assert answered.nodes == [ray_cluster.id("gpu")]
    waiting = sched.submit(_where(0.0, gpus=1))  # pending in Ray: the only GPU is taken
    ray_cluster.kill(ray_cluster.id("gpu"))
    lost, never = sched.wait(running, timeout=DEADLINE_S), sched.wait(waiting, timeout=DEADLINE_S)
    assert lost.state == "failed" and lost.error.startswith("node lost 1 time")
    assert "no node left can take it: job needs 1 CPU(s) and 1 GPU(s)" in lost.error
    assert never.state == "failed" and never.error.startswith("no node left can take it: job needs 1 CPU(s)")


def test_a_job_killed_as_its_node_dies_runs_again_and_one_killed_on_a_live_node_fails(ray_cluster, schedulers,
                                                                                       answered):
    # a task may still answer after its sandbox was killed with the node: the node's death decides
    sched = schedulers(node_death_wait_s=60)
    job_id = sched.submit(JobSpec(target=DIE_ONCE, resources=Resources(timeout_s=60)))
    wait_until(lambda: job_id in sched._suspects, DEADLINE_S,
               "the killed job waiting for its node's verdict")  # (white box)
    ray_cluster.kill(answered.nodes[0])
    job = sched.wait(job_id, timeout=DEADLINE_S)
    assert job.state == "succeeded" and job.result["seeded"] and job.result["node"] != answered.nodes[0]
    # the same death on a node that lives on is the job's own failure, recorded once the wait is over
    other = schedulers(node_death_wait_s=0.5)
    job = other.wait(other.submit(JobSpec(command=["sh", "-c", "kill -9 $$"])), timeout=DEADLINE_S)
    assert job.state == "failed" and job.error == "exit code 137", job.error


def test_a_job_ends_failed_once_it_lost_max_losses_nodes(ray_cluster, schedulers, answered):
    sched = schedulers(max_losses=1)
    job_id = sched.submit(_answer([f"m{i}" for i in range(50)]))
    wait_until(lambda: answered.nodes, DEADLINE_S, "the job started")
    ray_cluster.kill(answered.nodes[0])
    job = sched.wait(job_id, timeout=DEADLINE_S)
    assert job.state == "failed" and job.error.startswith("node lost 1 time (")
    assert job.error.endswith("not run again (at most 1 losses)")


def _eval_job(url: str, n: int) -> JobSpec:
    """A real evaluation job of ``n`` toy problems, one request at a time (the harness, the metered proxy)."""
    from agentlab.techniques import get_technique
    from sandbox import ProxyConfig

    problems = [{"id": f"p{i}", "question": f"Q{i}: what is {i} + 1?", "answer": str(i + 1), "benchmark": "toy",
                 "grader": "gsm8k"} for i in range(n)]
    args = {"spec": get_technique("direct").model_dump(mode="json"), "problems": problems, "model": "scripted-model",
            "benchmark": "toy", "subset": "all", "concurrency": 1, "timeout_s": 30, "max_retries": 0,
            "model_id": "gguf-sha256:toy"}
    return JobSpec(kind="eval", target="agentlab.eval.sandbox_job:run_eval", args=args, network="proxy",
                   proxy=ProxyConfig(upstream=url, max_requests=None, max_tokens=None),
                   resources=Resources(timeout_s=120))


def _shared_rows(workspace: Path) -> int:
    """Completions merged so far into the workspace's shared cache (0 before the first merge)."""
    from agentlab.eval.shared_cache import TABLE, workspace_cache_db

    db = workspace_cache_db(workspace)
    if not db.exists():
        return 0
    with closing(sqlite3.connect(db, timeout=30)) as conn:
        try:
            return conn.execute(f"SELECT COUNT(*) FROM {TABLE}").fetchone()[0]
        except sqlite3.OperationalError:  # the table is not made yet
            return 0


def test_an_evaluation_rerun_after_a_lost_node_pays_only_for_what_was_not_answered(ray_cluster, schedulers,
                                                                                   answered, tmp_path):
    import agentlab.eval  # noqa: F401  (evaluation jobs share the workspace's completion cache through its hook)
    from tests.eval.conftest import ScriptedLLMServer

    def slow_answer(body):
        time.sleep(0.5)
        return "The answer is " + str(int(body["messages"][-1]["content"].split("Q")[1][0]) + 1)

    srv = ScriptedLLMServer(slow_answer)
    try:
        sched = schedulers()
        # the GPU node's CPU is taken: the evaluation starts on the CPU node, and runs again on the GPU node
        blocker = sched.submit(_answer([f"b{i}" for i in range(15)], gpus=1))
        wait_until(lambda: answered.nodes, DEADLINE_S, "the job holding the GPU node started")
        job_id = sched.submit(_eval_job(f"http://127.0.0.1:{srv.port}/v1", 10))
        # merging runs behind answering (a journal read every 0.3 s, longer on busy cores): wait for the merge
        wait_until(lambda: _shared_rows(tmp_path) >= 3, DEADLINE_S,
                   "answers merged into the shared cache while the job runs")
        merged = _shared_rows(tmp_path)
        ray_cluster.kill(ray_cluster.id("cpu"))
        asked_before_loss = srv.completions()
        job, held = sched.wait(job_id, timeout=DEADLINE_S), sched.wait(blocker, timeout=DEADLINE_S)
    finally:
        srv.stop()
    assert held.state == "succeeded" and job.state == "succeeded", (job.error, job.stderr_tail())
    assert job.result["summary"]["correct"] == 10
    cache = job.result["cache"]
    # what was merged before the loss is not asked again; what was answered but not merged yet may be, once
    assert cache["seeded"] >= merged >= 3 and cache["cached_calls"] >= merged
    assert srv.completions() - 10 <= asked_before_loss - merged + 1  # (+1: a request in flight as the node died)
