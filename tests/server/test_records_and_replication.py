"""Records that say what they are (split, model identity, completeness, failed requests, tokens) and
replications: which records are ranked, how leaderboards group, and the server's replication verdicts."""

from __future__ import annotations

import sqlite3

from preprint_server import crud
from preprint_server.db import Database
from tests.server.conftest import RESULT, paper_json


def rec(**kw):
    out = {**RESULT, "ci_low": None, "ci_high": None, **kw}
    out["accuracy"] = out["correct"] / out["n"]
    return out


def publish(client, headers, *results, title="p"):
    r = client.post("/api/papers", json=paper_json(title, results=list(results)), headers=headers)
    assert r.status_code == 201, r.text
    return r.json()


def board(client, **params):
    return [(e["technique"], e["model"], e["subset"], e["accuracy"])
            for e in client.get("/api/leaderboard", params={"benchmark": "math500", **params}).json()]


def test_published_records_keep_split_identity_completeness_errors_tokens(client, auth):
    full = rec(technique="cot", correct=40, split="dev", model_id="gguf-sha256:0123456789abcdef", n_planned=100,
               complete=True, errors=3, tokens_per_problem=212.5)
    got = publish(client, auth, full)["results"][0]
    assert {k: got[k] for k in full} == full
    assert got["from_harness_records"] is True and got["ranked"] is False  # a dev record is never ranked


def test_records_that_contradict_themselves_or_omit_the_split_are_refused(client, auth):
    no_split = {k: v for k, v in rec(correct=50).items() if k != "split"}
    for bad, word in ((no_split, "split"), (rec(correct=50, n_planned=200), "n_planned"),
                      (rec(correct=50, errors=101), "errors"), (rec(correct=50, split="test"), "split")):
        r = client.post("/api/papers", json=paper_json("bad", results=[bad]), headers=auth)
        assert r.status_code == 422 and word in r.text, (bad, r.text)
    assert client.get("/api/papers").json()["total"] == 0  # nothing half-written


def test_leaderboard_ranks_only_complete_report_records_and_groups_comparable_ones(client, auth):
    publish(client, auth, rec(technique="cot", correct=50), rec(technique="sc", correct=60))
    publish(client, auth, rec(technique="sc", correct=90, split="dev"))  # tuned on dev: never ranked
    publish(client, auth, rec(technique="sc", correct=80, n_planned=200, complete=False))  # half done
    publish(client, auth, rec(technique="sc", correct=20, n=50, model="smollm2-135m"))  # another model
    publish(client, auth, rec(technique="sc", correct=70, subset="levels=5"))  # other problems
    publish(client, auth, rec(technique="sc", correct=95, job_id="", record_id=""))  # not from the harness
    assert board(client) == [("sc", "qwen2.5-0.5b", "levels=5", 0.70),
                             ("sc", "qwen2.5-0.5b", "test", 0.60), ("cot", "qwen2.5-0.5b", "test", 0.50),
                             ("sc", "smollm2-135m", "test", 0.40)]
    groups = crud.leaderboard_groups(crud.leaderboard(client.app.state.services.db))
    assert [(g["subset"], g["model"], len(g["entries"])) for g in groups] == [
        ("levels=5", "qwen2.5-0.5b", 1), ("test", "qwen2.5-0.5b", 2), ("test", "smollm2-135m", 1)]
    db = client.app.state.services.db
    assert crud.progress(db, "math500", "test", "qwen2.5-0.5b") == [(1, 0.60), (6, 0.60)]  # dev 90% is not progress
    home = client.get("/").text
    assert home.count("<table class=\"board\">") == 3 and "90.0%" not in home and "95.0%" not in home


def test_replications_get_the_servers_verdict_and_show_on_the_paper(client, auth, app):
    original = rec(technique="sc", correct=62, model_id="gguf-sha256:aaaa000011112222")
    paper = publish(client, auth, original, rec(technique="cot", correct=50))
    pid = paper["id"]
    other = {"Authorization": f"Bearer {crud.create_key(app.state.services.db, 'lab-b')}"}
    third = {"Authorization": f"Bearer {crud.create_key(app.state.services.db, 'lab-c')}"}
    assert "Not replicated yet" in client.get(f"/papers/{pid}").text

    def replicate(headers, **kw):
        return client.post(f"/api/papers/{pid}/replications", json=rec(**{**original, "job_id": "", **kw}),
                           headers=headers)

    # what does not match the original is named, and nothing is stored
    for kw, word in (({"subset": "levels=5"}, "subset"), ({"model": "other"}, "model"),
                     ({"technique": "tot"}, "technique"), ({"spec_hash": "zzz"}, "spec_hash"),
                     ({"model_id": "gguf-sha256:bbbb000011112222"}, "model_id"),
                     ({"split": "dev"}, "report"), ({"n_planned": 120, "complete": False}, "incomplete"),
                     ({"errors": 2}, "failed requests"), ({"record_id": ""}, "record_id")):
        r = replicate(other, **kw)
        assert r.status_code == 422 and word in r.text, (kw, r.text)
    assert replicate(None).status_code == 401
    assert client.post("/api/papers/nope/replications", json=original, headers=other).status_code == 404
    assert client.get(f"/api/papers/{pid}/replications").json() == []

    # another URL for the same model is no mismatch (endpoint identities compare nothing)
    ok = replicate(other, correct=58, model_id="endpoint:0123456789abcdef")
    assert ok.status_code == 201, ok.text
    body = ok.json()
    assert body["verdict"] == "consistent" and body["lab"] == "lab-b"
    assert body["original_ci_low"] < 0.58 < body["original_ci_high"]  # Wilson 95% of 62/100: 0.522-0.709
    self_check = replicate(auth, correct=62)  # the authors' own re-run is stored but proves nothing
    assert self_check.status_code == 201
    got = client.get(f"/api/papers/{pid}").json()
    assert got["replication"] == {"consistent_labs": 1, "not_reproduced_labs": 0}
    assert len(got["replications"]) == 2
    assert [e["replications"] for e in client.get("/api/leaderboard").json()] == [1, 0]
    assert board(client, replicated=True) == [("sc", "qwen2.5-0.5b", "test", 0.62)]
    page = client.get(f"/papers/{pid}").text
    assert "Replicated by 1 lab, consistent within the confidence interval" in page and "lab-b" in page

    failed = replicate(third, correct=40)  # 40% is far outside 52-71%
    assert failed.status_code == 201 and failed.json()["verdict"] == "not reproduced"
    got = client.get(f"/api/papers/{pid}").json()
    assert got["replication"] == {"consistent_labs": 1, "not_reproduced_labs": 1}
    assert "Not reproduced by 1 lab" in client.get(f"/papers/{pid}").text
    assert client.get("/api/leaderboard").json()[0]["not_reproduced"] == 1


