"""Recipes (validation, one-line errors) and training data without leaks (no model, fast)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentlab.bench.registry import Problem, load_benchmark
from agentlab.eval.records import ProblemResult, ResultStore
from agentlab.techniques import get_technique
from agentlab.train.data import LeakError, build_data, check_disjoint, norm_question, protected_split
from agentlab.train.recipe import Recipe, RecipeError
from tests.conftest import SHARED_DATA

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "train" / "sft_smollm2_cpu.yaml"


def recipe(**kw) -> Recipe:
    data = {"source": "reasoning_gym", "task": "basic_arithmetic", "size": 50, **kw.pop("data", {})}
    return Recipe.parse({"data": data, **kw})


def test_the_example_recipe_is_valid():
    r = Recipe.load(EXAMPLE)
    assert r.method == "sft" and r.model == "embedded" and r.data.protected_benchmark == "basic_arithmetic"


@pytest.mark.parametrize("fields, where", [
    ({"hyper": {"learning_rate": 5.0}}, "hyper.learning_rate"),
    ({"max_steps": 0}, "max_steps"),
    ({"method": "ppo"}, "method"),
    ({"finetune": "qlora"}, "finetune"),
    ({"hyper": {"batch_size": 6, "num_generations": 4}, "method": "grpo"}, "multiple of hyper.num_generations"),
    ({"method": "dpo"}, "needs data.source 'traces'"),
    ({"data": {"source": "benchmark", "task": None}}, "needs data.benchmark"),
    ({"lr": 0.1}, "lr: Extra inputs are not permitted"),
])
def test_bad_recipes_name_the_field(fields, where):
    with pytest.raises(RecipeError, match=None) as exc:
        recipe(**fields)
    assert where in str(exc.value) and "\n" not in str(exc.value)


def test_cli_bad_recipe_is_one_line(workspace, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: sft\ndata: {source: reasoning_gym, task: basic_arithmetic}\nhyper: {batch_size: 0}\n")
    r = subprocess.run([sys.executable, "-m", "agentlab", "train", "run", str(bad)], capture_output=True, text=True,
                       timeout=300, env={**os.environ, "COLUMNS": "250"}, check=False)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "hyper.batch_size: Input should be greater than or equal to 1" in r.stderr, r.stderr


def test_generated_data_never_contains_report_problems():
    """Seed 0 generates the very problems the report split is made of: every one of them is dropped."""
    rec = recipe(data={"seed": 0, "size": 300})
    data = build_data(rec, SHARED_DATA)
    report = load_benchmark("basic_arithmetic", SHARED_DATA, split="report", seed=0)
    report_ids, report_qs = {p.id for p in report}, {norm_question(p.question) for p in report}
    assert data.dropped_leaks >= len(report) > 0
    assert not set(data.problem_ids) & report_ids
    questions = {norm_question(r["prompt"][-1]["content"]) for r in data.rows}
    user = get_technique("direct").render(get_technique("direct").template, question="{q}")
    assert not {norm_question(user.replace("{q}", q)) for q in report_qs} & questions
    assert data.manifest()["protected"] == {"benchmark": "basic_arithmetic", "seeds": [0], "n": len(report)}


def test_check_disjoint_refuses_a_report_problem():
    rec = recipe()
    prot = protected_split(rec.data, SHARED_DATA)
    report = load_benchmark("basic_arithmetic", SHARED_DATA, split="report", seed=0)
    same_text = Problem(id="other-id", question=report[0].question.upper(), answer="1", benchmark="x",
                        grader="reasoning_gym")
    for p in (report[0], same_text):
        with pytest.raises(LeakError, match="report split of basic_arithmetic"):
            check_disjoint([p], prot)


def test_sft_rows_use_the_evaluation_prompt_and_a_boxed_target():
    data = build_data(recipe(data={"size": 5}), SHARED_DATA)
    row = data.rows[0]
    assert row["prompt"][-1]["content"].endswith("Put the final answer in \\boxed{}.")
    assert row["completion"][0]["content"].startswith("The final answer is \\boxed{")


def test_benchmark_source_takes_the_dev_split_only():
    rec = Recipe.parse({"data": {"source": "benchmark", "benchmark": "gsm8k", "size": 100000}})
    data = build_data(rec, SHARED_DATA)
    dev = {p.id for p in load_benchmark("gsm8k", SHARED_DATA, split="dev")}
    assert set(data.problem_ids) <= dev and len(data.problem_ids) == len(dev)


def _trace_db(tmp_path: Path) -> tuple[Path, str]:
    """Graded samples of two problems (dev and report split): two chains each, one right, one wrong."""
    probs = load_benchmark("basic_arithmetic", SHARED_DATA, seed=0)
    dev = next(p for p in probs if p.id not in protected_split(recipe().data, SHARED_DATA).ids)
    rep = load_benchmark("basic_arithmetic", SHARED_DATA, split="report", seed=0)[0]
    db = tmp_path / "eval.db"
    store = ResultStore(db)
    run_id = "run-traces"
    store.ensure_run(run_id, benchmark="basic_arithmetic", subset="all", model="m", spec=get_technique("self_consistency"),
                     problem_ids=[dev.id, rep.id], job_id=None, run_dir=str(tmp_path / "run"))
    for i, p in enumerate((dev, rep)):
        chains = [{"answer": p.answer, "text": f"... so \\boxed{{{p.answer}}}"}, {"answer": "99999", "text": "\\boxed{99999}"}]
        store.add_result(run_id, ProblemResult(problem_id=p.id, idx=i, correct=True, answer=p.answer, gold=p.answer,
                                               chains=chains))
    store.close()
    return db, dev.id


def test_traces_give_sft_samples_and_dpo_pairs_outside_the_report_split(tmp_path):
    db, dev_id = _trace_db(tmp_path)
    sft = build_data(Recipe.parse({"data": {"source": "traces", "eval_run": "run-traces", "protect": {"benchmark": "basic_arithmetic"}}}),
                     SHARED_DATA, db)
    assert sft.problem_ids == [dev_id] and sft.dropped_leaks == 1
    assert sft.rows[0]["completion"][0]["content"].endswith("}")
    dpo = build_data(Recipe.parse({"method": "dpo", "data": {"source": "traces", "eval_run": "run-traces",
                                                             "protect": {"benchmark": "basic_arithmetic"}}}), SHARED_DATA, db)
    assert dpo.problem_ids == [dev_id]
    assert "99999" in dpo.rows[0]["rejected"][0]["content"] and "99999" not in dpo.rows[0]["chosen"][0]["content"]


def test_budgets_in_steps_minutes_and_gpu_minutes():
    r = recipe(max_steps=10, max_minutes=30, max_gpu_minutes=20)
    assert r.time_budget_s(0) == 30 * 60 and r.time_budget_s(1) == 20 * 60 and r.time_budget_s(4) == 5 * 60


def test_worked_targets_reach_the_gold_answer():
    from agentlab.train.data import sft_target, worked_solution

    probs = load_benchmark("chain_sum", SHARED_DATA, seed=0, limit=20) + load_benchmark("basic_arithmetic", SHARED_DATA, limit=50)
    worked = [(p, worked_solution(p)) for p in probs]
    assert any(w for _, w in worked)
    for p, w in worked:
        if w is not None:
            lines = w.splitlines()
            assert all(" = " in ln for ln in lines[:-1]) and lines[-1] == f"The final answer is \\boxed{{{p.answer}}}."
        else:
            assert sft_target(p, "worked") == sft_target(p, "boxed")
