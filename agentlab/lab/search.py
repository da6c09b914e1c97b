"""Best-first tree search over the dev experiments (DESIGN.md decision 9), as pure functions of the entries.

The tree's root is the baseline (score 0); every experiment is a node whose score is its paired dev delta
against the baseline (``entry["paired"]["delta"]``) and whose parent is ``entry["parent"]`` (absent = the root).
The budget is ``max_iterations`` expansions. A round expands the top ``search_k`` nodes by score, ranked on the
tree as it stood when the round began; the search picks the node, the ML engineer proposes the change to it.

- A node is pruned, never expanded again, when it lost to the baseline (score < 0) or when ``prune_after`` of
  its children failed to beat it (failed, or scored no higher). The root is never pruned: expanding it starts
  afresh from a named technique.
- A failed job gets bounded debug children: the software engineer's fixes (``max_fix_attempts``), recorded in
  ``entry["attempts"]``; each attempt after the first is a debug node of the tree.
- Stages: when training is allowed and no training node exists yet, the search runs one training expansion
  itself after the first round (or when half the budget is spent), so an agent that never asks for training
  does not hide the lever. It trains on the best prompt node's technique when the trainer accepts it, else on
  the baseline's; the agent fills in the recipe.
"""

from __future__ import annotations

from typing import Any

ROOT = 0  # the baseline's node id (experiments are numbered from 1)


def score(e: dict[str, Any]) -> float | None:
    """The node's paired dev delta against the baseline; None when it has no paired result (failed)."""
    p = e.get("paired") if e.get("record") else None
    return float(p["delta"]) if p else None


def parent_of(e: dict[str, Any]) -> int:
    return int(e.get("parent") or ROOT)


def expandable(e: dict[str, Any]) -> bool:
    """A prompt technique that ran: a code technique's spec cannot take changes, and a training technique's spec
    would run without its trained model (``agents.ml_engineer._branchable``)."""
    return bool(e.get("record")) and (e.get("spec") or {}).get("kind") != "code" and not e.get("training")


def pruned_reason(e: dict[str, Any], experiments: list[dict[str, Any]], prune_after: int) -> str | None:
    """Why node ``e`` is pruned, or None: it lost to the baseline, or ``prune_after`` children failed to beat it."""
    s = score(e)
    if s is None:
        return None  # a failed node: not expandable, counted as failed
    if s < 0:
        return "lost to the baseline"
    beaten = [c for c in experiments if parent_of(c) == e["iteration"] and (score(c) is None or score(c) <= s)]
    if len(beaten) >= prune_after:
        return f"{len(beaten)} children did not beat it"
    return None


def frontier(experiments: list[dict[str, Any]], k: int, prune_after: int) -> list[int]:
    """The top-``k`` expandable, unpruned nodes by score (the root included, score 0; ties go to the root, then to
    the earlier node)."""
    ranked = [(0.0, ROOT)] + [(score(e), e["iteration"]) for e in experiments
                              if expandable(e) and score(e) is not None
                              and not pruned_reason(e, experiments, prune_after)]
    return [it for _, it in sorted(ranked, key=lambda t: (-t[0], t[1]))[:max(1, k)]]


def choose_parent(experiments: list[dict[str, Any]], k: int, prune_after: int) -> int:
    """The node the next expansion improves: expansion ``i`` is slot ``i % k`` of round ``i // k``, whose frontier
    is ranked on the experiments that finished before the round began."""
    i = len(experiments)
    front = frontier(experiments[:i - i % k], k, prune_after)
    return front[(i % k) % len(front)]


MAX_TRAININGS = 2  # the training stage, and one retraining when it lost


def trainings(experiments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in experiments if e.get("training_proposal") or e.get("training")]


def train_now(experiments: list[dict[str, Any]], k: int, budget: int, allow_training: bool) -> bool:
    """The training stage: allowed, some budget left, and either none yet and the first round done (or half the
    budget spent), or a retraining right after a training that did not beat the baseline (a small model's
    recipe often collapses it, or teaches the wrong target: the tuning stage gives the engineer one more
    recipe, with the failed one in its history)."""
    i, done = len(experiments), trainings(experiments)
    if not allow_training or not 1 <= i < budget:
        return False
    if not done:
        return i >= k or 2 * i >= budget
    last = done[-1]
    return len(done) < MAX_TRAININGS and last is experiments[-1] and (score(last) or 0.0) <= 0


