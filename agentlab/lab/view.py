"""The typed view of a lab run's state (``LabView.of(state)``), with the parts ``agentlab.lab.models`` does not
describe: the literature, the plan, the report, the reviews; and what a human answers in copilot mode and what
the lab store keeps of a job.

The state itself stays what the checkpoint stores (``agentlab.lab.state.LabState``, plain JSON); a view is read
from it at the start of a node and never stored. Like the models, it imports nothing of the lab but
``agentlab.lab.models``: the agent roles read it too.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from agentlab.lab.models import DevBaseline, Experiment, Final, JobResult, Record, SearchChoice, StateModel
from agentlab.techniques import TechniqueSpec


class PublishedTechnique(StateModel):
    """A technique a paper published (name, hash, kind and full spec): an experiment may start from it."""

    name: str | None = None
    spec_hash: str | None = None
    kind: str | None = "prompt"
    spec: dict[str, Any] | None = None


class LiteratureHit(StateModel):
    """A paper the preprint server's search returned (``Publisher.search``): what the PhD student reads."""

    id: str | int | None = None
    title: str | None = None
    abstract: str = ""
    passage: str = ""  # where in the paper the search matched
    lab: str | None = None
    results: list[dict[str, Any]] = Field(default_factory=list)  # its ranked records
    techniques: list[PublishedTechnique] = Field(default_factory=list)


class LiteraturePaper(StateModel):
    """A paper the lab read (``state["literature"]``): its summary, ranked records and published techniques."""

    id: str | int | None = None
    title: str = ""
    summary: str = ""
    useful_idea: str = ""
    relevant: bool = True  # judged to bear on the goal (only relevant or used papers are cited)
    results: list[dict[str, Any]] = Field(default_factory=list)
    techniques: list[PublishedTechnique] = Field(default_factory=list)
    lab: str | None = None
    read: str | None = None  # "mid-run": found by a refresh before an experiment


class Plan(StateModel):
    """The postdoc's plan (``agents.postdoc.ResearchPlan`` dumped, with the run's settings and sizing)."""

    hypothesis: str = ""
    techniques: list[str] = Field(default_factory=list)
    rationale: str = ""
    source: str | None = None  # llm | fallback | human


class Draft(StateModel):
    """A report's prose (``agents.professor.ReportDraft`` dumped, after the claim checker)."""

    title: str = ""
    abstract: str = ""
    introduction: str = ""
    method: str = ""
    discussion: str = ""
    conclusion: str = ""


class ReportFiles(StateModel):
    """The files of a written report (``agentlab.lab.report.paper.write_outputs``; ``curve-*``: training curves)."""

    markdown: str | None = None
    latex: str | None = None
    records: str | None = None
    techniques: str | None = None
    figure: str | None = None
    tree: str | None = None
    pdf: str | None = None


class Report(StateModel):
    """The written report (``state["report"]``): the checked draft, the paper's text and files, its records."""

    draft: dict[str, Any] = Field(default_factory=dict)
    source: str | None = None
    claims: list[dict[str, Any]] = Field(default_factory=list)
    markdown: str = ""
    latex: str | None = None
    files: ReportFiles = Field(default_factory=ReportFiles)
    records: list[Record] = Field(default_factory=list)
    citations: list[Any] = Field(default_factory=list)
    techniques: dict[str, dict[str, Any]] | None = None  # spec hash -> spec of every evaluated technique
    relations: dict[str, str] | None = None  # cited paper id -> extends | compares
    title: str = ""
    abstract: str = ""
    edited_by_human: bool = False

    def record_dicts(self) -> list[dict[str, Any]]:
        """The records as the claim checker reads them."""
        return [r.dump() for r in self.records]


class Publication(StateModel):
    """Where the report went (``Publisher.publish_run``): published (paper id, URL), queued in the outbox, or
    rejected by a human."""

    status: str | None = None
    paper_id: str | int | None = None
    url: str | None = None
    outbox: str | None = None
    error: str | None = None


