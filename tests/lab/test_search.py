"""Best-first tree search (``agentlab.lab.search``): the policy as pure functions over experiment entries, and
labs run with the scripted expert test double in which the search, not the agent, picks the node to expand."""

from __future__ import annotations

import re

import pytest

from agentlab.lab import search
from agentlab.lab.models import Experiment, SearchChoice
from agentlab.lab.run import start_lab
from tests.lab.conftest import tiny_config


def node(it: int, delta: float | None, parent: int = 0, attempts: int = 1, p: float = 0.5, **kw) -> Experiment:
    """An experiment entry as the lab stores it (a record and a paired result, or a failure), typed."""
    e = {"iteration": it, "spec": {"kind": "prompt"}, "proposal": {"technique": "plan_and_solve"},
         "attempts": [{"key": f"dev-{it}-{a}"} for a in range(attempts)], **kw}
    if parent:
        e["parent"] = parent
    if delta is not None:
        e.update(record={"accuracy": 0.5 + delta}, paired={"delta": delta, "p_value": p})
    return Experiment.model_validate(e)


def test_a_node_scores_its_paired_delta_and_failed_ones_do_not_score():
    assert search.score(node(1, 0.25)) == 0.25
    assert search.score(node(1, None)) is None


def test_the_first_round_expands_the_root_then_the_top_k_by_paired_score():
    assert search.choose_parent([], k=2, prune_after=2) == search.ROOT
    one = [node(1, 0.1)]
    assert search.choose_parent(one, k=2, prune_after=2) == search.ROOT  # same round: ranked before it began
    two = [*one, node(2, 0.3)]
    assert search.frontier(two, 2, 2) == [2, 1]
    assert search.choose_parent(two, k=2, prune_after=2) == 2  # round 2, slot 0: the best node
    assert search.choose_parent([*two, node(3, 0.0, parent=2)], k=2, prune_after=2) == 1  # slot 1: the second
    # with k = 1 every expansion takes the best node of the tree as it stands
    assert search.choose_parent(two, k=1, prune_after=2) == 2


def test_the_root_is_kept_when_nothing_beats_the_baseline_and_ties_go_to_it():
    assert search.frontier([node(1, 0.0), node(2, None)], 2, 2) == [search.ROOT, 1]


def test_a_node_that_keeps_losing_is_pruned_and_never_expanded_again():
    lost = node(1, -0.1)
    assert search.pruned_reason(lost, [lost], 2) == "lost to the baseline"
    good = node(1, 0.2)
    kids = [node(2, 0.1, parent=1), node(3, None, parent=1)]  # one scored lower, one failed
    assert search.pruned_reason(good, [good, *kids], 2) == "2 children did not beat it"
    assert search.pruned_reason(good, [good, kids[0]], 2) is None
    better = node(4, 0.3, parent=1)  # a child that beats it does not count against it
    assert search.pruned_reason(good, [good, kids[0], better], 2) is None
    tree = [good, *kids]
    assert 1 not in search.frontier(tree, 5, 2)
    assert search.choose_parent(tree, k=1, prune_after=2) == 2  # its best child, still above the baseline


def test_code_and_training_nodes_are_not_expanded():
    code = node(1, 0.4, spec={"kind": "code"})
    trained = node(2, 0.5, training={"run_id": "r"})
    assert search.frontier([code, trained], 3, 2) == [search.ROOT]


def test_the_tree_counts_nodes_expansions_pruned_and_debug_nodes():
    tree = [node(1, 0.2), node(2, None, attempts=2), node(3, -0.1, attempts=2), node(4, 0.1, parent=1),
            node(5, 0.0, parent=1), node(6, None, training_proposal={"method": "sft"}, attempts=2)]
    t = search.tree_summary(tree, prune_after=2)
    assert t["expansions"] == 6 and t["debug_nodes"] == 2 and t["debugged"] == 2  # a train+eval pair is no debug
    assert t["nodes"] == 1 + 6 + 2 and t["failed"] == 2
    assert t["pruned"] == 2 and set(t["pruned_nodes"]) == {"1", "3"}
    assert "9 nodes: 6 expansions, 2 debug node(s) on 2 failed job(s), 2 pruned" in search.summary_text(t)


