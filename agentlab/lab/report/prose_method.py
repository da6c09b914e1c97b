"""Method descriptions in prose against the spec that ran and the records: voting needs chains, a verifier a
verifier, self-refinement a refine step, few-shot examples examples, "N chains"/"N examples" those counts;
training words (fine-tuning, reinforcement learning, regression, neural-network training) need a trained
checkpoint behind the technique's records (``model_id`` "checkpoint:..."); "advanced algorithms" and tools
(calculator, code execution) need a code technique. A negated feature ("without a verifier") claims its absence.

The spec of a technique is its record's ``spec``, else the spec its ``spec_hash`` names in ``specs`` (what a
paper publishes as techniques.json), else one of its name; with none, only the record-backed words are judged.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from agentlab.lab.report.claim_rules import Claim
from agentlab.lab.report.prose_context import NUM, Judged, Prose, any_of, count_value, verdict

Spec = dict[str, Any]
SpecSource = Mapping[str, Any] | Iterable[Any] | None  # spec_hash -> spec (a paper's techniques.json), or specs


class Specs:
    """The spec and training behind each technique's records."""

    def __init__(self, records: Iterable[dict[str, Any]], specs: SpecSource = None):
        self.records = [r for r in records if r and r.get("technique")]
        items = specs.items() if isinstance(specs, Mapping) else enumerate(specs or [])
        self.by_hash: dict[str, Spec] = {}
        self.by_name: dict[str, Spec] = {}
        for key, spec in items:
            d = _as_dict(spec)
            if d is not None:
                self.by_hash[str(key)] = d
                self.by_name.setdefault(str(d.get("name")), d)

    def spec(self, name: str) -> Spec | None:
        for r in (r for r in self.records if r["technique"] == name):
            found = _as_dict(r.get("spec")) or self.by_hash.get(str(r.get("spec_hash")))
            if found:
                return found
        return self.by_name.get(name)

    def trained(self, name: str) -> bool:
        """Whether a record of ``name`` was evaluated on a checkpoint this lab trained."""
        return any(_on_checkpoint(r) for r in self.records if r["technique"] == name)


def _on_checkpoint(r: dict[str, Any]) -> bool:
    return bool(str(r.get("model_id") or "").startswith("checkpoint:") or str(r.get("model") or "").startswith("ckpt:")
                or r.get("training"))


def _as_dict(spec: Any) -> Spec | None:
    if hasattr(spec, "model_dump"):
        return spec.model_dump(mode="json")
    return spec if isinstance(spec, dict) else None


def _n(s: Spec) -> int:
    return int((s.get("chains") or {}).get("n") or 1)


def _refines(s: Spec) -> bool:
    return bool(s.get("refine") and int(s["refine"].get("rounds", 1) or 0) > 0) \
        or (s.get("verifier") or {}).get("on_reject") == "revise"


