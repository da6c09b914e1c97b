"""Confirmation and ablation: before the report split the best dev node is evaluated on fresh dev problems that
no node was chosen on (disjoint from the dev problems, the few-shot pool and the report split), paired with the
baseline; each part of a multi-part best is removed in turn on the same problems; the paper reports both from
the records; a demo skips them."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from agentlab.bench import Subset
from agentlab.eval.records import ResultStore
from agentlab.lab.confirm import confirm
from agentlab.lab.experiments import EXEMPLAR_POOL, Experiments
from agentlab.lab.launch import demo_config
from agentlab.lab.models import Comparison, Experiment, JobResult, Record
from agentlab.lab.report.claims import check_paper
from agentlab.lab.report.paper import build_paper
from agentlab.lab.run import start_lab
from agentlab.lab.state import LabConfig
from agentlab.techniques import TechniqueSpec, builtin_techniques
from agentlab.techniques.spec import ablations
from tests.lab.conftest import tiny_config

DRAFT = {k: f"{k} text." for k in ("title", "abstract", "introduction", "method", "discussion", "conclusion")}


def test_each_part_of_a_spec_is_removed_in_turn():
    base = builtin_techniques()["zero_shot_cot"]
    spec = TechniqueSpec.parse({
        "name": "rich", "system": "Be careful.", "template": "{examples}\n\nPlan:\n{plan}\n\n{question}",
        "few_shot": [{"question": "1+1?", "solution": "\\boxed{2}"}],
        "steps": [{"name": "plan", "template": "Plan for: {question}"}],
        "chains": {"n": 3, "aggregation": "majority", "temperatures": [0.2, 0.5, 0.8]},
        "refine": {"rounds": 2}, "verifier": {}})
    parts = dict(ablations(spec, base.system))
    assert list(parts) == ["steps", "few_shot", "chains", "refine", "verifier", "system"]
    assert not parts["steps"].steps and "{plan}" not in parts["steps"].template and parts["steps"].few_shot
    assert not parts["few_shot"].few_shot and "{examples}" not in parts["few_shot"].template
    assert parts["chains"].chains.n == 1 and parts["chains"].sampling.temperature == 0.2
    assert parts["refine"].refine is None and parts["verifier"].verifier is None
    assert parts["system"].system == base.system
    for part, ablated in parts.items():  # only that part differs from the full spec
        assert ablated.name == f"rich_no_{part}" and ablated.spec_hash() != spec.spec_hash()
        assert ablated.model_dump(exclude={part, "name", "description", "template", "sampling"}) == \
            spec.model_dump(exclude={part, "name", "description", "template", "sampling"}) or part == "chains"
    assert ablations(base, base.system) == []  # the baseline has no parts
    assert ablations(TechniqueSpec.parse({"name": "c", "kind": "code",
                                          "code": "def solve(problem, client):\n    return '1'"})) == []


def test_confirmation_problems_are_fresh_dev_problems(workspace):
    from agentlab.config import load_settings

    cfg = LabConfig(benchmark="basic_arithmetic", dev_n=5, report_n=30, confirm_n=7)
    exps = Experiments(load_settings(), cfg, "run-x", "lab-x")
    dev, conf, report = ({p.id for p in exps.problems(s)} for s in ("dev", "confirm", "report"))
    assert len(conf) == 7 and not conf & dev and not conf & report
    pool = {e["question"] for e in exps.exemplars(EXEMPLAR_POOL)}  # where few-shot exemplars come from
    assert len(pool) == EXEMPLAR_POOL and not {p.question for p in exps.problems("confirm")} & pool
    assert "split=dev(0.3) after=13 first=7" == exps.subset_label("confirm")
    assert Subset.parse(exps.subset_label("confirm")).offset == 13  # published records name it, parseably
    assert Experiments(load_settings(), cfg.model_copy(update={"confirm_n": 0}), "r", "l").confirm_problems() == []


@pytest.mark.requires("bubblewrap")  # a lab run starts with a real sandboxed job (lab/preflight.py)
def test_a_scripted_lab_confirms_and_ablates_its_best_node(lab_settings, llm, preprint):
    # the best node: plan_and_solve with two chains, a verifier and an extra instruction (three parts)
    llm.script["TechniqueProposal"] = {"technique": "plan_and_solve", "num_chains": 2, "aggregation": "majority",
                                       "temperature": 0.7, "max_tokens": 64, "verify": True,
                                       "instruction": "Be careful with signs.", "rationale": "careful voting"}
    events: list[tuple[str, dict]] = []
    cfg = tiny_config(server_url=preprint["url"], max_iterations=1, literature_top_n=0, compare_prior_best=False)
    out = start_lab(lab_settings, "Improve arithmetic accuracy of a small model", cfg, server_key=preprint["key"],
                    on_event=lambda kind, data: events.append((kind, data)))
    assert out.status == "done", out.state.get("stop_reason")
    st = out.state
    started = [d["key"] for kind, d in events if kind == "job_started"]
    parts = ["chains", "verifier", "system"]
    assert started[2:] == ["confirm-baseline", "confirm-best", *(f"ablate-{p}" for p in parts), "report-baseline",
                           "report-best"]
    conf = st["final"]["confirmation"]
    # fresh problems: none of the dev problems nodes were chosen on, none of the report split
    exps = Experiments(lab_settings, cfg, out.run_id, cfg.lab_name)
    store = ResultStore(exps.eval_db)
    try:
        evaluated = {k: {r.problem_id for r in store.results(rec["eval_run_id"])}
                     for k, rec in (("best", conf["technique"]), ("base", conf["baseline"]))}
    finally:
        store.close()
    fresh = {p.id for p in exps.problems("confirm")}
    assert evaluated["best"] == evaluated["base"] == fresh and len(fresh) == cfg.dev_n == conf["n"]
    assert not fresh & {p.id for p in exps.problems("dev")} and not fresh & {p.id for p in exps.problems("report")}
    assert conf["technique"]["technique"] == st["best"]["spec"]["name"] and "after=" in conf["technique"]["subset"]
    # paired with the baseline on the same problems
    assert conf["wins"] + conf["losses"] + conf["ties"] == conf["n"]
    assert abs(conf["delta"] - (conf["technique"]["accuracy"] - conf["baseline"]["accuracy"])) < 1e-9
    assert conf["confirmed"] == (conf["delta"] > 0) and 0 < conf["p_value"] <= 1
    # each part removed in turn, on the same problems, paired with the full node
    abl = conf["ablation"]
    assert [r["part"] for r in abl] == parts
    for r in abl:
        assert r["record"]["n"] == conf["n"] and r["technique"].endswith(f"_no_{r['part']}")
        assert abs(r["delta"] - (r["record"]["accuracy"] - conf["technique"]["accuracy"])) < 1e-9
        assert r["spec_hash"] in st["final"]["specs"]  # published with the paper
    # the paper reports both, from the records, and they join the paper's records
    rep = st["report"]
    md = rep["markdown"]
    assert "### Confirmation and ablation" in md and f"Confirmation on {conf['n']} fresh dev problems" in md
    assert f"{conf['wins']} wins, {conf['losses']} losses" in md and "Ablation of" in md
    assert "| verifier | " in md and "Confirmation and ablation" in rep["latex"]
    ids = {r["record_id"] for r in rep["records"]}
    assert {conf["technique"]["record_id"], conf["baseline"]["record_id"]} | {r["record"]["record_id"]
                                                                              for r in abl} <= ids
    unsupported = [c for c in check_paper(md, rep["records"], st["final"].get("comparison"))
                   if c["status"] == "unsupported"]
    assert unsupported == []


def _fake_ctx(config: LabConfig, deltas: dict[str, float], jobs_left: int = 100) -> SimpleNamespace:
    """A context whose jobs return records at once: enough to drive ``confirm`` without a model."""
    ran, notes = [], []

    def run_job(key, spec, split, meta=None, checkpoint=None):
        ran.append((key, split))
        return JobResult(status="succeeded", record=Record(record_id=key, technique=spec.name, n=4, correct=2,
                                                           accuracy=0.5, split="dev", eval_run_id=key))

    def compare(a, b):
        d = deltas.get(a.record_id, 0.0)
        return Comparison(n=4, wins=1 if d > 0 else 0, losses=1 if d <= 0 else 0, ties=3, delta=d, p_value=1.0)

    return SimpleNamespace(
        config=config, run_id="r", note=notes.append, run_job=run_job, ran=ran, notes=notes,
        settings=SimpleNamespace(budgets=SimpleNamespace(max_jobs=jobs_left)),
        store=SimpleNamespace(jobs_used=lambda run_id: len(ran)), stored_job=lambda key: None,
        experiments=SimpleNamespace(compare=compare, confirm_problems=lambda: [1, 2, 3, 4],
                                    subset_label=lambda split: "split=dev(0.3) after=12 first=4"))


def test_a_dev_gain_that_does_not_confirm_is_noted_and_the_paper_says_so(tmp_path):
    base = builtin_techniques()["zero_shot_cot"]
    best = builtin_techniques()["self_consistency_verified"]  # two parts: extra chains and a verifier
    ctx = _fake_ctx(LabConfig(dev_n=4), {"confirm-best": -0.25, "ablate-chains": 0.25})
    conf = confirm(ctx, Experiment.model_validate({"spec": best.model_dump(mode="json")}), best, base, reserve=2)
    assert conf.confirmed is False and conf.delta == -0.25
    assert any("did not confirm on 4 fresh dev problems" in n for n in ctx.notes)
    assert [k for k, _ in ctx.ran] == ["confirm-baseline", "confirm-best", "ablate-chains", "ablate-verifier"]
    assert {s for _, s in ctx.ran} == {"confirm"}
    paper = build_paper({"run_id": "x", "goal": "g", "experiments": [], "final": {"confirmation": conf.dump()}},
                        DRAFT, LabConfig(), tmp_path)
    assert "The dev gain did not confirm on fresh problems; the report split decides." in paper.markdown
    assert "| extra chains (one chain) | " in paper.markdown and "+25.0 points" in paper.markdown
    assert check_paper(paper.markdown, paper.records) == []  # generated lines: never claims
    # a budget that keeps its jobs for the report split: no ablation (noted), or no confirmation at all
    ctx = _fake_ctx(LabConfig(dev_n=4), {}, jobs_left=5)
    assert confirm(ctx, None, best, base, reserve=2).ablation == [] and any("not ablated" in n for n in ctx.notes)
    ctx = _fake_ctx(LabConfig(dev_n=4), {}, jobs_left=3)
    assert confirm(ctx, None, best, base, reserve=2) is None and ctx.ran == []


def test_a_demo_skips_confirmation_and_ablation():
    cfg = demo_config()
    assert cfg.confirm_n == 0 and cfg.ablate is False
    base, best = builtin_techniques()["zero_shot_cot"], builtin_techniques()["self_consistency_verified"]
    ctx = _fake_ctx(cfg, {})
    assert confirm(ctx, None, best, base, reserve=2) is None and ctx.ran == []
    # ablation off: the confirmation still runs, no part is removed
    ctx = _fake_ctx(LabConfig(ablate=False), {"confirm-best": 0.25})
    assert confirm(ctx, None, best, base, reserve=2).ablation == [] and len(ctx.ran) == 2
