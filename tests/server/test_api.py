"""The HTTP API through FastAPI's TestClient (real SQLite, Chroma and embeddings on disk)."""

from __future__ import annotations

from preprint_server import crud
from tests.server.conftest import PAPERS, RESULT, paper_json


def test_publish_and_read_back(client, auth):
    r = client.post("/api/papers", json=paper_json(
        "Voting", "abs", "# Method\n\nWe vote.", tags=["math", "voting"], results=[RESULT]), headers=auth)
    assert r.status_code == 201, r.text
    paper = r.json()
    assert paper["lab"] == "lab-a" and paper["status"] == "published" and paper["tags"] == ["math", "voting"]
    got = client.get(f"/api/papers/{paper['id']}").json()
    assert got["body"] == "# Method\n\nWe vote."
    assert got["results"][0] | {"from_harness_records": True, "ranked": True} == got["results"][0]
    assert {k: got["results"][0][k] for k in RESULT} == RESULT


def test_idempotency_key_returns_first_paper(client, auth):
    first = client.post("/api/papers", json=paper_json(idempotency_key="run-7"), headers=auth)
    again = client.post("/api/papers", json=paper_json(title="changed", idempotency_key="run-7"), headers=auth)
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"] and again.json()["title"] == "A paper"
    assert client.get("/api/papers").json()["total"] == 1


def test_list_filters_sorting_and_pagination(client, auth, app):
    goal = client.post("/api/goals", json={"text": "beat math500", "benchmark": "math500"}, headers=auth).json()
    other = crud.create_key(app.state.services.db, "lab-b")
    for i in range(5):
        client.post("/api/papers", json=paper_json(f"p{i}", goal=goal["id"] if i % 2 == 0 else None,
                                                   results=[RESULT] if i == 1 else []), headers=auth)
    client.post("/api/papers", json=paper_json("from b", status="submitted"),
                headers={"Authorization": f"Bearer {other}"})
    page = client.get("/api/papers", params={"limit": 2, "offset": 0, "sort": "title"}).json()
    assert page["total"] == 6 and [p["title"] for p in page["items"]] == ["from b", "p0"]
    assert client.get("/api/papers", params={"limit": 2, "offset": 2, "sort": "title"}).json()["items"][0]["title"] == "p1"
    assert {p["title"] for p in client.get("/api/papers", params={"goal": goal["id"]}).json()["items"]} == {"p0", "p2", "p4"}
    assert [p["title"] for p in client.get("/api/papers", params={"lab": "lab-b"}).json()["items"]] == ["from b"]
    assert [p["title"] for p in client.get("/api/papers", params={"benchmark": "math500"}).json()["items"]] == ["p1"]
    assert [p["title"] for p in client.get("/api/papers", params={"status": "submitted"}).json()["items"]] == ["from b"]
    newest = client.get("/api/papers").json()["items"][0]["title"]
    assert newest == "from b"


def test_search_ranks_by_meaning_and_filters_by_goal(client, auth, seeded):
    hits = client.get("/api/search", params={"q": "majority vote over sampled answers", "k": 3}).json()
    assert hits[0]["id"] == seeded[0]
    assert hits[0]["title"] == PAPERS[0][0] and hits[0]["snippet"] and hits[0]["semantic"] > 0.3
    # no shared keywords: only the embedding can find it
    hits = client.get("/api/search", params={"q": "genomics and molecules", "k": 1}).json()
    assert [h["id"] for h in hits] == [seeded[1]]
    goal = client.post("/api/goals", json={"text": "g"}, headers=auth).json()["id"]
    assert client.get("/api/search", params={"q": "majority vote", "goal": goal}).json() == []


def test_search_covers_the_whole_paper_not_just_its_start(client, auth, seeded):
    filler = " ".join(["The experiment tracked routine laboratory bookkeeping details."] * 400)  # ~3,000 words
    body = filler + " Finally, we discovered that octopus camouflage patterns follow reaction diffusion."
    pid = client.post("/api/papers", json=paper_json("Long report", "nothing special", body), headers=auth).json()["id"]
    hits = client.get("/api/search", params={"q": "cephalopod skin pattern formation", "k": 1}).json()
    assert hits[0]["id"] == pid