def training_choice(experiments: list[dict[str, Any]], trainable: list[str], baseline: str,
                    prune_after: int) -> tuple[str, int]:
    """(technique the trained model is evaluated with, the node it trains on): a retraining keeps the failed
    training's; else the best prompt node's technique when the trainer accepts it (a one-prompt technique), else
    the baseline."""
    if done := trainings(experiments):
        asked = (done[-1].get("training_proposal") or {}).get("evaluate_with")
        if asked in trainable:
            return asked, parent_of(done[-1])
    best = next((it for it in frontier(experiments, len(experiments) + 1, prune_after) if it != ROOT), None)
    node = next((e for e in experiments if e["iteration"] == best), None)
    name = ((node or {}).get("proposal") or {}).get("technique")
    if node is not None and (score(node) or 0) > 0 and name in trainable:
        return name, best
    return (baseline if baseline in trainable or not trainable else trainable[0]), ROOT


def next_expansion(experiments: list[dict[str, Any]], *, k: int, prune_after: int, budget: int,
                   allow_training: bool = False, trainable: list[str] | None = None,
                   baseline: str = "") -> dict[str, Any]:
    """What the search does next: ``{"stage": "prompt", "parent": node}`` (the agent proposes a change to node),
    or ``{"stage": "train", "parent": node, "evaluate_with": technique}``."""
    if train_now(experiments, k, budget, allow_training):
        technique, node = training_choice(experiments, trainable or [], baseline, prune_after)
        return {"stage": "train", "parent": node, "evaluate_with": technique}
    return {"stage": "prompt", "parent": choose_parent(experiments, k, prune_after)}


def fallback_technique(state: dict[str, Any], planned: list[str], techniques: list[str], baseline: str) -> tuple[str, str]:
    """(technique, why) with no valid proposal: the next planned, else built-in, technique not tried yet, never the
    baseline (the tree's root: re-run under a new name it would pass as new); once all were tried, the plan's."""
    tried = {(e.get("proposal") or {}).get("technique") for e in state.get("experiments") or []}
    fresh = [t for t in [*planned, *techniques] if t != baseline and t not in tried]
    others = fresh or [t for t in planned if t != baseline] or [t for t in techniques if t != baseline] or [baseline]
    name = others[0 if fresh else len(state.get("experiments") or []) % len(others)]
    return name, ("the plan's technique" if name in planned else "an untried technique") + " (fallback)"


def debug_nodes(e: dict[str, Any]) -> int:
    """Fix attempts after a failed job (a training node's attempts are its train and eval jobs, not fixes)."""
    return 0 if e.get("training_proposal") or e.get("training") else max(0, len(e.get("attempts") or []) - 1)


def tree_summary(experiments: list[dict[str, Any]], prune_after: int) -> dict[str, Any]:
    """The tree in numbers: nodes (root, expansions, debug nodes), expansions, pruned, debugged (failed jobs the
    software engineer fixed or tried to), failed, and the pruned nodes with why."""
    pruned = {e["iteration"]: r for e in experiments if (r := pruned_reason(e, experiments, prune_after))}
    debug = sum(debug_nodes(e) for e in experiments)
    return {"nodes": 1 + len(experiments) + debug, "expansions": len(experiments), "pruned": len(pruned),
            "debugged": sum(1 for e in experiments if debug_nodes(e)), "debug_nodes": debug,
            "failed": sum(1 for e in experiments if not e.get("record")),
            "pruned_nodes": {str(k): v for k, v in pruned.items()}}


def summary_text(tree: dict[str, Any]) -> str:
    """One sentence for notes and papers."""
    return (f"The best-first search grew a tree of {tree['nodes']} nodes: {tree['expansions']} expansions, "
            f"{tree['debug_nodes']} debug node(s) on {tree['debugged']} failed job(s), {tree['pruned']} pruned.")
