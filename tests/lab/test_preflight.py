"""Preflight: a lab that cannot run its jobs, reach its model or server, or read its data stops before
the first LLM call with one line naming the fix, marks the run failed and publishes nothing."""

from __future__ import annotations

import pytest

from agentlab.lab.preflight import PreflightFailed
from agentlab.lab.run import start_lab
from agentlab.lab.store import LabStore
from tests.lab.conftest import tiny_config


def _start_expecting_failure(settings, cfg, key, match):
    with pytest.raises(PreflightFailed, match=match) as info:
        start_lab(settings, "goal", cfg, server_key=key, run_id="lab-preflight")
    assert "\n" not in str(info.value)
    with LabStore(settings.db_path) as store:
        row = store.get_run("lab-preflight")
    assert row["status"] == "failed" and row["paper_id"] is None
    return str(info.value)


def _settings_with(monkeypatch, lab_settings, **env):
    from agentlab.config import load_settings

    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return load_settings()


def test_missing_bubblewrap_stops_before_any_llm_call(lab_settings, llm, preprint, monkeypatch):
    settings = _settings_with(monkeypatch, lab_settings, AGENTLAB_SANDBOX__BWRAP_PATH="/nonexistent/bwrap")
    msg = _start_expecting_failure(settings, tiny_config(server_url=preprint["url"]), preprint["key"],
                                   "sandbox cannot run a job")
    assert "bubblewrap" in msg and "apt-get install" in msg
    assert llm.agent_calls == [] and llm.mus_calls == 0


@pytest.mark.requires("bubblewrap")  # a lab run starts with a real sandboxed job (lab/preflight.py)
def test_unreachable_model_under_study(lab_settings, llm, preprint, monkeypatch):
    settings = _settings_with(monkeypatch, lab_settings, AGENTLAB_MODEL_UNDER_STUDY__URL="http://127.0.0.1:9/v1")
    msg = _start_expecting_failure(settings, tiny_config(server_url=preprint["url"]), preprint["key"],
                                   "model under study at http://127.0.0.1:9/v1 does not answer")
    assert "model_under_study.url" in msg and llm.agent_calls == []


def test_unreachable_preprint_server(lab_settings, llm, preprint):
    msg = _start_expecting_failure(lab_settings, tiny_config(server_url="http://127.0.0.1:9"), preprint["key"],
                                   "preprint server http://127.0.0.1:9 is not reachable")
    assert "--queue-if-server-down" in msg and llm.agent_calls == [] and llm.mus_calls == 0


def test_missing_benchmark_data(lab_settings, llm, preprint, tmp_path, monkeypatch):
    settings = _settings_with(monkeypatch, lab_settings, AGENTLAB_DATA_DIR=str(tmp_path / "no-data"))
    msg = _start_expecting_failure(settings, tiny_config(server_url=preprint["url"], benchmark="gsm8k"),
                                   preprint["key"], "benchmark data")
    assert "gsm8k" in msg and llm.agent_calls == []


# -- a run whose report split produced nothing is not a paper ------------------------------------------

def _report_jobs_fail(monkeypatch):
    from agentlab.lab.experiments import Experiments
    from agentlab.lab.models import JobResult

    real_run = Experiments.run

    def run(self, key, spec, split, **kw):  # TEST DOUBLE at the experiments boundary: the report split fails
        if split == "report":
            return JobResult(status="failed", record=None, job_id=None, error="scripted report-split failure")
        return real_run(self, key, spec, split, **kw)

    monkeypatch.setattr(Experiments, "run", run)


@pytest.mark.requires("bubblewrap")  # a lab run starts with a real sandboxed job (lab/preflight.py)
def test_no_report_results_ends_failed_and_publishes_nothing(lab_settings, llm, preprint, monkeypatch):
    from preprint_server.client import PreprintClient

    _report_jobs_fail(monkeypatch)
    cfg = tiny_config(server_url=preprint["url"], max_iterations=1, literature_top_n=0)
    out = start_lab(lab_settings, "goal", cfg, server_key=preprint["key"], run_id="lab-failed")
    assert out.status == "failed"
    assert out.state["failure"].startswith("no evaluation on the report split finished: scripted report-split")
    assert "report" not in out.state and "publication" not in out.state
    assert "ReportDraft" not in llm.agent_calls and "Review" not in llm.agent_calls
    with PreprintClient(preprint["url"]) as c:
        assert c.list_papers(limit=10).total == 0
    with LabStore(lab_settings.db_path) as store:
        row = store.get_run("lab-failed")
    assert row["status"] == "failed" and "scripted report-split failure" in row["note"]


@pytest.mark.requires("bubblewrap")  # a lab run starts with a real sandboxed job (lab/preflight.py)
def test_publish_failures_publishes_a_marked_failed_run_without_results(lab_settings, llm, preprint, monkeypatch):
    from preprint_server.client import PreprintClient

    _report_jobs_fail(monkeypatch)
    cfg = tiny_config(server_url=preprint["url"], max_iterations=1, literature_top_n=0, publish_failures=True)
    out = start_lab(lab_settings, "goal", cfg, server_key=preprint["key"])
    assert out.status == "failed" and out.state["publication"]["status"] == "published"
    with PreprintClient(preprint["url"]) as c:
        paper = c.get_paper(out.state["publication"]["paper_id"])
        assert "failed-run" in paper.tags and paper.results == []
        assert c.leaderboard() == []
