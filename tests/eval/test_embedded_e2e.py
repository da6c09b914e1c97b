"""Every built-in technique end to end against the real embedded model (llama.cpp, SmolLM2-135M)."""

import pytest

from agentlab.bench import load_benchmark
from agentlab.eval.harness import run_evaluation
from agentlab.eval.records import ResultStore
from agentlab.llm.transport import RetryPolicy
from agentlab.techniques import builtin_techniques, get_technique
from tests.conftest import SHARED_DATA

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.mark.parametrize("name", sorted(builtin_techniques()))
def test_builtin_technique_on_embedded_model(name, embedded_endpoint, workspace):
    spec = builtin_techniques()[name]
    spec = get_technique(name, k=3 if spec.chains.n > 1 else None, max_tokens=48)
    problems = load_benchmark("basic_arithmetic", SHARED_DATA, limit=2, seed=7)
    db = workspace / "eval.db"
    s = run_evaluation(spec, problems, embedded_endpoint, benchmark="basic_arithmetic", db_path=db,
                       concurrency=2, timeout_s=120, retry=RetryPolicy(max_retries=1))
    assert s.complete and s.n == 2 and s.errors == 0
    assert s.model == "smollm2-135m-instruct" and s.spec_hash == spec.spec_hash()
    assert 0.0 <= s.ci_low <= s.accuracy <= s.ci_high <= 1.0
    store = ResultStore(db)
    results = store.results(s.run_id)
    calls_per_problem = len(spec.steps) + spec.chains.n * (1 + 2 * (spec.refine.rounds if spec.refine else 0)
                                                         + (1 if spec.verifier else 0))  # one judge call a chain
    assert all(r.calls == calls_per_problem and r.tokens_out > 0 for r in results)
    assert all(len(r.chains) == spec.chains.n and any(c["text"].strip() for c in r.chains) for r in results)
    if spec.chains.aggregation == "weighted":  # llama.cpp returns token logprobs
        assert any(c["weight"] != 1.0 for r in results for c in r.chains)
    store.close()
    # a second identical evaluation with a fresh run id is answered from the completion cache
    again = run_evaluation(spec, problems[:1], embedded_endpoint, benchmark="basic_arithmetic", db_path=db,
                           timeout_s=120, retry=RetryPolicy(max_retries=1))
    store = ResultStore(db)
    assert all(r.cached for r in store.results(again.run_id))
    store.close()
