"""Shared wire schemas: labs import these to publish, the server validates with them.

Nothing here imports the lab core, so any process can depend on it cheaply.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Ids are plain tokens: they are looked up in SQLite and never become file paths.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
_ID_RE = re.compile(ID_PATTERN)

PaperStatus = Literal["submitted", "published", "retracted"]
Split = Literal["dev", "report"]
Relation = Literal["extends", "compares", "background"]
Verdict = Literal["consistent", "not reproduced"]
GoalStatus = Literal["open", "claimed", "closed"]


def is_valid_id(value: str) -> bool:
    return bool(_ID_RE.match(value))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", from_attributes=True)


class ResultRecord(_Model):
    """One evaluation result as the harness produced it (numbers never come from prose)."""

    benchmark: str = Field(min_length=1, max_length=100)
    subset: str = Field("", max_length=100)
    model: str = Field(min_length=1, max_length=200)
    technique: str = Field(min_length=1, max_length=200, description="technique name")
    spec_hash: str = Field("", max_length=128)
    n: int = Field(ge=1)
    correct: int = Field(ge=0)
    accuracy: float = Field(ge=0.0, le=1.0)
    ci_low: float | None = Field(None, ge=0.0, le=1.0)
    ci_high: float | None = Field(None, ge=0.0, le=1.0)
    job_id: str = Field("", max_length=200)
    record_id: str = Field("", max_length=200, description="the harness's stable summary id")
    split: Split = Field(description="dev: used to choose the technique; report: held out, evaluated once")
    model_id: str = Field("", max_length=200, description="identity of the weights or endpoint "
                          "(e.g. gguf-sha256:..., endpoint:...); empty when unknown")
    n_planned: int | None = Field(None, ge=1, description="problems the evaluation was meant to cover")
    complete: bool = Field(True, description="every planned problem was evaluated")
    errors: int = Field(0, ge=0, description="problems whose model requests failed (scored as wrong)")
    tokens_per_problem: float | None = Field(None, ge=0.0)

    @model_validator(mode="after")
    def _consistent(self) -> ResultRecord:
        # A record whose numbers contradict each other was not produced by the harness.
        if self.correct > self.n:
            raise ValueError("correct must not exceed n")
        if self.errors > self.n:
            raise ValueError("errors must not exceed n")
        if self.n_planned is not None and (self.n > self.n_planned or (self.n < self.n_planned and self.complete)):
            raise ValueError(f"n={self.n} of n_planned={self.n_planned} contradicts complete={self.complete}")
        if not math.isclose(self.accuracy, self.correct / self.n, abs_tol=1e-6):
            raise ValueError(f"accuracy {self.accuracy} != correct/n = {self.correct / self.n:.6f}")
        if self.ci_low is not None and self.ci_high is not None and not (
            self.ci_low - 1e-9 <= self.accuracy <= self.ci_high + 1e-9
        ):
            raise ValueError("confidence interval must contain accuracy")
        return self


class ResultOut(ResultRecord):
    from_harness_records: bool = Field(
        description="the publisher names the harness job and record (job_id, record_id); an independent check "
                    "is a replication")
    ranked: bool = Field(description="counts on leaderboards: report split, complete, from harness records")


class ReplicationCreate(ResultRecord):
    """A re-run of one of a paper's report-split results (same benchmark, subset, model and technique)."""

    @model_validator(mode="after")
    def _report_and_complete(self) -> ReplicationCreate:
        if self.split != "report":
            raise ValueError("a replication re-runs a report-split result: split must be 'report'")
        if not self.complete or self.errors:
            raise ValueError("an incomplete evaluation (or one with failed requests) is not a replication")
        if not self.record_id:
            raise ValueError("a replication names its harness record (record_id)")
        return self


class ReplicationOut(_Model):
    id: int
    paper_id: str
    lab: str
    created: datetime
    result: ReplicationCreate
    original_accuracy: float
    original_ci_low: float
    original_ci_high: float
    verdict: Verdict = Field(description="consistent: the replication's accuracy lies in the original "
                                         "record's 95% Wilson interval")


class ReplicationSummary(_Model):
    consistent_labs: int = Field(description="labs other than the authors whose replication was consistent")
    not_reproduced_labs: int


def spec_content_hash(spec: dict[str, Any]) -> str:
    """A technique spec's content hash as agentlab computes it: SHA-256 of its canonical JSON without name and
    description, first 16 hex digits. The server checks it, so a published hash always names its content."""
    content = {k: v for k, v in spec.items() if k not in ("name", "description")}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


