"""`agentlab labs run --parallel N` / `labs resume` / `demo --labs N`: N lab processes on one preprint server.

End to end with real child processes, the real local preprint server `labs run` starts (labs on one goal, or
each on a goal of its own from the queue), and the scripted LLM double (tests/lab/doubles.py) as the agents
and the model under study; plus the user errors, the goal queue's sizing against a real server, and the
dashboard's model."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import httpx
import pytest

from agentlab.lab.parallel import (LabSlot, LabView, Registry, _last_progress, best_report, lab_status,
                                   overrides_env, phase_line, shared_model_specs)
from agentlab.lab.store import LabStore
from agentlab.procs import pid_alive
from preprint_server.client import PreprintClient
from tests.conftest import require_embedded_engine
from tests.lab.doubles import lab_env

GOAL = "Improve arithmetic accuracy of the model under study"
SIZES = ["--benchmark", "basic_arithmetic", "--report-n", "4", "--concurrency", "1", "--max-answer-tokens", "64"]
# The longest wait for one `labs run` or `labs resume` of two such small labs (they take about 40 s on two
# busy cores). A test waiting for several has a timeout of its own: the sum of its waits and a margin.
LABS_RUN_S = 300


def _env(workspace, llm) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTLAB_SERVER__")}  # no server: a local one
    return {**env, **lab_env(llm.url), "AGENTLAB_WORKSPACE": str(workspace), "PYTHONUNBUFFERED": "1"}


def _agentlab(*args: str) -> list[str]:
    return [sys.executable, "-m", "agentlab", *args]


def _runs(workspace) -> dict[str, dict]:
    reg = Registry.load(workspace)
    with LabStore(workspace / "agentlab.db") as store:
        return {s.run_id: store.get_run(s.run_id) for s in reg.labs}


def _wait(cond, what: str, deadline_s: float = 120.0):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.2)
    pytest.fail(f"waited {deadline_s:.0f} s for {what}")


# -- end to end -----------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(LABS_RUN_S + 60)
def test_two_labs_publish_two_papers_on_one_server_and_one_goal(workspace, llm, embedder):
    res = subprocess.run(_agentlab("labs", "run", "--parallel", "2", "--goal", GOAL, "--name", "para", "--quiet",
                                   "--dev-n", "3", "--iterations", "1", *SIZES),
                         env=_env(workspace, llm), capture_output=True, text=True, timeout=LABS_RUN_S, check=False)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-3000:]

    reg = Registry.load(workspace)  # the run registry `labs resume` reads
    assert [s.name for s in reg.labs] == ["para-1", "para-2"] and reg.server_url is None and reg.goal_id
    assert len({s.run_id for s in reg.labs}) == 2 and all(os.path.getsize(s.log) > 0 for s in reg.labs)
    runs = _runs(workspace)
    assert all(r["status"] == "done" and r["paper_id"] and r["goal_id"] == reg.goal_id for r in runs.values())
    assert {r["lab"] for r in runs.values()} == {"para-1", "para-2"}
    keys = {(workspace / "preprint" / "lab-keys" / f"para-{i}.key").read_text() for i in (1, 2)}
    assert len(keys) == 2  # a key of its own per lab

    from preprint_server.serve import local_server

    with local_server(workspace / "preprint", embedder=embedder) as url, PreprintClient(url) as client:
        goals = client.list_goals()
        papers = client.list_papers(goal=reg.goal_id, limit=10)
    assert [g.id for g in goals] == [reg.goal_id] and goals[0].papers == 2  # one goal, both papers on it
    assert papers.total == 2 and {p.lab for p in papers.items} == {"para-1", "para-2"}
    assert {p.id for p in papers.items} == {r["paper_id"] for r in runs.values()}
    assert f"/goals/{reg.goal_id}" in res.stdout and "summary" in res.stdout
    assert "para-1 " + reg.labs[0].run_id + ": experiments (running)" in res.stdout  # --quiet: a line per phase


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(120 + 150 + LABS_RUN_S + 60)  # the labs at work, their stop, `labs resume`
def test_ctrl_c_stops_every_lab_and_labs_resume_finishes_them(workspace, llm):
    llm.mus_delay_s = 0.3  # each dev job takes a few seconds: room to stop mid-experiments on a loaded machine
    env = _env(workspace, llm)
    proc = subprocess.Popen(_agentlab("labs", "run", "-n", "2", "--goal", GOAL, "--quiet", "--stop-timeout", "90",
                                      "--dev-n", "6", "--iterations", "2", *SIZES),
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def both_working():  # both labs past their start and neither in its final phases (a loaded machine
            # runs them at different speeds: waiting for both to be in the same phase could miss it)
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            if Registry.load(workspace) is None or not (workspace / "agentlab.db").exists():
                return False
            runs = _runs(workspace)
            return (len(runs) == 2 and all(r and r["phase"] in ("plan", "experiments") for r in runs.values())
                    and any(r["phase"] == "experiments" for r in runs.values()))

        _wait(both_working, "both labs to work (one of them in its experiments)")
        os.kill(proc.pid, signal.SIGINT)  # Ctrl-C
        out = proc.communicate(timeout=150)[0].decode()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, out[-4000:]
    runs = _runs(workspace)
    for run_id, row in runs.items():
        assert not pid_alive(row["pid"]), f"lab {run_id} still runs after Ctrl-C"
        assert row["status"] != "done" and run_id in out
    assert "agentlab labs resume" in out and "interrupted" in out

    res = subprocess.run(_agentlab("labs", "resume", "--quiet"), env=env, capture_output=True, text=True,
                         timeout=LABS_RUN_S, check=False)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-3000:]
    runs = _runs(workspace)
    assert all(r["status"] == "done" and r["paper_id"] for r in runs.values())
    assert len({r["paper_id"] for r in runs.values()}) == 2


def _queue_goals(data_dir, texts: list[str], benchmark: str) -> set[str]:
    """Open goals in the queue of the server that will run on ``data_dir``, written to its database: a
    server started in this process now would keep a Chroma cache that the labs' writes make stale."""
    from preprint_server import crud
    from preprint_server.core.config import ServerSettings
    from preprint_server.db import Database
    from preprint_server.schemas import GoalCreate

    db = Database(ServerSettings(data_dir=data_dir).db_path)
    try:
        return {crud.create_goal(db, GoalCreate(text=t, benchmark=benchmark), created_by="curator").id for t in texts}
    finally:
        db.engine.dispose()


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(LABS_RUN_S + 60)
def test_two_labs_from_the_queue_each_claim_a_goal_of_their_own_and_publish_on_it(workspace, llm, embedder):
    """`labs run --parallel 2 --from-queue`: on the local server `labs run` starts, each lab claims an open goal
    of its own from the queue, publishes its paper on it and gives it back when done."""
    from agentlab.lab.local_server import local_data_dir
    from preprint_server.serve import local_server

    data = local_data_dir(workspace)
    goals = _queue_goals(data, [GOAL, GOAL + " by sampling"], benchmark="basic_arithmetic")
    res = subprocess.run(_agentlab("labs", "run", "--parallel", "2", "--from-queue", "--name", "q", "--quiet",
                                   "--dev-n", "3", "--iterations", "1", *SIZES),
                         env=_env(workspace, llm), capture_output=True, text=True, timeout=LABS_RUN_S, check=False)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-3000:]

    reg = Registry.load(workspace)
    assert [s.name for s in reg.labs] == ["q-1", "q-2"] and reg.goal_id is None  # no shared goal
    runs = _runs(workspace)
    assert all(r["status"] == "done" and r["paper_id"] for r in runs.values())
    assert {r["goal_id"] for r in runs.values()} == goals  # a goal each, not the same one twice
    with local_server(data, embedder=embedder) as url, PreprintClient(url) as client:
        for run_id, r in runs.items():
            goal, lease = client.get_goal(r["goal_id"]), client.goal_leases(r["goal_id"])[0]
            assert (goal.status, goal.attempts, goal.papers) == ("open", 1, 1)  # its paper, then given back
            assert (lease.holder, lease.lab, lease.end_reason) == (run_id, r["lab"], "done")
            assert client.get_paper(r["paper_id"]).goal == r["goal_id"]


