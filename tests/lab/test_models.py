"""The typed views of a lab's state (``agentlab.lab.models``, ``agentlab.lab.view``): the checkpoint stores plain
JSON dicts, and a state from an older run (keys missing, keys no model knows) validates into the models and dumps
back as it was; the evaluation job's arguments are validated at the job's entry, naming a bad field."""

from __future__ import annotations

import ast
import copy
import json
from pathlib import Path

import pytest

from agentlab.eval.errors import EvalError
from agentlab.eval.job_args import EvalJobArgs
from agentlab.lab.models import Attempt, Confirmation, Experiment, Final, JobResult, Record
from agentlab.lab.view import HumanDecision, LabView
from agentlab.techniques import get_technique

RECORD = {"record_id": "ev-1", "eval_run_id": "run-1", "job_id": "job-1", "benchmark": "basic_arithmetic",
          "subset": "split=dev(0.3) first=4", "split": "dev", "model": "m", "technique": "plan_and_solve_e1",
          "spec_hash": "h", "n": 4, "correct": 3, "accuracy": 0.75, "ci_low": 0.3, "ci_high": 0.95,
          "tokens_per_problem": 120.5, "complete": True, "errors": 0}  # older: no model_id, serving, calls, ...

# a state as an older run checkpointed it: fewer keys than the models know, and some they do not
OLD_STATE = {
    "run_id": "lab-old", "goal": "Improve arithmetic", "phase": "final_evaluation", "started_at": 1.0,
    "literature": [{"id": "p1", "title": "Earlier", "summary": "s", "results": [], "legacy_score": 3}],
    "plan": {"hypothesis": "h", "techniques": ["plan_and_solve"], "rationale": "r", "min_gain": 0.05},
    "dialogue": [{"role": "phd_student", "text": "t"}],
    "dev_baseline": None,
    "experiments": [
        {"iteration": 1, "proposal": {"technique": "plan_and_solve", "num_chains": 1, "rationale": "r",
                                      "an_old_field": True},
         "proposal_source": "llm", "attempts": [{"key": "dev-1-0", "job_id": "job-1", "status": "succeeded",
                                                 "error": None}],
         "spec": get_technique("plan_and_solve").model_dump(mode="json"), "record": RECORD,
         "evidence": {"breakdown": {}, "tokens_per_problem": 120.5, "errors": 0,
                      "wrong": [{"question": "1+1?", "output": "3", "answer": "3", "gold": "2"}], "wrong_total": 1},
         "paired": {"n": 4, "wins": 2, "losses": 0, "ties": 2, "delta": 0.5, "p_value": 0.5}},
        {"iteration": 2, "proposal": {"technique": "train_model", "parent": 1}, "attempts": [], "spec": None,
         "record": None, "error": "an external endpoint has none here",
         "training_proposal": {"method": "sft", "evaluate_with": "direct", "learning_rate": 0.001, "max_steps": 2}},
    ],
    "final": {"baseline": RECORD, "technique": None, "technique_name": "zero_shot_cot", "specs": {},
              "comparison": {"n": 4, "wins": 1, "losses": 0, "delta": 0.25, "p_value": 1.0}},
    "notes": ["a note"], "stop_reason": None,
}


def test_an_older_state_validates_and_its_parts_dump_back_as_stored():
    view = LabView.of(copy.deepcopy(OLD_STATE))
    first, trained = view.experiments
    assert first.record.accuracy == 0.75 and first.record.model_id == "" and first.record.calls is None
    assert first.paired.delta == 0.5 and first.spec.parsed().name == "plan_and_solve"
    assert first.proposal.technique == "plan_and_solve" and first.proposal.parent == 0
    assert first.evidence.wrong[0].gold == "2" and not first.evidence.wrong[0].cut
    assert trained.trains and trained.training_proposal.method == "sft" and not trained.branchable()
    assert view.dev_baseline.record is None and view.best is None and view.final.technique is None
    assert view.final.comparison.ties == 0 and view.literature[0].relevant  # defaults for what it did not store
    # each stored part comes back from its model as it was, unknown keys included
    for stored, typed in zip(OLD_STATE["experiments"], view.experiments, strict=True):
        assert typed.dump() == stored
    assert view.final.dump() == OLD_STATE["final"]
    assert view.literature[0].dump() == OLD_STATE["literature"][0]
    assert view.plan.dump() == OLD_STATE["plan"]
    json.dumps(view.final.dump())  # JSON, for the checkpoint


