"""Progress charts of a goal for the terminal (plain text) and as a PNG (matplotlib): best-so-far ranked
report-split accuracy against paper index or time, the combined line and one line per lab."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from preprint_server.progress import duration

MARKS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"




def _x(point: Any, by: str) -> float:
    return float(point.index) if by == "index" else float(point.elapsed_s)


def text_chart(group: Any, by: str, xmax: float, target: float | None = None, width: int = 60,
               height: int = 12) -> list[str]:
    """Rows of a character chart: each lab's best-so-far step line with its letter, the combined line
    with '*' (drawn last), the target as '-' where no line is."""
    bests = [p.best for line in group.lines for p in line.points] + ([target] if target is not None else [])
    if not bests:
        return ["(no ranked report-split results yet)"]
    lo, hi = max(0.0, min(bests) - 0.02), min(1.0, max(bests) + 0.02)
    xmax = max(xmax, 1e-9)
    grid = [[" "] * width for _ in range(height)]
    row = lambda a: height - 1 - round((height - 1) * (a - lo) / ((hi - lo) or 1))
    if target is not None:
        grid[row(target)] = ["-"] * width
    labs = [line for line in group.lines if line.lab is not None]
    for mark, line in [(MARKS[i % len(MARKS)], line) for i, line in enumerate(labs)] + \
                      [("*", line) for line in group.lines if line.lab is None]:
        for col in range(width):
            start, end = xmax * col / width, xmax * (col + 1) / width
            seen = [p for p in line.points if _x(p, by) <= end + 1e-9]
            if seen and (line.lab is None or start <= _x(line.points[-1], by)):
                grid[row(seen[-1].best)][col] = mark
    out = []
    for r, cells in enumerate(grid):
        label = f"{100 * hi:5.1f}% " if r == 0 else f"{100 * lo:5.1f}% " if r == height - 1 else " " * 7
        out.append(label + "|" + "".join(cells))
    out.append(" " * 7 + "+" + "-" * width)
    axis = f"papers 1..{xmax:.0f}" if by == "index" else f"time 0..{duration(xmax)} since the goal was set"
    out.append(" " * 8 + axis)
    legend = ["* all labs"] + [f"{MARKS[i % len(MARKS)]} {line.lab}" for i, line in enumerate(labs)]
    if target is not None:
        legend.append(f"- target {100 * target:.1f}%")
    out.append(" " * 8 + "   ".join(legend))
    return out


def write_png(prog: Any, path: Path) -> Path:
    """Both views (against papers, against time) of every group, one row per group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = prog.groups
    fig, axes = plt.subplots(max(1, len(groups)), 2, figsize=(11, 3.6 * max(1, len(groups))), squeeze=False)
    goal = prog.goal
    for row, group in zip(axes, groups):
        for ax, by, xmax in ((row[0], "index", prog.papers), (row[1], "time", prog.span_s / 60)):
            for line in group.lines:
                xs = [_x(p, by) / (1 if by == "index" else 60) for p in line.points]
                ys = [p.best for p in line.points]
                if line.lab is None and xs:
                    xs, ys = xs + [xmax], ys + [ys[-1]]
                ax.step(xs, ys, where="post", marker="o", markersize=3 if line.lab else 5,
                        linewidth=2.5 if line.lab is None else 1.2, color="black" if line.lab is None else None,
                        label=line.lab or "all labs")
            for v, name in ((goal.target, "target"), (goal.baseline, "baseline")):
                if v is not None:
                    ax.axhline(v, linestyle="--", color="grey", linewidth=0.8)
                    ax.annotate(f"{name} {100 * v:.1f}%", (0, v), fontsize=7, color="grey")
            ax.set_xlim(*((0.5, max(xmax, 1) + 0.5) if by == "index" else (0, max(xmax, 1e-3) * 1.05)))
            ax.set_xlabel("papers published on the goal" if by == "index" else "minutes since the goal was set")
            ax.set_ylabel("best report-split accuracy")
            ax.set_title(f"{group.benchmark} · {group.model} · {group.subset or 'all'}", fontsize=9)
            ax.legend(fontsize=7)
    if not groups:
        axes[0][0].text(0.5, 0.5, "no ranked report-split results yet", ha="center")
    fig.suptitle(f"goal {goal.id}: {goal.text[:90]}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
