"""Integration: a whole lab on the real embedded model (SmolLM2-135M via llama.cpp), tiny subset."""

from __future__ import annotations

import pytest

from tests.conftest import require_embedded_engine

# a whole lab on a CPU model: about 90 s on 2 quiet cores, 9 minutes with both cores saturated
pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(1800), pytest.mark.requires("bubblewrap")]


def test_embedded_lab_publishes_verified_paper(workspace, preprint, monkeypatch):
    """Agents and model under study both named as one local GGUF file: one llama.cpp server serves both, and
    every structured answer of the agents is grammar-constrained."""
    require_embedded_engine()
    from agentlab.config import load_settings
    from agentlab.lab.run import start_lab
    from agentlab.llm.serving import ServingManager, embedded_model_path
    from agentlab.llm.usage import UsageLedger
    from preprint_server.client import PreprintClient
    from tests.lab.conftest import tiny_config

    gguf = str(embedded_model_path())
    monkeypatch.setenv("AGENTLAB_AGENTS__MODEL", gguf)
    monkeypatch.setenv("AGENTLAB_MODEL_UNDER_STUDY__MODEL", gguf)
    settings = load_settings()
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
    # the lab stopped the llama.cpp server it started: one, for the agents and the model under study
    assert ServingManager(settings.workspace).list() == []
    assert len(list((settings.workspace / "servers").glob("*.log"))) == 1
    with UsageLedger(settings.db_path) as ledger:
        calls = ledger.all("SELECT structured, reask, fallback FROM llm_calls WHERE run_id = ?", (out.run_id,))
    structured = [c for c in calls if c["structured"]]
    assert structured and all(c["structured"] == "grammar" for c in structured)
