"""Progress over papers on a goal: best-so-far ranked accuracy per lab and combined, against paper index and
time, on the goal page (server-side SVG) and from `agentlab goals progress` (text, PNG); time to target."""

from __future__ import annotations

from typer.testing import CliRunner

from preprint_server import crud
from preprint_server.client import PreprintClient
from preprint_server.db import Database
from preprint_server.serve import local_server
from tests.server.conftest import RESULT, paper_json


def record(acc: float, **kw) -> dict:
    correct = round(acc * 100)
    return {**RESULT, "correct": correct, "accuracy": correct / 100, "ci_low": max(0.0, acc - 0.1),
            "ci_high": min(1.0, acc + 0.1), **kw}


# (lab, results): the order of publication
PAPERS = [("lab-a", [record(0.50)]), ("lab-b", [record(0.55)]), ("lab-a", [record(0.60), record(0.40, technique="cot")]),
          ("lab-b", [record(0.90, split="dev")]),  # a dev result is never ranked: the line stays at 60%
          ("lab-b", [record(0.70)]), ("lab-a", [record(0.99, model="another-model")])]


def _seed(client, headers: dict[str, dict]) -> str:
    goal = client.post("/api/goals", json={"text": "Improve MATH-500", "benchmark": "math500", "target": 0.65,
                                           "baseline": 0.45}, headers=headers["lab-a"]).json()
    for i, (lab, results) in enumerate(PAPERS):
        body = paper_json(title=f"paper {i}", goal=goal["id"], results=results)
        assert client.post("/api/papers", json=body, headers=headers[lab]).status_code == 201
    return goal["id"]


def _headers(app) -> dict[str, dict]:
    return {lab: {"Authorization": f"Bearer {crud.create_key(app.state.services.db, lab)}"} for lab in ("lab-a", "lab-b")}


def test_progress_lines_per_lab_and_combined(client, app):
    gid = _seed(client, _headers(app))
    prog = client.get(f"/api/goals/{gid}/progress").json()
    assert prog["papers"] == 6 and prog["goal"]["status"] == "closed"  # 70% reached the 65% target
    main, other = prog["groups"]  # most papers first
    assert (main["benchmark"], main["model"]) == ("math500", "qwen2.5-0.5b") and other["model"] == "another-model"
    lines = {line["lab"]: line for line in main["lines"]}
    assert main["lines"][0]["lab"] is None
    steps = lambda lab: [(p["index"], p["lab_index"], p["accuracy"], p["best"]) for p in lines[lab]["points"]]
    assert steps(None) == [(1, 1, 0.5, 0.5), (2, 1, 0.55, 0.55), (3, 2, 0.6, 0.6), (5, 3, 0.7, 0.7)]
    assert steps("lab-a") == [(1, 1, 0.5, 0.5), (3, 2, 0.6, 0.6)]
    assert steps("lab-b") == [(2, 1, 0.55, 0.55), (5, 3, 0.7, 0.7)]
    elapsed = [p["elapsed_s"] for p in lines[None]["points"]]
    assert elapsed == sorted(elapsed) and elapsed[0] >= 0
    assert lines[None]["reached"]["index"] == 5 and lines[None]["reached"]["lab"] == "lab-b"
    assert lines["lab-b"]["reached"]["index"] == 5 and lines["lab-a"]["reached"] is None
    assert [line["lab"] for line in other["lines"]] == [None, "lab-a"]
    assert client.get("/api/goals/nope/progress").status_code == 404


def test_goal_page_draws_every_lab_line_without_javascript(client, app):
    gid = _seed(client, _headers(app))
    html = client.get(f"/goals/{gid}").text
    assert html.count('class="progress-chart"') == 4  # two groups, each against papers and against time
    for lab in ("all labs", "lab-a", "lab-b"):
        assert f'data-lab="{lab}"' in html
    assert "against papers published" in html and "against time" in html
    assert "target reached at paper 5" in html and "target not reached" in html
    assert "closed" in html and "target 65.0% reached" in html
    assert "<script" not in html


def test_goals_cli_queue_and_progress(tmp_path, embedder, workspace, monkeypatch):
    from agentlab.cli import app
    from agentlab.cli.common import console, state

    monkeypatch.setattr(console, "_width", 250)  # tables whole, as in a wide terminal
    run = CliRunner().invoke
    data = tmp_path / "d"
    keys = {lab: crud.create_key(Database(data / "preprints.db"), lab) for lab in ("lab-a", "lab-b")}
    with local_server(data, embedder=embedder) as url:
        monkeypatch.setenv("AGENTLAB_SERVER__URL", url)
        monkeypatch.setenv("AGENTLAB_SERVER__API_KEY", keys["lab-a"])
        monkeypatch.setattr(state, "_settings", None)
        r = run(app, ["goals", "add", "Improve MATH-500", "--benchmark", "math500", "--target", "0.65",
                      "--max-papers", "10"])
        assert r.exit_code == 0, r.output
        gid = r.output.split()[1]
        queue = tmp_path / "queue.jsonl"
        queue.write_text('{"text": "later goal", "benchmark": "math500", "target": 0.9, "max_papers": 3}\n')
        r = run(app, ["goals", "import", str(queue)])
        assert r.exit_code == 0 and "1 goal(s) added" in r.output, r.output
        with PreprintClient(url, keys["lab-a"]) as c:
            later = next(g for g in c.list_goals() if g.text == "later goal")
        assert (later.target, later.max_papers, later.status) == (0.9, 3, "open")
        r = run(app, ["goals", "claim", "--lease-s", "60", "--holder", "by-hand"])
        assert r.exit_code == 0 and f"goal {gid} claimed (attempt 1)" in r.output, r.output
        lease = r.output.split("lease ")[1].split()[0]
        assert "claimed (lab-a)" in run(app, ["goals", "list", "--status", "claimed"]).output
        r = run(app, ["goals", "claim", "--benchmark", "gsm8k"])
        assert r.exit_code == 1 and "no open goal on gsm8k" in str(r.exception)
        assert "is open" in run(app, ["goals", "release", lease]).output
        assert run(app, ["goals", "list", "--status", "nonsense"]).exit_code == 1

        with PreprintClient(url, keys["lab-a"]) as a, PreprintClient(url, keys["lab-b"]) as b:
            for lab, results in PAPERS[:5]:
                (a if lab == "lab-a" else b).publish(paper_json(title=f"{lab} paper", goal=gid, results=results))
        png = tmp_path / "progress.png"
        r = run(app, ["goals", "progress", gid, "--png", str(png)])
        assert r.exit_code == 0, r.output
        assert "all labs" in r.output and "lab-a" in r.output and "lab-b" in r.output
        assert "paper 5" in r.output and "not reached" in r.output  # lab-b at paper 5; lab-a never
        assert "*" in r.output and "A lab-a" in r.output
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert run(app, ["goals", "progress", gid, "--by", "time"]).exit_code == 0
        r = run(app, ["goals", "show", gid])
        assert r.exit_code == 0 and "status closed" in r.output and "by-hand" in r.output, r.output
        assert "target 65.0% reached" in r.output
        r = run(app, ["goals", "close", gid, "--reason", "again"])
        assert r.exit_code == 0 and "target 65.0% reached" in r.output  # closing twice keeps the first reason
