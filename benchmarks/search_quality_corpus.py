"""The synthetic corpus of `bench_search_quality.py`: papers that all speak the same domain language
(chains, verifiers, temperatures, votes, budgets), where what tells a paper apart is one sentence
deep in the body, and queries that paraphrase that sentence.

* `TOPICS`: 34 ideas. Each is stated in one sentence (`idea`) in 3 papers, after at least
  `MIN_WORDS_BEFORE_IDEA` words of body; its `distinctive` words appear in no other paper (checked).
  Each idea has 2 queries that paraphrase it and share few words with it (one or two distinctive
  words, the rest synonyms or the domain's common words).
* Every other paper is a distractor: same templates, same themes, its own generic method sentence
  at the same depth.
* Paper `i` depends only on `i` (its own random generator): the corpus of 10,000 papers holds the
  corpus of 1,000, and embeddings cached for one serve the other.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

MIN_WORDS_BEFORE_IDEA = 620
WORDS_AFTER_IDEA = (60, 160)

# (key, theme, distinctive words, the idea sentence, two paraphrased queries)
TOPICS: list[tuple[str, str, list[str], str, list[str]]] = [
    ("sympy", "verifiers", ["sympy"],
     "Before the vote we re-evaluate every intermediate arithmetic step with sympy and discard chains whose recomputed value disagrees.",
     ["filter out sampled solutions whose steps fail a sympy recomputation",
      "symbolic algebra package rechecks the calculations and removes inconsistent reasoning (sympy)"]),
    ("abstain", "voting", ["abstains"],
     "When fewer than half of the chains agree, the system abstains and returns no answer, trading coverage for precision.",
     ["letting the solver abstain if there is little consensus among samples",
      "declining to respond under weak agreement so that precision goes up at the cost of coverage"]),
    ("kendall", "verifiers", ["kendall"],
     "We measure the agreement between verifier rankings and correctness with Kendall's tau on every held-out problem.",
     ["rank correlation between the scorer ordering and ground truth, kendall tau",
      "how well does the reward model order candidates, measured by kendall coefficient"]),
    ("thermostat", "temperature", ["thermostat", "annealed", "geometrically"],
     "The sampling temperature is annealed geometrically from 1.2 to 0.3 across successive chains, a schedule we call the thermostat.",
     ["gradually cooling the randomness over consecutive samples with a thermostat schedule",
      "decreasing sampling heat step by step from hot to cold, thermostat"]),
    ("borda", "voting", ["borda"],
     "Instead of plurality voting we aggregate ranked candidate answers with a Borda count across chains.",
     ["combining ranked outputs with the borda rule rather than picking the most frequent one",
      "positional scoring of preferences, borda, to merge several solutions"]),
    ("entropy_gate", "decoding", ["entropy", "gating"],
     "Branches whose next-token entropy exceeds a threshold are pruned early, which we name entropy gating.",
     ["cutting off uncertain branches early using an entropy gating rule",
      "stop exploring paths where the predictive distribution is too flat (entropy)"]),
    ("ledger", "budgets", ["ledger", "pooled"],
     "Tokens saved on easy problems are pooled and reallocated to hard problems through a shared ledger.",
     ["moving unused compute from simple items to difficult ones via a ledger",
      "a common ledger that lends spare generation allowance to harder questions"]),
    ("dirichlet", "voting", ["dirichlet"],
     "The vote is smoothed with a Dirichlet prior over answer clusters so that a single chain cannot dominate.",
     ["bayesian dirichlet smoothing of the answer histogram",
      "prior over response groups (dirichlet) to keep one sample from deciding everything"]),
    ("perplexity", "verifiers", ["perplexity", "percentile", "hallucinated"],
     "Chains whose perplexity under a second model is above the 90th percentile are discarded as hallucinated.",
     ["removing samples that another network finds surprising, high perplexity, as likely fabricated",
      "perplexity filter from a separate language model drops made-up rationales"]),
    ("checksum", "verifiers", ["checksum", "modulo", "nine"],
     "Every numeric answer carries a modulo nine checksum that the verifier recomputes independently.",
     ["casting out nines style checksum to validate final numbers",
      "digit sum check (checksum) confirms each number the solver reports"]),
    ("amateur", "decoding", ["amateur", "logits", "subtracted"],
     "Logits of a smaller amateur model are subtracted from the expert model before sampling each token.",
     ["contrasting a weak amateur network with the strong one during generation",
      "penalize what an amateur language model would also predict when choosing the next word"]),
    ("reservoir", "budgets", ["reservoir"],
     "Candidate chains are kept in a reservoir of fixed size using reservoir sampling so that memory stays constant.",
     ["bounded memory via a reservoir when streaming many candidate solutions",
      "keep a constant size random subset of generated rationales, reservoir style"]),
    ("socratic", "critique", ["socratic", "interrogates"],
     "A second agent interrogates each step with Socratic questions and the chain is revised only where it fails to answer.",
     ["a questioner model that probes every step in socratic fashion",
      "socratic dialogue to find weak steps before rewriting them"]),
    ("hypothesis", "tools", ["hypothesis", "property"],
     "Generated Python programs are executed against hypothesis property tests and only passing programs vote.",
     ["property based testing filter before aggregating program outputs",
      "run randomized property checks (hypothesis library) on generated code and keep survivors"]),
    ("french", "prompting", ["backtranslation", "french"],
     "Each problem is paraphrased by backtranslation through French, and answers to the paraphrases are merged into one vote.",
     ["rewording each question through french and voting across the versions",
      "translating the task to another language and back (backtranslation) to get diverse inputs"]),
    ("streak", "budgets", ["streak", "consecutive"],
     "Sampling stops as soon as five consecutive chains return the same answer, an early stopping rule we call the streak criterion.",
     ["halt generation after a streak of identical outputs",
      "stop drawing samples once several in a row agree, consecutive agreement"]),
    ("isotonic", "verifiers", ["isotonic", "calibrated"],
     "Verifier scores are calibrated with isotonic regression on a held-out split before thresholding.",
     ["monotone isotonic recalibration of reward model probabilities",
      "fit an isotonic mapping so the scorer's confidence matches observed correctness"]),
    ("lean", "tools", ["lean", "kernel"],
     "Geometry answers are translated into Lean statements and accepted only when the Lean kernel checks the proof.",
     ["formal verification with the lean prover to accept solutions",
      "machine checked proofs in a theorem prover kernel decide what counts as solved"]),
    ("elo", "ensembles", ["elo", "pairwise", "matches"],
     "Candidate answers play pairwise matches judged by the verifier and are ranked by Elo rating.",
     ["tournament of head to head comparisons with elo scores picks the result",
      "rating solutions like chess players (elo) from judged duels"]),
    ("minhash", "voting", ["minhash", "signatures"],
     "Near-duplicate chains are removed with MinHash signatures so that repeated reasoning does not inflate the vote.",
     ["deduplicating similar rationales with minhash before counting",
      "locality sensitive hashing signatures collapse copies of the same solution"]),
    ("draft", "decoding", ["draft", "rejects", "halving"],
     "A tiny draft model proposes eight tokens at a time that the large model accepts or rejects, halving latency.",
     ["a small drafting network suggests words that the big one confirms to cut latency",
      "speculative generation with a draft proposer for faster inference"]),
    ("margin", "budgets", ["margin", "narrow"],
     "The margin between the top two answer log probabilities serves as a confidence score that triggers extra sampling when it is narrow.",
     ["spend more samples when the gap between the two most likely outputs is small, margin",
      "a narrow probability margin between leading candidates asks for additional generations"]),
    ("knapsack", "budgets", ["knapsack", "dynamic", "programming"],
     "Allocating the token budget across problems is cast as a knapsack problem solved by dynamic programming.",
     ["treat distributing compute across questions as knapsack optimization",
      "dynamic programming decides how much generation each item receives"]),
    ("counterexample", "critique", ["counterexample", "adversarial"],
     "An adversarial critic is rewarded for finding a counterexample, and chains survive only if no counterexample is found.",
     ["a reviewer that searches for counterexamples to each solution",
      "adversarial checker tries to break every proposed derivation"]),
    ("deadline", "budgets", ["deadline", "clock", "wall"],
     "Chains are truncated by a wall clock deadline rather than a token count, which matters on shared GPUs.",
     ["cutting off generation at a time deadline instead of a length limit",
      "stop each rationale when the wall clock runs out on busy accelerators"]),
    ("gumbel", "decoding", ["gumbel", "replacement"],
     "Distinct chains are drawn without replacement using the Gumbel top-k trick, so no two samples repeat.",
     ["sampling without replacement through gumbel perturbations",
      "gumbel noise trick to obtain unique sequences instead of duplicates"]),
    ("scratchpad", "prompting", ["scratchpad", "compressed", "summary"],
     "Intermediate scratchpad lines are compressed into a running summary every 200 tokens to stay within the context window.",
     ["periodically summarizing the scratchpad to fit long derivations in context",
      "condense working notes into a short summary as generation proceeds"]),
    ("bm25", "prompting", ["bm25", "exemplars"],
     "For each problem we retrieve three solved exemplars by BM25 from the training split and place them in the prompt.",
     ["choose few shot demonstrations by lexical bm25 similarity",
      "lexical search (bm25) over solved training items picks in-context examples"]),
    ("units", "verifiers", ["dimensional", "units", "physics"],
     "Physics answers are checked by dimensional analysis, rejecting chains whose units do not match the question.",
     ["discard solutions with inconsistent physical units",
      "dimensional consistency check on quantities before accepting a result"]),
    ("logistic", "ensembles", ["logistic"],
     "Vote weights come from a logistic regression trained on chain length, agreement and verifier score.",
     ["learned logistic weighting of ballots from features such as length",
      "a regression model predicts how much each sample should count"]),
    ("substitution", "verifiers", ["substituted", "substitution", "equation"],
     "Each candidate answer is substituted back into the original equation, and chains whose answer fails the substitution are removed.",
     ["substituting the result back into the question to confirm it",
      "plug the solution into the original equation and drop those that do not satisfy it"]),
    ("debate", "ensembles", ["debate", "transcript", "judge"],
     "Two models debate for three rounds and a judge model reads the transcript to pick the answer.",
     ["a judge that reads an argument transcript between two debaters",
      "multi-round debate between systems, an arbiter decides"]),
    ("nf4", "training", ["nf4", "quantization", "bit"],
     "We run the verifier in 4-bit NF4 quantization so that it fits beside the generator on one GPU.",
     ["compressing the scorer to nf4 precision to share a single accelerator",
      "low bit quantization lets the checking model sit next to the solver in memory"]),
    ("hint", "critique", ["hint", "revealing"],
     "When all chains fail, a hint revealing the first step is appended and sampling restarts.",
     ["give the model a hint about the opening move after total failure",
      "after every attempt is wrong, reveal part of the solution as a hint and retry"]),
]

THEMES = {
    "voting": ("Aggregating sampled chains", [
        "We study how the votes of sampled chains should be combined into one answer.",
        "Majority voting over chains is simple, but it ignores how confident each chain is.",
        "The aggregation rule matters most when the chains disagree.",
        "A weighted vote gives more influence to chains the verifier trusts."]),
    "verifiers": ("Verifying reasoning chains", [
        "A verifier decides which of the sampled chains to trust.",
        "We train and prompt verifiers that score each chain before the final answer is chosen.",
        "Verification catches errors that the vote alone cannot see.",
        "The verifier reads the problem, the chain and the answer, and returns a score."]),
    "temperature": ("Sampling temperature for reasoning", [
        "We study how the sampling temperature shapes the diversity of reasoning chains.",
        "Higher temperatures explore more but produce more broken chains.",
        "The best temperature depends on the model and on the benchmark.",
        "We sweep the temperature and report accuracy at each setting."]),
    "budgets": ("Spending a token budget", [
        "We study how to spend a fixed token budget across problems and chains.",
        "Compute at inference time is limited, so every extra chain has a cost.",
        "A method is only better if it wins at the same budget.",
        "We report accuracy against tokens spent for every method."]),
    "critique": ("Critique and revision of chains", [
        "The model critiques its own chain and revises the answer.",
        "Self-correction rounds fix some errors and introduce others.",
        "We count how often a revision turns a wrong answer into a right one.",
        "Critique prompts ask the model to point at the first wrong step."]),
    "tools": ("Tools for mathematical reasoning", [
        "Chains may call a calculator or run Python code to check arithmetic.",
        "Tool calls remove arithmetic slips but add latency.",
        "The model writes a short program whose output becomes the answer.",
        "We compare chains with and without tool calls at the same budget."]),
    "decoding": ("Decoding strategies for reasoning", [
        "The decoding strategy decides which tokens the chains contain.",
        "We compare greedy decoding, sampling and beam search on the same problems.",
        "Decoding choices change accuracy as much as prompt changes do.",
        "Each decoding method is run with the same token budget."]),
    "prompting": ("Prompting for reasoning", [
        "The prompt template and the few-shot examples shape every chain.",
        "We vary the instructions and the examples while keeping decoding fixed.",
        "Longer prompts cost tokens that could have been spent on more chains.",
        "Prompt changes help small models more than large ones."]),
    "ensembles": ("Combining several models", [
        "Several models each produce chains, and their answers are combined.",
        "Model diversity helps the vote when errors are not shared.",
        "A router picks which model answers each problem.",
        "We compare ensembles of models with more samples from one model."]),
    "training": ("Training verifiers and solvers", [
        "We fine-tune the model on its own correct chains.",
        "Training data comes from chains that reached the reference answer.",
        "Fine-tuning changes both accuracy and the length of the chains.",
        "A trained verifier is cheaper at inference than extra samples."]),
}

FILLER = [
    "We sample {n} reasoning chains per problem at temperature {t} and take a {agg} over the final answers.",
    "The verifier assigns each candidate answer a score, and the highest scoring chain is returned.",
    "Accuracy on {bench} rises from {p}% to {p2}% when the token budget grows from {b} to {b2} tokens.",
    "All runs use {model} as the model under study with the same prompt template and the same seed.",
    "We report accuracy with a 95% confidence interval computed over {n3} problems of the {bench} test split.",
    "Chains that exceed the budget of {b} tokens are truncated and count as wrong answers.",
    "Lower temperatures reduce the diversity of the chains, which hurts the vote when the model is uncertain.",
    "The baseline is greedy decoding with a chain of thought prompt, evaluated on the same problems.",
    "Self-consistency with {n} samples is the strongest baseline we compare against.",
    "A reward model trained on {model} outputs ranks the candidate answers before the vote.",
    "We vary the number of chains from {n} to {n2} and plot accuracy against total tokens spent.",
    "The critique step asks the model to find errors in its own chain and to revise the answer.",
    "Votes are counted after normalizing each final answer to a canonical form.",
    "Ties in the vote are broken by the verifier score of the best chain in each answer group.",
    "Compute budgets are expressed in generated tokens per problem, averaged over the benchmark.",
    "The prompt asks for step by step reasoning and a final answer in a boxed expression.",
    "Sampling at temperature {t} gives more diverse chains than temperature {t2}.",
    "On {bench} the gain is largest for problems of medium difficulty.",
    "Each experiment is repeated with three seeds and we report the mean accuracy.",
    "The verifier is prompted with the problem and one chain and outputs a probability that the answer is correct.",
    "Longer chains are not more accurate on average, and the correlation between length and correctness is weak.",
    "We cap the budget at {b} tokens so that every method spends a comparable amount of compute.",
    "Answers extracted from the chains are compared with the reference using exact match after normalization.",
    "Our ablation removes the verifier and keeps only the vote, which lowers accuracy by {d} points.",
    "The aggregation step groups equivalent answers and sums the votes of each group.",
    "A larger budget helps until about {n2} chains, after which accuracy saturates.",
    "The model often produces the right answer in at least one chain even when the vote is wrong.",
    "Temperature and top-p are tuned on a validation split of {n3} problems.",
    "Errors fall mostly into arithmetic slips, misread questions and unfinished chains.",
    "Table {k} compares methods at equal token budget on {bench} and {bench2}.",
    "Figure {k} shows accuracy as a function of the number of votes.",
    "The reasoning chains are generated in parallel batches on one GPU.",
    "We use the same answer extraction code for every method to keep the comparison fair.",
    "The critique and the revision are produced by the same model as the original chain.",
    "Majority voting is robust when most chains are correct but fails when errors are correlated.",
    "The verifier sees only the final answer and a short description of the chain.",
    "Inference cost grows linearly with the number of sampled chains.",
    "We measure how often the verifier agrees with the vote and how often it overrides it.",
    "Our method improves accuracy over the baseline by {d} points at the same budget.",
    "Results on {bench} are consistent with the trends on {bench2}.",
    "Each problem is attempted with a fixed prompt and no external tools unless stated otherwise.",
    "The reward model and the verifier disagree on roughly {p}% of the problems.",
    "Problems are sorted by difficulty using the accuracy of the greedy baseline.",
    "We keep the decoding settings fixed while changing the aggregation rule.",
    "The budget is split evenly across problems unless a method reallocates it.",
    "Low temperature chains tend to repeat the same mistake, so their votes are correlated.",
    "The final answer is the one with the most votes among the chains that finished within budget.",
    "Verifier accuracy is measured separately on a labelled set of {n3} chains.",
    "We also try a shorter prompt, which changes accuracy by less than one point.",
    "Confidence intervals overlap for the two weakest methods, so we do not rank them.",
    "With a budget of {b} tokens the model can afford about {n} chains per problem.",
    "The verifier is a second copy of {model} prompted to grade the chain.",
    "At temperature {t} roughly {p}% of the chains reach a final answer.",
    "We observe that the vote recovers the right answer on {p}% of the problems where greedy decoding fails.",
]
GENERIC_METHODS = [
    "Our method reweights the votes of the chains by the verifier score before choosing the answer.",
    "The key step of our method is to sample more chains on problems where the first chains disagree.",
    "We propose to lower the temperature for later chains once a leading answer appears.",
    "In our method the critique is applied only to the chains that the verifier scores lowest.",
    "We split the token budget so that half goes to sampling and half to verification.",
    "Our approach lets the model call a calculator whenever a chain contains a long multiplication.",
    "The method keeps the three most confident chains and discards the rest before the vote.",
    "We prompt the model to write a plan first and then a chain that follows the plan.",
]
LEADS = ["", "In our method, ", "Concretely, ", "The central detail is this: ", "Crucially, "]
BENCHES = ["MATH-500", "GSM8K", "AIME 2024", "AMC 2023", "reasoning-gym"]
MODELS = ["gpt-4o-mini", "Qwen2.5-0.5B", "SmolLM2-135M", "Llama-3-8B", "Qwen2.5-7B"]
AGGS = ["majority vote", "weighted vote", "plurality vote"]


@dataclass
class SynthPaper:
    id: str
    title: str
    abstract: str
    body: str
    topic: str | None  # the idea this paper states (None: a distractor)


@dataclass
class Query:
    text: str
    topic: str
    relevant: frozenset[str]  # the ids of the papers that state its idea


def _fill(rng: random.Random, template: str) -> str:
    b = rng.choice([256, 512, 1024, 2048])
    return template.format(
        n=rng.choice([4, 5, 8, 10, 16]), n2=rng.choice([20, 32, 40, 64]), n3=rng.choice([100, 200, 500]),
        t=rng.choice([0.3, 0.5, 0.7]), t2=rng.choice([0.8, 1.0, 1.2]), agg=rng.choice(AGGS),
        bench=rng.choice(BENCHES), bench2=rng.choice(BENCHES), model=rng.choice(MODELS),
        p=rng.randint(20, 60), p2=rng.randint(61, 90), b=b, b2=b * 4, d=rng.randint(1, 9), k=rng.randint(1, 6),
    )


def _paragraphs(rng: random.Random, theme: str, words: int) -> list[str]:
    """Filler of at least `words` words, in paragraphs of 4 to 7 sentences (a third on the theme)."""
    paras, count = [], 0
    while count < words:
        sents = [_fill(rng, rng.choice(THEMES[theme][1] if rng.random() < 0.3 else FILLER))
                 for _ in range(rng.randint(4, 7))]
        paras.append(" ".join(sents))
        count += len(paras[-1].split())
    return paras


def relevant_ids(n_topics: int = len(TOPICS), pool: int = 1000) -> dict[str, list[str]]:
    """topic -> the ids of its 3 papers, spread over the first `pool` papers (so every corpus of
    `pool` papers or more holds all of them)."""
    slots = random.Random(4242).sample(range(pool), 3 * n_topics)
    return {t[0]: [f"q{slots[3 * j + r]:06d}" for r in range(3)] for j, t in enumerate(TOPICS[:n_topics])}


def make_paper(i: int, topic: tuple | None) -> SynthPaper:
    rng = random.Random(i * 7919 + 17)
    theme = topic[1] if topic else rng.choice(list(THEMES))
    head, theme_sents = THEMES[theme]
    title = f"{head} on {rng.choice(BENCHES)}: {rng.choice(['a study', 'what helps', 'revisited', 'at equal budget', 'with small models'])} ({i})"
    abstract = " ".join(_fill(rng, s) for s in rng.sample(theme_sents, 2)) + " " + _fill(rng, rng.choice(FILLER))
    before = _paragraphs(rng, theme, MIN_WORDS_BEFORE_IDEA)
    idea = rng.choice(LEADS) + (topic[3] if topic else rng.choice(GENERIC_METHODS))
    idea = idea[0].upper() + idea[1:]
    after = _paragraphs(rng, theme, rng.randint(*WORDS_AFTER_IDEA))
    body = "\n\n".join(before + [idea + " " + after[0]] + after[1:])
    return SynthPaper(f"q{i:06d}", title, abstract, body, topic[0] if topic else None)


def corpus(n_papers: int) -> tuple[list[SynthPaper], list[Query]]:
    """`n_papers` papers (3 per topic, the rest distractors) and the paraphrased queries."""
    rel = relevant_ids()
    by_id = {pid: t for t in TOPICS for pid in rel[t[0]]}
    papers = [make_paper(i, by_id.get(f"q{i:06d}")) for i in range(n_papers)]
    queries = [Query(q, t[0], frozenset(rel[t[0]])) for t in TOPICS for q in t[4]]
    return papers, queries


_WORD = re.compile(r"[a-z0-9]+")


def check(papers: list[SynthPaper]) -> dict:
    """The corpus is what it says: distinctive words only in their topic's papers, every idea after
    MIN_WORDS_BEFORE_IDEA words of body; and how many words each query shares with its idea."""
    words_of = {p.id: set(_WORD.findall(f"{p.title} {p.abstract} {p.body}".lower())) for p in papers}
    wrong = []
    for key, _, distinctive, idea, qs in TOPICS:
        own = {p.id for p in papers if p.topic == key}
        wrong += [f"{key}: {d!r} also in {sorted(h - own)[:3]}" for d in distinctive
                  if (h := {pid for pid, ws in words_of.items() if d in ws}) != own]
    assert not wrong, "distinctive words elsewhere: " + "; ".join(wrong)
    for p in papers:
        if p.topic:
            idea = next(t[3] for t in TOPICS if t[0] == p.topic)
            assert len(p.body[: p.body.index(idea[1:])].split()) >= MIN_WORDS_BEFORE_IDEA
    shared = []
    for _, _, _, idea, qs in TOPICS:
        iw = set(_WORD.findall(idea.lower()))
        shared += [len(set(_WORD.findall(q.lower())) & iw) for q in qs]
    return {"queries": len(shared), "shared_words_mean": sum(shared) / len(shared), "shared_words_max": max(shared)}
