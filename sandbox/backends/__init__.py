"""Sandbox backends: each turns a prepared run into the argv that the launcher executes."""

from sandbox.backends.bubblewrap import BubblewrapBackend
from sandbox.backends.process import ProcessBackend

__all__ = ["BubblewrapBackend", "ProcessBackend"]