def test_leaderboard_best_verified_per_technique(client, auth):
    def rec(technique, correct, verified=True):
        return dict(RESULT, technique=technique, correct=correct, accuracy=correct / 100,
                    ci_low=None, ci_high=None, job_id="j" if verified else "", record_id="r" if verified else "")
    client.post("/api/papers", json=paper_json("a", results=[rec("cot", 50), rec("sc", 60)]), headers=auth)
    best = client.post("/api/papers", json=paper_json("b", results=[rec("sc", 70)]), headers=auth).json()
    client.post("/api/papers", json=paper_json("c", results=[rec("sc", 99, verified=False)]), headers=auth)
    board = client.get("/api/leaderboard", params={"benchmark": "math500"}).json()
    assert [(e["technique"], e["accuracy"]) for e in board] == [("sc", 0.70), ("cot", 0.50)]
    assert board[0]["paper_id"] == best["id"]
    assert client.get("/api/leaderboard", params={"benchmark": "gsm8k"}).json() == []


def test_retracted_papers_are_hidden_from_search_and_leaderboards(client, auth, seeded, app):
    goal = client.post("/api/goals", json={"text": "beat math500", "benchmark": "math500"}, headers=auth).json()["id"]

    def publish(title, body, correct):
        rec = dict(RESULT, correct=correct, accuracy=correct / 100, ci_low=None, ci_high=None)
        r = client.post("/api/papers", json=paper_json(title, "", body, goal=goal, results=[rec]), headers=auth)
        assert r.status_code == 201, r.text
        return r.json()["id"]
    kept = publish("Modest voting", "We vote over five chains.", 60)
    doomed = publish("Zebra stripes voting", "Majority voting over zebra stripes chains.", 90)
    searches = [("zebra stripes", None), ("majority vote over sampled chains", None), ("voting", goal)]

    def found():
        return [[h["id"] for h in client.get("/api/search", params={"q": q, "k": 10, "goal": g}).json()]
                for q, g in searches]

    def boards():
        return [[(e["paper_id"], e["accuracy"]) for e in client.get("/api/leaderboard", params=p).json()]
                for p in ({}, {"benchmark": "math500"}, {"goal": goal})]

    def html_boards():  # the leaderboard tables of the home page (math500) and of the goal's page
        home, goal_page = client.get("/").text, client.get(f"/goals/{goal}").text
        return [home.split('id="leaderboard-math500"')[1].split("</table>")[0],
                goal_page.split("Best results")[1].split("</table>")[0]]

    # before: these searches and every leaderboard find it (its words, its meaning, its 90%)
    assert all(doomed in ids for ids in found())
    assert boards() == [[(doomed, 0.9)]] * 3
    assert all(f"/papers/{doomed}" in html for html in html_boards())

    other = {"Authorization": f"Bearer {crud.create_key(app.state.services.db, 'lab-b')}"}
    assert client.post(f"/api/papers/{doomed}/retract", headers=other).status_code == 403  # not its lab's
    assert client.post(f"/api/papers/{doomed}/retract").status_code == 401
    assert client.post("/api/papers/nope/retract", headers=auth).status_code == 404
    r = client.post(f"/api/papers/{doomed}/retract", headers=auth)
    assert r.status_code == 200 and r.json()["status"] == "retracted"
    assert client.post(f"/api/papers/{doomed}/retract", headers=auth).status_code == 200  # twice: no change

    # after: still readable by id, but no search finds it and the leaderboards show the standing best
    assert client.get(f"/api/papers/{doomed}").json()["status"] == "retracted"
    assert all(ids and doomed not in ids for ids in found()), found()
    assert [h["id"] for h in client.get("/api/search", params={"q": "zebra stripes", "k": 1}).json()] != [doomed]
    assert "Zebra stripes" not in client.get("/search", params={"q": "zebra stripes"}).text
    assert boards() == [[(kept, 0.6)]] * 3
    for html in html_boards():
        assert f"/papers/{kept}" in html and f"/papers/{doomed}" not in html and "90.0%" not in html


