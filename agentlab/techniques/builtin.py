"""The built-in technique library."""

from __future__ import annotations

from typing import Any

from agentlab.techniques.spec import (
    Chains,
    FewShotExample,
    Refine,
    Sampling,
    Step,
    TechniqueError,
    TechniqueSpec,
    Verifier,
)

_COT = "{question}\n\nLet's think step by step. {answer_instruction}"

_FEW_SHOT = [
    FewShotExample(
        question="Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
                 "How many clips did Natalia sell altogether in April and May?",
        solution="In May she sold 48 / 2 = 24 clips. Altogether she sold 48 + 24 = 72 clips. "
                 "The final answer is \\boxed{72}."),
    FewShotExample(
        question="What is the value of $\\frac{3}{4} + \\frac{1}{6}$?",
        solution="The common denominator is 12: 3/4 = 9/12 and 1/6 = 2/12, so the sum is 11/12. "
                 "The final answer is \\boxed{\\frac{11}{12}}."),
    FewShotExample(
        question="Solve for x: 3x - 7 = 11.",
        solution="Add 7 to both sides: 3x = 18. Divide by 3: x = 6. The final answer is \\boxed{6}."),
]


def _builtins() -> dict[str, TechniqueSpec]:
    specs = [
        TechniqueSpec(
            name="direct", description="Answer directly, no reasoning prompt (a baseline).",
            template="{question}\n\n{answer_instruction}", sampling=Sampling(max_tokens=256)),
        TechniqueSpec(
            name="zero_shot_cot", description="Zero-shot chain of thought: \"Let's think step by step\".",
            template=_COT),
        TechniqueSpec(
            name="few_shot_cot", description="Chain of thought with worked examples before the question.",
            few_shot=_FEW_SHOT,
            template="Solve each problem step by step.\n\n{examples}\n\nQuestion: {question}\nSolution:"),
        TechniqueSpec(
            name="self_consistency",
            description="k chain-of-thought samples at temperature 0.7; majority vote over graded-equivalent answers.",
            template=_COT, sampling=Sampling(temperature=0.7),
            chains=Chains(n=5, aggregation="majority")),
        TechniqueSpec(
            name="self_consistency_verified",
            description="Self-consistency with a judge: the model checks each chain's solution (VERDICT: "
                        "correct/incorrect) and the majority vote counts only the accepted chains.",
            template=_COT, sampling=Sampling(temperature=0.7),
            chains=Chains(n=5, aggregation="majority"), verifier=Verifier()),
        TechniqueSpec(
            name="confidence_weighted",
            description="k samples; each vote weighted by the chain's mean token probability (logprobs).",
            template=_COT, sampling=Sampling(temperature=0.7),
            chains=Chains(n=5, aggregation="weighted")),
        TechniqueSpec(
            name="mixed_temperature_consensus",
            description="Chains at mixed temperatures; the answer of the chain most similar to all others "
                        "(embedding consensus, AgentRxiv's simultaneous divergence averaging).",
            template=_COT, chains=Chains(n=5, temperatures=[0.0, 0.3, 0.6, 0.9, 1.2],
                                         aggregation="embedding_consensus")),
        TechniqueSpec(
            name="self_refine", description="Solve, critique the solution, then revise it (one round).",
            template=_COT, refine=Refine(rounds=1)),
        TechniqueSpec(
            name="plan_and_solve",
            description="Plan-and-Solve prompting: devise a plan, then carry it out step by step.",
            template="{question}\n\nLet's first understand the problem and devise a plan to solve it. "
                     "Then, let's carry out the plan, calculate intermediate variables, and solve the problem "
                     "step by step. {answer_instruction}"),
        TechniqueSpec(
            name="least_to_most",
            description="Least-to-most: decompose into simpler subquestions, then answer them in order.",
            steps=[Step(name="subquestions", max_tokens=160, template=(
                "Break this problem into a short list of simpler subquestions that lead to the answer. "
                "Only list the subquestions, do not solve them.\n\nProblem: {question}"))],
            template="{question}\n\nSubquestions:\n{subquestions}\n\nAnswer the subquestions one by one, "
                     "then answer the problem. {answer_instruction}"),
    ]
    return {s.name: s for s in specs}


_BUILTINS = _builtins()


def builtin_techniques() -> dict[str, TechniqueSpec]:
    """Name -> spec of every built-in technique (copies: safe to modify)."""
    return {k: v.model_copy(deep=True) for k, v in _BUILTINS.items()}


def get_technique(name: str, /, **overrides: Any) -> TechniqueSpec:
    """A built-in technique by name (or a path to a JSON/YAML spec), with overrides:
    ``k`` (chains; mixed temperatures are re-spread and per-chain templates cycled over the new k),
    ``temperature``, ``top_p``, ``max_tokens``, ``seed``, ``rounds`` (refine), ``aggregation``, ``name``."""
    from pathlib import Path

    if name in _BUILTINS:
        spec = _BUILTINS[name].model_copy(deep=True)
    elif name.endswith((".json", ".yaml", ".yml")) or Path(name).is_file():
        spec = TechniqueSpec.load(name)
    else:
        raise TechniqueError(f"unknown technique {name!r}; valid: {', '.join(_BUILTINS)} (or a .yaml/.json spec file)")
    return apply_overrides(spec, **overrides)


def apply_overrides(spec: TechniqueSpec, **overrides: Any) -> TechniqueSpec:
    data = spec.model_dump(mode="json")
    ov = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(ov) - {"k", "temperature", "top_p", "max_tokens", "seed", "rounds", "aggregation", "name"}
    if unknown:
        raise TechniqueError(f"unknown technique override(s) {sorted(unknown)}")
    if "k" in ov:
        k = int(ov["k"])
        ch = data["chains"]
        if ch.get("temperatures"):
            lo, hi = min(ch["temperatures"]), max(ch["temperatures"])
            ch["temperatures"] = [round(lo + (hi - lo) * i / max(1, k - 1), 3) for i in range(k)]
        if ch.get("templates"):  # per-chain prompts are cycled over the new k
            ch["templates"] = [ch["templates"][i % len(ch["templates"])] for i in range(k)]
        ch["n"] = k
        if k > 1 and ch["aggregation"] == "first":
            ch["aggregation"] = "majority"
        if k > 1 and not ch.get("temperatures") and data["sampling"]["temperature"] == 0.0:
            data["sampling"]["temperature"] = 0.7  # k greedy chains would all be the same
        if k == 1:
            ch["aggregation"] = "first"
    for key in ("temperature", "top_p", "max_tokens", "seed"):
        if key in ov:
            data["sampling"][key] = ov[key]
    if "rounds" in ov:
        data["refine"] = {**(data.get("refine") or {}), "rounds": ov["rounds"]}
    if "aggregation" in ov:
        data["chains"]["aggregation"] = ov["aggregation"]
    if "name" in ov:
        data["name"] = ov["name"]
    return TechniqueSpec.parse(data)