# -- user errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["--parallel", "0", "--goal", "g"], "--parallel: give the number of labs to run (1 or more), not 0"),
    (["--goal", "g", "--from-queue"], ("give exactly one source of goals: --goal TEXT, --goals-file FILE or "
                                       "--from-queue (got --goal and --from-queue)")),
    ([], "give exactly one source of goals"),
    (["--goals-file", "missing.yaml"], "missing.yaml: no such file"),
    (["--goal", "g", "--backend", "slurm"], "--backend: use local or ray, not 'slurm'"),
])
def test_user_mistakes_stop_with_one_line(workspace, monkeypatch, args, message):
    from typer.testing import CliRunner

    from agentlab.cli import app
    from agentlab.cli.common import state
    from agentlab.errors import AgentlabError

    monkeypatch.setattr(state, "_settings", None)
    r = CliRunner().invoke(app, ["labs", "run", *args])
    assert r.exit_code == 1 and isinstance(r.exception, AgentlabError), r.output
    assert message in str(r.exception)
    assert not (workspace / "preprint").exists()  # nothing started


def test_resume_without_a_parallel_run_says_what_to_do(workspace, monkeypatch):
    from typer.testing import CliRunner

    from agentlab.cli import app
    from agentlab.cli.common import state

    monkeypatch.setattr(state, "_settings", None)
    r = CliRunner().invoke(app, ["labs", "resume"])
    assert r.exit_code == 1 and "no `agentlab labs run` recorded" in str(r.exception)
    r = CliRunner().invoke(app, ["labs", "resume", "lab-nope"])
    assert r.exit_code == 1 and "no lab run 'lab-nope'" in str(r.exception)


