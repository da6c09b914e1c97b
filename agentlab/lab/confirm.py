"""Confirmation and ablation of the best dev node, before the report split.

The best dev node was chosen on the dev problems, so its dev gain is biased upwards (the winner's curse).
Before the report split, ``confirm`` evaluates it on fresh dev-pool problems that no node was chosen on (the
"confirm" split of ``Experiments``: after the dev problems and the few-shot pool; the report split is disjoint
from the whole dev pool), paired with the baseline on the same problems (keys ``confirm-best``,
``confirm-baseline``). When the job budget allows and the best is a prompt technique of more than one part,
each part is removed in turn (``agentlab.techniques.spec.ablations``) and evaluated on the same problems (keys
``ablate-PART``), paired with the full node. Everything is a job with a stable key (resumable) and every
number a harness record; the report split still decides, and the paper states both (``final["confirmation"]``).
"""

from __future__ import annotations

from agentlab.lab.context import LabContext, LimitReached
from agentlab.lab.models import AblationRow, Confirmation, Experiment, JobResult, Paired, Record
from agentlab.llm.gateway import BudgetExceeded
from agentlab.techniques import TechniqueSpec
from agentlab.techniques.spec import ABLATION_PARTS, ablations

CONFIRM_BEST, CONFIRM_BASELINE = "confirm-best", "confirm-baseline"


def jobs_left(ctx: LabContext) -> int:
    """Jobs this run may still start (``budgets.max_jobs``)."""
    return ctx.settings.budgets.max_jobs - ctx.store.jobs_used(ctx.run_id)


def _to_run(ctx: LabContext, keys: list[str]) -> int:
    """How many of ``keys`` still need a job (a resumed run reuses the finished ones)."""
    return sum(1 for k in keys if not ((row := ctx.stored_job(k)) and row.status == "succeeded"))


def confirm(ctx: LabContext, best: Experiment | None, best_spec: TechniqueSpec | None,
            base_spec: TechniqueSpec, reserve: int) -> Confirmation | None:
    """The best node against the baseline on the confirmation problems, then its ablation; None when off
    (``confirm_n`` 0), when there is no best node other than the baseline, or when the job budget has fewer
    than ``reserve`` (the report split's jobs) plus its own left."""
    cfg = ctx.config
    trained = best.training if best else None
    if cfg.confirm_n == 0 or best_spec is None:
        return None
    if not trained and best_spec.spec_hash() == base_spec.spec_hash():
        return None
    if jobs_left(ctx) < reserve + _to_run(ctx, [CONFIRM_BASELINE, CONFIRM_BEST]):
        ctx.note("the best dev node was not confirmed on fresh dev problems: the job budget keeps its jobs "
                 "for the report split")
        return None
    problems = ctx.experiments.confirm_problems()
    asked = cfg.dev_n if cfg.confirm_n is None else cfg.confirm_n
    if len(problems) < asked:
        ctx.note(f"the dev pool of {cfg.benchmark} has {len(problems)} fresh problems for the confirmation; "
                 f"{asked} were asked for")
    if not problems:
        return None
    ckpt = trained.run_id if trained else None
    try:
        base = ctx.run_job(CONFIRM_BASELINE, base_spec, "confirm")
        tech = ctx.run_job(CONFIRM_BEST, best_spec, "confirm", checkpoint=ckpt)
    except (LimitReached, BudgetExceeded) as exc:
        ctx.note(f"the confirmation stopped: {exc}")
        return None
    out = Confirmation(n=len(problems), subset=ctx.experiments.subset_label("confirm"), technique=tech.record,
                       baseline=base.record, dev_paired=best.paired if best else None)
    paired = _paired(ctx, tech.record, base.record, "the confirmation")
    if paired:
        out = out.model_copy(update={**paired.model_dump(), "confirmed": paired.delta > 0})
        if not out.confirmed:
            ctx.note(f"the dev gain of {best_spec.name} did not confirm on {out.n} fresh dev problems "
                     f"({out.wins} wins, {out.losses} losses against the baseline); the report split "
                     "decides")
    else:
        ctx.note("the confirmation on fresh dev problems failed: "
                 + "; ".join(str(r.error)[:200] for r in (base, tech) if r.error))
    if out.technique:
        out.ablation = ablate(ctx, best_spec, base_spec, tech, base, ckpt, reserve)
    return out


def ablate(ctx: LabContext, spec: TechniqueSpec, base_spec: TechniqueSpec, full: JobResult,
           base: JobResult, ckpt: str | None, reserve: int) -> list[AblationRow]:
    """Each part of ``spec`` removed in turn, on the confirmation problems, paired with the full node
    (``full``); [] when ablation is off, the spec has fewer than two parts, or the job budget does not allow
    all of them."""
    parts = ablations(spec, base_spec.system)
    if not ctx.config.ablate or len(parts) < 2:
        return []
    if jobs_left(ctx) < reserve + _to_run(ctx, [f"ablate-{part}" for part, _ in parts]):
        ctx.note(f"{spec.name} was not ablated: its {len(parts)} parts need {len(parts)} jobs, and the job "
                 "budget keeps its jobs for the report split")
        return []
    rows = []
    for part, ablated in parts:
        try:
            same_as_base = ckpt is None and ablated.spec_hash() == base_spec.spec_hash()
            res = base if same_as_base else ctx.run_job(f"ablate-{part}", ablated, "confirm", checkpoint=ckpt)
        except (LimitReached, BudgetExceeded) as exc:
            ctx.note(f"the ablation of {spec.name} stopped: {exc}")
            break
        rec = res.record
        row = AblationRow(part=part, label=ABLATION_PARTS[part], technique=rec.technique if rec else ablated.name,
                          spec_hash=ablated.spec_hash(), spec=ablated.model_dump(mode="json"), record=rec,
                          error=None if rec else str(res.error)[:300])
        paired = _paired(ctx, rec, full.record, f"the ablation of {part}")
        rows.append(row.model_copy(update=paired.model_dump()) if paired else row)
    return rows


def _paired(ctx: LabContext, a: Record | None, b: Record | None, what: str) -> Paired | None:
    """``a`` against ``b`` on the same problems (wins: a right, b wrong); None when either has no record."""
    if not (a and b):
        return None
    try:
        return ctx.experiments.compare(a, b).paired()
    except Exception as exc:
        ctx.note(f"paired comparison for {what} unavailable: {type(exc).__name__}: {exc}")
        return None
