"""Outputs of a training run (used on both sides of the sandbox wall): per-step records
(``metrics.jsonl``), the PNG curve and the checkpoint's content hash."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from agentlab.eval.outputs import save_figure

METRICS_FILE = "metrics.jsonl"
CURVE_FILE = "curve.png"


def content_hash(folder: Path | str) -> str:
    """sha256 over every file's relative path and bytes, in sorted order (the checkpoint's identity)."""
    root = Path(folder)
    h = hashlib.sha256()
    for p in sorted(x for x in root.rglob("*") if x.is_file()):
        h.update(str(p.relative_to(root)).encode() + b"\0")
        with p.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()


def read_metrics(path: Path | str) -> list[dict[str, Any]]:
    p = Path(path)
    if not p.is_file():
        return []
    out = []
    for line in p.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:  # a line cut by a kill
            continue
    return out


def write_curve(records: list[dict[str, Any]], path: Path | str, title: str = "") -> Path | None:
    """Loss (and reward where there is one) and learning rate per step, as a PNG."""
    rows = [r for r in records if "step" in r]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = [k for k in ("loss", "reward") if any(k in r for r in rows)]
    fig, axes = plt.subplots(1, len(series) + 1, figsize=(4.2 * (len(series) + 1), 3.4), dpi=100)
    for ax, key in zip(axes, [*series, "learning_rate"]):
        pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="." if len(pts) < 50 else None)
        ax.set_xlabel("step")
        ax.set_ylabel(key.replace("_", " "))
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)