class TechniqueArtifact(_Model):
    """A technique a paper evaluated, as a structured object: another lab can pull it and run it as is."""

    name: str = Field(min_length=1, max_length=80)
    spec_hash: str = Field(min_length=1, max_length=128)
    kind: Literal["prompt", "code"] = "prompt"
    spec: dict[str, Any] = Field(description="the full technique spec (agentlab TechniqueSpec as JSON, all fields)")
    record_ids: list[str] = Field(default_factory=list, max_length=100, description="the records that measured it")

    @model_validator(mode="after")
    def _hash_names_content(self) -> TechniqueArtifact:
        if len(json.dumps(self.spec)) > 200_000:
            raise ValueError("spec: larger than 200,000 characters of JSON")
        got = spec_content_hash(self.spec)
        if got != self.spec_hash:
            raise ValueError(f"spec_hash {self.spec_hash!r} is not the hash of this spec ({got}); send the full spec")
        return self


class TechniqueOut(TechniqueArtifact):
    paper_id: str
    lab: str
    results: list[ResultOut] = Field(default_factory=list, description="the paper's results with this spec hash")


class PaperCreate(_Model):
    title: str = Field(min_length=1, max_length=500)
    abstract: str = Field("", max_length=20_000)
    body: str = Field("", description="Markdown")
    goal: str | None = Field(None, pattern=ID_PATTERN, description="id of the research goal this paper addresses")
    status: Literal["submitted", "published"] = "published"
    tags: list[str] = Field(default_factory=list, max_length=50)
    results: list[ResultRecord] = Field(default_factory=list, max_length=1000)
    citations: list[str] = Field(default_factory=list, max_length=500, description="ids of papers built on")
    relations: dict[str, Relation] = Field(
        default_factory=dict, description="cited paper id -> extends (its technique was built on), compares "
                                          "(measured against) or background (the default)")
    latex_source: str | None = Field(None, description="LaTeX source as text (or upload it as a file)")
    idempotency_key: str | None = Field(
        None, max_length=200, description="publishing twice with the same key returns the first paper"
    )
    reviews: list[ReviewCreate] = Field(
        default_factory=list, max_length=20, description="reviews by the publishing lab, stored with the paper"
    )
    techniques: list[TechniqueArtifact] = Field(
        default_factory=list, max_length=50, description="the techniques the paper evaluated, as specs"
    )

    @field_validator("title")
    @classmethod
    def _title_not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("title must not be blank")
        return v.strip()

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: list[str]) -> list[str]:
        out = []
        for t in v:
            t = t.strip()
            if not t or len(t) > 50:
                raise ValueError("tags must be 1-50 characters")
            out.append(t)
        return out

    @field_validator("citations")
    @classmethod
    def _citation_ids(cls, v: list[str]) -> list[str]:
        bad = [c for c in v if not is_valid_id(c)]
        if bad:
            raise ValueError(f"not a paper id: {bad[0]!r}")
        return list(dict.fromkeys(v))

    @model_validator(mode="after")
    def _relations_name_citations(self) -> PaperCreate:
        stray = sorted(set(self.relations) - set(self.citations))
        if stray:
            raise ValueError(f"relations: {stray[0]!r} is not among the citations")
        return self


class FileOut(_Model):
    kind: Literal["pdf", "source", "artifact"]
    name: str
    sha256: str
    size: int
    content_type: str


class ReviewCreate(_Model):
    scores: dict[str, float] = Field(default_factory=dict, description="criterion -> score in [0, 10]")
    text: str = Field(min_length=1, max_length=100_000)

    @field_validator("scores")
    @classmethod
    def _scores(cls, v: dict[str, float]) -> dict[str, float]:
        for k, s in v.items():
            if not (0 <= s <= 10) or not k or len(k) > 50:
                raise ValueError(f"score {k!r} must be named (1-50 chars) and within 0..10")
        return v


PaperCreate.model_rebuild()


class ReviewOut(ReviewCreate):
    id: int
    paper_id: str
    lab: str
    created: datetime


class PaperSummary(_Model):
    id: str
    title: str
    abstract: str
    lab: str
    goal: str | None
    status: PaperStatus
    tags: list[str]
    created: datetime


class PaperOut(PaperSummary):
    body: str
    results: list[ResultOut]
    citations: list[str]
    relations: dict[str, Relation] = Field(default_factory=dict, description="cited paper id -> how it was used")
    cited_by: list[str]
    reviews: list[ReviewOut]
    files: list[FileOut]
    has_pdf: bool
    has_source: bool
    idempotency_key: str | None = None
    techniques: list[TechniqueArtifact] = Field(default_factory=list)
    replications: list[ReplicationOut] = Field(default_factory=list)
    replication: ReplicationSummary = Field(default_factory=lambda: ReplicationSummary(consistent_labs=0,
                                                                                      not_reproduced_labs=0))


