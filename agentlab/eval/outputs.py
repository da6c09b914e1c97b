"""Output files of an evaluation run: ``summary.json``, ``results.jsonl`` and an accuracy chart (PNG)."""

from __future__ import annotations

from pathlib import Path

from agentlab.eval.records import EvalSummary, ProblemResult
from agentlab.eval.stats import wilson_interval


def write_run_files(summary: EvalSummary, results: list[ProblemResult], run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "summary.json").write_text(summary.model_dump_json(indent=2))
    with (run_dir / "results.jsonl").open("w") as fh:
        for r in results:
            fh.write(r.model_dump_json() + "\n")


def write_chart(summary: EvalSummary, path: Path | str, baseline: EvalSummary | None = None) -> Path:
    """A PNG bar chart of accuracy per level (or subject), technique vs baseline, with Wilson intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dim = "level" if "level" in summary.breakdown else ("subject" if "subject" in summary.breakdown else None)
    runs = [summary] + ([baseline] if baseline else [])
    keys = list(summary.breakdown.get(dim, {}).keys()) if dim else []
    labels = ["all"] + keys
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(labels) + 2), 4), dpi=100)
    width = 0.8 / len(runs)
    for j, run in enumerate(runs):
        accs, errs_lo, errs_hi = [], [], []
        for k in labels:
            if k == "all":
                n, c = run.n, run.correct
            else:
                g = run.breakdown.get(dim, {}).get(k)
                n, c = (g.n, g.correct) if g else (0, 0)
            acc = c / n if n else 0.0
            lo, hi = wilson_interval(c, n)
            accs.append(acc)
            errs_lo.append(max(0.0, acc - lo))
            errs_hi.append(max(0.0, hi - acc))
        xs = [i + (j - (len(runs) - 1) / 2) * width for i in range(len(labels))]
        ax.bar(xs, accs, width, yerr=[errs_lo, errs_hi], capsize=3,
               label=f"{run.technique} ({run.correct}/{run.n})")
    ax.set_xticks(range(len(labels)), labels, rotation=30 if dim == "subject" else 0, ha="right" if dim == "subject" else "center")
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy (95% Wilson CI)")
    ax.set_xlabel(dim or "")
    ax.set_title(f"{summary.benchmark} [{summary.subset}] · {summary.model}", fontsize=9)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def save_figure(fig, path: Path | str, dpi: int | None = None) -> Path:
    """Lay out, write (creating the folder) and close a matplotlib figure; the figure's own dpi unless given."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