def test_the_training_stage_comes_after_the_first_round_or_half_the_budget():
    tree = [node(1, 0.2), node(2, 0.1)]
    assert not search.train_now(tree[:1], k=2, budget=6, allow_training=True)  # round 1 unfinished
    assert search.train_now(tree, k=2, budget=6, allow_training=True)
    assert search.train_now(tree[:1], k=2, budget=2, allow_training=True)  # half the budget spent
    assert not search.train_now(tree, k=2, budget=6, allow_training=False)
    assert not search.train_now([], k=1, budget=6, allow_training=True)
    assert not search.train_now(tree, k=2, budget=2, allow_training=True)  # no budget left
    won = [*tree, node(3, 0.3, p=0.01, training_proposal={"method": "sft", "evaluate_with": "plan_and_solve"})]
    assert not search.train_now(won, k=2, budget=6, allow_training=True)  # trained, and it clearly beat the baseline
    # a gain within the dev split's noise is retrained (seen: +1 problem of 40, then +5.0 points at p = 0.07)
    noisy = [*tree, node(3, 0.025, training_proposal={"method": "sft", "evaluate_with": "plan_and_solve"})]
    assert search.train_now(noisy, k=2, budget=6, allow_training=True)
    # a training that did not beat the baseline (a collapsed model, a failed job) gets one retraining, at once,
    # evaluated with the same technique, the engineer seeing the failed recipe in its history
    for lost in (node(3, -0.2, parent=1, training_proposal={"method": "sft", "evaluate_with": "plan_and_solve"}),
                 node(3, None, parent=1, training_proposal={"method": "sft", "evaluate_with": "plan_and_solve"})):
        step = search.next_expansion([*tree, lost], k=2, prune_after=2, budget=6, allow_training=True,
                                     trainable=["plan_and_solve", "zero_shot_cot"], baseline="zero_shot_cot")
        assert step == SearchChoice(stage="train", parent=1, evaluate_with="plan_and_solve")
        assert not search.train_now([*tree, lost, node(4, 0.1)], k=2, budget=6, allow_training=True)
        again = lost.model_copy(update={"iteration": 4})  # retrained once already
        assert not search.train_now([*tree, lost, again], k=2, budget=6, allow_training=True)
        assert not search.train_now([*tree, lost], k=2, budget=3, allow_training=True)  # no budget left
    # it trains on the best prompt node's technique when the trainer accepts it, else on the baseline
    step = search.next_expansion(tree, k=2, prune_after=2, budget=6, allow_training=True,
                                 trainable=["plan_and_solve", "zero_shot_cot"], baseline="zero_shot_cot")
    assert step == SearchChoice(stage="train", parent=1, evaluate_with="plan_and_solve")
    step = search.next_expansion(tree, k=2, prune_after=2, budget=6, allow_training=True,
                                 trainable=["direct", "zero_shot_cot"], baseline="zero_shot_cot")
    assert step == SearchChoice(stage="train", parent=search.ROOT, evaluate_with="zero_shot_cot")
    losing = [node(1, -0.2), node(2, 0.0)]
    assert search.training_choice(losing, ["plan_and_solve", "zero_shot_cot"], "zero_shot_cot", 2) == ("zero_shot_cot", 0)


def _proposer(asked_parent: int):
    """A scripted expert that always names ``asked_parent`` and adds "careful" (the double's better prompt) only
    from its second proposal on, so experiments differ in paired score."""
    calls = {"n": 0}

    def reply(body: dict) -> dict:
        text = "\n".join(str(m.get("content", "")) for m in body["messages"])
        calls["n"] += 1
        seen = len(set(re.findall(r"#(\d+) plan_and_solve", text)))
        return {"technique": "plan_and_solve", "num_chains": 1, "temperature": 0.0, "max_tokens": 64,
                "instruction": "Be careful with signs." if seen else "Answer.", "parent": asked_parent,
                "rationale": "scripted"}
    return reply


