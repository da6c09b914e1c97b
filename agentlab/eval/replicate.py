"""Replicating a published result: which of a paper's results to re-run, the exact technique spec behind it,
the same problems, and the record posted back to the server (which judges consistency itself).

Works on the paper as the server returns it (attributes of ``PaperOut``); it never imports the server.
"""

from __future__ import annotations

import json
import re
from typing import Any

from agentlab.bench import Subset
from agentlab.eval.errors import EvalError
from agentlab.techniques import TechniqueError, TechniqueSpec, builtin_techniques

_JSON_BLOCK = re.compile(r"```json\s*\n(.*?)\n```", re.S)


def choose_result(paper: Any, technique: str | None = None) -> Any:
    """The result to replicate: ``technique``'s report-split result, else the paper's best one."""
    ranked = [r for r in paper.results if r.ranked]
    if not ranked:
        raise EvalError(f"paper {paper.id} has no complete report-split result from harness records to replicate")
    if technique:
        named = [r for r in ranked if r.technique == technique]
        if not named:
            have = ", ".join(sorted({r.technique for r in ranked}))
            raise EvalError(f"paper {paper.id} has no report-split result for technique {technique!r} (it has: {have})")
        ranked = named
    return max(ranked, key=lambda r: r.accuracy)


def spec_for(result: Any, published: dict[str, Any], body: str = "") -> TechniqueSpec:
    """The exact spec that produced ``result`` (its ``spec_hash``): one of the paper's published techniques
    (``published``: hash -> spec), else a built-in or a JSON spec in the paper's body with the same hash."""
    candidates: list[Any] = []
    if result.spec_hash in published:
        candidates.append(published[result.spec_hash])
    candidates += [s for s in builtin_techniques().values() if s.name == result.technique]
    for block in _JSON_BLOCK.findall(body or ""):
        try:
            candidates.append(json.loads(block))
        except ValueError:
            continue
    for c in candidates:
        try:
            spec = c if isinstance(c, TechniqueSpec) else TechniqueSpec.parse(c)
        except TechniqueError:  # a JSON block that is not a spec
            continue
        if not result.spec_hash or spec.spec_hash() == result.spec_hash:
            return spec
    raise EvalError(f"the paper does not publish the spec of {result.technique!r} (hash {result.spec_hash}); "
                    "a replication needs the exact technique")


def subset_of(result: Any) -> Subset:
    try:
        return Subset.parse(result.subset)
    except ValueError as exc:
        raise EvalError(f"cannot re-create the paper's subset: {exc}") from None


def check_same_problems(result: Any, problems: list) -> None:
    planned = result.n_planned or result.n
    if len(problems) != planned:
        raise EvalError(f"the subset {result.subset!r} of {result.benchmark} gives {len(problems)} problems here, the "
                        f"paper evaluated {planned}: the benchmark data differs (check data_dir)")


def check_same_model(result: Any, endpoint: Any) -> None:
    """The endpoint must serve the paper's model: the same served name, and the same weights where both
    sides know their hash."""
    if endpoint.model != result.model:
        raise EvalError(f"the paper's model is {result.model!r}, this endpoint serves {endpoint.model!r}: point "
                        "--model-url/--model-name (or --model) at the paper's model")
    mine, theirs = endpoint.identity, result.model_id
    if mine and theirs and "sha256:" in mine and "sha256:" in theirs and mine != theirs:
        raise EvalError(f"the paper's weights are {theirs}, yours are {mine}: not the same model file")


def replication_record(summary: Any, result: Any, model_id: str) -> dict[str, Any]:
    """The ``ReplicationCreate`` body for a finished evaluation of ``result``'s technique."""
    if not summary.complete or summary.errors:
        raise EvalError(f"the evaluation is incomplete ({summary.n} of {summary.n_planned} problems, "
                        f"{summary.errors} failed requests): not posted as a replication; rerun it")
    return {
        "benchmark": result.benchmark, "subset": result.subset, "split": "report", "model": result.model,
        "model_id": model_id, "technique": result.technique, "spec_hash": summary.spec_hash, "n": summary.n,
        "n_planned": summary.n_planned, "correct": summary.correct, "accuracy": summary.accuracy,
        "ci_low": summary.ci_low, "ci_high": summary.ci_high, "job_id": summary.job_id or "",
        "record_id": summary.record_id, "complete": True, "errors": 0,
        "tokens_per_problem": summary.tokens_per_problem,
    }