# (what, its words, test of the spec; None: judged from the records' training alone; "code": a code technique)
_FEATURES: list[tuple[str, str, Callable[[Spec], bool] | str | None]] = [
    ("voting", any_of(r"ensembl\w*", r"majority[- ]vot\w*", r"\bvot(?:e|es|ing|ed)\b", r"self[- ]consisten\w*",
                      r"aggregat\w*", r"(?:multiple|several|many) (?:reasoning |independent |candidate )?"
                                      r"(?:chains|paths|samples|solutions|answers)"),
     lambda s: _n(s) > 1),
    ("embedding consensus", r"embedding[- ](?:based )?(?:consensus|similarity|aggregation)",
     lambda s: (s.get("chains") or {}).get("aggregation") == "embedding_consensus"),
    ("single chain", r"(?:a )?single (?:chain|sample|reasoning path|completion)|greedy decoding",
     lambda s: _n(s) == 1),
    ("verifier", any_of(r"verifier", r"self[- ]verif\w*", r"verification (?:step|stage|pass|phase|module|prompt|call)",
                        r"verif(?:y|ies|ied|ying) (?:its|their|the|each|every) (?:own )?"
                        r"(?:answer|solution|chain|output|reasoning|result)s?",
                        r"judge (?:step|model|call|prompt)", r"\ban? (?:LLM[- ])?judge\b", r"double[- ]check\w*",
                        r"checks? (?:its|their|each) (?:own )?(?:answer|solution|work)s?"),
     lambda s: bool(s.get("verifier"))),
    ("self-refinement", any_of(r"self[- ]refin\w*", r"refinement (?:step|stage|loop|pass)",
                               r"iterative(?:ly)? (?:refin|revis)\w*", r"self[- ]critiqu\w*",
                               r"(?:critiqu|revis)(?:e|es|ed|ing) (?:its|their|each) (?:own )?"
                               r"(?:answer|solution|draft|output)s?"),
     _refines),
    ("few-shot examples", any_of(r"few[- ]shot", r"in[- ]context (?:examples?|demonstrations?|exemplars?)",
                                 r"worked examples?", r"exemplars?", r"demonstrations?"),
     lambda s: bool(s.get("few_shot"))),
    ("zero-shot", r"zero[- ]shot", lambda s: not s.get("few_shot")),
    ("pre-steps", any_of(r"(?:separate|additional|extra|preliminary|dedicated) (?:planning |reasoning |analysis )?"
                         r"(?:step|stage|call|pass)", r"two[- ]stage", r"multi[- ]stage", r"pre[- ]?steps?",
                         r"planning (?:step|stage|call|phase)"),
     lambda s: bool(s.get("steps"))),
    ("mixed temperatures", r"(?:mixed|different|varied|varying|diverse) (?:sampling )?temperatures",
     lambda s: len(set((s.get("chains") or {}).get("temperatures") or [])) > 1),
    ("training", any_of(r"fine[- ]?tun\w*", r"re-?train\w*", r"training[- ]free",
                        r"\btrain(?:s|ed|ing)? (?:the|a|an|our|its) (?:\w+ )?(?:model|network|LLM|weights|checkpoint)",
                        r"reinforcement learning", r"\b(?:RLHF|RL|GRPO|PPO|SFT|LoRA)\b",
                        r"supervised (?:fine|training)",
                        r"gradient (?:descent|updates?|steps?)", r"backpropagat\w*", r"parameter updates",
                        r"weights? (?:were |are |was |is )?updated", r"updat\w* (?:the )?(?:model(?:'s)? )?weights",
                        r"neural[- ]networks? (?:training|trained)", r"train\w* (?:a |the )?neural[- ]network",
                        r"learned (?:weights|parameters)",
                        r"(?:linear|logistic|automatic|auto-?|polynomial|ridge|lasso)[- ]?regression",
                        r"regression (?:model|analysis|algorithm|technique|method)s?",
                        r"(?:uses?|using|applies|applying|via|with|such as|through) (?:an? )?(?:\w+ )?regression"),
     None),
    ("algorithms", any_of(r"(?:advanced|sophisticated|novel|cutting[- ]edge|complex|intelligent|proprietary|powerful"
                          r"|innovative|state[- ]of[- ]the[- ]art) (?:\w+ )?"
                          r"(?:algorithms?|machine[- ]learning|optimi[sz]ation)",
                          r"machine[- ]learning (?:algorithm|model|technique|method)s?", r"deep[- ]learning",
                          r"optimi[sz]ation algorithms?"),
     "code"),
    ("tools", any_of(r"calculator", r"(?:python|code) interpreter", r"external (?:tools?|solvers?|APIs?)",
                     r"tool[- ](?:use|calls?|calling)", r"execut\w* (?:python |generated )?code",
                     r"runs? (?:python )?code", r"program[- ]of[- ]thoughts?", r"symbolic (?:solver|math|engine)",
                     r"retrieval[- ]augment\w*", r"\bRAG\b", r"web search", r"search engine", r"wolfram"),
     "code"),
]
_FEATURE = re.compile("|".join(f"(?P<f{i}>{rx})" for i, (_, rx, _) in enumerate(_FEATURES)), re.I)
# (what, its count (group n or m: one per form), the spec's count)
_COUNTS: list[tuple[str, re.Pattern, Callable[[Spec], int]]] = [
    ("chains", re.compile(any_of(rf"\b(?P<n>{NUM}) (?:independent |reasoning |sampled |parallel |separate )?"
                                 r"(?:chains?|reasoning paths?|completions?|votes?|candidate (?:answers|solutions))\b",
                                 rf"\b(?P<m>{NUM}) samples? per (?:problem|question)\b"), re.I),
     _n),
    ("few-shot examples", re.compile(any_of(rf"\b(?P<n>{NUM}) (?:few-shot|worked|in-context|solved) (?:examples?"
                                            r"|problems?)\b",
                                            rf"\b(?P<m>{NUM}) (?:exemplars?|demonstrations?)\b"), re.I),
     lambda s: len(s.get("few_shot") or [])),
    ("refinement rounds", re.compile(rf"\b(?P<n>{NUM}) rounds? of (?:self-)?(?:refinement|critique|revision)\b", re.I),
     lambda s: int((s.get("refine") or {}).get("rounds", 1)) if s.get("refine") else 0),
]