class PaperPage(_Model):
    items: list[PaperSummary]
    total: int
    limit: int
    offset: int


class SearchHit(_Model):
    id: str
    title: str
    abstract: str
    lab: str
    goal: str | None
    score: float = Field(description="fused rank score; higher is better")
    semantic: float | None = Field(None, description="best chunk cosine similarity")
    snippet: str


class GoalCreate(_Model):
    text: str = Field(min_length=1, max_length=5_000)
    benchmark: str | None = Field(None, max_length=100)
    baseline: float | None = Field(None, ge=0.0, le=1.0, description="baseline accuracy to beat")
    target: float | None = Field(None, ge=0.0, le=1.0, description="the goal closes when a ranked report-split "
                                 "result on it reaches this accuracy")
    max_papers: int | None = Field(None, ge=1, le=100_000, description="the goal closes after this many papers")

    @field_validator("text")
    @classmethod
    def _text_not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("text must not be blank")
        return v.strip()


class GoalOut(GoalCreate):
    id: str
    status: GoalStatus = Field(description="open: in the queue; claimed: a lab holds a live lease; closed: done")
    created_by: str
    created: datetime
    attempts: int = Field(0, description="leases granted so far (claims)")
    papers: int = Field(0, description="papers published on the goal (retracted ones excluded)")
    closed_reason: str | None = None
    closed_at: datetime | None = None
    claimed_by: str | None = Field(None, description="the lab holding the live lease")
    lease_expires: datetime | None = None


class GoalClaim(_Model):
    """Take the next open goal (oldest first), or the goal named, under a lease the holder renews."""

    goal: str | None = Field(None, pattern=ID_PATTERN, description="claim this goal; empty = the next open one")
    benchmark: str | None = Field(None, max_length=100, description="only goals on this benchmark")
    lease_s: float = Field(300.0, ge=1.0, le=86_400.0, description="the lease lapses this long after the last heartbeat")
    holder: str = Field("", max_length=200, description="who holds it, e.g. the lab run id (shown, not checked)")


class LeaseRenew(_Model):
    lease_s: float | None = Field(None, ge=1.0, le=86_400.0, description="new length; empty = the claim's")


class LeaseRelease(_Model):
    reason: str = Field("released", min_length=1, max_length=500, description="e.g. done, failed, interrupted")


class GoalClose(_Model):
    reason: str = Field(min_length=1, max_length=500)


class LeaseOut(_Model):
    id: str = Field(description="the lease token: heartbeat and release name it")
    goal_id: str
    lab: str
    holder: str
    attempt: int = Field(description="the goal's claim count when this lease was granted")
    lease_s: float
    created: datetime
    heartbeat_at: datetime
    expires_at: datetime
    ended: datetime | None = None
    end_reason: str | None = Field(None, description="released reason, expired, or the goal's closing reason")
    active: bool
    goal: GoalOut


class ProgressPoint(_Model):
    index: int = Field(description="the paper's position among the goal's papers (1 = first published)")
    lab_index: int = Field(description="its position among its lab's papers on the goal")
    paper_id: str
    lab: str
    created: datetime
    elapsed_s: float = Field(description="seconds from the goal's creation to the paper")
    accuracy: float = Field(description="the paper's best ranked accuracy in the group")
    best: float = Field(description="best so far on this line")


class TargetReached(_Model):
    index: int
    elapsed_s: float
    paper_id: str
    lab: str
    accuracy: float


class ProgressLine(_Model):
    lab: str | None = Field(description="None: every lab combined")
    papers: int = Field(description="papers of this line in the group")
    points: list[ProgressPoint]
    reached: TargetReached | None = Field(None, description="the first paper at or above the goal's target")


class ProgressGroup(_Model):
    benchmark: str
    subset: str
    model: str
    lines: list[ProgressLine] = Field(description="combined first, then one per lab")


class GoalProgress(_Model):
    goal: GoalOut
    papers: int = Field(description="papers on the goal (x axis: paper index 1..papers)")
    span_s: float = Field(description="seconds from the goal's creation to its latest paper")
    groups: list[ProgressGroup] = Field(description="one per comparable (benchmark, subset, model), most papers first")


class LeaderboardEntry(_Model):
    benchmark: str
    subset: str
    technique: str
    spec_hash: str
    model: str
    accuracy: float
    ci_low: float | None
    ci_high: float | None
    n: int
    split: Split
    model_id: str
    errors: int
    tokens_per_problem: float | None
    paper_id: str
    paper_title: str
    lab: str
    created: datetime
    replications: int = Field(0, description="labs (other than the authors) whose replication was consistent")
    not_reproduced: int = 0


class Health(_Model):
    status: Literal["ok"] = "ok"
    papers: int
    indexed_papers: int
    version: str