def test_the_error_is_one_line_without_a_traceback(workspace):
    res = subprocess.run(_agentlab("labs", "run", "--parallel", "0", "--goal", "g"), capture_output=True, text=True,
                         timeout=120, check=False)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == ["error: --parallel: give the number of labs to run (1 or more), not 0"]


# -- the dashboard's model and the registry ----------------------------------------------------------------


def test_status_of_a_lab_from_its_row_and_exit_code():
    assert lab_status(None, None) == "starting"
    assert lab_status({"status": "failed", "note": "old"}, None) == "running"  # a resumed run's process runs
    assert lab_status({"status": "running"}, None) == "running"
    assert lab_status({"status": "done"}, 0) == "done"
    assert lab_status({"status": "failed", "note": "KeyboardInterrupt: "}, 130) == "interrupted"
    assert lab_status({"status": "running"}, -signal.SIGKILL) == "killed"
    assert lab_status({"status": "failed", "note": "no evaluation"}, 1) == "failed"
    assert lab_status(None, 1) == "failed"


def test_best_report_ignores_the_prior_best_and_the_dev_split():
    exps = [{"split": "dev", "key": "dev-1-0", "record": {"accuracy": 0.9}},
            {"split": "report", "key": "report-prior", "record": {"accuracy": 0.8}},
            {"split": "report", "key": "report-baseline", "record": {"accuracy": 0.4}},
            {"split": "report", "key": "report-best", "record": {"accuracy": 0.5}},
            {"split": "report", "key": "report-x", "record": None}]
    assert best_report(exps) == 0.5 and best_report([]) is None


def test_progress_line_and_phase_lines(tmp_path):
    log = tmp_path / "stdout.log"
    log.write_text("starting\nprogress 1 1 6\nprogress 3 2 6\nsome other line\n")
    assert _last_progress(log) == (3, 2, 6)
    assert _last_progress(tmp_path / "none.log") is None
    a = LabView("l-1", "run-1", "x.log", phase="plan", status="running")
    assert phase_line(None, a) == "l-1 run-1: plan (running)"
    assert phase_line(a, LabView("l-1", "run-1", "x.log", phase="plan", status="running", usd=1.0)) is None
    b = LabView("l-1", "run-1", "x.log", phase="final_evaluation", status="running")
    assert phase_line(a, b) == "l-1 run-1: final evaluation (running)"


def test_registry_round_trip_and_overrides_env(tmp_path):
    reg = Registry("x", [LabSlot("x-1", "run-1", "/l/1.log")], None, {"jobs.backend": "ray"}, "goal-1")
    reg.save(tmp_path)
    back = Registry.load(tmp_path)
    assert back == reg and back.slot("run-1").name == "x-1" and back.slot("nope") is None
    assert Registry.load(tmp_path / "empty") is None
    assert overrides_env({"jobs.backend": "ray", "budgets.max_usd": 2.5}) == {
        "AGENTLAB_JOBS__BACKEND": "ray", "AGENTLAB_BUDGETS__MAX_USD": "2.5"}


def test_one_llama_cpp_server_for_embedded_agents_and_model_under_study():
    from agentlab.config import Settings

    specs = shared_model_specs(Settings())  # the embedded model as agents and under study: one server
    assert [(s.engine, s.model) for s in specs] == [("llama.cpp", None)]
    s = Settings(agents={"model": "openai/x"}, model_under_study={"engine": "external", "url": "http://h/v1"})
    assert shared_model_specs(s) == []
    s = Settings(agents={"model": "openai/x"}, model_under_study={"model": "/m.gguf"})
    assert [s.model for s in shared_model_specs(s)] == ["/m.gguf"]
    # local GGUF agents: one server per file, shared with the model under study when it is the same file
    s = Settings(agents={"model": "/m.gguf", "roles": {"reviewer": "/r.gguf", "postdoc": "openai/x"}},
                 model_under_study={"model": "/m.gguf", "parallel": 3})
    assert [(x.model, x.parallel) for x in shared_model_specs(s)] == [("/m.gguf", 3), ("/r.gguf", 3)]


