"""`agentlab papers replicate` end to end: a real preprint server process, the real embedded model
(llama.cpp, SmolLM2-135M), the CLI in a process of its own as a second lab."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import httpx
import pytest

from agentlab.bench import Subset, load_benchmark
from agentlab.eval.harness import run_evaluation
from agentlab.llm.transport import RetryPolicy
from agentlab.techniques import get_technique
from preprint_server.client import PreprintClient
from preprint_server.schemas import PaperCreate
from tests.conftest import SHARED_DATA
from tests.server.processes import lab_key, server_process

pytestmark = [pytest.mark.slow, pytest.mark.integration]

N = 8


def record(summary, endpoint, correct=None):
    correct = summary.correct if correct is None else correct
    return {"benchmark": summary.benchmark, "subset": summary.subset, "split": "report", "model": summary.model,
            "model_id": endpoint.identity, "technique": summary.technique, "spec_hash": summary.spec_hash,
            "n": summary.n, "n_planned": summary.n_planned, "correct": correct, "accuracy": correct / summary.n,
            "job_id": "job-a", "record_id": summary.record_id, "complete": True, "errors": 0}


def cli(tmp_path, server_url, key, *args):
    """`agentlab ARGS` as lab-b, in a process and workspace of its own."""
    env = {**os.environ, "AGENTLAB_WORKSPACE": str(tmp_path / "lab-b"), "AGENTLAB_DATA_DIR": str(SHARED_DATA),
           "AGENTLAB_SERVER__URL": server_url, "AGENTLAB_SERVER__API_KEY": key, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "agentlab", *args], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=900)


def replicate(tmp_path, server_url, key, endpoint, *args):
    return cli(tmp_path, server_url, key, "papers", "replicate", *args, "--model-url", endpoint.base_url,
               "--concurrency", "2")


@pytest.mark.timeout(1200)
def test_a_second_lab_replicates_a_published_result_with_the_real_model(tmp_path, embedded_endpoint):
    spec = get_technique("zero_shot_cot", max_tokens=48)  # not the built-in's hash: must come from the paper
    subset = Subset(split="report", limit=N, seed=5)
    problems = load_benchmark("basic_arithmetic", SHARED_DATA, subset=subset)
    summary = run_evaluation(spec, problems, embedded_endpoint, benchmark="basic_arithmetic",
                             subset=subset.describe(), db_path=tmp_path / "lab-a.db", concurrency=2, timeout_s=120,
                             retry=RetryPolicy(max_retries=1))
    assert summary.complete and summary.n == N
    technique = {"name": spec.name, "spec_hash": spec.spec_hash(), "spec": spec.model_dump(mode="json"),
                 "record_ids": [summary.record_id]}
    data_dir = tmp_path / "server"
    key_a, key_b = lab_key(data_dir, "lab-a"), lab_key(data_dir, "lab-b")
    with server_process(data_dir) as server:
        with PreprintClient(server.url, key_a) as a:
            honest = a.publish(PaperCreate(title="Zero-shot CoT on arithmetic", body="We ran it.",
                                           results=[record(summary, embedded_endpoint)], techniques=[technique])).id
            # a paper that inflates (or deflates) its number far outside what the model does; its spec is only
            # in its body (not published as a technique), which the replication also reads
            claimed = N if summary.correct <= N // 2 else 0
            body = "Method:\n\n```json\n" + spec.to_json() + "\n```\n"
            inflated = a.publish(PaperCreate(title="Too good", body=body,
                                             results=[record(summary, embedded_endpoint, correct=claimed)])).id

        ok = replicate(tmp_path, server.url, key_b, embedded_endpoint, honest)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        # llama.cpp's server batches concurrent requests, and a greedy answer may change with the batch it ran in
        # (floating-point order): the replication re-runs the model, so its count may differ within the CI
        assert "consistent:" in ok.stdout and re.search(rf"\(\d+/{N}\) against the paper's", ok.stdout), ok.stdout
        bad = replicate(tmp_path, server.url, key_b, embedded_endpoint, inflated)
        assert bad.returncode == 1 and "not reproduced:" in bad.stdout, bad.stdout + bad.stderr
        wrong = replicate(tmp_path, server.url, key_b, embedded_endpoint, honest, "--technique", "tree_of_thought")
        assert wrong.returncode == 1 and "no report-split result for technique 'tree_of_thought'" in wrong.stderr + \
            wrong.stdout and "Traceback" not in wrong.stderr

        with PreprintClient(server.url) as reader:
            assert reader.get_paper(honest).replication.consistent_labs == 1
            assert reader.get_paper(inflated).replication.not_reproduced_labs == 1
            [rep] = reader.replications(honest)
            # a re-run on a batching server may differ by a problem or two (see above): the verdict is what holds
            assert rep.lab == "lab-b" and rep.result.n == summary.n and rep.verdict == "consistent"
            assert [e.paper_id for e in reader.leaderboard(replicated=True)] == [honest]
        board = cli(tmp_path, server.url, key_b, "papers", "leaderboard", "--replicated")
        assert board.returncode == 0 and honest in board.stdout and inflated not in board.stdout, board.stdout

        # the published technique runs as is elsewhere: pull it, evaluate it
        pulled = cli(tmp_path, server.url, key_b, "techniques", "pull", f"{honest}:zero_shot_cot", "-o", "cot.yaml")
        assert pulled.returncode == 0, pulled.stdout + pulled.stderr
        ran = cli(tmp_path, server.url, key_b, "eval", "run", "-b", "basic_arithmetic", "-t", "cot.yaml", "--limit",
                  "2", "--model-url", embedded_endpoint.base_url, "--no-cache")
        assert ran.returncode == 0 and spec.spec_hash() in ran.stdout, ran.stdout + ran.stderr
        page = httpx.get(f"{server.url}/papers/{honest}").text
        assert "Replicated by 1 lab, consistent within the confidence interval" in page
        assert "Not reproduced by 1 lab" in httpx.get(f"{server.url}/papers/{inflated}").text