def test_what_a_node_sets_is_dumped_and_nothing_it_did_not():
    e = Experiment(iteration=3, attempts=[], adjustments=[])
    e.paired = None
    e.attempts.append(Attempt(key="dev-3-0", status="failed", error="boom"))
    assert e.dump() == {"iteration": 3, "attempts": [{"key": "dev-3-0", "status": "failed", "error": "boom"}],
                        "adjustments": [], "paired": None}
    result = JobResult.model_validate({"status": "succeeded", "record": RECORD, "evidence": {"wrong": []}})
    assert result.succeeded and result.record.n == 4 and result.evidence.wrong == []
    conf = Confirmation(n=4, subset="s", technique=Record(**RECORD), baseline=None)
    assert "delta" not in conf.dump() and conf.delta is None  # no comparison: no paired fields stored
    final = Final.model_validate(OLD_STATE["final"])
    assert final.report_records() == [Record.model_validate(RECORD)]


def test_a_human_decision_reads_a_string_or_a_dict():
    assert HumanDecision.of(" Feedback ").action == "feedback"
    assert HumanDecision.of({"action": "EDIT", "plan": "not a dict"}).plan == "not a dict"
    assert HumanDecision.of(None).action == "approve" and HumanDecision.of("").action == "approve"


def _args(**kw) -> dict:
    from agentlab.bench.registry import Problem

    problem = Problem(id="p1", question="1+1?", answer="2", benchmark="toy", grader="gsm8k")
    return EvalJobArgs(spec=get_technique("direct"), problems=[problem], model="m", benchmark="toy", subset="s",
                       **kw).dump()


def test_the_eval_job_arguments_round_trip_as_json_and_reject_a_bad_field():
    args = _args(model_id="gguf-sha256:1", serving="llama.cpp Q4_1")
    assert json.loads(json.dumps(args)) == args and args["spec"] == get_technique("direct").model_dump(mode="json")
    parsed = EvalJobArgs.parse(args)
    assert parsed.problems[0].id == "p1" and parsed.concurrency == 4 and parsed.seed_db is None
    with pytest.raises(EvalError, match=r"invalid evaluation job arguments: concurrency: .*greater than or equal"):
        EvalJobArgs.parse({**args, "concurrency": 0})
    with pytest.raises(EvalError, match=r"max_retry: Extra inputs are not permitted"):
        EvalJobArgs.parse({**args, "max_retry": 3})  # a misspelt field is not silently ignored
    with pytest.raises(EvalError, match=r"spec\.chains\.n"):
        EvalJobArgs.parse({**args, "spec": {**args["spec"], "chains": {"n": 0}}})


def test_the_job_target_validates_its_arguments_before_it_runs(tmp_path, monkeypatch):
    from agentlab.eval.sandbox_job import run_eval

    monkeypatch.chdir(tmp_path)
    with pytest.raises(EvalError, match="problems"):
        run_eval(**{k: v for k, v in _args().items() if k != "problems"})


def test_the_views_import_nothing_of_the_lab_but_each_other():
    """The agent roles import them: they stay leaves (pydantic and ``agentlab.techniques`` only)."""
    lab = Path(__file__).resolve().parents[2] / "agentlab" / "lab"
    for name, allowed in (("models.py", set()), ("view.py", {"agentlab.lab.models"})):
        tree = ast.parse((lab / name).read_text())
        found = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
                 and n.module.startswith("agentlab")}
        assert found - {"agentlab.techniques"} == allowed, name
