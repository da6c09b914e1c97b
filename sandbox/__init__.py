"""Isolated execution of untrusted, agent-written code."""
