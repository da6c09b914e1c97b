"""Errors of the evaluation harness; each message names the fix."""

from __future__ import annotations

from agentlab.errors import AgentlabError


class EvalError(AgentlabError):
    """An evaluation could not run or continue; the message names the fix."""


class EndpointError(EvalError):
    """The model endpoint is down or failing; the run is saved and can be resumed."""


class RequestFailed(Exception):
    """One request failed for a non-transient reason (e.g. HTTP 400): the problem counts as wrong."""