@pytest.mark.requires("bubblewrap")  # a lab run starts with a real sandboxed job (lab/preflight.py)
def test_the_search_chooses_the_parent_by_paired_dev_score_even_when_the_agent_names_another(
        lab_settings, llm, preprint):
    llm.script["TechniqueProposal"] = _proposer(asked_parent=1)  # the agent always wants to branch from #1
    cfg = tiny_config(server_url=preprint["url"], dev_n=12, report_n=12, max_iterations=3, search_k=1,
                      literature_top_n=0, plan_turns=1, compare_prior_best=False)
    out = start_lab(lab_settings, "Improve arithmetic accuracy of a small model", cfg, server_key=preprint["key"])
    assert out.status == "done", out.state.get("stop_reason")
    exps = out.state["experiments"]
    assert len(exps) == 3
    for i, e in enumerate(exps):
        # the parent is the search's choice, ranked by paired dev score on the experiments before it
        before = [Experiment.model_validate(x) for x in exps[:i]]
        want = search.choose_parent(before, k=1, prune_after=cfg.prune_after)
        assert e["search_choice"] == {"stage": "prompt", "parent": want}
        assert (e.get("parent") or 0) == e["proposal"]["parent"] == want
        if want != 1:
            assert e["parent_asked"] == 1  # what the agent named is recorded, with a note
        else:
            assert "parent_asked" not in e
    # the expansion the search chose: the best-scoring node, not the one the agent named
    scores = {e["iteration"]: e["paired"]["delta"] for e in exps[:2]}
    best = max(scores, key=lambda it: (scores[it], -it))
    assert scores[2] > scores[1]  # the scripted "careful" prompt beats the first one on the same dev problems
    want = best if scores[best] > 0 else search.ROOT
    assert exps[2]["search_choice"]["parent"] == want != 1 and exps[2]["parent_asked"] == 1
    assert any("the ML engineer named parent #1; the search expanded" in n for n in out.state["notes"])
    # the agent was shown the chosen node's evidence: its paired score and its wrong answers
    proposals = [p for p in llm.agent_prompts if "Propose the next experiment" in p]
    if want:
        assert f"experiment #{want} (parent={want})" in proposals[-1]
    # the tree in the state and the paper
    tree = out.state["search"]
    assert tree["expansions"] == 3 and tree["nodes"] == 1 + 3 + tree["debug_nodes"]
    assert search.summary_text(tree) in out.state["report"]["markdown"]


@pytest.mark.requires("bubblewrap")  # a lab run starts with a real sandboxed job (lab/preflight.py)
def test_a_weak_agent_that_never_asks_for_training_does_not_hide_the_lever(lab_settings, llm, preprint):
    """The search runs its training stage itself after the first round. Under the double the model under study is
    an external endpoint, which has no weights to train: the training node fails fast, as data, and is counted."""
    llm.script["TrainingProposal"] = {"method": "sft", "evaluate_with": "direct", "max_steps": 2,
                                      "rationale": "scripted"}
    cfg = tiny_config(server_url=preprint["url"], max_iterations=3, search_k=2, literature_top_n=0, plan_turns=1,
                      allow_training=True, compare_prior_best=False)
    events: list[tuple[str, dict]] = []
    out = start_lab(lab_settings, "Improve arithmetic accuracy of a small model", cfg, server_key=preprint["key"],
                    on_event=lambda kind, data: events.append((kind, data)))
    assert out.status == "done", out.state.get("stop_reason")
    exps = out.state["experiments"]
    assert [e["proposal"]["technique"] for e in exps[:2]] == ["plan_and_solve", "plan_and_solve"]
    # the first round's two expansions ran together: both jobs were submitted before either finished, and the
    # second proposal saw the first as its running sibling
    jobs = [(kind, d["key"]) for kind, d in events if kind in ("job_started", "job_finished")
            and d["key"] in ("dev-1-0", "dev-2-0")]
    assert {k for _, k in jobs[:2]} == {"dev-1-0", "dev-2-0"} and {kind for kind, _ in jobs[:2]} == {"job_started"}
    proposals = [p for p in llm.agent_prompts if "Propose the next experiment" in p]
    assert "running (a sibling in this round)" in proposals[1]
    trained = exps[2]
    assert trained["stage"] == "train" and trained["proposal_source"] == "search"
    assert trained["search_choice"]["stage"] == "train"
    # the lab chose what the trained model is evaluated with; the agent filled in the rest of the recipe
    assert trained["training_proposal"]["evaluate_with"] == trained["search_choice"]["evaluate_with"]
    asks = [p for p in llm.agent_prompts if "TrainingProposal" in p]
    assert asks and f"(one of: {trained['search_choice']['evaluate_with']});" in asks[0]
    assert trained["record"] is None and "external endpoint" in trained["error"]
    assert any("the search ran its training stage" in n for n in out.state["notes"])


