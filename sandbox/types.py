"""Value types of the sandbox: limits, the result of a run, the model-proxy settings, errors."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Network = Literal["none", "proxy", "host"]
KilledBy = Literal["wall_timeout", "cpu", "memory", "disk", "cancelled", "output"]


class SandboxError(Exception):
    """The sandbox could not start a run (bad input, missing bubblewrap, ...): a user-fixable problem,
    so the agentlab CLI prints its message as one line."""


class BubblewrapMissing(SandboxError):
    """bubblewrap is not installed or the configured path does not exist."""


class Limits(BaseModel):
    """Resource limits of one run. ``None`` for ``cpu_s`` means: the wall-clock timeout."""

    model_config = ConfigDict(extra="forbid")

    timeout_s: float = Field(60.0, gt=0, description="wall clock; the whole process tree is killed after it")
    cpu_s: float | None = Field(None, gt=0, description="CPU seconds (all processes together where cgroups allow)")
    memory_mb: int = Field(1024, ge=16, description="cgroup memory limit; RLIMIT_AS where no cgroup is writable")
    disk_mb: int = Field(1024, ge=1, description="bytes the run may leave in its workdir")
    tmp_mb: int = Field(256, ge=1, description="size of the private /tmp (tmpfs, counts as memory)")
    max_procs: int = Field(128, ge=4, description="processes/threads (pids cgroup, else RLIMIT_NPROC)")
    max_open_files: int = Field(256, ge=16)
    max_file_mb: int | None = Field(None, ge=1, description="largest single file (RLIMIT_FSIZE); default disk_mb")
    address_space_mb: int | None = Field(
        None, ge=64, description="RLIMIT_AS in addition to the cgroup limit (never applied to GPU runs)"
    )
    max_log_mb: float = Field(16.0, gt=0, description="stdout and stderr each kept on disk up to this size")
    tail_chars: int = Field(4000, ge=0, description="characters of stdout/stderr returned in the Result")

    @property
    def effective_cpu_s(self) -> float:
        return self.cpu_s if self.cpu_s is not None else self.timeout_s


class ProxyConfig(BaseModel):
    """The metered model proxy for one run: where it forwards to and how much it lets through."""

    model_config = ConfigDict(extra="forbid")

    upstream: str = Field(..., description="OpenAI-compatible base URL ending in /v1, e.g. http://127.0.0.1:8080/v1")
    api_key: str | None = Field(None, repr=False, description="added on the host side; never enters the sandbox")
    max_requests: int | None = Field(100, ge=0)
    max_tokens: int | None = Field(200_000, ge=0, description="prompt + completion tokens over the whole run")
    allowed_models: list[str] | None = Field(None, description="refuse other model names; None = any")
    default_model: str | None = Field(None, description="filled in when a request names no model")
    timeout_s: float = Field(300.0, gt=0, description="per upstream request; also the longest a request waits"
                                                       " for requests in flight to give budget back")
    job_id: str | None = Field(None, description="attribution in the call log")
    ledger_path: Path | None = Field(None, description="SQLite file for the call log; None = JSONL beside the logs")


class ProxyUsage(BaseModel):
    requests: int = 0
    refused: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Result(BaseModel):
    """What a run did. ``exit_code`` follows the shell: 128+N when killed by signal N."""

    exit_code: int
    signal: int | None = None
    stdout_tail: str = ""
    stderr_tail: str = ""
    stdout_path: Path
    stderr_path: Path
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    workdir: Path
    artifacts_dir: Path
    artifacts: list[str] = Field(default_factory=list, description="regular files left in the workdir (relative)")
    wall_s: float
    cpu_s: float
    peak_rss_mb: float | None = None
    timed_out: bool = False
    killed_by: KilledBy | None = None
    limit_message: str | None = Field(None, description="which limit ended the run, e.g. 'memory limit 512 MB'")
    backend: str
    isolation: list[str] = Field(default_factory=list, description="mechanisms that were active")
    proxy_usage: ProxyUsage | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.killed_by is None
