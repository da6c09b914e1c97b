"""The state of one lab run (a LangGraph thread) as it is stored, and the run's configuration.

``LabState`` is what the LangGraph checkpoint (SQLite) stores, and what the checkpoints of earlier runs hold:
plain JSON (dicts, lists, strings, numbers), never pydantic objects, so the checkpointer can store it and an old
run resumes. Its typed view is ``agentlab.lab.view.LabView`` (``LabView.of(state)``), built from the models of
``agentlab.lab.models`` (an experiment node, an evaluation record, the final evaluation, ...): nodes and agents
read the state through them and return their dumps (``dump()``). The structures the agents produce are pydantic
models in ``agents/``; the state keeps their dumps. The run's ``LabConfig`` is not in the state: nodes read it
typed from the runtime context (``runtime.context.config``), and the lab store keeps it (``lab_runs.config``)
for resume.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

from pydantic import BaseModel, Field

PHASES = (
    "literature_review",
    "plan",
    "experiments",
    "final_evaluation",
    "interpretation",
    "report",
    "review",
    "publish",
    "done",
)


class LabConfig(BaseModel):
    """Per-run knobs (sizes and bounds); saved with the run in the lab store so a resumed run uses the same ones."""

    benchmark: str = Field("math500", description="benchmark name in the harness registry")
    subset: dict[str, Any] = Field(default_factory=dict, description="subset selector passed to the loader")
    dev_n: int = Field(20, ge=1, description="problems in the dev split (tuning)")
    report_n: int = Field(
        500, ge=1, description="the most problems the held-out report split may have (the budget): the lab "
        "sizes it from the dev discordance for 80% power to detect min_gain (agentlab.lab.power)")
    min_gain: float = Field(
        0.05, gt=0, le=1, description="the smallest gain in accuracy worth reporting (absolute: 0.05 = 5 "
        "points); the report split is sized to detect it")
    demo: bool = Field(False, description="a demo-size run: the report split keeps report_n, and the paper "
                                          "says the run is too small to show a gain")
    confirm_n: int | None = Field(
        None, ge=0, description="fresh dev problems (after the dev problems and the few-shot pool; no node was chosen "
        "on them) on which the best dev node is confirmed against the baseline before the report split; empty = "
        "dev_n, 0 = no confirmation (agentlab.lab.confirm)")
    ablate: bool = Field(True, description="remove each part of the best prompt technique in turn and evaluate "
                                           "it on the confirmation problems, when the job budget allows")
    seed: int = 0
    baseline: str = Field("zero_shot_cot", description="baseline technique name")
    max_iterations: int = Field(3, ge=1, description="experiment loop iterations (dev split)")
    max_fix_attempts: int = Field(1, ge=0, description="fixes of a failed job per iteration: the debug depth of "
                                                      "the search (each fix is a debug node of the tree)")
    search_k: int = Field(2, ge=1, description="nodes a round of the best-first search expands: the top k by paired "
                                               "dev score against the baseline (max_iterations is the budget)")
    prune_after: int = Field(2, ge=1, description="children that fail to beat a node before the search prunes it "
                                                  "(a node that lost to the baseline is pruned at once)")
    parallel_expansions: bool = Field(True, description="run the expansions of a search round together (their jobs "
                                                        "submitted before any is waited for), up to the scheduler's "
                                                        "jobs.max_concurrent; off: one after another")
    literature_top_n: int = Field(5, ge=0)
    compare_prior_best: bool = Field(
        True, description="re-evaluate the best published technique for this benchmark and model on the run's own "
                          "report split, as a second baseline (\"prior best\")")
    prior_best_min_n: int = Field(
        100, ge=1, description="report-split problems a published result needs to be the prior best (a replicated "
                               "result qualifies at any size); fewer make a lucky result the bar")
    plan_turns: int = Field(2, ge=1, description="postdoc/PhD dialogue turns")
    review_threshold: float = Field(5.0, description="mean reviewer score below which one revision round runs")
    context_scale: float | None = Field(
        None, gt=0, le=16, description="multiple of the default context lengths (summaries, history, tables, drafts; "
        "tuned for a 4096-token model) sent to the agents; empty = the agents' context window / 4096. The demo sends "
        "less, since prompt processing dominates a small model's time on CPU")
    max_tokens_per_answer: int = Field(512, ge=16, description="default max tokens of the model under study")
    agent_output_tokens: int | None = Field(
        None, ge=64, description="most tokens one agent answer (a proposal, code) may have; empty = sized from the "
                                 "agents' model: its max output tokens (litellm), within half its context window, "
                                 "else a quarter of the window")
    max_chains: int = Field(5, ge=1, le=16, description="cap on sampled chains per problem")
    concurrency: int = Field(8, ge=1, description="requests in flight to the model under study (llama.cpp decodes "
                             "them together: default_parallel slots, 8 on 2 cores)")
    job_timeout_s: float = Field(3600.0, gt=0, description="wall-clock limit of one evaluation job")
    job_memory_mb: int = Field(4096, ge=256, description="memory limit of one evaluation job (sandbox)")
    allow_code_techniques: bool = Field(
        False, description="let the ML engineer write a `code` technique (solve(problem, client)) that runs in "
                           "the sandbox; off for small agent models such as the embedded 135M one")
    allow_training: bool = Field(
        False, description="let the ML engineer propose a training technique: SFT or GRPO (LoRA) of the model under "
                           "study's own weights as a sandboxed train job, then a prompting technique evaluated on the "
                           "trained checkpoint; needs a local model under study (not an external endpoint)")
    train_max_steps: int = Field(30, ge=1, le=100_000, description="optimizer steps one training technique may run")
    train_max_minutes: float = Field(20.0, gt=0, description="wall-clock training budget of one training technique")
    code_max_requests: int = Field(400, ge=1, description="model requests one code-technique job may make (proxy)")
    code_max_tokens: int = Field(400_000, ge=1, description="model tokens one code-technique job may use (proxy)")
    copilot: bool = False
    lab_name: str = "agentlab"
    server_url: str | None = None
    publish_failures: bool = Field(
        False, description="publish a run in which no report-split evaluation finished, marked as a failed run "
                           "(tag failed-run, no results); by default such a run ends failed and publishes nothing")
    queue_if_server_down: bool = Field(
        False, description="start even when the preprint server is unreachable and keep the paper in the outbox "
                           "(published by a later run); by default the preflight stops the lab instead")


class LabState(TypedDict, total=False):
    """The stored state (JSON); the comments name the typed view of each part (``agentlab.lab.models``/``view``)."""

    run_id: str
    goal: str
    goal_id: int | None
    phase: str
    started_at: float
    literature: list[dict[str, Any]]  # LiteraturePaper per paper read: {id, title, summary, results: [...]}
    plan: dict[str, Any]  # Plan: agents.postdoc.ResearchPlan dump (+ "source": llm|fallback|human)
    dialogue: list[dict[str, str]]  # plan dialogue turns {role, text}
    experiments: list[dict[str, Any]]  # Experiment per dev iteration: proposal, spec, record or error
    iteration: int
    dev_baseline: dict[str, Any] | None  # DevBaseline, run first: spec, record, evidence
    best: dict[str, Any] | None  # Experiment: the best dev experiment
    search: dict[str, Any]  # the search tree in numbers (agentlab.lab.search.tree_summary)
    final: dict[str, Any]  # Final: {"technique": record, "baseline": record, "comparison": {...}, "sizing": {...}}
    interpretation: dict[str, Any]  # Interpretation
    report: dict[str, Any]  # Report: {"draft": ReportDraft, "markdown", "latex", "claims": [...], ...}
    reviews: list[dict[str, Any]]  # Review per persona
    revised: bool
    publication: dict[str, Any]  # Publication: {"paper_id", "url"} or {"outbox": path}
    notes: Annotated[list[str], operator.add]  # fallbacks, fixes, budget stops: shown in the report
    stop_reason: str | None  # a budget or limit that made the lab wrap up early
    failure: str | None  # why the run failed: no evaluation on the report split finished
    human_feedback: Annotated[list[str], operator.add]
