"""The lab workflow: a LangGraph ``StateGraph`` over ``LabState``, checkpointed to SQLite.

    literature_review -> plan -> copilot_plan -> dev_baseline -> experiment (loop) -> final_evaluation
      -> interpretation -> report -> review (-> revision -> review, once) -> copilot_publish
      -> publish -> END

One thread per lab run (``thread_id = run_id``). The nodes are the functions of ``agentlab.lab.nodes``;
they and the routers here read the run's ``LabContext`` (``context_schema``) as ``runtime.context``; the
state itself is plain JSON (what the checkpoint stores), read through its typed view ``LabView``. The copilot
nodes pass through unless the run is in copilot mode.
"""

from __future__ import annotations

from typing import Literal

from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime

from agentlab.config import Settings
from agentlab.lab import nodes
from agentlab.lab.context import LabContext
from agentlab.lab.state import LabState
from agentlab.lab.view import LabView
from agentlab.sqlite import connect
from agents import reviewer


def after_experiment(state: LabState, runtime: Runtime[LabContext]) -> Literal["experiment", "final_evaluation"]:
    """Another dev iteration, until ``max_iterations`` or a stop reason."""
    view = LabView.of(state)
    if view.stop_reason or len(view.experiments) >= runtime.context.config.max_iterations:
        return "final_evaluation"
    return "experiment"


def after_final_evaluation(state: LabState, runtime: Runtime[LabContext]) -> Literal["interpretation", "__end__"]:
    """A run without any report-split result is not a paper: it ends failed, unless asked to publish failures."""
    if LabView.of(state).failure and not runtime.context.config.publish_failures:
        return END
    return "interpretation"


def after_review(state: LabState, runtime: Runtime[LabContext]) -> Literal["revision", "copilot_publish"]:
    """One revision round when the reviewers' mean score is below ``review_threshold``."""
    view = LabView.of(state)
    score = reviewer.mean_score(view.reviews)
    if (not view.revised and not view.stop_reason and score is not None
            and score < runtime.context.config.review_threshold):
        return "revision"
    return "copilot_publish"


def build_graph(checkpointer: SqliteSaver | None = None) -> CompiledStateGraph:
    g = StateGraph(LabState, context_schema=LabContext)
    g.add_node(nodes.literature_review)
    g.add_node(nodes.plan)
    g.add_node(nodes.copilot_plan, destinations=("plan", "dev_baseline"))
    g.add_node(nodes.dev_baseline)
    g.add_node(nodes.experiment)
    g.add_node(nodes.final_evaluation)
    g.add_node(nodes.interpretation)
    g.add_node(nodes.report)
    g.add_node(nodes.review)
    g.add_node(nodes.revision)
    g.add_node(nodes.copilot_publish, destinations=("copilot_publish", "publish", END))
    g.add_node(nodes.publish)

    g.add_edge(START, "literature_review")
    g.add_edge("literature_review", "plan")
    g.add_edge("plan", "copilot_plan")
    g.add_edge("copilot_plan", "dev_baseline")
    g.add_edge("dev_baseline", "experiment")
    g.add_conditional_edges("experiment", after_experiment)
    g.add_conditional_edges("final_evaluation", after_final_evaluation)
    g.add_edge("interpretation", "report")
    g.add_edge("report", "review")
    g.add_conditional_edges("review", after_review)
    g.add_edge("revision", "review")
    g.add_edge("copilot_publish", "publish")
    g.add_edge("publish", END)
    return g.compile(checkpointer=checkpointer)


def checkpointer_for(settings: Settings) -> SqliteSaver:
    conn = connect(settings.workspace / "lab_checkpoints.db")
    saver = SqliteSaver(conn)
    saver.setup()
    return saver
