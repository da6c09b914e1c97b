"""JobSpec: what to run (a sandboxed command, Python code, or a registered callable), with what resources."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sandbox.types import ProxyConfig

JobKind = Literal["eval", "train", "script"]
JobState = Literal["queued", "running", "succeeded", "failed", "cancelled", "timed_out"]
TERMINAL = ("succeeded", "failed", "cancelled", "timed_out")


class Resources(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gpus: int = Field(0, ge=0, description="number of GPUs (a disjoint set is assigned)")
    cpus: float = Field(1.0, gt=0, description="CPU cores reserved for scheduling")
    memory_mb: int = Field(2048, ge=16)
    timeout_s: float = Field(600.0, gt=0, description="wall clock")
    cpu_s: float | None = Field(None, gt=0, description="total CPU seconds; default = no separate limit")
    disk_mb: int = Field(2048, ge=1)
    max_procs: int = Field(256, ge=4)


class JobSpec(BaseModel):
    """One job. Exactly one entry: ``command`` (argv), ``code`` (Python source) or ``target``.

    ``target`` is ``"package.module:function"``: the function is called with ``**args`` (JSON) in a
    sandboxed subprocess (``python -m agentlab.jobs.sandbox_entry``) and its JSON-serializable return value
    becomes the job's result. Commands and code may write a result too: JSON to ``$AGENTLAB_RESULT``.
    """

    model_config = ConfigDict(extra="forbid")

    kind: JobKind = "script"
    name: str = ""
    lab: str = "default"
    run_id: str | None = None
    command: list[str] | None = None
    code: str | None = None
    target: str | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    files: dict[str, str] = Field(default_factory=dict, description="written into the workdir first")
    env: dict[str, str] = Field(default_factory=dict)
    network: Literal["none", "proxy", "host"] = "none"
    proxy: ProxyConfig | None = Field(None, description="model endpoint + budget when network='proxy'")
    ro_binds: dict[str, str] = Field(default_factory=dict, description="host path -> read-only path inside")
    resources: Resources = Field(default_factory=Resources)

    @model_validator(mode="after")
    def _one_entry(self) -> JobSpec:
        given = [n for n in ("command", "code", "target") if getattr(self, n)]
        if len(given) != 1:
            raise ValueError("a job needs exactly one of command, code or target")
        if self.target is not None:
            mod, _, fn = self.target.partition(":")
            if not mod or not fn or not all(p.isidentifier() for p in mod.split(".") + [fn]):
                raise ValueError(f"target must look like 'package.module:function', not {self.target!r}")
        if self.network == "proxy" and self.proxy is None:
            raise ValueError("network='proxy' needs proxy (endpoint and budget)")
        return self

    def public_json(self) -> str:
        """The spec as stored: never the proxy's API key."""
        return self.model_dump_json(exclude={"proxy": {"api_key"}})


class Job(BaseModel):
    """A job as recorded in the store."""

    id: str
    seq: int
    spec: JobSpec
    state: JobState
    gpus: list[int] = Field(default_factory=list)
    submitted_at: float = Field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    killed_by: str | None = None
    error: str | None = None
    result: Any = None
    workdir: str | None = None
    log_dir: str | None = None
    scheduler_id: str | None = None
    submitted_by: str | None = None  # the scheduler that queued it (it runs its own jobs; others only orphans)
    attempt: int = 1
    retry_of: str | None = None
    cancel_requested: bool = False
    wall_s: float | None = None
    cpu_s: float | None = None
    peak_rss_mb: float | None = None

    @property
    def lab(self) -> str:
        return self.spec.lab

    def stderr_tail(self, chars: int = 1500) -> str:
        """The end of the job's stderr (what the agents see when it failed)."""
        if not self.log_dir:
            return ""
        try:
            with open(Path(self.log_dir) / "stderr.log", "rb") as fh:
                fh.seek(0, 2)
                fh.seek(max(0, fh.tell() - chars))
                return fh.read().decode("utf-8", "replace").strip()
        except OSError:
            return ""

    @property
    def done(self) -> bool:
        return self.state in TERMINAL
