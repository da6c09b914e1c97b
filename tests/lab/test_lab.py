"""The research lab end to end with a scripted LLM test double and a real preprint server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentlab.lab.run import list_runs, resume_lab, run_status, start_lab
from agentlab.lab.store import LabStore
from preprint_server.client import PreprintClient
from tests.lab.conftest import tiny_config
from tests.lab.doubles import PLANTED_WRONG

pytestmark = pytest.mark.requires("bubblewrap")  # a lab run starts with a real sandboxed job (lab/preflight.py)


def _papers(url):
    with PreprintClient(url) as c:
        return c.list_papers(limit=100)


def test_full_lab_run_publishes_a_verified_paper(lab_settings, llm, preprint):
    events = []
    with PreprintClient(preprint["url"], api_key=preprint["key"]) as c:  # earlier work for the literature review
        prior = c.publish({"title": "Self-consistency for arithmetic", "abstract": "Majority votes over sampled "
                           "chains improve arithmetic accuracy.", "body": "We vote over five chains."})
    cfg = tiny_config(server_url=preprint["url"])
    out = start_lab(lab_settings, "Improve arithmetic accuracy of a small model", cfg,
                    on_event=lambda k, d: events.append(k), server_key=preprint["key"])
    assert out.status == "done", out.state.get("stop_reason")
    st = out.state
    # every phase ran
    assert st["plan"]["techniques"] and st["plan"]["source"] == "llm"
    assert len(st["experiments"]) == 2 and all(e["record"] for e in st["experiments"])
    assert st["final"]["baseline"] and st["final"]["technique"]
    assert "comparison" in st["final"]
    assert len(st["reviews"]) == 3
    assert {"PaperNote", "ResearchPlan", "TechniqueProposal", "Interpretation", "ReportDraft", "Review"} <= \
        set(llm.agent_calls)
    assert prior.id in {p["id"] for p in st["literature"]}  # the literature review read the earlier paper
    notes = [p for p in llm.agent_prompts if "The passage that matched the goal:" in p]
    assert notes and all(p.split("The passage that matched the goal:")[1].split("\n")[0].strip() for p in notes)
    # the agents saw the dev split's wrong answers (question, output, gold), never a report-split problem
    from agentlab.bench import load_benchmark
    from tests.conftest import SHARED_DATA

    evidence = st["experiments"][0]["evidence"]
    assert evidence["wrong"] and all(w["gold"] and w["output"] for w in evidence["wrong"])
    shown = st["dev_baseline"]["evidence"]  # the first proposal branches from the baseline, run on dev first
    assert any(shown["wrong"][0]["question"] in p for p in llm.agent_prompts if "got wrong" in p)
    report = load_benchmark(cfg.benchmark, SHARED_DATA, subset={"split": "report", "limit": cfg.report_n,
                                                                "seed": cfg.seed})
    leaked = [p.question for p in report if any(p.question in text for text in llm.agent_prompts)]
    assert leaked == []
    # the planted wrong number was caught and removed
    rep = st["report"]
    assert "97.5%" not in rep["markdown"] and PLANTED_WRONG not in rep["markdown"]
    assert any(c["text"].startswith("97.5") and c["status"] == "removed" for c in rep["claims"])
    # records.json carries the comparison that `agentlab report check` needs for p-values and significance words
    saved = json.loads(Path(rep["files"]["records"]).read_text())
    assert saved["comparison"]["p_value"] == st["final"]["comparison"]["p_value"]
    # published once, with its records, on the real server
    pub = st["publication"]
    assert pub["status"] == "published"
    with PreprintClient(preprint["url"]) as c:
        paper = c.get_paper(pub["paper_id"])
    assert paper.title == rep["title"]
    recs = {r.record_id for r in paper.results}
    assert st["final"]["technique"]["record_id"] in recs and st["final"]["baseline"]["record_id"] in recs
    # every record says what it is: report records ranked, dev records not, the model's weights by hash
    assert all(r.from_harness_records and r.complete and r.errors == 0 for r in paper.results)
    assert {r.split for r in paper.results} == {"report", "dev"}
    assert all(r.ranked == (r.split == "report") for r in paper.results)
    assert all(r.model_id.startswith("endpoint:") and r.tokens_per_problem > 0 for r in paper.results)
    # every evaluated technique is published as a full spec with the records that measured it
    assert {t.spec_hash for t in paper.techniques} == {r.spec_hash for r in paper.results}
    assert all(set(t.record_ids) == {r.record_id for r in paper.results if r.spec_hash == t.spec_hash}
               for t in paper.techniques)
    acc = st["final"]["baseline"]["accuracy"]
    assert f"{100 * acc:.1f}%" in paper.body  # the generated table carries the harness's number
    assert len(paper.reviews) == 3
    # a number a review or a related-work summary states without a record behind it is not published
    assert not any("97.5" in r.text for r in paper.reviews) and "A small study." in paper.reviews[0].text
    assert "88.5" not in paper.body and "compared prompting techniques" in paper.body
    assert any(c["section"].startswith("related work") and c["status"] == "removed" for c in rep["claims"])
    # every evaluation ran as a scheduler job (kind eval, in the sandbox behind the metered proxy)
    from agentlab.jobs import JobStore

    jobs = JobStore(lab_settings.workspace / "jobs.db")
    for r in paper.results:
        job = jobs.get(r.job_id)
        assert job is not None and job.spec.kind == "eval" and job.state == "succeeded"
        assert job.spec.network == "proxy" and job.result["summary"]["job_id"] == job.id
    jobs.close()
    # files
    files = rep["files"]
    for k in ("markdown", "latex", "records", "figure"):
        assert k in files
    # status and list
    s = run_status(lab_settings, out.run_id)
    assert s["paper_id"] == pub["paper_id"] and s["status"] == "done" and s["tokens"] > 0
    assert list_runs(lab_settings)[0]["run_id"] == out.run_id
    assert "phase" in events and "job_finished" in events

    # a second lab on the same goal reads the first paper and cites it; it tries another technique, and re-runs
    # the first lab's best published technique (the prior best) on its own report split as a second baseline
    llm.script["TechniqueProposal"] = {"technique": "zero_shot_cot", "num_chains": 1, "max_tokens": 64}
    # (test sizes: any report-split result qualifies as the bar; a lab's default asks for n >= 100 or a replication)
    out2 = start_lab(lab_settings, "Improve arithmetic accuracy of a small model",
                     cfg.model_copy(update={"prior_best_min_n": 1}), server_key=preprint["key"])
    assert out2.status == "done"
    assert {p["id"] for p in out2.state["literature"]} == {pub["paper_id"], prior.id}
    with PreprintClient(preprint["url"]) as c:
        second = c.get_paper(out2.state["publication"]["paper_id"])
        board = c.leaderboard(benchmark=cfg.benchmark)
    assert pub["paper_id"] in second.citations
    final2 = out2.state["final"]
    best_published = max((e for e in board if e.paper_id == pub["paper_id"]), key=lambda e: e.accuracy)
    assert final2["prior_best"]["paper_id"] == pub["paper_id"]
    assert final2["prior_best"]["technique"] == f"prior_{best_published.technique}"
    assert final2["prior_best"]["spec_hash"] == best_published.spec_hash and final2["prior_best"]["split"] == "report"
    assert final2["comparison_prior"]["n"] == cfg.report_n
    assert "Prior best:" in second.body and any(r.technique.startswith("prior_") for r in second.results)
    assert _papers(preprint["url"]).total == 3  # the seeded paper and the two labs' papers


def test_resume_after_publish_does_not_publish_twice(lab_settings, preprint):
    cfg = tiny_config(server_url=preprint["url"], max_iterations=1)
    out = start_lab(lab_settings, "goal", cfg, server_key=preprint["key"])
    assert out.state["publication"]["status"] == "published"
    again = resume_lab(lab_settings, out.run_id, server_key=preprint["key"])
    assert again.status == "done"
    assert _papers(preprint["url"]).total == 1


def test_server_unreachable_keeps_report_in_outbox_then_publishes(lab_settings, preprint, tmp_path):
    cfg = tiny_config(server_url="http://127.0.0.1:9", max_iterations=1, literature_top_n=0, queue_if_server_down=True)
    out = start_lab(lab_settings, "goal", cfg, server_key=preprint["key"])
    pub = out.state["publication"]
    assert pub["status"] == "queued"
    from pathlib import Path

    assert Path(pub["outbox"]).is_file()
    # the next run (with the server up) flushes the outbox first; the report appears exactly once
    cfg2 = tiny_config(server_url=preprint["url"], max_iterations=1, literature_top_n=0)
    start_lab(lab_settings, "goal 2", cfg2, server_key=preprint["key"])
    assert _papers(preprint["url"]).total == 2
    assert not Path(pub["outbox"]).exists()


def test_copilot_interrupts_and_resumes(lab_settings, preprint):
    cfg = tiny_config(server_url=preprint["url"], max_iterations=1, copilot=True)
    out = start_lab(lab_settings, "goal", cfg, server_key=preprint["key"])
    assert out.status == "paused" and out.interrupt["kind"] == "plan"
    out = resume_lab(lab_settings, out.run_id, server_key=preprint["key"],
                     resume={"action": "edit", "plan": {"hypothesis": "human hypothesis", "techniques": ["few_shot_cot"]}})
    assert out.status == "paused" and out.interrupt["kind"] == "publish"
    assert out.state["plan"]["hypothesis"] == "human hypothesis" and out.state["plan"]["source"] == "human"
    assert _papers(preprint["url"]).total == 0  # nothing published before approval
    out = resume_lab(lab_settings, out.run_id, server_key=preprint["key"], resume={"action": "approve"})
    assert out.status == "done" and out.state["publication"]["status"] == "published"
    assert _papers(preprint["url"]).total == 1


def test_budget_stop_wraps_up_and_marks_report(lab_settings, preprint, monkeypatch):
    monkeypatch.setenv("AGENTLAB_BUDGETS__MAX_JOBS", "2")
    from agentlab.config import load_settings

    settings = load_settings()
    cfg = tiny_config(server_url=preprint["url"], max_iterations=3)
    out = start_lab(settings, "goal", cfg, server_key=preprint["key"])
    assert out.status == "wrapped_up"
    assert "job budget" in out.state["stop_reason"]
    assert "Incomplete run" in out.state["report"]["markdown"]
    assert out.state["publication"]["status"] == "published"
    store = LabStore(settings.db_path)
    assert store.jobs_used(out.run_id) == 2
    store.close()


def test_unusable_llm_output_falls_back_and_is_noted(lab_settings, llm, preprint):
    llm.script["TechniqueProposal"] = {"technique": "zero_shot_cot", "num_chains": 99}  # invalid: le=8
    cfg = tiny_config(server_url=preprint["url"], max_iterations=1, literature_top_n=0)
    out = start_lab(lab_settings, "goal", cfg, server_key=preprint["key"])
    assert out.status == "done"
    assert out.state["experiments"][0]["proposal_source"] == "fallback"
    assert any("ml_engineer: no usable technique proposal" in n for n in out.state["notes"])
    assert "ml_engineer: no usable technique proposal" in out.state["report"]["markdown"]


@pytest.mark.parametrize("bad", ["zero"])
def test_failed_job_is_fixed_by_sw_engineer(lab_settings, llm, preprint, bad, monkeypatch):
    # the first dev job fails (the harness raises); the software engineer simplifies the spec and it reruns
    from agentlab.lab import experiments
    from agentlab.lab.models import JobResult

    real = experiments.Experiments.run
    calls = {"n": 0}

    def flaky(self, key, spec, split, on_progress=None, **kw):
        calls["n"] += 1
        if key == "dev-1-0":
            return JobResult(status="failed", record=None, job_id="x", error="CUDA out of memory (simulated)")
        return real(self, key, spec, split, on_progress, **kw)

    monkeypatch.setattr(experiments.Experiments, "run", flaky)
    cfg = tiny_config(server_url=preprint["url"], max_iterations=1, literature_top_n=0)
    out = start_lab(lab_settings, "goal", cfg, server_key=preprint["key"])
    e = out.state["experiments"][0]
    assert [a["status"] for a in e["attempts"]] == ["failed", "succeeded"]
    # the simplified rerun is the baseline's content: it runs, and is recorded, as the baseline (not a new name)
    assert e["spec"]["name"] == cfg.baseline and any("is the baseline itself" in n for n in out.state["notes"])
    assert "JobFix" in llm.agent_calls


def test_wall_time_budget_counts_earlier_sessions(lab_settings, preprint, monkeypatch):
    # a paused run that already used 59 of its 60 wall-clock minutes does not restart its clock on resume
    monkeypatch.setenv("AGENTLAB_BUDGETS__MAX_WALL_MINUTES", "60")
    from agentlab.config import load_settings

    settings = load_settings()
    cfg = tiny_config(server_url=preprint["url"], max_iterations=2, copilot=True, literature_top_n=0)
    out = start_lab(settings, "goal", cfg, server_key=preprint["key"])
    assert out.status == "paused"
    store = LabStore(settings.db_path)
    first = store.get_run(out.run_id)["wall_s"]
    assert 0 < first < 60 * 60
    store.update_run(out.run_id, wall_s=61 * 60)  # as if the first session had run for 61 minutes
    store.close()
    out = resume_lab(settings, out.run_id, server_key=preprint["key"], resume={"action": "approve"})
    assert out.status == "wrapped_up" and "wall-time budget of 60 min" in out.state["stop_reason"]
    assert not out.state.get("experiments")
    store = LabStore(settings.db_path)
    assert store.get_run(out.run_id)["wall_s"] > 61 * 60
    store.close()
