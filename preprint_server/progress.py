"""Progress on a goal over its papers (AgentRxiv's progress figures): after each paper, the best ranked
report-split accuracy so far, against the paper's index and against time since the goal was set; one
line per lab plus the combined line, within one comparable group (benchmark, subset, model under study:
numbers from other problems or another model are not the same quantity). ``chart`` turns a group into
SVG geometry for the goal page (drawn server-side, no JavaScript)."""

from __future__ import annotations

from sqlalchemy import func, select

from preprint_server import goals, schemas
from preprint_server.db import Database
from preprint_server.models import Lab, Paper, Result

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def goal_progress(db: Database, goal_id: str) -> schemas.GoalProgress:
    goal = goals.goal_out(db, goal_id)
    with db.read() as s:
        papers = list(s.execute(
            select(Paper.id, Paper.created, Lab.name).join(Lab, Lab.id == Paper.lab_id)
            .where(Paper.goal_id == goal_id, Paper.status != "retracted").order_by(Paper.created, Paper.id)))
        q = goals._ranked(select(Result.paper_id, Result.benchmark, Result.subset, Result.model,
                                 func.max(Result.accuracy)).join(Paper, Paper.id == Result.paper_id)
                          .where(Paper.goal_id == goal_id))
        rows = s.execute(q.group_by(Result.paper_id, Result.benchmark, Result.subset, Result.model)).all()
    if goal.benchmark and any(r[1] == goal.benchmark for r in rows):
        rows = [r for r in rows if r[1] == goal.benchmark]  # the goal's benchmark, when papers report it
    by_group: dict[tuple[str, str, str], dict[str, float]] = {}
    for pid, bench, subset, model, acc in rows:
        by_group.setdefault((bench, subset, model), {})[pid] = acc
    lab_seen: dict[str, int] = {}
    order = []  # (index, lab_index, paper_id, lab, created, elapsed_s)
    for i, (pid, created, lab) in enumerate(papers, start=1):
        lab_seen[lab] = lab_seen.get(lab, 0) + 1
        order.append((i, lab_seen[lab], pid, lab, created, max(0.0, (created - goal.created).total_seconds())))
    groups = [_group(key, accs, order, goal.target)
              for key, accs in sorted(by_group.items(), key=lambda kv: (-len(kv[1]), kv[0]))]
    return schemas.GoalProgress(goal=goal, papers=len(papers), span_s=order[-1][5] if order else 0.0, groups=groups)


def _group(key: tuple[str, str, str], accs: dict[str, float], order: list, target: float | None) -> schemas.ProgressGroup:
    labs = list(dict.fromkeys(lab for _, _, pid, lab, _, _ in order if pid in accs))
    lines = [_line(None, accs, order, target)] + [_line(lab, accs, order, target) for lab in labs]
    return schemas.ProgressGroup(benchmark=key[0], subset=key[1], model=key[2], lines=lines)


def _line(lab: str | None, accs: dict[str, float], order: list, target: float | None) -> schemas.ProgressLine:
    points, best, reached = [], None, None
    for index, lab_index, pid, paper_lab, created, elapsed in order:
        if pid not in accs or (lab is not None and paper_lab != lab):
            continue
        best = accs[pid] if best is None else max(best, accs[pid])
        points.append(schemas.ProgressPoint(index=index, lab_index=lab_index, paper_id=pid, lab=paper_lab,
                                            created=created, elapsed_s=elapsed, accuracy=accs[pid], best=best))
        if reached is None and target is not None and best >= target - 1e-9:
            reached = schemas.TargetReached(index=index, elapsed_s=elapsed, paper_id=pid, lab=paper_lab,
                                            accuracy=accs[pid])
    return schemas.ProgressLine(lab=lab, papers=len(points), points=points, reached=reached)


# -- drawing ---------------------------------------------------------------------------------------
def duration(seconds: float) -> str:
    """A short duration: 45 s, 12.5 min, 3.2 h, 2.1 d."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def chart(group: schemas.ProgressGroup, by: str, xmax: float, target: float | None = None,
          baseline: float | None = None, w: int = 480, h: int = 220, pad: int = 36) -> dict:
    """SVG geometry of a group's lines against paper index (`by="index"`) or elapsed seconds (`"time"`):
    step lines that hold the best until the next improvement; the combined line runs to `xmax`."""
    accs = [p.best for line in group.lines for p in line.points] + [v for v in (target, baseline) if v is not None]
    if not accs:
        return {}
    lo, hi = max(0.0, min(accs) - 0.05), min(1.0, max(accs) + 0.05)
    xmax = max(xmax, 1e-9)
    sx = lambda x: pad + (w - 2 * pad) * x / xmax
    sy = lambda a: h - pad - (h - 2 * pad) * (a - lo) / ((hi - lo) or 1)
    xof = (lambda p: p.index) if by == "index" else (lambda p: p.elapsed_s)
    lines = []
    for n, line in enumerate(group.lines):
        path, prev = [], None
        for p in line.points:
            if prev is not None:
                path.append(f"{sx(xof(p)):.1f},{sy(prev):.1f}")
            path.append(f"{sx(xof(p)):.1f},{sy(p.best):.1f}")
            prev = p.best
        if line.lab is None and line.points:
            path.append(f"{sx(xmax):.1f},{sy(prev):.1f}")
        when = (lambda p: f"paper {p.index}") if by == "index" else (lambda p: f"{duration(p.elapsed_s)} in")
        dots = [(round(sx(xof(p)), 1), round(sy(p.best), 1),
                 f"{when(p)}: {p.lab} {100 * p.accuracy:.1f}%, best {100 * p.best:.1f}%") for p in line.points]
        lines.append({"label": line.lab or "all labs", "combined": line.lab is None, "path": " ".join(path),
                      "dots": dots, "color": "#222" if line.lab is None else PALETTE[(n - 1) % len(PALETTE)]})
    marks = [{"y": round(sy(v), 1), "label": f"{name} {100 * v:.1f}%"}
             for name, v in (("target", target), ("baseline", baseline)) if v is not None]
    xlabel = f"papers published (1–{xmax:.0f})" if by == "index" else f"time since the goal was set (0–{duration(xmax)})"
    return {"w": w, "h": h, "pad": pad, "lines": lines, "marks": marks, "lo": lo, "hi": hi, "xlabel": xlabel,
            "legend": [(i, line["label"], line["color"]) for i, line in enumerate(lines)]}


def page_charts(prog: schemas.GoalProgress) -> list[dict]:
    """Per group of the goal page: the group, its chart against paper index and against time, and the
    first paper at the target (combined line), with every lab's own."""
    g = prog.goal
    out = []
    for group in prog.groups:
        out.append({"group": group,
                    "by_index": chart(group, "index", prog.papers, g.target, g.baseline),
                    "by_time": chart(group, "time", prog.span_s, g.target, g.baseline),
                    "reached": [(line.lab or "all labs", line.reached) for line in group.lines]})
    return out
