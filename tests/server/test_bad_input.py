"""Client mistakes get clear 4xx answers, never a 500, and never write anything."""

from __future__ import annotations

import json

import httpx
import pytest
from fastapi.testclient import TestClient

from preprint_server import crud
from preprint_server.app import create_app
from preprint_server.core.config import ServerSettings
from tests.server.conftest import RESULT, paper_json


@pytest.fixture
def small(tmp_path, embedder):
    """A server with tiny size limits."""
    app = create_app(ServerSettings(data_dir=tmp_path / "s", max_upload_bytes=4000, max_file_bytes=1000), embedder)
    key = crud.create_key(app.state.services.db, "lab")
    with TestClient(app) as c:
        yield c, {"Authorization": f"Bearer {key}"}


def test_oversized_json_body_is_413(small):
    c, auth = small
    r = c.post("/api/papers", json=paper_json(body="x" * 5000), headers=auth)
    assert r.status_code == 413 and "larger than 4000" in r.json()["detail"]
    assert c.get("/api/papers").json()["total"] == 0


def test_oversized_streamed_body_without_length_is_413(small):
    c, auth = small
    chunks = (b'{"title": "t", "body": "' + b"x" * 1000 for _ in range(10))
    r = c.post("/api/papers", content=chunks, headers={**auth, "content-type": "application/json"})
    assert r.status_code == 413


def test_oversized_file_is_413(small):
    c, auth = small
    r = c.post("/api/papers", headers=auth, data={"metadata": json.dumps(paper_json())},
               files={"pdf": ("a.pdf", b"%PDF-" + b"0" * 2000, "application/pdf")})
    assert r.status_code == 413 and "pdf" in r.json()["detail"]
    assert c.get("/api/papers").json()["total"] == 0


def _artifacts_upload(n: int, size: int = 900) -> httpx.Request:
    """A multipart publication with `n` artifacts of `size` bytes: each under the per-file limit (1000)."""
    files = [("artifacts", (f"part{i}.bin", bytes([65 + i]) * size, "application/octet-stream")) for i in range(n)]
    req = httpx.Request("POST", "http://testserver/api/papers", data={"metadata": json.dumps(paper_json())},
                        files=files)
    req.read()
    return req


def _nothing_written(c) -> None:
    svc = c.app.state.services
    assert c.get("/api/papers").json()["total"] == 0
    assert [p for p in svc.settings.blob_dir.rglob("*") if p.is_file()] == []
    assert svc.index.collection.count() == 0 and svc.index.keywords.paper_ids() == set()


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
def test_multipart_over_the_total_limit_with_parts_that_fit_is_413_and_writes_nothing(small, streamed):
    c, auth = small
    req = _artifacts_upload(5)
    assert len(req.content) > 4000  # the request limit; every file is under the 1000-byte file limit
    headers = {**auth, "content-type": req.headers["content-type"]}
    if streamed:  # no Content-Length: the limit is found while the form is read
        body = req.content
        r = c.post("/api/papers", content=(body[i:i + 512] for i in range(0, len(body), 512)), headers=headers)
    else:
        r = c.post("/api/papers", content=req.content, headers=headers)
    assert r.status_code == 413 and "larger than 4000" in r.json()["detail"], r.text
    _nothing_written(c)
    # the same upload with fewer parts is accepted: the 413 was the total size, nothing else
    fits = _artifacts_upload(3)
    r = c.post("/api/papers", content=fits.content, headers={**auth, "content-type": fits.headers["content-type"]})
    assert r.status_code == 201 and len(r.json()["files"]) == 3, r.text


def test_invalid_fields_are_named(client, auth):
    bad = dict(RESULT, accuracy=0.9)  # contradicts correct/n
    r = client.post("/api/papers", json={"title": " ", "results": [bad], "tags": "x", "surprise": 1}, headers=auth)
    assert r.status_code == 422
    body = r.json()
    assert set(body["fields"]) >= {"title", "results.0", "tags", "surprise"}
    assert body["detail"].startswith("invalid fields: ")
    assert any("correct/n" in e["msg"] for e in body["errors"])


