"""Integration: a whole lab on the real embedded model (SmolLM2-135M via llama.cpp), tiny subset."""

from __future__ import annotations

import pytest

# a whole lab on a CPU model: about 90 s on 2 quiet cores, 9 minutes with both cores saturated
pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(1800)]


def test_embedded_lab_publishes_verified_paper(workspace, preprint, monkeypatch):
    pytest.importorskip("llama_cpp", reason="the embedded model needs agentlab[local] (llama-cpp-python)")
    from agentlab.config import load_settings
    from agentlab.lab.run import start_lab
    from agentlab.llm.serving import ServingManager
    from preprint_server.client import PreprintClient
    from tests.lab.conftest import tiny_config

    settings = load_settings()
    assert settings.agents.model is None  # the embedded default
    cfg = tiny_config(server_url=preprint["url"], dev_n=2, report_n=3, max_iterations=1, concurrency=1,
                      literature_top_n=0, plan_turns=1, max_tokens_per_answer=48, max_chains=1)
    out = start_lab(settings, "Find a prompting technique that improves accuracy on basic arithmetic.", cfg,
                    server_key=preprint["key"])
    st = out.state
    assert out.status in ("done", "wrapped_up")
    assert st["final"]["baseline"] is not None and st["final"]["baseline"]["n"] == 3
    assert st["publication"]["status"] == "published"
    with PreprintClient(preprint["url"]) as c:
        paper = c.get_paper(st["publication"]["paper_id"])
    assert all(r.from_harness_records for r in paper.results)
    # what was published is the checked draft, and every number left in its prose matches a record
    assert paper.abstract.strip() == st["report"]["draft"]["abstract"].strip()
    from agentlab.lab.report.claims import check_claims

    records = st["report"]["records"]
    for key in ("abstract", "discussion", "conclusion"):
        res = check_claims(st["report"]["draft"][key], records, st["final"].get("comparison"),
                           [0.0, 0.7, 1.0], fix=False)
        assert not [c for c in res.claims if c.status != "ok"]
    # the lab stopped the llama.cpp server it started
    assert ServingManager(settings.workspace).list() == []
