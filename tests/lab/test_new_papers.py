"""Collaboration during a run: two labs on one goal and one server. Lab A publishes its paper while lab B is
in its first experiment; B's next iteration reads it (papers on the goal are asked for before every
iteration, not only at the start), B cites it, and the goal's progress has a line for each lab.
The two labs share one job scheduler: A's end cancels only A's jobs and leaves the scheduler running B's."""

from __future__ import annotations

import httpx
import pytest

from agentlab.jobs import JobStore, LocalScheduler
from agentlab.lab.local_server import lab_key
from agentlab.lab.run import start_lab
from preprint_server.client import PreprintClient
from tests.lab.conftest import tiny_config

pytestmark = pytest.mark.requires("bubblewrap")  # a lab run starts with a real sandboxed job (lab/preflight.py)

GOAL = "Improve arithmetic accuracy of a small model"


def test_a_paper_published_mid_run_reaches_the_other_labs_next_iteration(lab_settings, llm, preprint):
    url = preprint["url"]
    client = PreprintClient(url, preprint["key"])
    goal = client.add_goal(GOAL, benchmark="basic_arithmetic")
    key_a = lab_key(preprint["data_dir"], "lab-a")
    lab_a: dict = {}
    shared = LocalScheduler.from_settings(lab_settings)  # one scheduler for both labs

    def lab_b_events(kind: str, data: dict) -> None:
        # lab A runs (and publishes) once lab B's first dev job has finished, before B's second iteration
        if kind == "job_finished" and data.get("key") == "dev-1-0" and not lab_a:
            try:
                out = start_lab(lab_settings, GOAL, tiny_config(server_url=url, lab_name="lab-a", max_iterations=1,
                                                                literature_top_n=0), goal_id=goal.id, server_key=key_a,
                                scheduler=shared)
                lab_a.update(out.publication, run_id=out.run_id)
            except Exception as exc:  # the lab's event hook swallows errors: keep it for the assertion
                lab_a["error"] = repr(exc)

    try:
        # search_k=1: lab B's two expansions are two rounds, and the literature is refreshed before each round
        out_b = start_lab(lab_settings, GOAL, tiny_config(server_url=url, max_iterations=2, search_k=1), goal_id=goal.id,
                          server_key=preprint["key"], on_event=lab_b_events, scheduler=shared)
    finally:
        shared.shutdown()
    assert lab_a.get("status") == "published", lab_a
    paper_a = lab_a["paper_id"]
    first, second = out_b.state["experiments"]
    assert paper_a not in first["papers_read"] and paper_a in second["papers_read"]
    read = {p["id"]: p for p in out_b.state["literature"]}
    assert read[paper_a]["read"] == "mid-run" and read[paper_a]["results"]  # its ranked records came along
    assert any("before experiment 2: 1 new paper(s) on the goal" in n and paper_a in n for n in out_b.state["notes"])
    with JobStore(lab_settings.workspace / "jobs.db") as jobs:
        runs = {run: jobs.list(run_id=run) for run in (lab_a["run_id"], out_b.run_id)}
    assert all(runs.values()) and {j.scheduler_id for js in runs.values() for j in js} == {shared.id}
    assert not any(j.state == "cancelled" for js in runs.values() for j in js)  # A's end cancelled nothing of B's

    paper_b = client.get_paper(out_b.publication["paper_id"])
    assert paper_b.goal == goal.id and paper_a in paper_b.citations and paper_b.lab == "test-lab"
    progress = client.goal_progress(goal.id)
    assert progress.papers == 2
    labs = {line.lab for group in progress.groups for line in group.lines}
    assert {"lab-a", "test-lab", None} <= labs
    page = httpx.get(f"{url}/goals/{goal.id}").text
    assert 'data-lab="lab-a"' in page and 'data-lab="test-lab"' in page
    client.close()
