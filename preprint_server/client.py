"""HTTP client for the preprint server (httpx). Used by labs and the CLI.

Connection failures are retried with backoff; every failure surfaces as a `PreprintError`
(a `PreprintServerError`) with a one-line message, e.g. "preprint server at http://... is unreachable".
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import TypeAdapter

from preprint_server.errors import PreprintServerError
from preprint_server.schemas import (
    GoalClaim,
    GoalClose,
    GoalCreate,
    GoalOut,
    GoalProgress,
    Health,
    LeaderboardEntry,
    LeaseOut,
    LeaseRelease,
    LeaseRenew,
    PaperCreate,
    PaperOut,
    PaperPage,
    ReplicationCreate,
    ReplicationOut,
    ReviewCreate,
    ReviewOut,
    SearchHit,
    TechniqueOut,
)

T = TypeVar("T")


class PreprintError(PreprintServerError):
    """A request to the preprint server failed."""

    def __init__(self, message: str, status: int | None = None, fields: list[str] | None = None):
        super().__init__(message)
        self.status, self.fields = status, fields or []


class ServerUnreachable(PreprintError):
    pass


class AuthError(PreprintError):
    pass


class NotFoundError(PreprintError):
    pass


class ValidationFailed(PreprintError):
    pass


class TooLargeError(PreprintError):
    pass


class ConflictError(PreprintError):
    """409: a goal lease that has ended, or a goal that is closed or claimed by another lab."""


_BY_STATUS = {401: AuthError, 403: AuthError, 404: NotFoundError, 409: ConflictError, 413: TooLargeError,
              422: ValidationFailed}
_RETRYABLE = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.ReadError)


def _error_from(resp: httpx.Response, base_url: str) -> PreprintError:
    try:
        data = resp.json()
        detail, fields = data.get("detail", resp.text), data.get("fields")
    except (ValueError, AttributeError):
        detail, fields = resp.text[:200], None
    if not isinstance(detail, str):
        detail = json.dumps(detail)[:300]
    cls = _BY_STATUS.get(resp.status_code, PreprintError)
    hint = " (set server.api_key or AGENTLAB_SERVER__API_KEY)" if cls is AuthError else ""
    return cls(f"preprint server {base_url}: {resp.status_code} {detail}{hint}", resp.status_code, fields)


def _parse(tp: Any, resp: httpx.Response) -> Any:
    return TypeAdapter(tp).validate_python(resp.json())


def _paper_request(paper: PaperCreate | dict, pdf: Path | bytes | None, source: Path | bytes | None,
                   artifacts: list[Path] | None) -> dict:
    paper = paper if isinstance(paper, PaperCreate) else PaperCreate.model_validate(paper)
    if pdf is None and source is None and not artifacts:
        return {"json": paper.model_dump(mode="json")}
    read = lambda v: v.read_bytes() if isinstance(v, Path) else v
    files: list[tuple[str, tuple[str, bytes, str]]] = []
    if pdf is not None:
        files.append(("pdf", (getattr(pdf, "name", "paper.pdf"), read(pdf), "application/pdf")))
    if source is not None:
        files.append(("source", (getattr(source, "name", "source.tex"), read(source), "text/x-tex")))
    for a in artifacts or []:
        files.append(("artifacts", (a.name, a.read_bytes(), "application/octet-stream")))
    return {"data": {"metadata": paper.model_dump_json()}, "files": files}


class PreprintClient:
    """`with PreprintClient(url, key) as c: c.publish(paper)`."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 60.0,
                 retries: int = 3, backoff_s: float = 0.5):
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.retries, self.backoff_s = retries, backoff_s
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout,
                                  headers={"Authorization": f"Bearer {api_key}"} if api_key else {})

    def _unreachable(self, exc: Exception) -> ServerUnreachable:
        return ServerUnreachable(
            f"preprint server at {self.base_url} is unreachable ({type(exc).__name__}); "
            "start one with `agentlab server start` or set server.url"
        )

    def _check(self, resp: httpx.Response) -> httpx.Response:
        if resp.status_code >= 400:
            raise _error_from(resp, self.base_url)
        return resp

    @staticmethod
    def _params(**kw) -> dict:
        return {k: v for k, v in kw.items() if v is not None}

    def __enter__(self) -> PreprintClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kw) -> httpx.Response:
        for attempt in range(self.retries + 1):
            try:
                return self._check(self._http.request(method, path, **kw))
            except _RETRYABLE as exc:
                if attempt == self.retries:
                    raise self._unreachable(exc) from None
                time.sleep(self.backoff_s * 2**attempt)
            except httpx.TimeoutException as exc:
                raise PreprintError(f"preprint server {self.base_url}: timed out ({type(exc).__name__})") from None
        raise AssertionError("unreachable")

    def health(self) -> Health:
        return _parse(Health, self._request("GET", "/health"))

    def publish(self, paper: PaperCreate | dict, pdf: Path | bytes | None = None,
                source: Path | bytes | None = None, artifacts: list[Path] | None = None) -> PaperOut:
        """Publish; with `paper.idempotency_key` set, a repeat returns the first paper."""
        return _parse(PaperOut, self._request("POST", "/api/papers", **_paper_request(paper, pdf, source, artifacts)))

    def get_paper(self, paper_id: str) -> PaperOut:
        return _parse(PaperOut, self._request("GET", f"/api/papers/{_seg(paper_id)}"))

    def retract(self, paper_id: str) -> PaperOut:
        """Retract one of this lab's papers (it leaves search results and leaderboards)."""
        return _parse(PaperOut, self._request("POST", f"/api/papers/{_seg(paper_id)}/retract"))

    def list_papers(self, goal: str | None = None, lab: str | None = None, benchmark: str | None = None,
                    status: str | None = None, sort: str = "-created", limit: int = 20, offset: int = 0) -> PaperPage:
        params = self._params(goal=goal, lab=lab, benchmark=benchmark, status=status, sort=sort, limit=limit, offset=offset)
        return _parse(PaperPage, self._request("GET", "/api/papers", params=params))

    def search(self, q: str, k: int = 5, goal: str | None = None) -> list[SearchHit]:
        return _parse(list[SearchHit], self._request("GET", "/api/search", params=self._params(q=q, k=k, goal=goal)))

    def leaderboard(self, benchmark: str | None = None, goal: str | None = None,
                    replicated: bool = False) -> list[LeaderboardEntry]:
        params = self._params(benchmark=benchmark, goal=goal, replicated=replicated or None)
        return _parse(list[LeaderboardEntry], self._request("GET", "/api/leaderboard", params=params))

    def artifact(self, paper_id: str, name: str) -> bytes:
        return self._request("GET", f"/api/papers/{_seg(paper_id)}/artifacts/{_seg(name)}").content

    def replicate(self, paper_id: str, record: ReplicationCreate | dict) -> ReplicationOut:
        """Post this lab's re-run of one of the paper's report-split results; the server gives the verdict."""
        body = ReplicationCreate.model_validate(record).model_dump(mode="json")
        return _parse(ReplicationOut, self._request("POST", f"/api/papers/{_seg(paper_id)}/replications", json=body))

    def techniques(self, paper_id: str) -> list[TechniqueOut]:
        """The techniques a paper evaluated, as full specs (with the results that measured them)."""
        return _parse(list[TechniqueOut], self._request("GET", f"/api/papers/{_seg(paper_id)}/techniques"))

    def technique(self, spec_hash: str) -> list[TechniqueOut]:
        """Every paper that published the technique with this content hash."""
        return _parse(list[TechniqueOut], self._request("GET", f"/api/techniques/{_seg(spec_hash)}"))

    def replications(self, paper_id: str) -> list[ReplicationOut]:
        return _parse(list[ReplicationOut], self._request("GET", f"/api/papers/{_seg(paper_id)}/replications"))

    def citations(self, paper_id: str, cited_by: bool = False) -> list:
        from preprint_server.schemas import PaperSummary
        path = f"/api/papers/{_seg(paper_id)}/{'cited-by' if cited_by else 'citations'}"
        return _parse(list[PaperSummary], self._request("GET", path))

    def add_goal(self, text: str, benchmark: str | None = None, baseline: float | None = None,
                 target: float | None = None, max_papers: int | None = None) -> GoalOut:
        body = GoalCreate(text=text, benchmark=benchmark, baseline=baseline, target=target,
                          max_papers=max_papers).model_dump(mode="json")
        return _parse(GoalOut, self._request("POST", "/api/goals", json=body))

    def list_goals(self, status: str | None = None) -> list[GoalOut]:
        return _parse(list[GoalOut], self._request("GET", "/api/goals", params=self._params(status=status)))

    def get_goal(self, goal_id: str) -> GoalOut:
        return _parse(GoalOut, self._request("GET", f"/api/goals/{_seg(goal_id)}"))

    def claim_goal(self, lease_s: float = 300.0, goal: str | None = None, benchmark: str | None = None,
                   holder: str = "") -> LeaseOut | None:
        """Claim the next open goal (or `goal`) under a lease; None when no goal is open."""
        body = GoalClaim(goal=goal, benchmark=benchmark, lease_s=lease_s, holder=holder).model_dump(mode="json")
        resp = self._request("POST", "/api/goals/claim", json=body)
        return None if resp.status_code == 204 else _parse(LeaseOut, resp)

    def heartbeat_goal(self, lease_id: str, lease_s: float | None = None) -> LeaseOut:
        """Renew a lease; `ConflictError` once it has ended (expired, released, its goal closed)."""
        body = LeaseRenew(lease_s=lease_s).model_dump(mode="json")
        return _parse(LeaseOut, self._request("POST", f"/api/goals/leases/{_seg(lease_id)}/heartbeat", json=body))

    def release_goal(self, lease_id: str, reason: str = "released") -> LeaseOut:
        body = LeaseRelease(reason=reason).model_dump(mode="json")
        return _parse(LeaseOut, self._request("POST", f"/api/goals/leases/{_seg(lease_id)}/release", json=body))

    def close_goal(self, goal_id: str, reason: str) -> GoalOut:
        body = GoalClose(reason=reason).model_dump(mode="json")
        return _parse(GoalOut, self._request("POST", f"/api/goals/{_seg(goal_id)}/close", json=body))

    def goal_leases(self, goal_id: str) -> list[LeaseOut]:
        return _parse(list[LeaseOut], self._request("GET", f"/api/goals/{_seg(goal_id)}/leases"))

    def goal_progress(self, goal_id: str) -> GoalProgress:
        return _parse(GoalProgress, self._request("GET", f"/api/goals/{_seg(goal_id)}/progress"))

    def add_review(self, paper_id: str, text: str, scores: dict[str, float] | None = None) -> ReviewOut:
        body = ReviewCreate(text=text, scores=scores or {}).model_dump(mode="json")
        return _parse(ReviewOut, self._request("POST", f"/api/papers/{_seg(paper_id)}/reviews", json=body))


def _seg(value: str) -> str:
    """One URL path segment: an id with '/' or '..' cannot address another route."""
    from urllib.parse import quote

    return quote(value, safe="")
