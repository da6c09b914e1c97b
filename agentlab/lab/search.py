"""Best-first tree search over the dev experiments (DESIGN.md decision 9), as pure functions of the entries.

The tree's root is the baseline (score 0); every experiment is a node whose score is its paired dev delta
against the baseline (``Experiment.paired.delta``) and whose parent is ``Experiment.parent`` (0 = the root).
The budget is ``max_iterations`` expansions. A round expands the top ``search_k`` nodes by score, ranked on the
tree as it stood when the round began; the search picks the node, the ML engineer proposes the change to it.

- A node is pruned, never expanded again, when it lost to the baseline (score < 0) or when ``prune_after`` of
  its children failed to beat it (failed, or scored no higher). The root is never pruned: expanding it starts
  afresh from a named technique.
- A failed job gets bounded debug children: the software engineer's fixes (``max_fix_attempts``), recorded in
  ``Experiment.attempts``; each attempt after the first is a debug node of the tree.
- Stages: when training is allowed and no training node exists yet, the search runs one training expansion
  itself after the first round (or when half the budget is spent), so an agent that never asks for training
  does not hide the lever. It trains on the best prompt node's technique when the trainer accepts it, else on
  the baseline's; the agent fills in the recipe. A training that did not beat the baseline (a collapsed model,
  a failed job) gets one retraining at once, on the same node and evaluated with the same technique; the agent
  sees the failed recipe in its history.
"""

from __future__ import annotations

from typing import Any

from agentlab.lab.models import Experiment, SearchChoice

ROOT = 0  # the baseline's node id (experiments are numbered from 1)
MAX_TRAININGS = 2  # a training, and one retraining when it did not beat the baseline (the tuning stage)


def score(e: Experiment) -> float | None:
    """The node's paired dev delta against the baseline; None when it has no paired result (failed)."""
    return float(e.paired.delta) if e.record and e.paired and e.paired.delta is not None else None


def expandable(e: Experiment) -> bool:
    """A prompt technique that ran (``Experiment.branchable``: a code technique's spec cannot take changes, and a
    training technique's spec would run without its trained model)."""
    return e.branchable()


def pruned_reason(e: Experiment, experiments: list[Experiment], prune_after: int) -> str | None:
    """Why node ``e`` is pruned, or None: it lost to the baseline, or ``prune_after`` children failed to beat it."""
    s = score(e)
    if s is None:
        return None  # a failed node: not expandable, counted as failed
    if s < 0:
        return "lost to the baseline"
    beaten = [c for c in experiments if c.parent == e.iteration and (score(c) is None or score(c) <= s)]
    if len(beaten) >= prune_after:
        return f"{len(beaten)} children did not beat it"
    return None


def frontier(experiments: list[Experiment], k: int, prune_after: int) -> list[int]:
    """The top-``k`` expandable, unpruned nodes by score (the root included, score 0; ties go to the root, then to
    the earlier node)."""
    ranked = [(0.0, ROOT)] + [(score(e), e.iteration) for e in experiments
                              if expandable(e) and score(e) is not None
                              and not pruned_reason(e, experiments, prune_after)]
    return [it for _, it in sorted(ranked, key=lambda t: (-t[0], t[1]))[:max(1, k)]]


def choose_parent(experiments: list[Experiment], k: int, prune_after: int) -> int:
    """The node the next expansion improves: expansion ``i`` is slot ``i % k`` of round ``i // k``, whose frontier
    is ranked on the experiments that finished before the round began."""
    i = len(experiments)
    front = frontier(experiments[:i - i % k], k, prune_after)
    return front[(i % k) % len(front)]


def failed_training(experiments: list[Experiment]) -> Experiment | None:
    """The last expansion when it is a training that did not clearly beat the baseline (a collapsed model, a failed
    job, a gain within the dev split's noise) and the run may still train (``MAX_TRAININGS``): it is retrained at
    once; else None."""
    last = experiments[-1] if experiments else None
    trainings = sum(1 for e in experiments if e.trains)
    return last if last and last.trains and trainings < MAX_TRAININGS and not last.clear_win else None


def train_now(experiments: list[Experiment], k: int, budget: int, allow_training: bool) -> bool:
    """The training stage: allowed, some budget left, and either no training yet and the first round done or half
    the budget spent, or the one retraining of a training that did not beat the baseline."""
    i = len(experiments)
    if not (allow_training and 1 <= i < budget):
        return False
    if not any(e.trains for e in experiments):
        return i >= k or 2 * i >= budget
    return failed_training(experiments) is not None


def training_choice(experiments: list[Experiment], trainable: list[str], baseline: str,
                    prune_after: int) -> tuple[str, int]:
    """(technique the trained model is evaluated with, the node it trains on): the best prompt node's technique
    when the trainer accepts it (a one-prompt technique), else the baseline."""
    best = next((it for it in frontier(experiments, len(experiments) + 1, prune_after) if it != ROOT), None)
    node = next((e for e in experiments if e.iteration == best), None)
    if node is not None and (score(node) or 0) > 0 and node.proposal.technique in trainable:
        return node.proposal.technique, best
    return (baseline if baseline in trainable or not trainable else trainable[0]), ROOT


def next_expansion(experiments: list[Experiment], *, k: int, prune_after: int, budget: int,
                   allow_training: bool = False, trainable: list[str] | None = None,
                   baseline: str = "") -> SearchChoice:
    """What the search does next: stage "prompt" and the node the agent proposes a change to, or stage "train",
    the node and the technique the trained model is evaluated with."""
    if train_now(experiments, k, budget, allow_training):
        failed = failed_training(experiments)
        technique = failed.training_proposal.evaluate_with if failed and failed.training_proposal else None
        if technique:  # a retraining: the same node, evaluated with the same technique
            return SearchChoice(stage="train", parent=failed.parent, evaluate_with=technique)
        technique, node = training_choice(experiments, trainable or [], baseline, prune_after)
        return SearchChoice(stage="train", parent=node, evaluate_with=technique)
    return SearchChoice(stage="prompt", parent=choose_parent(experiments, k, prune_after))


def debug_nodes(e: Experiment) -> int:
    """Fix attempts after a failed job (a training node's attempts are its train and eval jobs, not fixes)."""
    return 0 if e.trains else max(0, len(e.attempts) - 1)


def tree_summary(experiments: list[Experiment], prune_after: int) -> dict[str, Any]:
    """The tree in numbers: nodes (root, expansions, debug nodes), expansions, pruned, debugged (failed jobs the
    software engineer fixed or tried to), failed, and the pruned nodes with why."""
    pruned = {e.iteration: r for e in experiments if (r := pruned_reason(e, experiments, prune_after))}
    debug = sum(debug_nodes(e) for e in experiments)
    return {"nodes": 1 + len(experiments) + debug, "expansions": len(experiments), "pruned": len(pruned),
            "debugged": sum(1 for e in experiments if debug_nodes(e)), "debug_nodes": debug,
            "failed": sum(1 for e in experiments if not e.record),
            "pruned_nodes": {str(k): v for k, v in pruned.items()}}


def summary_text(tree: dict[str, Any]) -> str:
    """One sentence for notes and papers."""
    return (f"The best-first search grew a tree of {tree['nodes']} nodes: {tree['expansions']} expansions, "
            f"{tree['debug_nodes']} debug node(s) on {tree['debugged']} failed job(s), {tree['pruned']} pruned.")