def method_claims(p: Prose, specs: Specs) -> list[Judged]:
    """The method words and counts of a sentence, judged against the spec (and training) of their subject."""
    if p.cited:
        return []
    text = p.masked()
    out: list[Judged] = []
    for m in _FEATURE.finditer(text):
        i = int(next(k for k, v in m.groupdict().items() if v)[1:])
        what, _, test = _FEATURES[i]
        judged = _feature(p, specs, m, what, test)
        if judged:
            out.append(judged)
    for what, rx, count in _COUNTS:
        for m in rx.finditer(text):
            judged = _count(p, specs, m, what, count)
            if judged:
                out.append(judged)
    return out


def _feature(p: Prose, specs: Specs, m: re.Match, what: str, test: Callable[[Spec], bool] | str | None
             ) -> Judged | None:
    at = m.start()
    name = p.actor(at)
    if name is None or p.hedged(at):
        return None
    spec = specs.spec(name)
    if test is None:  # "training-free" claims there was none
        has = specs.trained(name) != bool(re.match(r"training[- ]free", m.group(0), re.I))
    elif test == "code":
        has = bool(spec and spec.get("kind") == "code")
    elif spec is None:
        return None
    else:
        has = test(spec)
    claims_it = not p.negated(at)
    claim = Claim(m.group(0), "method", what if claims_it else f"no {what}", p.s)
    return verdict(claim, has == claims_it, [name], summary(name, spec, specs.trained(name))), [], \
        _rewrite(p, specs, name, spec)


def _count(p: Prose, specs: Specs, m: re.Match, what: str, count: Callable[[Spec], int]) -> Judged | None:
    at = m.start()
    name = p.actor(at)
    spec = specs.spec(name) if name else None
    if spec is None or p.hedged(at) or p.negated(at):
        return None
    value = count_value(next(v for v in m.groupdict().values() if v))
    claim = Claim(m.group(0), "method", f"{value} {what}", p.s)
    return verdict(claim, count(spec) == value, [name], summary(name, spec, specs.trained(name))), [], \
        _rewrite(p, specs, name, spec)


def _rewrite(p: Prose, specs: Specs, name: str, spec: Spec | None) -> str | None:
    """The spec's own description, when the sentence names the technique (not only "our method")."""
    return method_sentence(name, spec, specs.trained(name)) if spec and name in p.ev.names_in(p.s) else None


def summary(name: str, spec: Spec | None, trained: bool) -> str:
    if spec is None:
        return f"{name}: no spec on record" + ("; a trained checkpoint" if trained else "; not trained")
    return method_sentence(name, spec, trained)


def method_sentence(name: str, spec: Spec, trained: bool) -> str:
    """What ran, in words the method checker accepts: chains and their vote, examples, verifier, refinement."""
    if spec.get("kind") == "code":
        return f"{name} is a code technique" + (" run on a checkpoint this run fine-tuned." if trained else ".")
    n, agg = _n(spec), (spec.get("chains") or {}).get("aggregation") or "first"
    vote = {"majority": "majority vote", "weighted": "weighted vote", "embedding_consensus": "embedding consensus"}
    chains = f"{n} chains per problem combined by {vote.get(agg, agg)}" if n > 1 else "1 chain per problem"
    shots = len(spec.get("few_shot") or [])
    rounds = int((spec.get("refine") or {}).get("rounds", 1)) if spec.get("refine") else 0
    parts = [f"{shots} few-shot examples" if shots else "no few-shot examples",
             "a verifier" if spec.get("verifier") else "no verifier",
             f"{rounds} round{'s' if rounds != 1 else ''} of self-refinement" if rounds else "no self-refinement"]
    where = " on a checkpoint this run fine-tuned" if trained else ""
    return f"{name} ran {chains}{where}, with {parts[0]}, {parts[1]} and {parts[2]}."
