"""How the two searches become one ranking: score-aware fusion of the semantic and keyword lists.

Reciprocal-rank fusion (the ranking before this module) keeps only ranks. Every paper of a corpus
that shares its vocabulary matches a query's common words, so the keyword list is full, and a paper
that alone matches a query's rare word (rank 1 there) but sits at rank 200 by meaning lost to
papers at rank 10 in both. Here each side keeps its scores, scaled so that its best paper has 1:

* keyword: BM25 of the paper's best passage over the best one's. BM25 weighs a word by how rare it
  is, so a passage matching a rare query word stands far above the rest (near 1, the others low);
  when a query has only common words the scores are flat and this side barely reorders anything.
* semantic: cosine similarity of the paper's nearest chunk, from a floor (0: the similarity of the
  FLOOR_RANK-th paper, and below) to the top (1). A fixed rank, not the end of the list, so that
  asking for more results does not change the scores.

A paper missing from a list gets 0 on that side: it scored below everything the list holds.
bench_search_quality.py measures the weights: keyword side 0.5 to 0.8 all beat reciprocal rank
(recall@5 0.28 -> 0.93 to 0.98 at 1,000 papers); 0.7 is best there; the keyword side alone (1.0)
or the semantic side alone do worse.
"""

from __future__ import annotations

from collections.abc import Mapping

KEYWORD_WEIGHT = 0.7  # share of the keyword side in the fused score (measured in the benchmark)
FLOOR_RANK = 50  # semantic similarities are scaled from the one at this rank (0) to the top (1)


def fuse(semantic: Mapping[str, float], keyword: Mapping[str, float],
         keyword_weight: float = KEYWORD_WEIGHT, floor_rank: int = FLOOR_RANK) -> dict[str, float]:
    """Paper id -> fused score in [0, 1] from the semantic similarities and the keyword scores."""
    out: dict[str, float] = {}
    if semantic:
        sims = sorted(semantic.values(), reverse=True)
        top, floor = sims[0], sims[min(len(sims), floor_rank) - 1]
        span = top - floor
        for pid, sim in semantic.items():
            out[pid] = (1 - keyword_weight) * (max(0.0, sim - floor) / span if span > 0 else 1.0)
    if keyword:
        best = max(keyword.values())
        for pid, score in keyword.items():
            out[pid] = out.get(pid, 0.0) + keyword_weight * (score / best if best > 0 else 0.0)
    return out