def test_citations_and_cited_by(client, auth, seeded):
    r = client.post("/api/papers", json=paper_json("follow-up", citations=seeded[:2]), headers=auth)
    new = r.json()["id"]
    assert r.json()["citations"] == seeded[:2]
    assert [p["id"] for p in client.get(f"/api/papers/{new}/citations").json()] == seeded[:2]
    assert [p["id"] for p in client.get(f"/api/papers/{seeded[0]}/cited-by").json()] == [new]
    assert client.get(f"/api/papers/{seeded[0]}").json()["cited_by"] == [new]


def test_reviews_and_goals(client, auth, seeded):
    r = client.post(f"/api/papers/{seeded[0]}/reviews", json={"scores": {"overall": 7}, "text": "Solid."}, headers=auth)
    assert r.status_code == 201 and r.json()["lab"] == "lab-a"
    assert client.get(f"/api/papers/{seeded[0]}").json()["reviews"][0]["text"] == "Solid."
    g = client.post("/api/goals", json={"text": "improve MATH-500", "benchmark": "math500", "baseline": 0.702}, headers=auth)
    assert g.status_code == 201
    goals = client.get("/api/goals").json()
    assert [(x["text"], x["baseline"], x["status"], x["created_by"]) for x in goals] == [("improve MATH-500", 0.702, "open", "lab-a")]
    assert client.get(f"/api/goals/{g.json()['id']}").json()["text"] == "improve MATH-500"


def test_multipart_with_pdf_source_and_artifacts(client, auth, settings):
    import json
    pdf = b"%PDF-1.4\n% test\n"
    r = client.post("/api/papers", headers=auth, data={"metadata": json.dumps(paper_json("with files"))},
                    files=[("pdf", ("paper.pdf", pdf, "application/pdf")),
                           ("source", ("main.tex", b"\\documentclass{article}", "text/x-tex")),
                           ("artifacts", ("results.csv", b"a,b\n1,2\n", "text/csv"))])
    assert r.status_code == 201, r.text
    p = r.json()
    assert p["has_pdf"] and p["has_source"] and {f["kind"] for f in p["files"]} == {"pdf", "source", "artifact"}
    got = client.get(f"/api/papers/{p['id']}/pdf")
    assert got.content == pdf and got.headers["content-type"] == "application/pdf"
    assert client.get(f"/api/papers/{p['id']}/source").content == b"\\documentclass{article}"
    assert client.get(f"/api/papers/{p['id']}/artifacts/results.csv").content == b"a,b\n1,2\n"
    # stored once, by content hash, inside the data dir
    sha = next(f["sha256"] for f in p["files"] if f["kind"] == "pdf")
    assert (settings.blob_dir / sha[:2] / sha).read_bytes() == pdf


def test_latex_source_as_text(client, auth):
    p = client.post("/api/papers", json=paper_json(latex_source="\\section{Intro}"), headers=auth).json()
    assert client.get(f"/api/papers/{p['id']}/source").text == "\\section{Intro}"


def test_health_and_openapi(client, seeded):
    assert client.get("/health").json() | {} == {"status": "ok", "papers": 3, "indexed_papers": 3, "version": "0.1.0"}
    spec = client.get("/openapi.json").json()
    assert "/api/papers" in spec["paths"] and "PaperCreate" in spec["components"]["schemas"]
    assert client.get("/docs").status_code == 200


def test_failed_index_write_leaves_no_half_paper(client, auth, app, monkeypatch):
    svc = app.state.services

    def boom(*a, **k):
        raise RuntimeError("disk full")
    monkeypatch.setattr(svc.index, "add", boom)
    from fastapi.testclient import TestClient
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.post("/api/papers", json=paper_json("doomed", body="unique zebra words"), headers=auth)
    assert r.status_code == 500
    monkeypatch.undo()
    assert client.get("/api/papers").json()["total"] == 0
    assert client.get("/api/search", params={"q": "unique zebra words"}).json() == []
    assert svc.index.collection.count() == 0
