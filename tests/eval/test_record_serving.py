"""Records name the serving (engine and quantization) of the model they measured; another serving of the same
model is another run with its own cache keys, and stores from before the field still load. Against the
scripted test double (a real loopback HTTP server)."""

from __future__ import annotations

import sqlite3

from agentlab.bench import Problem
from agentlab.eval.harness import run_evaluation
from agentlab.eval.records import ResultStore
from agentlab.techniques import get_technique


def problems() -> list[Problem]:
    return [Problem(id=f"p{i}", question=f"What is {i} + {i}?", answer=str(2 * i), benchmark="toy",
                    grader="gsm8k") for i in range(3)]


def test_the_record_names_the_serving_and_another_serving_is_another_run(scripted_server, tmp_path):
    server = scripted_server(lambda body: "The answer is \\boxed{2}.")
    spec = get_technique("direct", max_tokens=16)
    gguf = server.endpoint.model_copy(update={"identity": "checkpoint:abcd", "serving": "llama.cpp Q4_1"})
    first = run_evaluation(spec, problems(), gguf, benchmark="toy", db_path=tmp_path / "eval.db")
    assert first.serving == "llama.cpp Q4_1" and first.n == 3 and server.completions() == 3
    again = run_evaluation(spec, problems(), gguf, benchmark="toy", db_path=tmp_path / "eval.db")
    assert again.run_id == first.run_id and server.completions() == 3  # resumed: nothing asked twice
    transformers = gguf.model_copy(update={"serving": "transformers f32"})
    other = run_evaluation(spec, problems(), transformers, benchmark="toy", db_path=tmp_path / "eval.db")
    assert other.run_id != first.run_id and other.serving == "transformers f32"
    assert other.cached_calls == 0 and server.completions() == 6  # the other engine's answers are its own
    assert not any("serving" in body for body in server.requests)  # a cache key's field, never sent upstream


def test_a_store_from_before_the_serving_field_loads(tmp_path):
    db = tmp_path / "eval.db"
    with sqlite3.connect(db) as conn:  # eval_runs as older versions created it: no serving column
        conn.execute("CREATE TABLE eval_runs (run_id TEXT PRIMARY KEY, benchmark TEXT NOT NULL,"
                     " subset TEXT NOT NULL, model TEXT NOT NULL, technique TEXT NOT NULL, spec_hash TEXT NOT NULL,"
                     " spec_json TEXT NOT NULL, problem_ids TEXT NOT NULL, status TEXT NOT NULL, job_id TEXT,"
                     " created REAL NOT NULL, updated REAL NOT NULL, summary_json TEXT, run_dir TEXT)")
        conn.execute("INSERT INTO eval_runs VALUES ('run-old', 'toy', 'all', 'm', 'direct', 'h', '{}',"
                     " '[\"p0\"]', 'complete', NULL, 1.0, 2.0, NULL, NULL)")
    with ResultStore(db) as store:
        assert store.summary("run-old").serving == ""