@pytest.mark.parametrize("payload, field", [
    ({"title": "t", "goal": "nope"}, "goal"),
    ({"title": "t", "citations": ["deadbeef0000"]}, "citations"),
    ({"title": "t", "citations": ["../../etc/passwd"]}, "citations"),
])
def test_unknown_references_are_422(client, auth, payload, field):
    r = client.post("/api/papers", json=payload, headers=auth)
    assert r.status_code == 422 and field in r.json()["fields"]


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1,2]", b'{"title": 5}'])
def test_malformed_json_is_422_not_500(client, auth, raw):
    r = client.post("/api/papers", content=raw, headers={**auth, "content-type": "application/json"})
    assert r.status_code == 422


def test_multipart_mistakes(client, auth):
    r = client.post("/api/papers", headers=auth, data={"nometa": "x"}, files={"pdf": ("a.pdf", b"%PDF-1", "application/pdf")})
    assert r.status_code == 422 and r.json()["fields"] == ["metadata"]
    r = client.post("/api/papers", headers=auth, data={"metadata": "{"}, files={"pdf": ("a.pdf", b"%PDF-1", "x")})
    assert r.status_code == 422
    r = client.post("/api/papers", headers=auth, data={"metadata": json.dumps(paper_json())},
                    files={"pdf": ("a.pdf", b"<html>not a pdf", "application/pdf")})
    assert r.status_code == 422 and r.json()["fields"] == ["pdf"]
    r = client.post("/api/papers", headers=auth, data={"metadata": json.dumps(paper_json())},
                    files={"artifacts": ("../../escape.txt", b"x", "text/plain")})
    assert r.status_code == 422 and r.json()["fields"] == ["artifact"]
    assert client.get("/api/papers").json()["total"] == 0


@pytest.mark.parametrize("path", [
    "/api/papers/nope", "/api/papers/nope/pdf", "/api/papers/nope/citations", "/api/papers/nope/cited-by",
    "/api/papers/..%2F..%2Fpreprints.db", "/api/papers/%2E%2E/source", "/api/goals/nope",
    "/papers/nope", "/labs/nobody", "/goals/nope",
])
def test_unknown_ids_are_404(client, seeded, path):
    r = client.get(path)
    assert r.status_code == 404, (path, r.text)


def test_path_like_artifact_name_never_reads_outside(client, seeded):
    for name in ["..%2F..%2Fpreprints.db", "%2Fetc%2Fpasswd", "%2E%2E", "preprints.db"]:
        assert client.get(f"/api/papers/{seeded[0]}/artifacts/{name}").status_code == 404


def test_pdf_missing_is_404(client, seeded):
    r = client.get(f"/api/papers/{seeded[0]}/pdf")
    assert r.status_code == 404 and "no pdf" in r.json()["detail"]


def test_html_404_page(client):
    r = client.get("/papers/nope")
    assert r.status_code == 404 and "text/html" in r.headers["content-type"] and "no paper" in r.text


def test_auth_missing_invalid_revoked(client, app, key):
    assert client.post("/api/papers", json=paper_json()).status_code == 401
    assert client.post("/api/papers", json=paper_json(), headers={"Authorization": "Basic abc"}).status_code == 401
    assert client.post("/api/papers", json=paper_json(), headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert client.post("/api/goals", json={"text": "g"}).status_code == 401
    assert crud.revoke_keys(app.state.services.db, "lab-a") == 1
    r = client.post("/api/papers", json=paper_json(), headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 403 and "revoked" in r.json()["detail"]
    assert client.get("/api/papers").json()["total"] == 0


def test_bad_query_params_are_422(client):
    assert client.get("/api/papers", params={"limit": 0}).status_code == 422
    assert client.get("/api/papers", params={"sort": "drop table"}).status_code == 422
    assert client.get("/api/search", params={"q": ""}).status_code == 422
    r = client.get("/api/search", params={"q": "x", "k": 1000})
    assert r.status_code == 422 and r.json()["fields"] == ["k"]


def test_review_validation(client, auth, seeded):
    r = client.post(f"/api/papers/{seeded[0]}/reviews", json={"scores": {"overall": 11}, "text": "x"}, headers=auth)
    assert r.status_code == 422 and r.json()["fields"] == ["scores"]
    assert client.post("/api/papers/nope/reviews", json={"text": "x"}, headers=auth).status_code == 404


def test_an_empty_or_malformed_goal_id_is_a_422_not_a_500(client, auth):
    for goal in ("", "../x", "a" * 65):
        r = client.post("/api/papers", json=paper_json("p", goal=goal), headers=auth)
        assert r.status_code == 422 and "goal" in r.text, (goal, r.status_code, r.text)
    assert client.get("/api/papers").json()["total"] == 0
