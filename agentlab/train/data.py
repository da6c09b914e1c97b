"""Training data without leaks (host side): rows for TRL from a reasoning-gym generator, a benchmark's dev
(train) split, or a technique's own graded traces; never a problem of the protected report split.

A training problem is dropped when its id or its question text (normalized) is in the report split the
recipe protects; ``check_disjoint`` asserts the result, and the run records every problem id it used.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentlab.bench.registry import GymBenchmark, Problem, Subset, apply_subset, get_benchmark, load_benchmark
from agentlab.train.recipe import DataSource, Recipe, RecipeError

_GYM_ID = re.compile(r"-s(\d+)-(\d+)$")


class LeakError(RecipeError):
    """Training data that overlaps the protected report split."""


@dataclass
class Protected:
    benchmark: str
    seeds: list[int]
    ids: set[str] = field(default_factory=set)
    questions: set[str] = field(default_factory=set)


@dataclass
class TrainData:
    rows: list[dict[str, Any]]
    problem_ids: list[str]
    dropped_leaks: int
    protected: Protected

    def manifest(self) -> dict[str, Any]:
        """What the run records: the problem ids it trained on and the split they are disjoint from."""
        return {"n_rows": len(self.rows), "problem_ids": self.problem_ids, "dropped_leaks": self.dropped_leaks,
                "protected": {"benchmark": self.protected.benchmark, "seeds": self.protected.seeds,
                              "n": len(self.protected.ids)}}


def norm_question(text: str) -> str:
    return " ".join(text.lower().split())


def protected_split(src: DataSource, data_dir: Path) -> Protected:
    """The report split (at every protected seed) whose problems must never be trained on."""
    p = src.protect
    prot = Protected(src.protected_benchmark, list(p.seeds))
    bench = get_benchmark(prot.benchmark)
    if p.size and isinstance(bench, GymBenchmark):
        bench = dataclasses.replace(bench, size=p.size)
    for seed in p.seeds:
        for prob in apply_subset(bench.load(data_dir, seed=seed), Subset(split="report", dev_fraction=p.dev_fraction)):
            prot.ids.add(prob.id)
            prot.questions.add(norm_question(prob.question))
    return prot


def check_disjoint(problems: list[Problem], prot: Protected) -> None:
    leaked = [p.id for p in problems if p.id in prot.ids or norm_question(p.question) in prot.questions]
    if leaked:
        raise LeakError(f"{len(leaked)} training problem(s) are in the report split of {prot.benchmark} "
                        f"(e.g. {leaked[0]}); they must never be trained on")


def check_disjoint_ids(trained_ids: list[str], problems: list[Problem], what: str) -> None:
    """A run's recorded training ids (its manifest) against a split's problems, by id."""
    overlap = sorted(set(trained_ids) & {p.id for p in problems})
    if overlap:
        raise LeakError(f"{len(overlap)} training problem(s) are in {what} (e.g. {overlap[0]}); "
                        "they must never be trained on")


def prompt_messages(technique: str, question: str) -> list[dict[str, str]]:
    """The chat prompt the evaluation harness sends for ``technique`` (so training matches evaluation)."""
    from agentlab.techniques import get_technique

    spec = get_technique(technique)
    if spec.steps or spec.template is None:
        raise RecipeError(f"data.technique: {technique!r} has pre-steps or no single prompt; use a "
                          "one-prompt technique such as direct or zero_shot_cot")
    msgs = [{"role": "system", "content": spec.system}] if spec.system else []
    return [*msgs, {"role": "user", "content": spec.render(spec.template, question=question)}]


_PLUS_MINUS = re.compile(r"^\s*\d+(\s*[-+]\s*\d+)+\s*$")


def worked_solution(problem: Problem) -> str | None:
    """A left-to-right worked solution of a +/- expression (reasoning-gym arithmetic), one operation a line;
    None when the problem has no such expression or the steps do not reach the gold answer."""
    expr = ((problem.metadata.get("gym_entry") or {}).get("metadata") or {}).get("expression")
    if not isinstance(expr, str) or not _PLUS_MINUS.match(expr):
        return None
    toks = re.findall(r"[-+]|\d+", expr)
    acc, lines = int(toks[0]), []
    for op, num in zip(toks[1::2], toks[2::2]):
        new = acc + int(num) if op == "+" else acc - int(num)
        lines.append(f"{acc} {op} {num} = {new}")
        acc = new
    if str(acc) != problem.answer.strip():
        return None
    return "\n".join(lines) + f"\nThe final answer is \\boxed{{{acc}}}."


def sft_target(problem: Problem, style: str) -> str:
    if style == "gold":
        return problem.answer
    if style == "worked":
        worked = worked_solution(problem)
        if worked is not None:
            return worked
    return f"The final answer is \\boxed{{{problem.answer}}}."


def build_data(recipe: Recipe, data_dir: Path, eval_db: Path | None = None) -> TrainData:
    src = recipe.data
    prot = protected_split(src, data_dir)
    if src.source == "traces":
        problems, rows = _trace_rows(recipe, data_dir, eval_db)
    else:
        problems = _source_problems(src, data_dir)
        rows = [_row(recipe, p) for p in problems]
    excluded = set(src.exclude_ids)
    pairs = [(p, r) for p, r in zip(problems, rows) if p.id not in excluded]
    kept = [(p, r) for p, r in pairs if p.id not in prot.ids and norm_question(p.question) not in prot.questions]
    dropped = len(pairs) - len(kept)
    if not kept:
        raise RecipeError(f"data: no training problems left ({dropped} dropped as report-split leaks"
                          + (f", {len(excluded)} ids excluded" if excluded else "") + ")")
    check_disjoint([p for p, _ in kept], prot)
    return TrainData([r for _, r in kept], [p.id for p, _ in kept], dropped, prot)


def _source_problems(src: DataSource, data_dir: Path) -> list[Problem]:
    if src.source == "reasoning_gym":
        bench = get_benchmark(src.task)  # type: ignore[arg-type]
        if not isinstance(bench, GymBenchmark):
            raise RecipeError(f"data.task: {src.task!r} is not a reasoning-gym task (use source: benchmark)")
        return dataclasses.replace(bench, size=src.size).load(data_dir, seed=src.seed)
    pool = load_benchmark(src.benchmark, data_dir, split="dev", dev_fraction=src.protect.dev_fraction)  # type: ignore[arg-type]
    excluded = set(src.exclude_ids)
    return [p for p in pool if p.id not in excluded][: src.size]


def _row(recipe: Recipe, p: Problem) -> dict[str, Any]:
    prompt = prompt_messages(recipe.data.technique, p.question)
    if recipe.method == "grpo":
        return {"prompt": prompt, "problem_json": p.model_dump_json()}
    return {"prompt": prompt, "completion": [{"role": "assistant", "content": sft_target(p, recipe.data.target)}]}


# -- a technique's own graded traces: rejection sampling (SFT) and correct-vs-wrong pairs (DPO) -----------

def _trace_rows(recipe: Recipe, data_dir: Path, eval_db: Path | None) -> tuple[list[Problem], list[dict]]:
    from agentlab.bench.grading import answers_equivalent
    from agentlab.eval.records import ResultStore

    if eval_db is None or not Path(eval_db).exists():
        raise RecipeError("data.eval_run: no evaluation records in this workspace (run `agentlab eval run` first)")
    store = ResultStore(eval_db)
    try:
        summary = store.summary(recipe.data.eval_run)  # type: ignore[arg-type]
        results = store.results(summary.run_id)
    finally:
        store.close()
    by_id = _problems_by_id(summary.benchmark, [r.problem_id for r in results], data_dir)
    problems, rows = [], []
    for r in results:
        p = by_id.get(r.problem_id)
        if p is None:
            continue
        chains = r.chains or []
        good = [c["text"] for c in chains if c.get("text") and answers_equivalent(c.get("answer"), r.gold, p.grader)]
        bad = [c["text"] for c in chains if c.get("text") and not answers_equivalent(c.get("answer"), r.gold, p.grader)]
        prompt = prompt_messages(recipe.data.technique, p.question)
        if recipe.method == "dpo":
            for g, b in list(zip(good, bad))[:2]:
                problems.append(p)
                rows.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": g}],
                             "rejected": [{"role": "assistant", "content": b}]})
        elif good:
            problems.append(p)
            rows.append({"prompt": prompt, "completion": [{"role": "assistant", "content": good[0]}]})
    if not rows:
        what = "correct-vs-wrong pairs (evaluate with k > 1 chains)" if recipe.method == "dpo" else "correct samples"
        raise RecipeError(f"data.eval_run: run {summary.run_id} has no {what}")
    return problems[: recipe.data.size], rows[: recipe.data.size]


def _problems_by_id(benchmark: str, ids: list[str], data_dir: Path) -> dict[str, Problem]:
    bench = get_benchmark(benchmark)
    if not isinstance(bench, GymBenchmark):
        return {p.id: p for p in bench.load(data_dir)}
    out: dict[str, Problem] = {}
    seeds: dict[int, int] = {}
    for pid in ids:
        m = _GYM_ID.search(pid)
        if m:
            seeds[int(m.group(1))] = max(seeds.get(int(m.group(1)), 0), int(m.group(2)) + 1)
    for seed, size in seeds.items():
        gen = dataclasses.replace(bench, size=max(size, bench.size))
        out.update({p.id: p for p in gen.load(data_dir, seed=seed)})
    return out


def write_rows(rows: list[dict[str, Any]], path: Path) -> None:
    with path.open("w") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
