"""The base of every error a user can fix: the CLI prints its message as one line, no traceback."""


class AgentlabError(Exception):
    """A user-fixable problem; the message names the cause and the fix."""
