"""Typed views of what flows through a lab run: evaluation records, paired comparisons, the experiment nodes of
the search, the final evaluation, and (``agentlab.lab.view``) the whole state as the nodes and agents read it.

The LangGraph checkpoint stores the state as plain JSON (``agentlab.lab.state.LabState``: dicts and lists), so
that the runs it holds resume whatever these models become. Nodes and agents read the state through these
models (``LabView.of(state)``, ``Experiment.model_validate(entry)``) and write back their ``dump()``: the fields
the data had or that were set since, so a stored dict comes back as it was. Every model keeps the keys it does
not declare (``extra="allow"``) and has defaults, so the state of an older run validates.

This module imports nothing of the lab but ``agentlab.techniques``: the agent roles read it too.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_serializer

from agentlab.techniques import TechniqueSpec


class StateModel(BaseModel):
    """A typed view of a JSON dict of the state: unknown keys kept, ``dump()`` gives the dict back."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    def dump(self) -> dict[str, Any]:
        """The stored (JSON) form: what was given or set, unknown keys included, no invented defaults."""
        return self.model_dump(mode="json", exclude_unset=True)


class Record(StateModel):
    """An evaluation record, the one thing a report's numbers come from (``agentlab.lab.experiments
    .normalize_record``; field names of the preprint server's ResultRecord)."""

    record_id: str | None = None
    eval_run_id: str = ""
    job_id: str | None = None
    benchmark: str = ""
    subset: str = ""
    split: str = ""
    model: str = ""
    model_id: str = ""  # the model's identity: weights hash or endpoint (``Endpoint.identity``)
    technique: str = ""
    spec_hash: str = ""
    n: int = 0
    n_planned: int | None = None
    correct: int = 0
    accuracy: float = 0.0
    ci_low: float | None = None
    ci_high: float | None = None
    tokens_per_problem: float | None = None
    complete: bool = True
    errors: int = 0
    serving: str = ""  # engine and quantization
    calls: int | None = None  # model replies of the evaluation (None: an older record)
    truncated: int | None = None  # of them, cut at max_tokens
    max_tokens: int | None = None  # the solving replies' limit (None: a code technique or an older record)


class Paired(StateModel):
    """Two evaluations on the same problems (exact McNemar): wins (the first right, the second wrong), losses,
    ties, the accuracy difference. ``delta`` is None where a merged dict (a confirmation) has no comparison."""

    n: int = 0
    wins: int = 0
    losses: int = 0
    ties: int = 0
    delta: float | None = None
    p_value: float | None = None

    def paired(self) -> Paired:
        """The comparison alone (what an experiment stores as ``paired``)."""
        return Paired(n=self.n, wins=self.wins, losses=self.losses, ties=self.ties, delta=self.delta,
                      p_value=self.p_value)


class Comparison(Paired):
    """``Experiments.compare``: a paired comparison naming its two records (a: the technique, b: the other)."""

    record_a: str | None = None
    record_b: str | None = None


class SpecChains(StateModel):
    n: int | None = None


class SpecSampling(StateModel):
    temperature: float | None = None


class SpecRef(StateModel):
    """A technique spec as the state keeps it (``TechniqueSpec`` dumped), loosely: its fields in the spec's order
    (a dump keeps the stored order), the settings the agents read typed, anything else kept as it is;
    ``parsed()`` is the validated spec."""

    name: str | None = None
    description: str = ""
    kind: str = "prompt"
    system: str | None = None
    template: str | None = None
    answer_instruction: str | None = None
    few_shot: list[Any] = Field(default_factory=list)
    steps: list[Any] = Field(default_factory=list)
    sampling: SpecSampling | None = None
    chains: SpecChains | None = None

    def parsed(self) -> TechniqueSpec:
        return TechniqueSpec.parse(self.dump())


class ProposalRef(StateModel):
    """An experiment's proposal as stored (``agents.ml_engineer.TechniqueProposal`` dumped): what the lab reads
    of it."""

    technique: str | None = None
    parent: int = 0
    num_chains: int | None = None
    temperature: float | None = None
    rationale: str = ""


class Attempt(StateModel):
    """One job of an experiment: its key in the lab store, the scheduler's job id, the outcome."""

    key: str = ""
    job_id: str | None = None
    status: str = ""
    error: str | None = None


class WrongAnswer(StateModel):
    question: str = ""
    output: str = ""
    answer: str | None = None
    gold: str | None = None
    cut: bool = False  # the output ended at max_tokens
    error: str | None = None


