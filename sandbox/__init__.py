"""Isolated execution of untrusted, agent-written code.

    from sandbox import run, Limits
    r = run(code="print(6 * 7)", limits=Limits(timeout_s=10, memory_mb=256))
    r.exit_code, r.stdout_tail, r.killed_by

Backends: ``bubblewrap`` (default; namespaces, read-only root, only the workdir writable) and
``process`` (rlimits only; isolates nothing and says so). See docs/sandbox_and_jobs.md.
"""

from sandbox.executor import SandboxOptions, run
from sandbox.types import BubblewrapMissing, Limits, ProxyConfig, ProxyUsage, Result, SandboxError
from sandbox.workdir import list_artifacts, read_workdir_file

__all__ = [
    "BubblewrapMissing",
    "Limits",
    "ProxyConfig",
    "ProxyUsage",
    "Result",
    "SandboxError",
    "SandboxOptions",
    "list_artifacts",
    "read_workdir_file",
    "run",
]
