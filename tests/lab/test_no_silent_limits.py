"""No silent limits: what the lab changes of what an agent asked for (a cut text, a clamped number, a setting over
the lab's bounds) is told to the agent in one bounded re-ask and kept in the experiment record; answer budgets come
from the agents' model; the instruction line keeps the technique's own system prompt; and "simplify" never passes
the baseline off as a new technique. The agents are the scripted test double."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from agentlab.config import load_settings
from agentlab.lab.experiments import Experiments
from agentlab.lab.run import sized_for_agents, start_lab
from agentlab.techniques import get_technique
from agents.base import ANSWER_FLOOR, answer_budget, schema_tokens
from agents.ml_engineer import CodeTechnique, TechniqueProposal
from tests.lab.conftest import tiny_config


def test_an_answer_reports_what_validation_cut_or_clamped():
    p = TechniqueProposal.model_validate_json(json.dumps({
        "technique": "zero_shot_cot", "temperature": 3.0, "template": "x {question}" * 200,
        "steps": [{"name": "plan", "template": "y" * 900}]}))
    assert p.temperature == 1.5 and len(p.template) == 1500 and len(p.steps[0].template) == 800
    assert p.adjustments == ["temperature 3 was clamped to 1.5 (range 0 to 1.5)",
                             "template was cut from 2400 to its limit of 1500 characters",
                             "StepDraft.template was cut from 900 to its limit of 800 characters"]
    assert TechniqueProposal(technique="direct", temperature=0.7).adjustments == []


def test_answer_budgets_come_from_the_agents_model(workspace):
    strong = sized_for_agents(load_settings(overrides={"agents.model": "openai/gpt-4o-mini"}), tiny_config())
    small = sized_for_agents(load_settings(), tiny_config())  # the embedded 135M model: n_ctx 4096
    assert strong.agent_output_tokens == 16_384 and small.agent_output_tokens == 1024

    def budget(cfg, schema):
        return answer_budget(SimpleNamespace(config=cfg), schema)

    need = schema_tokens(TechniqueProposal)  # every written-out field at its limit
    assert need > 2000
    assert budget(strong, TechniqueProposal) == need  # a strong model may write its fullest proposal (400 before)
    assert budget(strong, CodeTechnique) > 2000  # 6000 characters of code fit (1,200 tokens before)
    assert budget(small, TechniqueProposal) == 1024  # a small one within a quarter of its window
    assert budget(tiny_config(agent_output_tokens=64), TechniqueProposal) == ANSWER_FLOOR


def test_the_instruction_line_keeps_the_techniques_system_prompt(lab_settings):
    ex = Experiments(lab_settings, tiny_config(), "lab-unit", "test-lab")
    parent = get_technique("zero_shot_cot").model_copy(update={"name": "careful",
                                                               "system": "You are a careful arithmetician."})
    spec = ex.build_spec({"technique": "zero_shot_cot", "base_spec": parent.model_dump(mode="json"),
                          "instruction": "Check every sign."}, 2)
    assert spec.system == "You are a careful arithmetician.\nCheck every sign."
    assert ex.build_spec({"technique": "plan_and_solve", "instruction": "Check every sign."}, 3).system == \
        "Check every sign."


def test_what_the_lab_does_not_run_as_asked_is_named_with_the_reason(lab_settings):
    ex = Experiments(lab_settings, tiny_config(max_chains=2, max_tokens_per_answer=64), "lab-unit", "test-lab")
    asked = {"technique": "self_consistency", "num_chains": 8, "max_tokens": 1024, "temperature": 0.0}
    spec = ex.build_spec(asked, 1)
    assert spec.chains.n == 2 and spec.sampling.max_tokens == 64 and spec.sampling.temperature == 0.7
    assert ex.spec_adjustments(asked, spec) == [
        "num_chains 8 -> 2 (the lab's max_chains is 2)",
        "max_tokens 1024 -> 64 (the lab's max_tokens_per_answer is 64)",
        "temperature 0.0 -> 0.7 (several chains at temperature 0 would all give the same answer)"]
    # one chain and three worked examples asked: one chain and three examples run (5 chains and none, before)
    one = {"technique": "self_consistency", "num_chains": 1, "few_shot": 3}
    spec = ex.build_spec(one, 2)
    assert spec.chains.n == 1 and len(spec.few_shot) == 3 and ex.spec_adjustments(one, spec) == []
    # 0 chains = the technique's own, within the lab's bound, and said so
    own = {"technique": "self_consistency", "num_chains": 0}
    assert ex.spec_adjustments(own, ex.build_spec(own, 3)) == ["num_chains 5 -> 2 (the lab's max_chains is 2)"]


def test_training_settings_over_the_labs_bounds_are_named(workspace):
    ex = Experiments(load_settings(), tiny_config(allow_training=True, train_max_steps=30), "lab-unit", "test-lab")
    asked = {"method": "grpo", "evaluate_with": "direct", "max_steps": 1000, "batch_size": 6}
    recipe = ex.recipe(asked, 1)
    assert ex.recipe_adjustments(asked, recipe) == ["max_steps 1000 -> 30 (the lab's train_max_steps is 30)",
                                                    "batch_size 6 -> 4 (grpo needs whole groups of 4 generations)"]
    # seen in two lab runs: sft at batch 16 and 32 on CPU exceeded the job's memory; it runs as 8 accumulated
    big = {"method": "sft", "evaluate_with": "direct", "max_steps": 10, "batch_size": 20}
    recipe = ex.recipe(big, 2)
    assert (recipe.hyper.batch_size, recipe.hyper.grad_accum, recipe.data.size) == (8, 3, 200)
    assert ex.recipe_adjustments(big, recipe) == [
        "batch_size 20 -> 8 x grad_accum 3 (a CPU job holds at most 8 examples at once in its memory: the rest "
        "accumulate)"]
    assert ex.recipe({**big, "batch_size": 8}, 3).hyper.grad_accum == 1


def test_simplify_never_passes_the_baseline_off_as_a_new_technique(lab_settings):
    ex = Experiments(lab_settings, tiny_config(), "lab-unit", "test-lab")  # baseline zero_shot_cot, 64 tokens
    base = ex.baseline_spec()
    failing = ex.build_spec({"technique": "self_consistency", "num_chains": 2}, 1)
    simple = ex.simplify_spec(failing)  # the baseline's content: it is the baseline, by its own name
    assert simple.spec_hash() == base.spec_hash() and simple.name == base.name
    shorter = failing.model_copy(update={"sampling": failing.sampling.model_copy(update={"max_tokens": 32})})
    simple = ex.simplify_spec(shorter)  # the baseline with fewer tokens: named for what it is
    assert simple.spec_hash() != base.spec_hash() and simple.sampling.max_tokens == 32
    assert simple.name == f"{base.name}_max32" and failing.name not in simple.name


@pytest.mark.requires("bubblewrap")  # a lab run starts with a real sandboxed job (lab/preflight.py)
def test_an_adjusted_proposal_is_told_once_and_the_record_notes_it(lab_settings, llm, preprint):
    prompts = []

    def engineer(body):  # asks beyond the lab's bounds, and keeps asking so when told
        prompts.append("\n".join(str(m.get("content", "")) for m in body["messages"]))
        return {"technique": "self_consistency", "num_chains": 8, "temperature": 3.0, "max_tokens": 1024,
                "instruction": "Be careful with signs."}

    llm.script["TechniqueProposal"] = engineer
    cfg = tiny_config(server_url=preprint["url"], max_iterations=1, literature_top_n=0)  # max_chains 2, 64 tokens
    out = start_lab(lab_settings, "Improve arithmetic accuracy of a small model", cfg, server_key=preprint["key"])
    assert out.status == "done", out.state.get("stop_reason")
    assert "at most 2 chains" in prompts[0] and "The lab adjusted it" not in prompts[0]
    assert len(prompts) == 2  # one bounded re-ask, though the second answer is adjusted the same way
    told = prompts[1]
    assert "The lab adjusted it" in told and "the lab's max_chains is 2" in told and "clamped to 1.5" in told
    entry = out.state["experiments"][0]
    assert entry["adjustments"] == ["temperature 3 was clamped to 1.5 (range 0 to 1.5)",
                                    "num_chains 8 -> 2 (the lab's max_chains is 2)",
                                    "max_tokens 1024 -> 64 (the lab's max_tokens_per_answer is 64)"]
    assert entry["proposal"]["max_tokens"] == 1024  # what was asked, next to what ran
    assert any(n.startswith("experiment 1 ran with the lab's adjustments: temperature 3") for n in out.state["notes"])
    spec = entry["spec"]
    assert spec["chains"]["n"] == 2 and spec["sampling"]["max_tokens"] == 64 and spec["sampling"]["temperature"] == 1.5
    assert spec["system"] == "Be careful with signs."


def test_fallback_never_reruns_the_baseline_as_a_new_technique():
    """An engineer with no valid proposal falls back to a technique not tried yet, never the baseline (the root
    of the tree, which would come back as the same record under a new name)."""
    from agentlab.lab.view import LabView
    from agents.ml_engineer import fallback_technique

    names = ["zero_shot_cot", "few_shot_cot", "self_consistency", "plan_and_solve"]
    tried = LabView.of({"experiments": [{"proposal": {"technique": "few_shot_cot"}}]})
    assert fallback_technique(LabView(), ["zero_shot_cot"], names, "zero_shot_cot") == \
        ("few_shot_cot", "an untried technique (fallback)")
    assert fallback_technique(tried, ["zero_shot_cot", "few_shot_cot"], names, "zero_shot_cot")[0] == "self_consistency"
    assert fallback_technique(LabView(), ["plan_and_solve"], names, "zero_shot_cot") == \
        ("plan_and_solve", "the plan's technique (fallback)")
    every = LabView.of({"experiments": [{"proposal": {"technique": t}} for t in names]})
    assert fallback_technique(every, ["few_shot_cot"], names, "zero_shot_cot")[0] == "few_shot_cot"


def test_a_paper_section_cut_at_its_limit_ends_at_a_whole_sentence():
    """Seen in a paper: llama.cpp's grammar stops a string at its maxLength, so the conclusion ended "a technique
    that," and the title "...2-3 Small No"; each is ended at its last whole sentence (word), and noted."""
    from agents.professor import ReportDraft, ended_at_whole_words

    class Notes:  # TEST DOUBLE for the agent context: collects the run's notes
        notes: list[str] = []

        def note(self, text: str) -> None:
            self.notes.append(text)

    title = "Improving the Accuracy of the Model under Study on Short Arithmetic Problems (Additions and Subtractions"
    cut = ("The trained model scored higher. It was evaluated on the report split, with a technique that " * 5)[:400]
    draft = ReportDraft(title=(title + " of 2-3 Small Numbers)")[:120], abstract="An abstract.",
                        introduction="Ends well.", method="m", discussion="d", conclusion=cut)
    ctx = Notes()
    out = ended_at_whole_words(draft, ctx)
    assert out.title == title + " of 2-3 Small" and out.conclusion.endswith("scored higher.")
    assert out.introduction == "Ends well." and len(ctx.notes) == 2 and "conclusion reached its limit" in ctx.notes[1]
