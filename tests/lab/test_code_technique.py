"""`code` techniques: proposed by the ML engineer, run in the bubblewrap sandbox behind the metered proxy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentlab.jobs import JobStore
from agentlab.lab.experiments import Experiments
from agentlab.lab.run import start_lab
from tests.lab.conftest import tiny_config

pytestmark = [pytest.mark.integration, pytest.mark.requires("bubblewrap")]  # code techniques run in the sandbox

GOOD_CODE = '''
def solve(problem, client):
    text = client.complete("Solve carefully. " + problem["question"], max_tokens=64, temperature=0)
    return text
'''


def test_scripted_llm_proposes_code_technique_that_runs_in_sandbox(lab_settings, llm, preprint):
    # the scripted test-double LLM picks "custom_code" and writes a solve()
    llm.script["TechniqueProposal"] = {"technique": "custom_code", "num_chains": 1, "max_tokens": 64,
                                       "rationale": "call the model once with a careful prefix"}
    llm.script["CodeTechnique"] = {"code": GOOD_CODE, "rationale": "a careful prefix"}
    cfg = tiny_config(server_url=preprint["url"], max_iterations=1, literature_top_n=0, allow_code_techniques=True)
    out = start_lab(lab_settings, "Improve arithmetic accuracy", cfg, server_key=preprint["key"])
    assert out.status == "done", out.state.get("stop_reason")
    e = out.state["experiments"][0]
    assert e["spec"]["kind"] == "code" and e["proposal_source"] == "llm"
    rec = e["record"]
    assert rec and rec["n"] == cfg.dev_n and rec["correct"] > 0  # graded by the harness on the host
    jobs = JobStore(lab_settings.workspace / "jobs.db")
    try:
        job = jobs.get(rec["job_id"])
    finally:
        jobs.close()
    assert job.spec.kind == "eval" and job.spec.code and job.spec.network == "proxy"
    assert job.spec.proxy.max_requests == cfg.code_max_requests
    calls = [json.loads(x) for x in (Path(job.log_dir) / "proxy_calls.jsonl").read_text().splitlines()]
    assert len(calls) == cfg.dev_n and all(c["job_id"] == job.id and c["status"] == 200 for c in calls)
    # the gold answers never entered the sandbox
    assert "answer" not in json.loads((Path(job.workdir) / "problems.json").read_text())[0]
    # the report split ran the code technique too (it was the best dev technique), and the paper is up
    assert out.state["final"]["technique"]["technique"] == e["spec"]["name"]
    assert out.state["publication"]["status"] == "published"


def test_failing_code_is_revised_from_its_own_error(lab_settings, llm, preprint):
    # an "expert" test double: its first solve() crashes in the sandbox; shown its code and the error, it fixes it
    shown = []

    def code(body):
        prompt = "\n".join(str(m.get("content", "")) for m in body["messages"])
        shown.append(prompt)
        bad = GOOD_CODE.replace("return text", "return txet")
        return {"code": bad if len(shown) == 1 else GOOD_CODE, "rationale": "a careful prefix"}

    llm.script["TechniqueProposal"] = {"technique": "custom_code", "num_chains": 1, "max_tokens": 64}
    llm.script["CodeTechnique"] = code
    cfg = tiny_config(server_url=preprint["url"], max_iterations=1, literature_top_n=0, allow_code_techniques=True,
                      max_fix_attempts=1)
    out = start_lab(lab_settings, "Improve arithmetic accuracy", cfg, server_key=preprint["key"])
    assert out.status == "done", out.state.get("stop_reason")
    e = out.state["experiments"][0]
    assert [a["status"] for a in e["attempts"]] == ["failed", "succeeded"]
    assert len(shown) == 2 and "return txet" in shown[1] and "NameError" in shown[1]  # its code and its error
    assert e["spec"]["kind"] == "code" and "return text" in e["spec"]["code"] and e["record"]["n"] == cfg.dev_n
    assert any("revised it from the error" in n for n in out.state["notes"])


def _experiments(settings, **kw):
    return Experiments(settings, tiny_config(**kw), "code-test", "test-lab")


def test_code_technique_reading_host_file_or_secret_fails_contained(lab_settings, tmp_path, monkeypatch):
    secret_file = tmp_path / "host-secret.txt"
    secret_file.write_text("host-file-secret-4711")
    monkeypatch.setenv("AGENTLAB_TEST_SECRET_TOKEN", "env-secret-0815")
    code = f'''
def solve(problem, client):
    import os
    leaked = os.environ.get("AGENTLAB_TEST_SECRET_TOKEN") or os.environ.get("AGENTLAB_AGENTS__API_KEY")
    if leaked:
        return "\\\\boxed{{" + leaked + "}}"
    return open({str(secret_file)!r}).read()
'''
    experiments = _experiments(lab_settings)
    try:
        spec = experiments.code_spec(code, 1)
        res = experiments.run("dev-escape", spec, "dev")
    finally:
        experiments.close()
    assert res.status == "failed" and res.job_id
    assert "every request failed" in res.error and "No such file or directory" in res.error
    jobs = JobStore(lab_settings.workspace / "jobs.db")
    try:
        job = jobs.get(res.job_id)
    finally:
        jobs.close()
    assert job.state == "succeeded"  # the driver itself finished: the failure stayed inside solve()
    dumped = json.dumps(job.result) + Path(job.log_dir, "stdout.log").read_text() + Path(job.log_dir, "stderr.log").read_text()
    for secret in ("host-file-secret-4711", "env-secret-0815", "sk-test-double"):
        assert secret not in dumped


def test_code_technique_request_budget_is_enforced(lab_settings):
    experiments = _experiments(lab_settings, code_max_requests=2, dev_n=4)
    try:
        res = experiments.run("dev-budget", experiments.code_spec(GOOD_CODE, 1), "dev")
    finally:
        experiments.close()
    assert res.succeeded
    assert res.record.errors == 2  # the proxy refused the third and fourth problem's calls
    results = experiments._results(res.record.eval_run_id)
    assert sum("budget exhausted" in (r.error or "") for r in results) == 2
