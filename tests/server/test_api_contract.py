"""The API contract: the OpenAPI document and the server agree.

The main test runs schemathesis (every check it has: statuses, response bodies against their
schemas, authentication, invalid data rejected and valid data accepted, the Allow header, stateful
sequences) against a live `agentlab server start` with a lab key. Its settings are in
schemathesis.toml next to this file. The other tests pin down what the document says and check
that the failures it catches are real (an error body of the declared shape, for instance)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from preprint_server.app import create_app
from preprint_server.core.config import ServerSettings
from tests.server.conftest import PAPERS, paper_json
from tests.server.processes import lab_key, server_process

SCHEMATHESIS_CONFIG = Path(__file__).with_name("schemathesis.toml")
SCHEMATHESIS_TIMEOUT_S = 480


@pytest.mark.slow
@pytest.mark.integration
def test_schemathesis_finds_no_disagreement_between_document_and_server(tmp_path):
    data = tmp_path / "server"
    key = lab_key(data)
    auth = {"Authorization": f"Bearer {key}"}
    with server_process(data) as server:
        for title, abstract, body in PAPERS:  # something for the reads and searches to find
            httpx.post(server.url + "/api/papers", json=paper_json(title, abstract, body), headers=auth,
                       timeout=120).raise_for_status()
        run = subprocess.run(
            [sys.executable, "-m", "schemathesis.cli", "--no-color", "--config-file", str(SCHEMATHESIS_CONFIG),
             "run", f"{server.url}/openapi.json", "--checks", "all", "-H", f"Authorization: Bearer {key}",
             "--max-examples", "10", "--seed", "1", "--generation-database", "none", "--workers", "1"],
            check=False, capture_output=True, text=True, cwd=tmp_path, timeout=SCHEMATHESIS_TIMEOUT_S,
        )
        assert run.returncode == 0, f"schemathesis found disagreements:\n{run.stdout[-12000:]}\n{run.stderr[-3000:]}"


def _doc(settings: ServerSettings, embedder) -> dict:
    with TestClient(create_app(settings, embedder)) as c:
        return c.get("/openapi.json").json()


def _ops(doc: dict):
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            yield path, method, op


def test_reads_are_declared_public_unless_the_server_is_private(tmp_path, embedder):
    public = _doc(ServerSettings(data_dir=tmp_path / "public"), embedder)
    private = _doc(ServerSettings(data_dir=tmp_path / "private", private=True), embedder)
    for path, method, op in _ops(public):
        write = method != "get"
        assert bool(op.get("security")) == write, (method, path)
        assert {"401", "403"} <= set(op["responses"]) if write else not {"401", "403"} & set(op["responses"])
    for path, method, op in _ops(private):
        assert bool(op.get("security")) == path.startswith("/api/"), (method, path)
    errors = [op["responses"][s] for _, _, op in _ops(public) for s in op["responses"] if s >= "400"]
    assert errors and all(e["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorOut"}
                          for e in errors)
    assert "HTTPValidationError" not in public["components"]["schemas"]


def test_error_bodies_have_the_declared_shape(client, auth, seeded):
    from preprint_server.errors import ErrorOut

    answers = {
        404: client.get("/api/papers/nosuchpaper"),
        401: client.post("/api/goals", json={"text": "a goal"}),
        # the document says baseline is a number: "0.5" is refused, not read as 0.5
        422: client.post("/api/goals", json={"text": "a goal", "baseline": "0.5"}, headers=auth),
        405: client.delete("/api/papers"),
    }
    for status, r in answers.items():
        assert r.status_code == status, (status, r.text)
        ErrorOut.model_validate(r.json())
    assert answers[422].json()["fields"] == ["baseline"]
    assert answers[405].headers["allow"] == "GET, POST"  # both routers of the path, not the first one's
    assert client.get("/api/papers", params={"offset": 2**70}).status_code == 422  # not a 500 from SQLite
