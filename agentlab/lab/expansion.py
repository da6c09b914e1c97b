"""One step of the best-first search (``agentlab.lab.search``) as the lab runs it: the search picks the nodes, the
ML engineer proposes a change to each, and the round's jobs run together when the scheduler has room.

The expansions of a round are proposed one after another (each proposal sees its siblings as running, so two
slots on the same node do not propose the same change), then run in threads: each submits its dev job to the
scheduler before any waits, and the scheduler runs as many at once as it has room for
(``jobs.max_concurrent``). The training stage is one expansion of its own.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from agentlab.lab.models import Experiment, ProposalRef
from agentlab.lab.search import next_expansion
from agentlab.lab.training import tuning_recipe
from agentlab.lab.view import LabView
from agents import ml_engineer
from agents.base import AgentContext


def expand(view: LabView, ctx: Any) -> list[Experiment]:
    """The next expansions (the rest of the current round, within the budget and the scheduler's room), as
    experiment entries, each with the search's choice (``search_choice``)."""
    cfg, done = ctx.config, view.experiments
    choose = {"k": cfg.search_k, "prune_after": cfg.prune_after, "budget": cfg.max_iterations,
              "allow_training": cfg.allow_training, "baseline": cfg.baseline,
              "trainable": ctx.trainable_techniques() if cfg.allow_training else []}
    choice = next_expansion(done, **choose)
    if choice.stage == "train":
        entry = search_training(view.model_copy(update={"search_choice": choice}), ctx, choice.evaluate_with,
                                choice.parent)
        return [entry.model_copy(update={"search_choice": choice})]
    room = ctx.settings.jobs.max_concurrent if cfg.parallel_expansions else 1
    slots = max(1, min(cfg.search_k - len(done) % cfg.search_k, cfg.max_iterations - len(done), room))
    proposed: list[tuple[Experiment, Any]] = []
    for _ in range(slots):
        pending = [e.model_copy(update={"pending": True}) for e, _ in proposed]
        choice = next_expansion([*done, *pending], **{**choose, "allow_training": False})
        entry, spec = ml_engineer.propose_iteration(
            view.model_copy(update={"experiments": [*done, *pending], "search_choice": choice}), ctx)
        proposed.append((entry.model_copy(update={"search_choice": choice}), spec))

    def run(entry: Experiment, spec: Any) -> Experiment:
        return ml_engineer.run_proposed(view.model_copy(update={"search_choice": entry.search_choice}), ctx, entry,
                                        spec)

    if len(proposed) == 1:
        return [run(*proposed[0])]
    with contextlib.suppress(Exception):  # made once, here, not raced for by the threads (a failure to serve
        ctx.experiments.scheduler(), ctx.experiments.endpoint()  # shows in each job's result, as before)
    with ThreadPoolExecutor(max_workers=len(proposed), thread_name_prefix="expansion") as pool:
        futures = [pool.submit(run, e, spec) for e, spec in proposed]
        return [f.result() for f in futures]


def search_training(view: LabView, ctx: AgentContext, evaluate_with: str, parent: int) -> Experiment:
    """The search's training stage: the lab decides to train and what the trained model is evaluated with (the best
    prompt node's technique, else the baseline); the ML engineer fills in the rest of the recipe, except in the
    tuning stage after its recipe lost, where the standard one runs (``training.tuning_recipe``)."""
    iteration = len(view.experiments) + 1
    proposal = ml_engineer.TechniqueProposal(technique=ml_engineer.TRAIN, parent=parent,
                                             rationale="the search's training stage")
    ctx.note(f"experiment {iteration}: the search ran its training stage (evaluated with {evaluate_with})")
    entry = Experiment(iteration=iteration, proposal=ProposalRef.model_validate(proposal.model_dump()),
                       proposal_source="search", attempts=[], adjustments=[], stage="train",
                       **({"parent": parent} if parent else {}))
    standard = tuning_recipe(view.experiments, ctx.config.train_max_steps)
    return ml_engineer.train_iteration(view, ctx, entry, False, evaluate_with, standard=standard)
