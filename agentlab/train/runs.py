"""Training runs on disk (host side): ``<workspace>/train/<run_id>/`` holds ``run.json`` (this record),
``recipe.json``, ``data/train.jsonl`` and ``data/manifest.json`` (the problem ids trained on and the
report split they are disjoint from), and after the job ``checkpoint/``, ``metrics.jsonl`` and ``curve.png``.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from agentlab.train.recipe import RecipeError

RunStatus = Literal["prepared", "running", "succeeded", "failed", "timed_out", "cancelled"]


class TrainRunError(RecipeError):
    """An unknown or unusable training run."""


class TrainRun(BaseModel):
    run_id: str
    name: str
    method: str
    finetune: str
    model: str = Field(description="the base model reference as the job loads it")
    recipe: dict[str, Any]
    recipe_hash: str
    max_steps: int
    created: float = Field(default_factory=time.time)
    status: RunStatus = "prepared"
    jobs: list[str] = Field(default_factory=list)
    gpus: list[int] = Field(default_factory=list)
    gpu_minutes: float = 0.0
    n_train: int = 0
    dropped_leaks: int = 0
    error: str | None = None
    result: dict[str, Any] | None = None
    checkpoint: str | None = None
    checkpoint_hash: str | None = None

    @property
    def short_hash(self) -> str | None:
        return self.checkpoint_hash[:12] if self.checkpoint_hash else None


class RunStore:
    def __init__(self, workspace: Path | str) -> None:
        self.root = Path(workspace) / "train"

    def new_id(self) -> str:
        return time.strftime("tr-%Y%m%d-%H%M%S-") + secrets.token_hex(2)

    def dir(self, run_id: str) -> Path:
        return self.root / run_id

    def save(self, run: TrainRun) -> None:
        d = self.dir(run.run_id)
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / "run.json.tmp"
        tmp.write_text(run.model_dump_json(indent=2))
        tmp.replace(d / "run.json")

    def get(self, ref: str) -> TrainRun:
        """A run by id or a unique prefix."""
        if (self.dir(ref) / "run.json").is_file():
            return TrainRun.model_validate_json((self.dir(ref) / "run.json").read_text())
        hits = [p.name for p in self.root.glob(f"{ref}*") if (p / "run.json").is_file()] if self.root.is_dir() else []
        if len(hits) == 1:
            return self.get(hits[0])
        if len(hits) > 1:
            raise TrainRunError(f"training run prefix {ref!r} is ambiguous: {', '.join(sorted(hits)[:5])}")
        raise TrainRunError(f"no training run {ref!r} in {self.root} (see `agentlab train list`)")

    def list(self) -> list[TrainRun]:
        if not self.root.is_dir():
            return []
        runs = [TrainRun.model_validate_json(p.read_text()) for p in self.root.glob("*/run.json")]
        return sorted(runs, key=lambda r: r.created)

    def manifest(self, run_id: str) -> dict[str, Any]:
        p = self.dir(run_id) / "data" / "manifest.json"
        return json.loads(p.read_text()) if p.is_file() else {}
