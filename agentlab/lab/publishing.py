"""Publishing and literature search through the preprint server's client, with the local outbox.

Agents never import the server: the workflow hands them this publisher. Every report is written to
the outbox first; the server is asked to publish it with ``idempotency_key = run_id``, so a retry
(after a crash, or from the outbox later) never creates a second paper.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from agentlab.lab.models import Record, SpecRef
from agentlab.lab.outbox import Outbox
from agentlab.lab.view import LabView, LiteratureHit, PublishedTechnique, Report, Review

log = logging.getLogger(__name__)


class Publisher:
    def __init__(self, url: str | None, api_key: str | None, outbox: Outbox, lab: str = "agentlab",
                 goal_id: str | None = None):
        self.url, self.api_key, self.outbox, self.lab, self.goal_id = url, api_key, outbox, lab, goal_id
        self._client = None

    # -- client -----------------------------------------------------------------------------
    def client(self):
        if self._client is None:
            if not self.url:
                raise ConnectionError("no preprint server configured")
            from preprint_server.client import PreprintClient

            self._client = PreprintClient(self.url, api_key=self.api_key)
        return self._client

    def close(self) -> None:
        if self._client is not None and hasattr(self._client, "close"):
            try:
                self._client.close()
            except Exception:
                log.debug("closing the preprint client failed", exc_info=True)
        self._client = None

    # -- literature -------------------------------------------------------------------------
    def search(self, query: str, k: int, goal: str | None = None) -> list[LiteratureHit]:
        """Top-k papers for ``query``: id, title, abstract and their ranked results (report split, complete)."""
        if not self.url:
            return []
        client = self.client()
        hits = client.search(query[:1000], k=k, goal=goal)
        out = []
        for hit in hits[:k]:
            hid = _get(hit, "id")
            paper = None
            try:
                paper = client.get_paper(hid)
            except Exception as exc:  # the hit is still read, without its results
                log.warning("could not fetch paper %s from %s: %s", hid, self.url, exc)
            results = ([_dump(r) for r in (_get(paper, "results") or []) if _get(r, "ranked")]
                       if paper is not None else [])
            techniques = [PublishedTechnique(name=_get(t, "name"), spec_hash=_get(t, "spec_hash"), kind=_get(t, "kind"),
                                             spec=_get(t, "spec"))
                          for t in (_get(paper, "techniques") or [])] if paper is not None else []
            out.append(LiteratureHit(id=hid, title=_get(hit, "title"), abstract=_get(hit, "abstract") or "",
                                     passage=_get(hit, "snippet") or "", lab=_get(hit, "lab"), results=results,
                                     techniques=techniques))
        return out

    def prior_best(self, benchmark: str, subset: str, model: str, model_id: str,
                   min_n: int = 100) -> dict[str, Any] | None:
        """The published result a run is held to: on the same benchmark, problem population (``subset``, at any
        size) and model (its weights, where both records name them); measured on at least ``min_n`` report-split
        problems or replicated by another lab; the best by the lower bound of its 95% CI, not by accuracy (a lucky
        small sample has a wide interval). With the full spec of its technique (``{"paper_id", "lab", "title",
        "technique", "accuracy", "ci_low", "n", "replications", "spec"}``), or None."""
        if not self.url:
            return None
        client = self.client()
        fair = [e for e in client.leaderboard(benchmark=benchmark)
                if _same_population(e, subset) and _same_model(e, model, model_id)
                and (_get(e, "n") >= min_n or _get(e, "replications"))]
        for entry in sorted(fair, key=_lower_bound, reverse=True):
            specs = {_get(t, "spec_hash"): _get(t, "spec") for t in client.techniques(_get(entry, "paper_id"))}
            if _get(entry, "spec_hash") in specs:  # a paper that published its spec can be re-run exactly
                return {"paper_id": _get(entry, "paper_id"), "lab": _get(entry, "lab"),
                        "title": _get(entry, "paper_title"), "technique": _get(entry, "technique"),
                        "accuracy": _get(entry, "accuracy"), "ci_low": _lower_bound(entry), "n": _get(entry, "n"),
                        "replications": _get(entry, "replications") or 0, "spec": specs[_get(entry, "spec_hash")]}
        return None

    # -- publishing -------------------------------------------------------------------------
    def payload(self, view: LabView, rep: Report, benchmark: str) -> dict[str, Any]:
        keep = {"benchmark", "subset", "split", "model", "model_id", "technique", "spec_hash", "n", "n_planned",
                "correct", "accuracy", "ci_low", "ci_high", "job_id", "record_id", "complete", "errors",
                "tokens_per_problem"}
        tags = ["agentlab", benchmark, *(["incomplete"] if view.stop_reason else []),
                *(["failed-run"] if view.failure else [])]
        records = [] if view.failure else rep.records  # a failed run's dev numbers never reach a leaderboard
        results = [r.model_dump(mode="json", include=keep, exclude_unset=True, exclude_none=True) for r in records]
        return {
            "title": rep.title[:500] or "Untitled report", "abstract": rep.abstract,
            "body": rep.markdown, "goal": str(view.goal_id) if view.goal_id is not None else None,
            "tags": tags, "results": results, "citations": [str(c) for c in rep.citations],
            "relations": {str(k): v for k, v in (rep.relations or {}).items()},
            "latex_source": rep.latex, "idempotency_key": view.run_id,
            "reviews": review_payloads(view.reviews),  # stored with the paper: one round trip
            "techniques": technique_payloads(rep.techniques or {}, records),
        }

    def publish_run(self, view: LabView, rep: Report, benchmark: str) -> dict[str, Any]:
        """The run's report into the outbox, then to the server: ``{"status": "published" | "queued", ...}``."""
        run_id = view.run_id
        files = {k: v for k, v in rep.files.dump().items()
                 if v and (k in ("figure", "tree", "pdf") or k.startswith("curve-"))}
        self.outbox.put(run_id, self.payload(view, rep, benchmark), files)
        try:
            result = self._publish_entry(self.outbox.get(run_id))
        except Exception as exc:
            return {"status": "queued", "outbox": str(self.outbox.dir / f"{run_id}.json"),
                    "error": f"{type(exc).__name__}: {exc}"[:300]}
        self.outbox.done(run_id, result)
        return {"status": "published", **result}

    def _publish_entry(self, entry: dict[str, Any]) -> dict[str, Any]:
        from preprint_server.schemas import PaperCreate

        client = self.client()
        paper = PaperCreate.model_validate(entry["payload"])
        files = {k: Path(v) for k, v in (entry.get("files") or {}).items() if Path(v).is_file()}
        artifacts = [v for k, v in files.items() if k in ("figure", "tree") or k.startswith("curve-")] or None
        out = client.publish(paper, pdf=files.get("pdf"), artifacts=artifacts)
        pid = _get(out, "id")
        base = self.url.rstrip("/") if self.url else ""
        return {"paper_id": pid, "url": f"{base}/papers/{pid}"}

    def flush(self) -> dict[str, Any]:
        """Publish what earlier runs left in the outbox (server was down)."""
        if not self.url:
            return {}
        return self.outbox.flush(self._publish_entry)


