"""Enough power: the report split is sized from the dev discordance within the budget, a generated benchmark
makes as many problems as asked, the paper states the sizing (and a demo says it is one), and the agents are
shown the node they branch from."""

from __future__ import annotations

from types import SimpleNamespace

from agentlab.bench import load_benchmark
from agentlab.bench.registry import BENCHMARKS
from agentlab.eval.stats import mcnemar_power, mcnemar_sample_size
from agentlab.lab.models import Paired
from agentlab.lab.power import (
    Z_DISCORDANCE,
    discordance,
    plan_sizing,
    size_report_split,
    sizing_text,
    with_achieved,
)
from agentlab.lab.report.claims import check_paper
from agentlab.lab.report.paper import build_paper
from agentlab.lab.state import LabConfig
from agentlab.lab.view import LabView
from agents.ml_context import branch_point, node_evidence
from agents.ml_engineer import write_code
from tests.conftest import SHARED_DATA

DRAFT = {k: f"{k} text." for k in ("title", "abstract", "introduction", "method", "discussion", "conclusion")}


def _final(sizing, n: int) -> dict:
    """A final evaluation with the baseline's report record and the sizing."""
    record = {"technique": "zero_shot_cot", "split": "report", "n": n, "correct": n // 2, "accuracy": 0.5,
              "ci_low": 0.4, "ci_high": 0.6, "record_id": "ev-1", "job_id": "job-1"}
    return {"baseline": record, "sizing": sizing.model_dump()}


def _paired(wins: int, losses: int, n: int) -> Paired:
    return Paired(n=n, wins=wins, losses=losses, ties=n - wins - losses, delta=(wins - losses) / n, p_value=0.5)


def test_the_report_split_is_sized_from_the_dev_discordance_within_the_budget():
    # 4 of 20 dev problems discordant, read at its 80% upper bound (28.5%): a 5-point gain needs 893 report
    # problems (626 at the 20% seen); the budget allows 300
    upper = discordance(4, 20, 0.05, Z_DISCORDANCE)
    assert 0.284 < upper < 0.286
    s = size_report_split(LabConfig(report_n=300), 300, _paired(3, 1, 20))
    assert (s.discordant, s.paired_n, s.needed, s.report_n) == (4, 20, 893, 300)
    assert s.planned_power == mcnemar_power(300, upper, 0.05) < 0.8
    # a 20-point gain needs fewer than the budget: the split gets only what it needs
    s = size_report_split(LabConfig(report_n=300, min_gain=0.2), 300, _paired(6, 2, 20))
    assert s.report_n == s.needed == mcnemar_sample_size(discordance(8, 20, 0.2, Z_DISCORDANCE), 0.2) < 300
    assert s.planned_power >= 0.8
    # 2 of 40 (seen in a lab run, which then disagreed on 15 of 155 report problems) asks for 273, not 155
    assert size_report_split(LabConfig(report_n=300), 300, _paired(1, 1, 40)).needed == 273
    # no dev discordance at all is read as the least a gain of min_gain needs, not as "no problems needed"
    assert size_report_split(LabConfig(), 500, _paired(0, 0, 20)).needed == mcnemar_sample_size(0.05, 0.05)
    # a benchmark with fewer problems than the budget, no paired experiment, a demo
    assert size_report_split(LabConfig(report_n=500), 350, _paired(3, 1, 20)).report_n == 350
    assert size_report_split(LabConfig(report_n=500), 500, None).report_n == 500
    demo = size_report_split(LabConfig(report_n=5, min_gain=0.5, demo=True), 5, _paired(10, 0, 20))
    assert demo.report_n == 5 and demo.needed > 5 and demo.demo


def test_the_paper_states_the_sizing_and_the_power_achieved(tmp_path):
    sizing = size_report_split(LabConfig(report_n=500), 500, _paired(3, 1, 20))
    sizing = with_achieved(sizing, Paired(n=500, wins=70, losses=30))
    assert sizing.achieved == {"n": 500, "discordant": 100, "power": mcnemar_power(500, 0.2, 0.05)}
    text = sizing_text(sizing)
    assert "disagreed on 4 of 20 problems" in text and "needs 893 report problems" in text
    assert "the budget allows 500 (report_n)" in text and "planned power 55%" in text
    assert "disagreed on 100 of 500 problems, which gives 71% power for a gain of 5 points" in text
    state = {"run_id": "lab-x", "goal": "g", "experiments": [], "final": _final(sizing, 500)}
    paper = build_paper(state, DRAFT, LabConfig(report_n=500), tmp_path)
    assert text in paper.markdown and "Demo-size run" not in paper.markdown
    assert "needs 893 report problems" in paper.latex
    assert check_paper(paper.markdown, []) == []  # generated: never a claim to check


def test_a_demo_paper_says_it_is_a_demo_size_run(tmp_path):
    config = LabConfig(dev_n=3, report_n=5, demo=True)
    sizing = size_report_split(config, 5, _paired(1, 0, 3))
    state = {"run_id": "lab-x", "goal": "g", "experiments": [], "final": _final(sizing, 5)}
    paper = build_paper(state, DRAFT, config, tmp_path)
    banner = "> **Demo-size run.** The report split keeps its 5 problems, far fewer than the 155 or more"
    assert banner in paper.markdown
    assert "a demo keeps its size" in paper.markdown and "Demo-size run." in paper.latex
    assert check_paper(paper.markdown, []) == []
    assert "Demo-size run" in plan_sizing(config, 5)["text"]


