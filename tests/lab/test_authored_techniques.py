"""Techniques the ML engineer writes out (not only picks): a scripted "expert" test double composes few-shot
exemplars, a planning pre-step, its own template, self-consistency and a critique round; an invalid first draft
is re-asked with the validation error, and the fixed technique runs, is reported and published as a spec."""

from __future__ import annotations

import json

import pytest

from agentlab.bench import load_benchmark
from agentlab.lab.run import start_lab
from preprint_server.client import PreprintClient
from tests.conftest import SHARED_DATA
from tests.lab.conftest import tiny_config

pytestmark = pytest.mark.integration

EXPERT = {"technique": "zero_shot_cot", "num_chains": 2, "temperature": 0.7, "max_tokens": 64,
          "system": "You are a careful arithmetician.",
          "template": "{examples}\n\nPlan: {plan}\n\nQuestion: {question}\nWork it out. {answer_instruction}",
          "steps": [{"name": "plan", "template": "Write a one-line plan for: {question}"}],
          "few_shot": 2, "aggregation": "majority", "refine_rounds": 1, "verify": True,
          "rationale": "worked examples, a plan, a vote, a self-check and a judge"}


@pytest.mark.requires("bubblewrap")  # a lab run starts with a real sandboxed job (lab/preflight.py)
def test_an_expert_writes_a_composed_technique_and_fixes_an_invalid_draft(lab_settings, llm, preprint):
    proposals = []

    def expert(body):  # the first draft forgets {question}; the re-ask carries the error, the second is fixed
        prompt = "\n".join(str(m.get("content", "")) for m in body["messages"])
        proposals.append(prompt)
        if len(proposals) == 1:
            return dict(EXPERT, template="Solve it. {answer_instruction}")
        return EXPERT

    llm.script["TechniqueProposal"] = expert
    cfg = tiny_config(server_url=preprint["url"], max_iterations=1, literature_top_n=0)
    out = start_lab(lab_settings, "Improve arithmetic accuracy of a small model", cfg, server_key=preprint["key"])
    assert out.status == "done", out.state.get("stop_reason")
    assert len(proposals) == 2 and "must contain {question}" in proposals[1]  # the error named the field
    e = out.state["experiments"][0]
    spec = e["spec"]
    assert spec["system"].startswith("You are a careful arithmetician.") and spec["template"] == EXPERT["template"]
    assert [s["name"] for s in spec["steps"]] == ["plan"]
    assert spec["chains"]["n"] == 2 and spec["chains"]["aggregation"] == "majority"
    assert spec["refine"]["rounds"] == 1 and e["record"]["n"] == cfg.dev_n
    assert "VERDICT" in spec["verifier"]["template"]  # a judge step: only accepted answers vote
    # exemplars come from the dev pool beyond the evaluated dev problems, never from the report split
    shots = {x["question"] for x in spec["few_shot"]}
    assert len(shots) == 2
    for split, n in (("dev", cfg.dev_n), ("report", cfg.report_n)):
        evaluated = {p.question for p in load_benchmark(cfg.benchmark, SHARED_DATA,
                                                        subset={"split": split, "limit": n, "seed": cfg.seed})}
        assert not shots & evaluated, split
    # the paper carries the written technique as a spec another lab can pull
    with PreprintClient(preprint["url"]) as c:
        published = c.techniques(out.state["publication"]["paper_id"])
    mine = [t for t in published if t.spec["steps"]]
    assert mine and json.dumps(mine[0].spec["few_shot"]) == json.dumps(spec["few_shot"])


