"""Private mode through the command line (`agentlab server start --private`): every read endpoint,
enumerated from the app's routes (a new one is covered without touching this file), refuses
requests without a valid key, and a key revoked while the server runs stops working at once."""

from __future__ import annotations

import re

import httpx
import pytest

from preprint_server.app import create_app
from preprint_server.client import PreprintClient
from preprint_server.core.config import ServerSettings
from preprint_server.schemas import PaperCreate, ResultRecord, TechniqueArtifact, spec_content_hash
from tests.server.conftest import RESULT
from tests.server.processes import agentlab, lab_key, server_process

_SPEC = {"name": "vote", "kind": "prompt", "template": "{question}"}
TECHNIQUE = TechniqueArtifact(name="vote", spec_hash=spec_content_hash(_SPEC), spec=_SPEC)

pytestmark = pytest.mark.integration

# Readable by anyone in every mode: liveness and the API's own description (no data in them).
PUBLIC = {"/health", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"}
# A sample of what the enumeration must find, so that it can never come back empty or partial.
KNOWN_READS = {"/api/papers", "/api/papers/{paper_id}", "/api/papers/{paper_id}/pdf",
               "/api/papers/{paper_id}/artifacts/{name}", "/api/search", "/api/leaderboard", "/api/goals",
               "/api/goals/{goal_id}", "/", "/search", "/papers/{paper_id}", "/labs/{lab}", "/goals/{goal_id}"}


def read_routes(app) -> list[str]:
    """Path templates of every GET route but the public ones (static files are a mount: no methods)."""
    try:  # newer FastAPI keeps each included router as one node of app.routes
        from fastapi.routing import iter_route_contexts
        routes = list(iter_route_contexts(app.routes))
    except ImportError:
        routes = app.routes
    return sorted(r.path for r in routes if "GET" in (getattr(r, "methods", None) or ()) and r.path not in PUBLIC)


def fill(template: str, values: dict[str, str]) -> str:
    missing = set(re.findall(r"{(\w+)[^}]*}", template)) - set(values)
    assert not missing, f"{template}: give this test a value for {missing} (a new read endpoint)"
    return re.sub(r"{(\w+)[^}]*}", lambda m: values[m.group(1)], template)


def answers(url: str, paths: list[str], key: str | None) -> dict[str, httpx.Response]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as h:
        # `q` for the searches; routes without it ignore it
        return {p: h.get(p, params={"q": "majority vote"}) for p in paths}


def statuses(url: str, paths: list[str], key: str | None) -> dict[str, int]:
    return {p: r.status_code for p, r in answers(url, paths, key).items()}


def test_private_flag_guards_every_read_endpoint_and_revocation_applies_at_once(tmp_path, embedder):
    data = tmp_path / "d"
    writer, reader = lab_key(data, "lab-a"), lab_key(data, "lab-b")
    templates = read_routes(create_app(ServerSettings(data_dir=tmp_path / "routes"), embedder))
    assert KNOWN_READS <= set(templates), KNOWN_READS - set(templates)
    artifact = tmp_path / "results.csv"
    artifact.write_text("a,b\n1,2\n")

    with server_process(data, "--private") as srv:
        with PreprintClient(srv.url, writer) as c:
            goal = c.add_goal("improve MATH-500", benchmark="math500")
            base = c.publish(PaperCreate(title="Chain of thought", body="step by step"))
            paper = c.publish(PaperCreate(title="Majority vote", body="We vote.", goal=goal.id, citations=[base.id],
                                          results=[ResultRecord(**RESULT)], latex_source="\\section{x}",
                                          techniques=[TECHNIQUE]),
                              pdf=b"%PDF-1.4\n", artifacts=[artifact])
        paths = [fill(t, {"paper_id": paper.id, "name": artifact.name, "goal_id": goal.id, "lab": "lab-a",
                          "spec_hash": TECHNIQUE.spec_hash}) for t in templates]

        assert httpx.get(srv.url + "/health").status_code == 200
        assert statuses(srv.url, paths, None) == dict.fromkeys(paths, 401)
        assert statuses(srv.url, paths, writer) == dict.fromkeys(paths, 200)
        assert statuses(srv.url, paths, "alk_not-a-key") == dict.fromkeys(paths, 403)
        page = httpx.get(srv.url + f"/papers/{paper.id}")
        assert page.status_code == 401 and "text/html" in page.headers["content-type"]
        assert page.headers["www-authenticate"] == "Bearer" and "Majority vote" not in page.text

        # revoked with the CLI while the server runs: refused on the next request, other labs unaffected
        r = agentlab(tmp_path, "server", "keys", "revoke", "lab-a", "--data-dir", str(data))
        assert r.returncode == 0 and "revoked 1" in r.stdout, r.stdout + r.stderr
        refused = answers(srv.url, paths, writer)
        assert {p: r.status_code for p, r in refused.items()} == dict.fromkeys(paths, 403)
        assert all("revoked" in r.text for r in refused.values())
        assert statuses(srv.url, paths, reader) == dict.fromkeys(paths, 200)
