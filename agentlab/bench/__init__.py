"""Benchmarks: registry, loaders, deterministic subsets, dev/report split, answer grading."""

from agentlab.bench.grading import Grade, answers_equivalent, extract_answer, grade, is_equivalent
from agentlab.bench.registry import (
    BENCHMARKS,
    DEFAULT_BENCHMARK,
    BenchmarkError,
    Problem,
    Subset,
    apply_subset,
    get_benchmark,
    list_benchmarks,
    load_benchmark,
)

__all__ = [
    "BENCHMARKS", "DEFAULT_BENCHMARK", "BenchmarkError", "Grade", "Problem", "Subset", "answers_equivalent",
    "apply_subset", "extract_answer", "get_benchmark", "grade", "is_equivalent", "list_benchmarks",
    "load_benchmark",
]