@pytest.mark.requires("bubblewrap")  # a lab run starts with a real sandboxed job (lab/preflight.py)
def test_a_second_lab_extends_a_published_technique_and_cites_it_as_extends(lab_settings, llm, preprint):
    llm.script["TechniqueProposal"] = dict(EXPERT)
    cfg = tiny_config(server_url=preprint["url"], max_iterations=1, literature_top_n=0)
    first = start_lab(lab_settings, "Improve arithmetic accuracy of a small model", cfg, server_key=preprint["key"])
    first_id = first.state["publication"]["paper_id"]
    written = first.state["experiments"][0]["spec"]

    def extend(body):  # start from the first lab's published technique (offered as NAME@PAPER_ID), add a round
        system = next(m["content"] for m in body["messages"] if m["role"] == "system")
        choices = json.loads(system[system.index("{", system.index("JSON schema")):])["properties"]["technique"]["enum"]
        published = [c for c in choices if c.endswith(f"@{first_id}") and c.startswith(written["name"])]
        assert published, choices
        return {"technique": published[0], "num_chains": 2, "temperature": 0.7, "max_tokens": 64, "refine_rounds": 2}

    llm.script["TechniqueProposal"] = extend
    cfg2 = tiny_config(server_url=preprint["url"], max_iterations=1, literature_top_n=2)
    second = start_lab(lab_settings, "Improve arithmetic accuracy of a small model", cfg2, server_key=preprint["key"])
    assert second.status == "done", second.state.get("stop_reason")
    e = second.state["experiments"][0]
    assert e["extends"] == first_id
    spec = e["spec"]  # the first lab's spec (its template, steps, exemplars) with the change
    assert spec["template"] == written["template"] and spec["few_shot"] == written["few_shot"]
    assert spec["refine"]["rounds"] == 2
    with PreprintClient(preprint["url"]) as c:
        paper = c.get_paper(second.state["publication"]["paper_id"])
    assert first_id in paper.citations and paper.relations[first_id] == "extends"
    assert "We build on its published technique." in paper.body


@pytest.mark.requires("bubblewrap")  # a lab run starts with a real sandboxed job (lab/preflight.py)
def test_experiments_branch_from_earlier_ones_and_the_paper_draws_the_tree(lab_settings, llm, preprint):
    turns = iter([dict(EXPERT, refine_rounds=0), {"technique": "zero_shot_cot", "parent": 1, "num_chains": 2,
                                                   "max_tokens": 64, "refine_rounds": 1}])
    llm.script["TechniqueProposal"] = lambda body: next(turns)
    # search_k=1: the second expansion takes the best node so far (the first beats the baseline on its dev problems)
    cfg = tiny_config(server_url=preprint["url"], max_iterations=2, literature_top_n=0, search_k=1)
    out = start_lab(lab_settings, "Improve arithmetic accuracy of a small model", cfg, server_key=preprint["key"])
    assert out.status == "done", out.state.get("stop_reason")
    first, second = out.state["experiments"]
    assert first["paired"]["delta"] > 0 and "parent" not in first and second["parent"] == 1
    # the branch is the parent's technique (its template, steps, exemplars) with the change
    assert second["spec"]["template"] == first["spec"]["template"] and second["spec"]["steps"] == first["spec"]["steps"]
    assert second["spec"]["refine"]["rounds"] == 1 and not first["spec"].get("refine")
    assert "![Experiment tree](figures/experiments.png)" in out.state["report"]["markdown"]
    with PreprintClient(preprint["url"]) as c:
        paper = c.get_paper(out.state["publication"]["paper_id"])
        png = c.artifact(paper.id, "experiments.png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_per_chain_prompts_and_a_judge_written_out(lab_settings):
    from agentlab.lab.experiments import Experiments
    from agentlab.techniques import TechniqueError

    ex = Experiments(lab_settings, tiny_config(), "lab-unit", "test-lab")
    prompts = ["{question}\nSolve it with algebra. {answer_instruction}",
               "{question}\nSolve it, then check by substitution. {answer_instruction}"]
    spec = ex.build_spec({"technique": "zero_shot_cot", "chain_templates": prompts, "verify": True}, 1)
    assert spec.chains.n == 2 and spec.chains.templates == prompts and spec.chains.aggregation == "majority"
    assert spec.verifier is not None and spec.name == "zero_shot_cot_e1"
    with pytest.raises(TechniqueError, match="templates"):  # the re-ask names the field
        ex.build_spec({"technique": "zero_shot_cot", "chain_templates": ["Solve it."]}, 2)


def test_a_written_prompt_that_repeats_the_question_is_refused():
    """Seen from a 0.5B engineer: "Calculate {question} Calculate {question} ..." validated, ran, and scored 0%."""
    import pytest

    from agentlab.lab.experiments import check_written_prompts
    from agentlab.lab.models import SpecRequest
    from agentlab.techniques import TechniqueError

    def check(**written) -> None:
        check_written_prompts(SpecRequest.model_validate(written))

    check(template="Q: {question}\nRestate: {question}\n{answer_instruction}")  # twice is fine
    with pytest.raises(TechniqueError, match=r"template has \{question\} 6 times"):
        check(template="Calculate {question} " * 6)
    with pytest.raises(TechniqueError, match=r"steps\[0\].template"):
        check(steps=[{"name": "plan", "template": "{question}" * 3}])
