"""SQLite tables (SQLAlchemy 2 declarative). Plain tables with explicit names so that
Alembic migrations can be added later; `db.init_db` creates what is missing."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """SQLite stores no time zone: store UTC, hand back aware UTC datetimes."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return value.astimezone(UTC).replace(tzinfo=None) if value is not None else None

    def process_result_value(self, value, dialect):
        return value.replace(tzinfo=UTC) if value is not None else None


class Base(DeclarativeBase):
    pass


class Lab(Base):
    __tablename__ = "labs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiKey(Base):
    """A lab may hold several keys; only the SHA-256 of a key is stored (keys are 256-bit random)."""

    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    lab_id: Mapped[int] = mapped_column(ForeignKey("labs.id"))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    lab: Mapped[Lab] = relationship()


class Goal(Base):
    __tablename__ = "goals"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    benchmark: Mapped[str | None] = mapped_column(String(100), index=True)
    baseline: Mapped[float | None] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16), default="open")  # open | claimed | closed
    created_by: Mapped[str] = mapped_column(String(100))
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    target: Mapped[float | None] = mapped_column(Float)
    max_papers: Mapped[int | None] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    closed_reason: Mapped[str | None] = mapped_column(String(500))
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class GoalLease(Base):
    """A lab's claim on a goal: live while `ended` is empty and `expires_at` is ahead (server time)."""

    __tablename__ = "goal_leases"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    goal_id: Mapped[str] = mapped_column(ForeignKey("goals.id"), index=True)
    lab_id: Mapped[int] = mapped_column(ForeignKey("labs.id"))
    holder: Mapped[str] = mapped_column(String(200), default="")
    attempt: Mapped[int] = mapped_column(Integer)
    lease_s: Mapped[float] = mapped_column(Float)
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    ended: Mapped[datetime | None] = mapped_column(UTCDateTime)
    end_reason: Mapped[str | None] = mapped_column(String(500))
    lab: Mapped[Lab] = relationship()


class Paper(Base):
    __tablename__ = "papers"
    __table_args__ = (UniqueConstraint("lab_id", "idempotency_key"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    title: Mapped[str] = mapped_column(String(500))
    abstract: Mapped[str] = mapped_column(Text, default="")
    body: Mapped[str] = mapped_column(Text, default="")
    lab_id: Mapped[int] = mapped_column(ForeignKey("labs.id"), index=True)
    goal_id: Mapped[str | None] = mapped_column(ForeignKey("goals.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), default="published", index=True)
    tags: Mapped[list] = mapped_column(JSON, default=list)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)

    lab: Mapped[Lab] = relationship()
    results: Mapped[list[Result]] = relationship(cascade="all, delete-orphan", order_by="Result.id")
    files: Mapped[list[PaperFile]] = relationship(cascade="all, delete-orphan", order_by="PaperFile.id")
    reviews: Mapped[list[Review]] = relationship(cascade="all, delete-orphan", order_by="Review.id")
    replications: Mapped[list[Replication]] = relationship(cascade="all, delete-orphan", order_by="Replication.id")
    techniques: Mapped[list[PaperTechnique]] = relationship(cascade="all, delete-orphan", order_by="PaperTechnique.id")


class Result(Base):
    __tablename__ = "results"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    paper_id: Mapped[str] = mapped_column(ForeignKey("papers.id"), index=True)
    benchmark: Mapped[str] = mapped_column(String(100), index=True)
    subset: Mapped[str] = mapped_column(String(100), default="")
    model: Mapped[str] = mapped_column(String(200))
    technique: Mapped[str] = mapped_column(String(200))
    spec_hash: Mapped[str] = mapped_column(String(128), default="")
    n: Mapped[int] = mapped_column(Integer)
    correct: Mapped[int] = mapped_column(Integer)
    accuracy: Mapped[float] = mapped_column(Float)
    ci_low: Mapped[float | None] = mapped_column(Float)
    ci_high: Mapped[float | None] = mapped_column(Float)
    job_id: Mapped[str] = mapped_column(String(200), default="")
    record_id: Mapped[str] = mapped_column(String(200), default="")
    # rows from before these columns existed read as report-split, complete, unknown model identity
    split: Mapped[str] = mapped_column(String(8), default="report", server_default="report", index=True)
    model_id: Mapped[str] = mapped_column(String(200), default="", server_default="")
    n_planned: Mapped[int | None] = mapped_column(Integer)
    complete: Mapped[bool] = mapped_column(Boolean, default=True, server_default="1")
    errors: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    tokens_per_problem: Mapped[float | None] = mapped_column(Float)

    @property
    def from_harness_records(self) -> bool:
        return bool(self.job_id and self.record_id)

    @property
    def ranked(self) -> bool:
        """Counts on leaderboards and progress: held-out split, every problem evaluated, harness ids."""
        return self.split == "report" and self.complete and self.from_harness_records


class Replication(Base):
    """Another lab's re-run of one of a paper's report-split results, with the server's verdict."""

    __tablename__ = "replications"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    paper_id: Mapped[str] = mapped_column(ForeignKey("papers.id"), index=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("results.id"), index=True)
    lab_id: Mapped[int] = mapped_column(ForeignKey("labs.id"))
    record: Mapped[dict] = mapped_column(JSON)  # the replication's ResultRecord, as posted
    accuracy: Mapped[float] = mapped_column(Float)
    verdict: Mapped[str] = mapped_column(String(16))  # consistent | not reproduced
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    lab: Mapped[Lab] = relationship()
    original: Mapped[Result] = relationship()


class PaperTechnique(Base):
    """A technique spec a paper evaluated (the full spec JSON; its hash was checked on publish)."""

    __tablename__ = "paper_techniques"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    paper_id: Mapped[str] = mapped_column(ForeignKey("papers.id"), index=True)
    name: Mapped[str] = mapped_column(String(80))
    spec_hash: Mapped[str] = mapped_column(String(128), index=True)
    kind: Mapped[str] = mapped_column(String(8))
    spec: Mapped[dict] = mapped_column(JSON)
    record_ids: Mapped[list] = mapped_column(JSON, default=list)


class Citation(Base):
    __tablename__ = "citations"
    citing_id: Mapped[str] = mapped_column(ForeignKey("papers.id"), primary_key=True)
    cited_id: Mapped[str] = mapped_column(ForeignKey("papers.id"), primary_key=True, index=True)
    # extends (builds its technique on the cited one) | compares (measured against it) | background
    relation: Mapped[str] = mapped_column(String(16), default="background", server_default="background")


class PaperFile(Base):
    """A file attached to a paper; its bytes live in the blob store under their SHA-256."""

    __tablename__ = "paper_files"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    paper_id: Mapped[str] = mapped_column(ForeignKey("papers.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # pdf | source | artifact
    name: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    content_type: Mapped[str] = mapped_column(String(100))


class Review(Base):
    __tablename__ = "reviews"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    paper_id: Mapped[str] = mapped_column(ForeignKey("papers.id"), index=True)
    lab_id: Mapped[int] = mapped_column(ForeignKey("labs.id"))
    scores: Mapped[dict] = mapped_column(JSON, default=dict)
    text: Mapped[str] = mapped_column(Text)
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    lab: Mapped[Lab] = relationship()