def test_registry_json_is_small_and_readable(tmp_path):
    Registry("x", [LabSlot("x-1", "r", "l")]).save(tmp_path)
    data = json.loads((tmp_path / "labs_parallel.json").read_text())
    assert set(data) == {"name", "labs", "server_url", "overrides", "goal_id", "lab_config", "created"}


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(1800)
def test_demo_with_two_labs_serves_the_embedded_model_once(workspace, llm):
    """`demo --labs 2`: the embedded model (llama.cpp) under study is served once for both labs; both papers
    on one local server, one goal; the papers and the goal page are printed."""
    require_embedded_engine()
    env = {k: v for k, v in _env(workspace, llm).items() if not k.startswith("AGENTLAB_MODEL_UNDER_STUDY__")}
    res = subprocess.run(_agentlab("demo", "--labs", "2", "--dev-n", "2", "--report-n", "3", "--quiet"),
                         env=env, capture_output=True, text=True, timeout=1700, check=False)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-3000:]
    servers = list((workspace / "servers").glob("*.log"))
    runs = _runs(workspace)
    assert {r["lab"] for r in runs.values()} == {"demo-lab-1", "demo-lab-2"}
    assert all(r["status"] == "done" and r["paper_id"] for r in runs.values())
    assert len({r["goal_id"] for r in runs.values()}) == 1
    for r in runs.values():
        assert f"paper {r['paper_id']} by {r['lab']}" in res.stdout
    assert "goal page: http://127.0.0.1:" in res.stdout and f"/goals/{runs[next(iter(runs))]['goal_id']}" in res.stdout
    assert servers, "no llama.cpp server was started"
    assert len(servers) == 1, servers  # one llama.cpp server for both labs, not one per lab
    # the goal's page draws both labs' progress lines (and the combined one), from the papers' report records
    from preprint_server.serve import local_server

    goal_id = next(iter(runs.values()))["goal_id"]
    with local_server(workspace / "preprint") as url:
        html = httpx.get(f"{url}/goals/{goal_id}", timeout=60).text
    for lab in ("all labs", "demo-lab-1", "demo-lab-2"):
        assert f'data-lab="{lab}"' in html


def test_one_goal_for_all_labs_and_no_more_labs_than_open_goals(preprint):
    from agentlab.lab.launch_many import fit_to_queue
    from agentlab.errors import AgentlabError
    from agentlab.lab.parallel import add_goal_once, import_goals
    from preprint_server.schemas import GoalCreate

    url = preprint["url"]
    with PreprintClient(url, api_key=preprint["key"]) as c:
        closed = c.close_goal(c.add_goal("a").id, "reached")
        claimed = c.add_goal("b", benchmark="gsm8k")
        assert c.claim_goal(goal=claimed.id) is not None
        assert add_goal_once(c, "b", "gsm8k").id == claimed.id  # the same goal again: its id, nothing added
        again = add_goal_once(c, "a", None)
        assert again.id != closed.id and len(c.list_goals()) == 3  # a closed goal is not reused
        assert import_goals(c, [GoalCreate(text=t) for t in ("a", "x", "x")]) == 1
        assert sorted(g.text for g in c.list_goals()) == ["a", "a", "b", "x"]
        assert fit_to_queue(c, url, 2) == 2  # open: the second "a" and "x"
        assert fit_to_queue(c, url, 5) == 2
        while c.claim_goal() is not None:  # until the queue has no open goal
            pass
        with pytest.raises(AgentlabError, match=f"no open goal in the queue on {re.escape(url)}"):
            fit_to_queue(c, url, 2)


def test_resume_continues_runs_skips_finished_ones_and_starts_labs_stopped_before_their_run():
    from agentlab.lab.launch_many import resume_argv_for

    slot = LabSlot("x-1", "run-1", "l.log")
    reg = Registry("x", [slot], goal_id="g1", lab_config={"dev_n": 3})
    assert resume_argv_for(slot, {"status": "done"}, reg, "http://s") is None
    argv = resume_argv_for(slot, {"status": "failed"}, reg, "http://s")
    assert argv[-6:] == ["lab", "resume", "run-1", "--quiet", "--server", "http://s"]
    argv = resume_argv_for(slot, None, reg, "http://s")  # Ctrl-C came before the lab recorded its run
    i = argv.index("child")
    assert argv[i - 1:i + 3] == ["labs", "child", "--run-id", "run-1"] and argv[-2:] == ["--goal-id", "g1"]
    assert json.loads(argv[argv.index("--lab-config") + 1]) == {"dev_n": 3, "lab_name": "x-1"}