def technique_payloads(specs: dict[str, dict[str, Any]], records: list[Record]) -> list[dict[str, Any]]:
    """Every evaluated technique as the server's TechniqueArtifact: its full spec and the records that measured it."""
    refs = {h: SpecRef.model_validate(spec) for h, spec in specs.items()}
    return [{"name": ref.name or h, "spec_hash": h, "kind": ref.kind, "spec": specs[h],
             "record_ids": [r.record_id for r in records if r.spec_hash == h and r.record_id]}
            for h, ref in refs.items()]


def review_payloads(reviews: list[Review]) -> list[dict[str, Any]]:
    """The reviewers' reviews as the server's ReviewCreate (fallback reviews are not published)."""
    scored = {"soundness", "presentation", "contribution", "overall", "confidence"}
    return [{"text": f"[{r.persona}] {r.summary}\n\nStrength: {r.strength}\n\nWeakness: {r.weakness}",
             "scores": {k: min(10.0, max(0.0, float(v))) for k, v in r.model_dump(include=scored).items()}}
            for r in reviews if not r.fallback]


def _same_population(entry: Any, subset: str) -> bool:
    """The result drew its problems from the population this run's ``subset`` draws from (``Subset.population``)."""
    from agentlab.bench import Subset

    try:
        return Subset.parse(_get(entry, "subset") or "").population() == Subset.parse(subset).population()
    except ValueError:  # a subset this version cannot read is not known to be the same
        return False


def _same_model(entry: Any, model: str, model_id: str) -> bool:
    """The result measured this model: the same served name, and the same identity where both identities say
    something about the weights (an endpoint's names only a URL; the server reads replications the same way)."""
    from preprint_server.replication import comparable_identities

    theirs = _get(entry, "model_id") or ""
    return _get(entry, "model") == model and (theirs == model_id or not comparable_identities(theirs, model_id))


def _lower_bound(entry: Any) -> float:
    """The lower bound of the result's 95% Wilson interval, recomputed from n and accuracy as the harness computes
    it (a record's own ``ci_low`` is only the publisher's word, and may be missing)."""
    from agentlab.eval.stats import wilson_interval

    n = _get(entry, "n")
    return wilson_interval(round(_get(entry, "accuracy") * n), n)[0]


def _get(obj: Any, key: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(key)
    return getattr(obj, key, None)


def _dump(obj: Any) -> dict[str, Any]:
    if isinstance(obj, dict):
        return obj
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    return dict(vars(obj))