def test_the_plan_states_the_smallest_gain_and_what_it_takes():
    text = plan_sizing(LabConfig(report_n=500), 350)["text"]
    assert "Smallest gain worth reporting: 5 points" in text and "at most 500 problems" in text
    assert "the benchmark's report split has 350" in text and "at least 155 problems" in text
    assert "626 when they disagree on 20% of the problems" in text


def test_a_generated_benchmark_makes_as_many_problems_as_asked():
    report = load_benchmark("basic_arithmetic", SHARED_DATA, subset={"split": "report", "limit": 400})
    assert len(report) == 400 and len({p.id for p in report}) == 400
    # the first problems are the ones the default 200 generated: more problems only add after them
    default = BENCHMARKS["basic_arithmetic"].load(SHARED_DATA)
    first = [p for p in default if p.id in {q.id for q in report}]
    assert first and report[:len(first)] == first
    dev = load_benchmark("basic_arithmetic", SHARED_DATA, subset={"split": "dev", "limit": 20})
    assert not {p.id for p in dev} & {p.id for p in report}
    assert load_benchmark("basic_arithmetic", SHARED_DATA, subset={"split": "report", "limit": 20}) == \
        report[:20]


def test_a_real_benchmark_with_fewer_problems_is_noted(workspace):
    from agentlab.config import load_settings
    from agentlab.lab.experiments import Experiments
    from agentlab.lab.nodes import _size_report_split

    config = LabConfig(benchmark="aime24", dev_n=3, report_n=100)
    notes: list[str] = []
    ctx = SimpleNamespace(config=config, note=notes.append,
                          experiments=Experiments(load_settings(), config, "run-x", "lab-x"))
    sizing = _size_report_split(ctx, None)
    available = len(load_benchmark("aime24", SHARED_DATA, subset={"split": "report"}))
    assert sizing.report_n == available < 100
    assert notes == [f"the report split of aime24 has {available} problems, fewer than the 100 asked for"]
    assert len(ctx.experiments.problems("report")) == available
    # once sized, the report split is its first report_size problems, and its records say so
    ctx.experiments.report_size = 7
    assert len(ctx.experiments.problems("report")) == 7
    assert "first=7" in ctx.experiments.subset_label("report")


def _wrong(question: str) -> dict:
    return {"wrong": [{"question": question, "output": "o", "answer": "1", "gold": "2"}]}


BASELINE = {"record": {"technique": "zero_shot_cot", "accuracy": 0.4, "correct": 8, "n": 20},
            "evidence": _wrong("baseline's miss")}


def _experiment(i: int, delta: float, question: str, **kw) -> dict:
    return {"iteration": i, "proposal": {"technique": "plan_and_solve"}, "spec": {"kind": "prompt"},
            "record": {"technique": f"t{i}", "accuracy": 0.5, "correct": 10, "n": 20},
            "paired": {**_paired(0, 0, 20).dump(), "delta": delta, "wins": 4, "losses": 1},
            "evidence": _wrong(question), **kw}


def test_the_agent_is_shown_the_node_it_branches_from():
    state = LabView.of({"dev_baseline": BASELINE, "experiments": [
        _experiment(1, 0.15, "first's miss"), _experiment(2, 0.05, "second's miss"),
        _experiment(3, 0.30, "trained miss", training={"run_id": "tr"}),  # a trained model cannot be branched
        _experiment(4, -0.1, "latest miss")]})
    # a proposal sees the experiment that beat the baseline by most, not the latest one
    assert branch_point(state).iteration == 1
    text = node_evidence(state, branch_point(state))
    assert "experiment #1 (parent=1)" in text and "first's miss" in text and "latest miss" not in text
    assert "4 wins, 1 losses" in text
    # no experiment beat the baseline: the baseline is the node
    worse = LabView.of({"dev_baseline": BASELINE, "experiments": [_experiment(1, -0.05, "first's miss")]})
    assert branch_point(worse) is None and "baseline's miss" in node_evidence(worse, None)


def test_written_code_sees_the_wrong_answers_of_its_parent(monkeypatch):
    from agents import ml_engineer

    state = LabView.of({"goal": "g", "dev_baseline": BASELINE,
                        "experiments": [_experiment(1, 0.1, "first's miss"), _experiment(2, 0.2, "second's miss")]})
    shown: list[str] = []

    def ask(ctx, role, prompt, schema, fallback, what, **values):  # what the writer is shown; then no code
        shown.append(values["evidence"])
        return fallback(), True

    monkeypatch.setattr(ml_engineer, "ask", ask)
    ctx = SimpleNamespace(config=SimpleNamespace(context_scale=None), note=lambda text: None)
    for parent, seen in ((1, "first's miss"), (0, "baseline's miss")):
        shown.clear()
        assert write_code(state, ctx, 3, parent) is None
        assert seen in shown[0] and "second's miss" not in shown[0]