class Evidence(StateModel):
    """What a dev evaluation shows the agents (``agentlab.lab.dev_evidence``): accuracy per group, tokens,
    replies cut at max_tokens, a sample of wrong answers."""

    breakdown: dict[str, dict[str, str]] = Field(default_factory=dict)
    tokens_per_problem: float | None = None
    errors: int = 0
    answers: int | None = None
    truncated: int | None = None
    max_tokens: int | None = None
    wrong: list[WrongAnswer] = Field(default_factory=list)
    wrong_total: int | None = None


class TrainingData(StateModel):
    source: str | None = None
    task: str | None = None
    benchmark: str | None = None
    seed: int | None = None
    size: int | None = None
    technique: str | None = None
    target: str | None = None


class TrainingHyper(StateModel):
    learning_rate: float | None = None
    batch_size: int | None = None
    max_seq_len: int | None = None
    num_generations: int | None = None


class TrainingSummary(StateModel):
    """A training run as the agents and the paper see it (``agentlab.lab.training.training_summary``)."""

    run_id: str = ""
    method: str = ""
    finetune: str = ""
    status: str = ""
    max_steps: int = 0
    steps: int = 0
    last: dict[str, Any] = Field(default_factory=dict)  # step, loss, reward, learning_rate of the last log
    n_train: int = 0
    dropped_leaks: int = 0
    data: TrainingData = Field(default_factory=TrainingData)
    hyper: TrainingHyper = Field(default_factory=TrainingHyper)
    lora_r: int | None = None
    checkpoint_hash: str | None = None
    curve: str | None = None  # the loss/reward curve (PNG)
    wall_s: float | None = None
    recipe: dict[str, Any] = Field(default_factory=dict)


class TrainingRequest(StateModel):
    """A training proposal as ``Experiments.recipe`` reads it (``agents.ml_engineer.TrainingProposal`` dumped)."""

    method: str = "sft"
    evaluate_with: str | None = None
    target: str | None = None
    learning_rate: float | None = None
    max_steps: int | None = None
    batch_size: int | None = None
    num_generations: int | None = None
    lora_r: int | None = None


class SearchChoice(StateModel):
    """What the search expands next (``agentlab.lab.search.next_expansion``)."""

    stage: str = "prompt"  # prompt | train
    parent: int = 0
    evaluate_with: str | None = None  # train: the technique the trained model is evaluated with


class JobResult(StateModel):
    """A job of the lab (``LabContext.run_job``, ``run_training``): failures are data."""

    status: str = "failed"
    record: Record | None = None
    job_id: str | None = None
    error: str | None = None
    evidence: Evidence | None = None  # dev split only
    training: TrainingSummary | None = None  # a train job
    wall_s: float | None = None
    reused: bool = False  # a finished key of a resumed run

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"


class Experiment(StateModel):
    """A node of the search (an entry of ``state["experiments"]``): its proposal, the jobs it ran, what ran (spec,
    training), the record, the paired result against the dev baseline, and where it sits in the tree."""

    iteration: int = 0
    proposal: ProposalRef = Field(default_factory=ProposalRef)
    proposal_source: str | None = None  # llm | fallback | search
    attempts: list[Attempt] = Field(default_factory=list)
    adjustments: list[str] = Field(default_factory=list)  # what the lab did not run as asked, and why
    spec: SpecRef | None = None
    record: Record | None = None
    job_id: str | None = None
    error: str | None = None
    evidence: Evidence | None = None
    paired: Paired | None = None
    training: TrainingSummary | None = None
    training_proposal: TrainingRequest | None = None
    parent: int = 0  # the node it branches from (0: the baseline, the root)
    parent_asked: int | None = None  # the parent the engineer named when the search chose another
    extends: str | None = None  # the paper whose published technique it started from
    papers_read: list[Any] = Field(default_factory=list)
    stage: str | None = None
    search_choice: SearchChoice | None = None
    pending: bool = False  # a sibling of the round still running (seen by the next proposal)

    @property
    def trains(self) -> bool:
        """A training node (proposed or run)."""
        return bool(self.training_proposal or self.training)

    @property
    def clear_win(self) -> bool:
        """It beat the baseline on the dev split with McNemar p < 0.05 (a training short of that is retrained)."""
        p = self.paired if self.record else None
        return bool(p and p.delta and p.delta > 0 and p.p_value is not None and p.p_value < 0.05)

    def branchable(self) -> bool:
        """A prompt technique that ran: a code technique's spec cannot take changes, and a training technique's
        spec would run without its trained model."""
        return bool(self.record) and not (self.spec and self.spec.kind == "code") and not self.training

    def with_result(self, spec: TechniqueSpec, result: JobResult) -> Experiment:
        """This node with a job's outcome: what ran, its record (or error) and evidence."""
        return self.model_copy(update={"spec": SpecRef.model_validate(spec.model_dump(mode="json")),
                                       "record": result.record, "job_id": result.job_id, "error": result.error,
                                       "evidence": result.evidence})


