"""Fixtures for the preprint server: real SQLite, Chroma and embedding model in a temp dir."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from preprint_server import crud
from preprint_server.app import create_app
from preprint_server.core.config import ServerSettings
from preprint_server.search import default_embedder

RESULT = dict(benchmark="math500", subset="test", model="qwen2.5-0.5b", technique="self-consistency",
              spec_hash="abc123", n=100, correct=62, accuracy=0.62, ci_low=0.52, ci_high=0.71,
              job_id="job-1", record_id="rec-1", split="report")

PAPERS = [
    ("Self-consistency voting improves math reasoning",
     "Sampling several chains of thought and taking a majority vote over final answers.",
     "We sample ten reasoning chains per problem and pick the most frequent final answer. "
     "Majority voting reduces arithmetic slips on competition mathematics."),
    ("Retrieval augmented generation for biology questions",
     "Retrieving passages from protein databases before answering.",
     "We embed protein descriptions and retrieve the nearest ones for each question about enzymes and cells."),
    ("Curriculum learning for small language models",
     "Training on easy examples before hard ones.",
     "We order training data by difficulty and fine-tune a 135M parameter model with a staged schedule."),
]


@pytest.fixture(scope="session")
def embedder():
    return default_embedder()


@pytest.fixture
def settings(tmp_path):
    return ServerSettings(data_dir=tmp_path / "server")


@pytest.fixture
def app(settings, embedder):
    return create_app(settings, embedder)


@pytest.fixture
def client(app):
    with TestClient(app) as c:
        yield c


@pytest.fixture
def key(app):
    return crud.create_key(app.state.services.db, "lab-a")


@pytest.fixture
def auth(key):
    return {"Authorization": f"Bearer {key}"}


def paper_json(title="A paper", abstract="An abstract.", body="Some body text.", **kw):
    return {"title": title, "abstract": abstract, "body": body, **kw}


def publish(client, auth: dict, papers=PAPERS) -> list[str]:
    """Publish ``papers`` (title, abstract, body) through the API; their ids, in order."""
    ids = []
    for title, abstract, body in papers:
        r = client.post("/api/papers", json=paper_json(title, abstract, body), headers=auth)
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    return ids


@pytest.fixture
def seeded(client, auth):
    """Three papers on different topics; returns their ids in PAPERS order."""
    return publish(client, auth)
