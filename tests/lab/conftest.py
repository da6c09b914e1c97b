"""Fixtures for lab tests: the scripted LLM double, a real preprint server on loopback, settings."""

from __future__ import annotations

import os

import pytest

from tests.conftest import SHARED_DATA, require_embedded_engine
from tests.lab.doubles import ScriptedLabLLM, answers_for, lab_env

BENCH = "basic_arithmetic"


@pytest.fixture(scope="session")
def answers():
    return answers_for(BENCH, SHARED_DATA)


@pytest.fixture
def llm(answers):
    with ScriptedLabLLM(answers) as server:
        yield server


@pytest.fixture(scope="session")
def embedder():
    from preprint_server.search import default_embedder

    return default_embedder()


@pytest.fixture
def preprint(tmp_path, embedder):
    """A real preprint server (uvicorn on loopback) and an API key for the lab."""
    from agentlab.lab.local_server import lab_key
    from preprint_server.serve import start_local_server

    data = tmp_path / "preprint-data"
    data.mkdir()
    key = lab_key(data, "test-lab")
    url, stop = start_local_server(data, embedder=embedder)
    yield {"url": url, "key": key, "data_dir": data}
    stop()


@pytest.fixture
def lab_settings(workspace, llm, monkeypatch):
    for k, v in lab_env(llm.url).items():
        monkeypatch.setenv(k, v)
    from agentlab.config import load_settings

    return load_settings()


@pytest.fixture
def embedded_settings(workspace, llm, monkeypatch):
    """Settings with the scripted test double as the agents and the real embedded model (llama.cpp) under study."""
    require_embedded_engine()
    for k, v in {"AGENTLAB_AGENTS__MODEL": "openai/scripted-test-double", "AGENTLAB_AGENTS__API_BASE": llm.url,
                 "AGENTLAB_AGENTS__API_KEY": "sk-test-double", "AGENTLAB_LLM__MAX_RETRIES": "1"}.items():
        monkeypatch.setenv(k, v)
    from agentlab.config import load_settings

    settings = load_settings()
    assert settings.model_under_study.engine == "llama.cpp"  # the embedded model is under study
    return settings


def tiny_config(**kw):
    from agentlab.lab.state import LabConfig

    base = dict(benchmark=BENCH, dev_n=4, report_n=6, max_iterations=2, concurrency=2, literature_top_n=2,
                plan_turns=2, lab_name="test-lab", max_tokens_per_answer=64, max_chains=2)
    base.update(kw)
    return LabConfig(**base)


_ = os