class DevBaseline(StateModel):
    """The baseline on the dev split (``state["dev_baseline"]``): every experiment is paired with it."""

    spec: SpecRef | None = None
    record: Record | None = None
    job_id: str | None = None
    error: str | None = None
    evidence: Evidence | None = None


class AblationRow(Paired):
    """One part of the best technique removed, on the confirmation problems, paired with the full node."""

    part: str = ""
    label: str = ""
    technique: str = ""
    spec_hash: str = ""
    spec: dict[str, Any] = Field(default_factory=dict)
    record: Record | None = None
    error: str | None = None


class Confirmation(Paired):
    """The best dev node against the baseline on fresh dev problems (``agentlab.lab.confirm``), and its ablation."""

    subset: str | None = None
    technique: Record | None = None
    baseline: Record | None = None
    dev_paired: Paired | None = None
    confirmed: bool | None = None
    ablation: list[AblationRow] = Field(default_factory=list)


class PriorBest(Record):
    """The best published result for the benchmark, population and model, re-run on this run's report split."""

    paper_id: str | int | None = None
    lab: str | None = None
    published_accuracy: float | None = None
    published_n: int | None = None  # None: a record from before the prior best was chosen by its CI
    published_ci_low: float | None = None
    replications: int | None = None


class ReportSizing(BaseModel):
    """The report split's size and why (kept in ``final["sizing"]``; ``agentlab.lab.power``; the paper states it)."""

    model_config = ConfigDict(extra="allow")

    min_gain: float
    cap: int  # LabConfig.report_n: the most the budget allows
    available: int  # report-split problems the benchmark has, up to the cap
    report_n: int  # the report split's size
    discordant: int | None = None  # dev problems on which the best experiment and the baseline disagree
    paired_n: int | None = None  # dev problems they were paired on
    needed: int | None = None  # report problems for 80% power at the dev discordance
    planned_power: float | None = None  # at report_n and the dev discordance
    demo: bool = False
    # on the report split: {"n", "discordant", "power"} (the power for min_gain at its discordance)
    achieved: dict[str, Any] | None = None


class Final(StateModel):
    """The final evaluation (``state["final"]``): the report split's records, their comparison, the specs."""

    baseline: Record | None = None
    technique: Record | None = None
    technique_name: str | None = None
    specs: dict[str, dict[str, Any]] = Field(default_factory=dict)  # spec hash -> spec (published with the paper)
    confirmation: Confirmation | None = None
    comparison: Comparison | None = None
    comparison_prior: Comparison | None = None
    prior_best: PriorBest | None = None
    sizing: ReportSizing | None = None

    @field_serializer("sizing")
    def _whole_sizing(self, sizing: ReportSizing | None) -> dict[str, Any] | None:
        return sizing.model_dump(mode="json") if sizing else None  # stored with every field, as it always was

    def report_records(self) -> list[Record]:
        """The report split's records: the technique's, the baseline's, the prior best's (that order)."""
        return [r for r in (self.technique, self.baseline, self.prior_best) if r]


class StepRequest(StateModel):
    name: str = ""
    template: str = ""


class SpecRequest(StateModel):
    """A proposal as ``Experiments.build_spec`` reads it (``agents.ml_engineer.TechniqueProposal`` dumped, with the
    spec it starts from when that is not a built-in: ``base_spec``); the fields it was given are the ones the
    engineer wrote (``model_fields_set``)."""

    technique: str = ""
    base_spec: dict[str, Any] | None = None  # a published or earlier experiment's spec
    num_chains: int = 0  # 0: the technique's own
    temperature: float | None = None
    max_tokens: int | None = None
    instruction: str = ""
    system: str = ""
    template: str = ""
    steps: list[StepRequest] = Field(default_factory=list)
    few_shot: int = 0
    aggregation: str = ""
    refine_rounds: int = 0
    chain_templates: list[str] = Field(default_factory=list)
    verify: bool = False


def dumped(model: StateModel | None) -> dict[str, Any] | None:
    """The stored form of an optional part (None stays None)."""
    return model.dump() if model is not None else None
