"""Errors of agent LLM calls; each message names the cause and the fix."""

from __future__ import annotations

from agentlab.errors import AgentlabError


class GatewayError(AgentlabError):
    """An agent call failed in a way the user can fix; the message names the cause and the fix."""


class BudgetExceeded(GatewayError):
    pass


class StructuredOutputError(GatewayError):
    """The model never produced a valid object within the re-ask bound."""

    def __init__(self, message: str, last_text: str = ""):
        super().__init__(message)
        self.last_text = last_text