def test_a_database_from_before_the_record_fields_opens_and_reads_its_results(tmp_path, client, auth):
    path = tmp_path / "old.db"
    Database(path).close()
    con = sqlite3.connect(path)  # make it look like an old server's database, with one result in it
    con.execute("DROP INDEX IF EXISTS ix_results_split")
    for col in ("split", "model_id", "n_planned", "complete", "errors", "tokens_per_problem"):
        con.execute(f"ALTER TABLE results DROP COLUMN {col}")
    con.execute("INSERT INTO labs (id, name, created) VALUES (1, 'old', '2025-01-01 00:00:00')")
    con.execute("INSERT INTO papers (id, title, abstract, body, lab_id, status, tags, created) VALUES "
                "('p1', 't', '', '', 1, 'published', '[]', '2025-01-01 00:00:00')")
    con.execute("INSERT INTO results (paper_id, benchmark, subset, model, technique, spec_hash, n, correct, accuracy, "
                "job_id, record_id) VALUES ('p1', 'math500', '', 'm', 'cot', '', 10, 5, 0.5, 'j', 'r')")
    con.commit()
    con.close()
    db = Database(path)
    r = crud.get_paper(db, "p1").results[0]
    assert (r.split, r.complete, r.errors, r.model_id, r.ranked) == ("report", True, 0, "", True)
    assert [e["accuracy"] for e in crud.leaderboard(db)] == [0.5]
    db.close()


def spec_json(**kw):
    """A technique spec as agentlab dumps it (every field), without importing agentlab into server tests."""
    spec = {"name": "careful_cot", "description": "", "kind": "prompt", "system": "Be careful.",
            "template": "{question}\n\n{answer_instruction}", "answer_instruction": "Put the final answer in \\boxed{}.",
            "few_shot": [], "steps": [], "sampling": {"temperature": 0.0, "top_p": 1.0, "max_tokens": 256},
            "chains": {"n": 1, "temperatures": None, "aggregation": "first"}, "refine": None, "code": None, **kw}
    return spec


def test_techniques_are_published_as_specs_whose_hash_names_their_content(client, auth):
    from preprint_server.schemas import spec_content_hash

    spec = spec_json()
    h = spec_content_hash(spec)
    technique = {"name": "careful_cot", "spec_hash": h, "spec": spec, "record_ids": ["rec-1"]}
    lying = dict(technique, spec=spec_json(system="Be sloppy."))  # same hash claimed, other content
    r = client.post("/api/papers", json=paper_json("liar", techniques=[lying]), headers=auth)
    assert r.status_code == 422 and "is not the hash of this spec" in r.text
    paper = client.post("/api/papers", json=paper_json("careful", techniques=[technique],
                                                         results=[rec(technique="careful_cot", correct=60, spec_hash=h),
                                                                  rec(technique="zero_shot_cot", correct=50)]),
                        headers=auth).json()
    pid = paper["id"]
    assert paper["techniques"] == [dict(technique, kind="prompt")]
    [got] = client.get(f"/api/papers/{pid}/techniques").json()
    assert got["spec"] == spec and got["lab"] == "lab-a" and [r["technique"] for r in got["results"]] == ["careful_cot"]
    assert [t["paper_id"] for t in client.get(f"/api/techniques/{h}").json()] == [pid]
    assert client.get("/api/techniques/0000000000000000").status_code == 404
    page = client.get(f"/papers/{pid}").text
    assert 'id="techniques"' in page and h in page and "Be careful." in page


def test_the_servers_spec_hash_is_agentlabs():
    from agentlab.techniques import builtin_techniques
    from preprint_server.schemas import spec_content_hash

    for spec in builtin_techniques().values():
        assert spec_content_hash(spec.model_dump(mode="json")) == spec.spec_hash(), spec.name
