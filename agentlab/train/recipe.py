"""A training recipe: the validated spec that agents and users fill (SFT, DPO or GRPO with TRL).

    name: sft-arith
    method: sft                  # sft | dpo | grpo
    model: embedded              # the embedded SmolLM2-135M, an HF id, a local dir or a .gguf file
    finetune: lora               # lora | full
    data: {source: reasoning_gym, task: basic_arithmetic, size: 2000, seed: 1000,
           protect: {benchmark: basic_arithmetic, seeds: [0]}}
    hyper: {learning_rate: 2e-4, batch_size: 8, max_seq_len: 128}
    max_steps: 100
    max_minutes: 30
    seed: 0

Every field has bounds; a bad recipe fails with one line that names the field and why
(``RecipeError``). ``protect`` names the report split that must never enter training data.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agentlab.errors import AgentlabError

Method = Literal["sft", "dpo", "grpo"]


class RecipeError(AgentlabError):
    """A recipe that cannot run: the message names the field and the reason."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Protect(_Model):
    """The report split that training data must stay disjoint from (by problem id and question text)."""

    benchmark: str | None = Field(None, description="benchmark whose report split is protected (default: the data's)")
    seeds: list[int] = Field(default_factory=lambda: [0], description="seeds the report split is evaluated at")
    dev_fraction: float = Field(0.3, gt=0, lt=1, description="the dev/report split's dev share")
    size: int | None = Field(None, ge=1, description="reasoning-gym: problems generated per seed (default: the registry's)")


class DataSource(_Model):
    """Where training problems come from. Never the report split: see ``Protect``."""

    source: Literal["reasoning_gym", "benchmark", "traces"] = "reasoning_gym"
    task: str | None = Field(None, description="reasoning_gym: a registered gym benchmark or rg:TASK name")
    benchmark: str | None = Field(None, description="benchmark: its dev (train) split is used")
    eval_run: str | None = Field(None, description="traces: an evaluation run id whose graded samples are used")
    size: int = Field(1000, ge=1, le=1_000_000, description="problems to generate or take")
    seed: int = Field(1000, ge=0, description="generation seed (keep it apart from the report seeds)")
    technique: str = Field("direct", description="technique whose prompt the training prompts use")
    target: Literal["boxed", "gold", "worked"] = Field(
        "boxed", description="SFT target: 'The final answer is \\boxed{x}.', the bare gold, or a worked +/- solution")
    protect: Protect = Field(default_factory=Protect)
    exclude_ids: list[str] = Field(default_factory=list, description="problem ids never trained on besides the "
                                   "protected report split (a lab's dev problems, so dev accuracy stays a fair guide)")

    @model_validator(mode="after")
    def _needs(self) -> DataSource:
        need = {"reasoning_gym": "task", "benchmark": "benchmark", "traces": "eval_run"}[self.source]
        if getattr(self, need) is None:
            raise ValueError(f"source {self.source!r} needs data.{need}")
        return self

    @property
    def protected_benchmark(self) -> str:
        return self.protect.benchmark or self.task or self.benchmark or ""


class Lora(_Model):
    r: int = Field(16, ge=1, le=512)
    alpha: int = Field(32, ge=1, le=1024)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


class Hyper(_Model):
    learning_rate: float = Field(2e-4, gt=0, le=1e-2)
    batch_size: int = Field(8, ge=1, le=1024, description="per-device batch (GRPO: prompts x generations)")
    grad_accum: int = Field(1, ge=1, le=256)
    max_seq_len: int = Field(256, ge=8, le=32768)
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0, le=1)
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    beta: float = Field(0.1, ge=0, le=10, description="DPO / GRPO KL coefficient")
    num_generations: int = Field(4, ge=2, le=64, description="GRPO: completions per prompt")
    max_completion_length: int = Field(32, ge=1, le=8192, description="GRPO: tokens per completion")
    temperature: float = Field(1.0, gt=0, le=2, description="GRPO sampling temperature")


class Reward(_Model):
    """GRPO reward: the project's grader (1 for a correct answer) plus an optional format reward."""

    correctness: float = Field(1.0, ge=0, le=10)
    format: float = Field(0.0, ge=0, le=10, description="weight of 'the answer is in \\boxed{}'")


class TrainResources(_Model):
    gpus: int = Field(0, ge=0, le=64)
    cpus: float = Field(2.0, gt=0)
    memory_mb: int = Field(8192, ge=512)
    disk_mb: int = Field(4096, ge=64)


class Recipe(_Model):
    name: str = Field("train", min_length=1, max_length=80, pattern=r"^[A-Za-z0-9_.-]+$")
    method: Method = "sft"
    model: str = Field("embedded", min_length=1, description="'embedded', an HF id, a local dir or a .gguf file")
    finetune: Literal["lora", "full"] = "lora"
    lora: Lora = Field(default_factory=Lora)
    data: DataSource
    hyper: Hyper = Field(default_factory=Hyper)
    reward: Reward = Field(default_factory=Reward)
    max_steps: int = Field(100, ge=1, le=1_000_000)
    max_minutes: float = Field(30.0, gt=0, le=7 * 24 * 60, description="training time budget (wall clock)")
    max_gpu_minutes: float | None = Field(None, gt=0, description="GPU budget: wall minutes x assigned GPUs")
    save_steps: int = Field(25, ge=1, le=1_000_000, description="checkpoint every n steps (resume point)")
    seed: int = Field(0, ge=0)
    resources: TrainResources = Field(default_factory=TrainResources)

    @model_validator(mode="after")
    def _consistent(self) -> Recipe:
        if self.method == "dpo" and self.data.source != "traces":
            raise ValueError("method 'dpo' needs data.source 'traces' (pairs of correct and wrong samples)")
        if self.method == "grpo" and self.hyper.batch_size % self.hyper.num_generations:
            raise ValueError(f"hyper.batch_size ({self.hyper.batch_size}) must be a multiple of "
                             f"hyper.num_generations ({self.hyper.num_generations}) for grpo")
        return self

    def time_budget_s(self, gpus: int) -> float:
        """Training seconds allowed: ``max_minutes``, and ``max_gpu_minutes`` spread over the assigned GPUs."""
        minutes = self.max_minutes
        if self.max_gpu_minutes is not None and gpus > 0:
            minutes = min(minutes, self.max_gpu_minutes / gpus)
        return minutes * 60

    def recipe_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:12]

    @classmethod
    def parse(cls, data: Any, where: str = "recipe") -> Recipe:
        if not isinstance(data, dict):
            raise RecipeError(f"{where}: expected a mapping of fields, got {type(data).__name__}")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            e = exc.errors()[0]
            loc = ".".join(str(p) for p in e["loc"]) or "recipe"
            msg = e["msg"].removeprefix("Value error, ")
            more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
            raise RecipeError(f"{where}: {loc}: {msg}{more}") from None

    @classmethod
    def load(cls, path: str | Path) -> Recipe:
        import yaml

        p = Path(path)
        if not p.is_file():
            raise RecipeError(f"recipe file not found: {p}")
        try:
            data = json.loads(p.read_text()) if p.suffix == ".json" else yaml.safe_load(p.read_text())
        except (ValueError, yaml.YAMLError) as exc:
            raise RecipeError(f"{p}: not valid {'JSON' if p.suffix == '.json' else 'YAML'}: "
                              f"{str(exc).splitlines()[0]}") from None
        return cls.parse(data, where=str(p))
