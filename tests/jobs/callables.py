"""Callables used as job targets in tests (imported inside the sandbox by agentlab.jobs.sandbox_entry)."""


def add(a, b):
    return {"sum": a + b}


def boom():
    raise ValueError("harness exploded")