class Review(StateModel):
    """A reviewer's review (``agents.reviewer.Review`` dumped, with its persona)."""

    persona: str = ""
    summary: str = ""
    strength: str = ""
    weakness: str = ""
    soundness: int = 0
    presentation: int = 0
    contribution: int = 0
    overall: int = 0
    confidence: int = 0
    fallback: bool = False  # no usable review: not counted, not published


class Interpretation(StateModel):
    summary: str = ""
    hypothesis_supported: bool = False
    limitation: str = ""
    source: str | None = None


class LabView(StateModel):
    """The state of a lab run, typed (read with ``LabView.of(state)``; never stored)."""

    run_id: str = ""
    goal: str = ""
    goal_id: int | str | None = None
    phase: str | None = None
    literature: list[LiteraturePaper] = Field(default_factory=list)
    plan: Plan = Field(default_factory=Plan)
    experiments: list[Experiment] = Field(default_factory=list)
    iteration: int = 0
    dev_baseline: DevBaseline = Field(default_factory=DevBaseline)
    best: Experiment | None = None
    search: dict[str, Any] = Field(default_factory=dict)  # agentlab.lab.search.tree_summary
    final: Final = Field(default_factory=Final)
    interpretation: Interpretation = Field(default_factory=Interpretation)
    report: Report = Field(default_factory=Report)
    reviews: list[Review] = Field(default_factory=list)
    revised: bool = False
    publication: Publication = Field(default_factory=Publication)
    notes: list[str] = Field(default_factory=list)
    stop_reason: str | None = None
    failure: str | None = None
    human_feedback: list[str] = Field(default_factory=list)
    # not in the stored state: the node the search chose for the proposal being made (agentlab.lab.expansion)
    search_choice: SearchChoice | None = None

    @field_validator("plan", "dev_baseline", "final", "interpretation", "report", "publication", mode="before")
    @classmethod
    def _none_is_empty(cls, v: Any) -> Any:
        return {} if v is None else v  # a part the run has not reached yet may be stored as None

    @classmethod
    def of(cls, state: dict[str, Any] | LabView) -> LabView:
        """The view of a stored state (a view is returned as it is)."""
        return state if isinstance(state, LabView) else cls.model_validate(state)

    def experiment(self, iteration: int) -> Experiment | None:
        """Experiment #iteration, or None."""
        return next((e for e in self.experiments if e.iteration == iteration), None)

    def dev_specs(self) -> list[TechniqueSpec]:
        """The specs of the dev experiments, validated."""
        return [e.spec.parsed() for e in self.experiments if e.spec]


class HumanDecision(StateModel):
    """What a human answers a copilot pause with: approve, edit (a plan, the report's Markdown), feedback, reject."""

    action: str = "approve"
    plan: Any = None  # an edited plan: used when it is a dict
    markdown: Any = None
    text: Any = None

    @field_validator("action", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> str:
        return str(v).lower()

    @classmethod
    def of(cls, value: Any) -> HumanDecision:
        """A bare string is the action; anything but a dict or a string approves."""
        if isinstance(value, str):
            return cls(action=value.strip() or "approve")
        return cls.model_validate(value) if isinstance(value, dict) else cls()


class JobMeta(StateModel):
    """What the lab store keeps with a job besides its record: the proposal behind it, the training run."""

    proposal: dict[str, Any] | None = None
    fell_back: bool = False
    adjustments: list[str] = Field(default_factory=list)
    training: dict[str, Any] | None = None


class StoredJob(StateModel):
    """A key's row in the lab store (``LabStore.experiment``), its spec parsed: a resumed run reuses it."""

    key: str = ""
    status: str = ""
    job_id: str | None = None
    spec: Any = None  # a TechniqueSpec (``LabContext.earlier_experiment``) or its dump
    record: dict[str, Any] | None = None
    error: str | None = None
    meta: JobMeta = Field(default_factory=JobMeta)

    def result(self) -> JobResult:
        """The key's stored outcome as a job result (reused)."""
        return JobResult.model_validate({"status": self.status, "record": self.record, "job_id": self.job_id,
                                         "reused": True})
