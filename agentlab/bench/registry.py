"""Benchmark registry and loaders: MATH-500, GSM8K, AIME 2024, AMC 2023 from JSONL files (or the
Hugging Face Hub when the file is absent and ``datasets`` is installed), and procedural tasks from
``reasoning-gym``, generated offline and deterministically from a seed.

Subsets are deterministic: by level or subject, a dev/report split (a stable hash of the problem id,
so a lab can tune on ``dev`` and report on ``report`` without the two ever overlapping), a seeded
sample, and the first n.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agentlab.errors import AgentlabError

Grader = Literal["math", "gsm8k", "reasoning_gym"]


class BenchmarkError(AgentlabError):
    """Unknown benchmark, missing data file, bad subset: the message names the fix."""


class Problem(BaseModel):
    """One benchmark item. ``answer`` is the gold answer as text; ``metadata`` holds level, subject
    and, for reasoning-gym tasks, what its scorer needs."""

    model_config = ConfigDict(frozen=True)

    id: str
    question: str
    answer: str
    benchmark: str
    grader: Grader
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def level(self) -> str | None:
        v = self.metadata.get("level")
        return None if v is None else str(v)

    @property
    def subject(self) -> str | None:
        return self.metadata.get("subject")


class Subset(BaseModel):
    """A deterministic selection of a benchmark's problems (applied in this order: filters, split,
    sample, offset, limit)."""

    model_config = ConfigDict(extra="forbid")

    levels: list[str] | None = Field(None, description="keep these levels (MATH: 1-5)")
    subjects: list[str] | None = Field(None, description="keep these subjects (MATH: Algebra, ...)")
    split: Literal["all", "dev", "report"] = Field("all", description="dev/report split by a stable id hash")
    dev_fraction: float = Field(0.3, gt=0, lt=1, description="share of problems in the dev split")
    sample: int | None = Field(None, ge=1, description="a seeded random sample of this many problems")
    seed: int = Field(0, description="seed for the sample (and for procedural generation)")
    offset: int | None = Field(None, ge=1, description="skip this many problems first (before limit): a lab's "
                                                       "confirmation problems come after its dev problems")
    limit: int | None = Field(None, ge=1, description="the first n problems")

    @field_validator("levels", mode="before")
    @classmethod
    def _levels_as_str(cls, v: Any) -> Any:
        if v is None:
            return v
        if isinstance(v, (str, int)):
            v = [v]
        return [str(x).removeprefix("Level ").strip() for x in v]

    def describe(self) -> str:
        """A short, stable description such as ``split=report(0.3) levels=4,5 first=100``."""
        parts = []
        if self.levels:
            parts.append("levels=" + ",".join(self.levels))
        if self.subjects:
            parts.append("subjects=" + ",".join(self.subjects))
        if self.split != "all":
            parts.append(f"split={self.split}({self.dev_fraction:g})")
        if self.sample:
            parts.append(f"sample={self.sample}(seed={self.seed})")
        elif self.seed:  # procedural benchmarks generate their problems from the seed
            parts.append(f"seed={self.seed}")
        if self.offset:
            parts.append(f"after={self.offset}")
        if self.limit:
            parts.append(f"first={self.limit}")
        return " ".join(parts) or "all"

    def population(self) -> str:
        """``describe()`` of what the subset draws from, whatever its size, sample and generation seed (levels,
        subjects, split): results on one population measure the same kind of problem, each at its own n."""
        return self.model_copy(update={"sample": None, "seed": 0, "limit": None, "offset": None}).describe()

    @classmethod
    def parse(cls, text: str) -> Subset:
        """The subset a ``describe()`` text stands for (published records name their subset this way)."""
        fields: dict[str, Any] = {}
        if text.strip() in ("", "all"):
            return cls()
        for part in re.split(r" (?=(?:levels|subjects|split|sample|seed|after|first)=)", text.strip()):
            key, _, value = part.partition("=")
            if key in ("levels", "subjects"):
                fields[key] = value.split(",")
            elif key == "split" and (m := re.fullmatch(r"(dev|report|all)\(([0-9.]+)\)", value)):
                fields.update(split=m[1], dev_fraction=float(m[2]))
            elif key == "sample" and (m := re.fullmatch(r"(\d+)\(seed=(-?\d+)\)", value)):
                fields.update(sample=int(m[1]), seed=int(m[2]))
            elif key == "seed" and re.fullmatch(r"-?\d+", value):
                fields["seed"] = int(value)
            elif key == "after" and value.isdigit():
                fields["offset"] = int(value)
            elif key == "first" and value.isdigit():
                fields["limit"] = int(value)
            else:
                raise ValueError(f"not a subset description: {part!r} in {text!r}")
        return cls.model_validate(fields)


def in_dev_split(problem_id: str, dev_fraction: float, salt: str = "agentlab-split-v1") -> bool:
    h = hashlib.sha256(f"{salt}:{problem_id}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64 < dev_fraction


def apply_subset(problems: list[Problem], subset: Subset | None) -> list[Problem]:
    if subset is None:
        return list(problems)
    out = problems
    if subset.levels:
        want = set(subset.levels)
        out = [p for p in out if p.level in want]
    if subset.subjects:
        want_s = {s.lower() for s in subset.subjects}
        out = [p for p in out if (p.subject or "").lower() in want_s]
    if subset.split != "all":
        dev = subset.split == "dev"
        out = [p for p in out if in_dev_split(p.id, subset.dev_fraction) == dev]
    if subset.sample and subset.sample < len(out):
        idx = sorted(random.Random(subset.seed).sample(range(len(out)), subset.sample))
        out = [out[i] for i in idx]
    if subset.offset:
        out = out[subset.offset:]
    if subset.limit:
        out = out[: subset.limit]
    return list(out)


# -- file-backed benchmarks -------------------------------------------------------------------

def _fmt_number(x: Any) -> str:
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return str(x)


def _gsm8k_gold(solution: str) -> str:
    return solution.rsplit("####", 1)[-1].strip().replace(",", "")


def _row_math500(i: int, r: dict) -> Problem:
    return Problem(id=r.get("unique_id") or f"math500-{i}", question=r["problem"], answer=str(r["answer"]),
                   benchmark="math500", grader="math",
                   metadata={"level": str(r.get("level")), "subject": r.get("subject")})


def _row_gsm8k(i: int, r: dict) -> Problem:
    return Problem(id=f"gsm8k-{r.get('idx', i)}", question=r["question"], answer=_gsm8k_gold(r["answer"]),
                   benchmark="gsm8k", grader="gsm8k", metadata={})


def _row_aime24(i: int, r: dict) -> Problem:
    return Problem(id=f"aime24-{r.get('id', i)}", question=r["problem"], answer=_fmt_number(r["answer"]),
                   benchmark="aime24", grader="math", metadata={"url": r.get("url")})


def _row_amc23(i: int, r: dict) -> Problem:
    return Problem(id=f"amc23-{r.get('id', i)}", question=r.get("problem") or r["question"],
                   answer=_fmt_number(r["answer"]), benchmark="amc23", grader="math",
                   metadata={"url": r.get("url")})


@dataclass(frozen=True)
class FileBenchmark:
    name: str
    description: str
    folder: str
    hub_id: str
    hub_config: str | None
    hub_split: str
    row: Callable[[int, dict], Problem]
    kind: str = "file"

    def path(self, data_dir: Path) -> Path:
        return Path(data_dir).expanduser() / self.folder / "test.jsonl"

    def load(self, data_dir: Path, seed: int = 0) -> list[Problem]:
        path = self.path(data_dir)
        if path.is_file():
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        else:
            rows = self._from_hub(path)
        return [self.row(i, r) for i, r in enumerate(rows)]

    def _from_hub(self, path: Path) -> list[dict]:
        try:
            import datasets  # optional: the `hub` extra
        except ImportError:
            raise BenchmarkError(
                f"{self.name}: data file not found at {path}; put the JSONL file there (set data_dir or "
                f"AGENTLAB_DATA_DIR to the folder that holds {self.folder}/test.jsonl) or install the hub "
                f"extra (pip install 'agentlab[hub]') to load {self.hub_id} from the Hugging Face Hub"
            ) from None
        try:
            ds = datasets.load_dataset(self.hub_id, self.hub_config, split=self.hub_split)
        except Exception as exc:
            raise BenchmarkError(
                f"{self.name}: data file not found at {path} and loading {self.hub_id} from the Hugging Face "
                f"Hub failed ({type(exc).__name__}: {str(exc)[:200]}); put {self.folder}/test.jsonl under data_dir"
            ) from None
        return [dict(r) for r in ds]


@dataclass(frozen=True)
class GymBenchmark:
    """A reasoning-gym task: ``size`` problems generated offline from ``seed`` (more when a subset asks for
    more: ``load_subset``)."""

    name: str
    task: str
    description: str
    size: int = 200
    config: tuple[tuple[str, Any], ...] = ()  # task options, e.g. (("max_terms", 3),)
    kind: str = "reasoning_gym"

    def load(self, data_dir: Path | None = None, seed: int = 0, size: int | None = None) -> list[Problem]:
        reasoning_gym = import_reasoning_gym()
        try:
            ds = reasoning_gym.create_dataset(self.task, size=size or self.size, seed=seed,
                                              **dict(self.config))
        except Exception as exc:
            raise BenchmarkError(f"reasoning-gym task {self.task!r}: {exc}") from None
        out = []
        for i, entry in enumerate(ds):
            meta = _jsonable(entry.get("metadata", {}))
            out.append(Problem(
                id=f"{self.name}-s{seed}-{i}", question=entry["question"], answer=str(entry["answer"]),
                benchmark=self.name, grader="reasoning_gym",
                metadata={"level": _gym_level(meta), "subject": self.task, "gym_task": self.task,
                          "gym_entry": {"question": entry["question"], "answer": entry["answer"],
                                        "metadata": meta}},
            ))
        return out

    def load_subset(self, data_dir: Path | None, sub: Subset) -> list[Problem]:
        """``sub``'s problems; a generator can make as many as a limit asks for, so when ``size`` problems
        leave fewer than ``sub.limit`` in the split, it generates more. reasoning-gym seeds each problem by
        its index, so a larger count only adds problems after the same first ones (splits and ids stay as
        they were)."""
        if not sub.limit or sub.sample:  # a seeded sample is drawn from the whole set: its size must not move
            return apply_subset(self.load(data_dir, seed=sub.seed), sub)
        share = {"all": 1.0, "dev": sub.dev_fraction, "report": 1 - sub.dev_fraction}[sub.split]
        size = max(self.size, math.ceil(1.2 * (sub.limit + (sub.offset or 0)) / share) + 20)  # with a margin
        while True:
            out = apply_subset(self.load(data_dir, seed=sub.seed, size=size), sub)
            if len(out) >= sub.limit or size >= MAX_GENERATED:  # filters may leave too few at any size
                return out
            size = min(2 * size, MAX_GENERATED)


MAX_GENERATED = 20_000  # problems a reasoning-gym benchmark generates for one subset, at most


def generated_count(problems: list[Problem]) -> int:
    """How many problems a reasoning-gym benchmark generated to include ``problems`` (ids end in an index)."""
    return 1 + max((int(p.id.rsplit("-", 1)[1]) for p in problems), default=-1)


def _gym_level(meta: dict) -> str | None:
    """A per-item difficulty for the breakdown (e.g. the number of terms), when the task has one."""
    for key in ("num_terms", "difficulty", "num_digits"):
        if isinstance(meta.get(key), (int, str)):
            return str(meta[key])
    return None


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


BENCHMARKS: dict[str, FileBenchmark | GymBenchmark] = {
    "math500": FileBenchmark("math500", "MATH-500 (competition math, levels 1-5, 7 subjects)", "math500",
                             "HuggingFaceH4/MATH-500", None, "test", _row_math500),
    "gsm8k": FileBenchmark("gsm8k", "GSM8K test split (grade-school word problems)", "gsm8k",
                           "openai/gsm8k", "main", "test", _row_gsm8k),
    "aime24": FileBenchmark("aime24", "AIME 2024 I and II (30 problems, integer answers)", "aime24",
                            "HuggingFaceH4/aime_2024", None, "train", _row_aime24),
    "amc23": FileBenchmark("amc23", "AMC 2023 (40 problems)", "amc23", "math-ai/amc23", None, "test", _row_amc23),
    "basic_arithmetic": GymBenchmark(
        "basic_arithmetic", "basic_arithmetic",
        "reasoning-gym arithmetic, 2-4 terms of 1-2 digits (offline, seeded; the embedded default)",
        config=(("min_terms", 2), ("max_terms", 4), ("min_digits", 1), ("max_digits", 2))),
    "arith_pm": GymBenchmark(
        "arith_pm", "basic_arithmetic",
        "reasoning-gym arithmetic with + and - only, 2-3 terms of 1-2 digits (short answers: a 135M model can learn it)",
        config=(("min_terms", 2), ("max_terms", 3), ("min_digits", 1), ("max_digits", 2), ("operators", ("+", "-")),
                ("allow_parentheses", False), ("allow_negation", False))),
    "gsm_symbolic": GymBenchmark("gsm_symbolic", "gsm_symbolic", "reasoning-gym GSM-symbolic word problems"),
    "simple_equations": GymBenchmark("simple_equations", "simple_equations",
                                     "reasoning-gym linear equations in one variable"),
    "chain_sum": GymBenchmark("chain_sum", "chain_sum", "reasoning-gym chains of additions/subtractions"),
}
DEFAULT_BENCHMARK = "basic_arithmetic"
_GYM_PREFIX = "rg:"


def list_benchmarks() -> list[dict[str, str]]:
    """Name, kind and description of every registered benchmark (plus the ``rg:TASK`` form)."""
    out = [{"name": b.name, "kind": b.kind, "description": b.description} for b in BENCHMARKS.values()]
    out.append({"name": "rg:TASK", "kind": "reasoning_gym",
                "description": "any reasoning-gym task by name, e.g. rg:gcd, rg:fraction_simplification"})
    return out


def import_reasoning_gym():
    """reasoning_gym, with cellpylib imported only when a game-of-life task first uses it.

    Importing reasoning_gym imports every task; two of them import cellpylib, which imports
    matplotlib.pyplot: 0.35 of the 1.2 s the import takes, paid by every evaluation job (a fresh
    process) on a reasoning-gym benchmark just to grade answers. A stand-in module (PEP 562
    ``__getattr__``) imports the real one at the first attribute asked of it.
    (importlib.util.LazyLoader does not help: the import system reads ``__spec__``, which loads it.)"""
    if "reasoning_gym" not in sys.modules and "cellpylib" not in sys.modules:
        import importlib
        import types

        stand_in = types.ModuleType("cellpylib")

        def load_on_use(name: str):
            sys.modules.pop("cellpylib", None)
            real = importlib.import_module("cellpylib")
            stand_in.__dict__.update(real.__dict__)
            return getattr(real, name)

        stand_in.__getattr__ = load_on_use  # type: ignore[attr-defined]
        sys.modules["cellpylib"] = stand_in
    import reasoning_gym

    return reasoning_gym


def get_benchmark(name: str) -> FileBenchmark | GymBenchmark:
    if name in BENCHMARKS:
        return BENCHMARKS[name]
    if name.startswith(_GYM_PREFIX):
        reasoning_gym = import_reasoning_gym()
        task = name[len(_GYM_PREFIX):]
        if task not in reasoning_gym.factory.DATASETS:
            raise BenchmarkError(f"unknown reasoning-gym task {task!r}; e.g. " + ", ".join(
                sorted(reasoning_gym.factory.DATASETS)[:12]) + ", ...")
        return GymBenchmark(name, task, f"reasoning-gym {task}")
    valid = ", ".join([*BENCHMARKS, "rg:TASK"])
    raise BenchmarkError(f"unknown benchmark {name!r}; valid: {valid}")


def load_benchmark(name: str, data_dir: Any, subset: Subset | dict | None = None,
                   **subset_kwargs: Any) -> list[Problem]:
    """Load a benchmark's problems, then apply a deterministic subset.

    ``data_dir``: the benchmark files' folder, or a ``Settings`` (its ``data_dir`` is used).
    Subset options may be given as a ``Subset``, a dict, or keyword arguments (``limit=50, split="dev"``).
    """
    bench = get_benchmark(name)
    data_dir = Path(data_dir) if isinstance(data_dir, (str, Path)) else data_dir.data_dir
    sub = _as_subset(subset, subset_kwargs)
    if isinstance(bench, GymBenchmark) and sub is not None:
        return bench.load_subset(data_dir, sub)
    problems = bench.load(data_dir, seed=sub.seed if sub else 0)
    return apply_subset(problems, sub)


def _as_subset(subset: Subset | dict | None, kwargs: dict) -> Subset | None:
    if subset is None and not kwargs:
        return None
    if isinstance(subset, Subset):
        return subset.model_copy(update=kwargs) if kwargs else subset
    try:
        return Subset.model_validate({**(subset or {}), **kwargs})
    except Exception as exc:
        from pydantic import ValidationError

        if isinstance(exc, ValidationError):
            msgs = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise BenchmarkError(f"invalid subset: {msgs}") from None
        raise


