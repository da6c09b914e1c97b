"""What the ML engineer is shown: the experiments so far with their paired results against the baseline, the node
a proposal branches from with what it got wrong on the dev split, and what the lab adjusted of its last answer."""

from __future__ import annotations

import json

from agentlab.lab.models import Evidence, Experiment, Paired, Record
from agentlab.lab.view import LabView
from agents.base import AgentContext, Answer, cclip, clip

TRAIN = "train_model"  # the proposal's technique name for "fine-tune the model under study"


def history(view: LabView) -> str:
    """The baseline's dev result, then each experiment with its paired result against the baseline."""
    base = view.dev_baseline.record
    parts = [f"baseline {accuracy_text(base)}"] if base else []
    for e in view.experiments[-12:]:
        p, rec = e.proposal, e.record
        res = f"accuracy {rec.accuracy:.3f} (n={rec.n}){paired_text(e.paired)}" if rec else \
            ("running (a sibling in this round)" if e.pending else f"failed: {clip(e.error, 80)}")
        branch = f" (branch of #{e.parent})" if e.parent else ""
        t = e.training_proposal
        if t:
            parts.append(f"#{e.iteration} {TRAIN} {t.method} target={t.target} lr={t.learning_rate:g} steps="
                         f"{t.max_steps} batch={t.batch_size} lora_r={t.lora_r} then {t.evaluate_with}: {res}")
            continue
        # what ran, after the lab's adjustments (0 chains asked = the technique's own)
        chains = e.spec.chains if e.spec else None
        sampling = e.spec.sampling if e.spec else None
        parts.append(f"#{e.iteration} {p.technique}{branch} "
                     f"chains={chains.n if chains and chains.n is not None else p.num_chains} "
                     f"T={sampling.temperature if sampling and sampling.temperature is not None else p.temperature}: "
                     f"{res}")
    return "; ".join(parts) or "none yet"


def accuracy_text(record: Record) -> str:
    return f"{record.technique}: accuracy {record.accuracy:.3f} ({record.correct}/{record.n})"


def paired_text(paired: Paired | None) -> str:
    """An experiment against the baseline on the same dev problems, as the agents read it."""
    if not paired:
        return ""
    return (f", vs the baseline on the same {paired.n} dev problems: {paired.wins} wins, "
            f"{paired.losses} losses, {paired.ties} ties ({100 * paired.delta:+.1f} points, "
            f"McNemar p={paired.p_value:.2g})")


def branch_point(view: LabView) -> Experiment | None:
    """The experiment a new proposal is shown as its starting point: of those it can branch from, the one that
    beat the baseline by most on the same dev problems; None when none did (the baseline is the starting
    point)."""
    better = [e for e in view.experiments if e.branchable() and e.evidence and e.paired and (e.paired.delta or 0) > 0]
    return max(better, key=lambda e: (e.paired.delta, -e.paired.p_value, -e.iteration), default=None)


def parent_node(view: LabView, parent: int) -> Experiment | None:
    """Earlier experiment #parent when a proposal can branch from it (a branch point of the tree), or None."""
    node = view.experiment(parent) if parent else None
    return node if node and node.branchable() else None


def node_evidence(view: LabView, node: Experiment | None) -> str:
    """What the node a proposal branches from got wrong on the dev split: experiment ``node``, else the
    baseline; headed by what the node is and how it did against the baseline."""
    if node is None:
        base = view.dev_baseline
        head = f"the baseline {accuracy_text(base.record)}" if base.record else "the baseline (failed)"
        return f"{head}\n{evidence_text(base.evidence)}"
    head = f"experiment #{node.iteration} (parent={node.iteration}) {accuracy_text(node.record)}"
    return f"{head}{paired_text(node.paired)}\n{evidence_text(node.evidence)}"


def evidence_text(evidence: Evidence | None) -> str:
    """A dev evaluation's evidence (``agentlab.lab.dev_evidence``) as prompt text; clipped to the context budget."""
    if not evidence:
        return "none yet"
    parts = [f"accuracy by {dim}: " + ", ".join(f"{k} {v}" for k, v in groups.items())
             for dim, groups in evidence.breakdown.items()]
    parts.append(f"tokens per problem: {evidence.tokens_per_problem}")
    if evidence.errors:
        parts.append(f"{evidence.errors} problem(s) had failed requests")
    if evidence.max_tokens:
        parts.append(_truncation_text(evidence.truncated, evidence.answers, evidence.max_tokens))
    wrong = evidence.wrong
    if wrong:
        total = len(wrong) if evidence.wrong_total is None else evidence.wrong_total
        parts.append(f"{len(wrong)} of {total} wrong answers:")
        for i, w in enumerate(wrong, 1):
            label = "model output (cut at max_tokens)" if w.cut else "model output"
            parts.append(f"[{i}] question: {w.question} | {label}: {w.output} | extracted answer: "
                         f"{w.answer} | gold: {w.gold}" + (f" | error: {w.error}" if w.error else ""))
    return "\n".join(parts)


def _truncation_text(truncated: int, answers: int, max_tokens: int) -> str:
    if not truncated:
        return f"no dev answer hit max_tokens ({max_tokens} tokens)"
    return (f"{truncated} of {answers} dev answers were cut at {max_tokens} tokens (max_tokens): "
            "a cut answer often has no final answer")


def adjusted_text(ctx: AgentContext, answer: Answer, adjusted: list[str]) -> str:
    """The re-ask after the lab adjusted an answer: what the engineer asked, what changed and why."""
    asked = json.dumps(answer.model_dump(include=answer.model_fields_set), default=str)
    return (f"Your last answer was {cclip(ctx, asked, 600)}. The lab adjusted it: "
            f"{cclip(ctx, '; '.join(adjusted), 600)}. Answer again: keep it as adjusted, or change it.")