def test_the_tree_figure_draws_scores_debug_nodes_and_pruned_nodes(tmp_path):
    from agentlab.lab.report.figures import experiment_tree_figure

    tree = [node(1, 0.2), node(2, None, attempts=2), node(3, -0.1), node(4, 0.1, parent=1), node(5, 0.0, parent=1)]
    for e in tree:
        if e.record:
            e.record.technique = "t"
    png = experiment_tree_figure(tree, tmp_path / "tree.png", prune_after=2)
    assert png is not None and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_retraining_that_repeats_a_lost_recipe_is_varied_by_the_lab():
    """Seen with a 0.5B engineer: the retraining sent back the recipe that had just collapsed the model."""
    from agentlab.lab.training import retraining_change

    recipe = {"method": "sft", "target": "boxed", "learning_rate": 0.002, "batch_size": 2, "lora_r": 16,
              "max_steps": 30, "evaluate_with": "zero_shot_cot"}
    lost = node(3, -0.1, training_proposal=dict(recipe))
    change, why = retraining_change(dict(recipe), [node(1, 0.1), lost])
    assert change == {"target": "worked"} and "target boxed -> worked" in why
    worked = dict(recipe, target="worked")
    assert retraining_change(dict(worked), [lost]) is None  # a different recipe runs as asked
    assert retraining_change(dict(worked), [node(3, None, training_proposal=dict(worked))]) == \
        ({"learning_rate": 0.0005}, "the proposal repeats a recipe that did not beat the baseline: the lab changed "
                                    "learning_rate 0.002 -> 0.0005")
    assert retraining_change(dict(recipe), [node(3, 0.2, p=0.01, training_proposal=dict(recipe))]) is None  # it won


def test_the_tuning_stage_retrains_with_the_standard_recipe_after_the_engineers_lost():
    """Seen with a 0.5B engineer: its recipes (boxed answers at 2e-3 with batch 2; worked steps at 1e-4, then boxed)
    never beat the baseline, while the standard LoRA SFT recipe does on this task."""
    from agentlab.lab.training import STANDARD_RECIPE, tuning_recipe
    from agents.ml_engineer import TrainingProposal

    defaults = TrainingProposal(evaluate_with="zero_shot_cot").model_dump()
    assert {k: defaults[k] for k in STANDARD_RECIPE} == STANDARD_RECIPE  # the standard recipe is the proposal's defaults
    theirs = {"method": "sft", "target": "boxed", "learning_rate": 0.002, "batch_size": 2, "lora_r": 16, "max_steps": 30}
    assert tuning_recipe([node(1, 0.1)], 30) is None  # no training yet: the engineer proposes
    assert tuning_recipe([node(3, 0.2, p=0.01, training_proposal=theirs)], 30) is None  # it clearly won
    assert tuning_recipe([node(3, 0.025, training_proposal=theirs)], 30) == {**STANDARD_RECIPE, "max_steps": 30}
    assert tuning_recipe([node(3, -0.1, training_proposal=theirs)], 30) == {**STANDARD_RECIPE, "max_steps": 30}
    standard_lost = node(4, 0.0, training_proposal={**STANDARD_RECIPE, "max_steps": 30})
    assert tuning_recipe([node(3, -0.1, training_proposal=theirs), standard_lost], 30) is None  # ran it already
