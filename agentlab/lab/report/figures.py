"""The accuracy figure (PNG) from harness records: the report split with 95% CIs, and the dev experiments."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from agentlab.eval.outputs import save_figure
from agentlab.lab.models import Experiment, Record
from agentlab.lab.search import debug_nodes, pruned_reason, score


def accuracy_figure(records: list[Record], dev_records: list[Record], path: Path) -> Path | None:
    """PNG: accuracy with 95% CI per technique on the report split, and accuracy per dev iteration."""
    if not records and not dev_records:
        return None
    stored = [[r.dump() for r in records], [r.dump() for r in dev_records]]
    key = hashlib.sha256(json.dumps(stored, sort_keys=True, default=str).encode()).hexdigest()
    stamp = path.with_suffix(".sha256")
    if path.is_file() and stamp.is_file() and stamp.read_text() == key:
        return path  # same records as the last render (a revision round): reuse the figure
    path = _render_accuracy_figure(records, dev_records, path)
    stamp.write_text(key)
    return path


def _render_accuracy_figure(records: list[Record], dev_records: list[Record], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2 if dev_records else 1, figsize=(9 if dev_records else 5, 3.5), squeeze=False)
    ax = axes[0][0]
    if records:
        names = [r.technique for r in records]
        acc = [r.accuracy for r in records]
        lo = [max(0.0, r.accuracy - (r.accuracy if r.ci_low is None else r.ci_low)) for r in records]
        hi = [max(0.0, (r.accuracy if r.ci_high is None else r.ci_high) - r.accuracy) for r in records]
        ax.bar(range(len(names)), acc, yerr=[lo, hi], capsize=4, color=["#4c72b0", "#999999"][: len(names)])
        ax.set_xticks(range(len(names)), names, rotation=10, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title("held-out report split (95% CI)", fontsize=9)
    if dev_records:
        ax2 = axes[0][1]
        ax2.plot(range(1, len(dev_records) + 1), [r.accuracy for r in dev_records], marker="o")
        ax2.set_ylim(0, 1)
        ax2.set_xlabel("experiment")
        ax2.set_title("dev split, per experiment", fontsize=9)
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    return save_figure(fig, path, dpi=110)


def experiment_tree_figure(experiments: list[Experiment], path: Path, prune_after: int = 2) -> Path | None:
    """PNG: the search tree of the dev experiments (an edge from the experiment a technique branched from),
    each node with its technique, dev accuracy, paired score against the baseline and debug nodes; pruned nodes
    are marked (red, "pruned"); None for fewer than two experiments."""
    if len(experiments) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_iter = {e.iteration: e for e in experiments}
    parent_of = {it: (e.parent if e.parent in by_iter else 0) for it, e in by_iter.items()}
    depth: dict[int, int] = {0: 0}  # node 0: the baseline, the root of the search (score 0)
    for it in sorted(by_iter):
        depth[it] = depth[parent_of[it]] + 1
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.55 * len(experiments)))
    y = {0: 1, **{it: -i for i, it in enumerate(sorted(by_iter))}}
    for it in by_iter:
        ax.plot([depth[parent_of[it]], depth[it]], [y[parent_of[it]], y[it]], color="#999999", zorder=1)
    ax.scatter([0], [1], s=120, color="#999999", zorder=2)
    ax.annotate("baseline (root, score 0)", (0, 1), xytext=(10, -4), textcoords="offset points", fontsize=8)
    best = max((e.record.accuracy for e in experiments if e.record), default=None)
    for it, e in by_iter.items():
        rec = e.record
        acc = f"{100 * rec.accuracy:.1f}%" if rec else "failed"
        pruned = pruned_reason(e, experiments, prune_after)
        color = "#4c72b0" if rec and rec.accuracy == best else ("#bbbbbb" if not rec else "#8fb0d9")
        ax.scatter([depth[it]], [y[it]], s=120, color="#c44e52" if pruned else color, zorder=2,
                   marker="X" if pruned else "o")
        name = (e.spec.name if e.spec else None) or e.proposal.technique or "?"
        extends = f" (extends {e.extends})" if e.extends else ""
        delta = score(e)
        shown = f", {100 * delta:+.1f} pts vs baseline" if delta is not None else ""
        debug = f", {debug_nodes(e)} debug" if debug_nodes(e) else ""
        ax.annotate(f"#{it} {name}{extends}: {acc}{shown}{debug}{', pruned' if pruned else ''}",
                    (depth[it], y[it]), xytext=(10, -4),
                    textcoords="offset points", fontsize=8)
    ax.set_xlim(-0.5, max(depth.values()) + 3.5)
    ax.set_ylim(min(y.values()) - 0.7, 1.7)
    ax.axis("off")
    ax.set_title("best-first search on the dev split: each branch starts from its parent's technique; "
                 "score = paired delta vs the baseline", fontsize=8)
    return _save(fig, path)
