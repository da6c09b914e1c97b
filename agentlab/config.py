"""Typed configuration with provenance.

Layers, lowest to highest precedence:

    defaults < ~/.config/agentlab/agentlab.toml < ./agentlab.toml (or --config FILE)
             < AGENTLAB_* environment variables < CLI flags

Nested keys use ``__`` in environment variables, e.g. ``AGENTLAB_AGENTS__MODEL=openai/gpt-4o-mini``
or ``AGENTLAB_BUDGETS__MAX_USD=2``. ``load_settings`` returns the validated model together with
where each value came from, so ``agentlab config show`` can explain it.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

from agentlab.errors import AgentlabError

CONFIG_FILE_NAME = "agentlab.toml"
ENV_PREFIX = "AGENTLAB_"


class ConfigError(AgentlabError):
    """A configuration problem a user can fix; the message is one line naming key, source and problem."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AgentsConfig(_Section):
    model: str | None = Field(
        None, description="litellm model string for all agents, or a local .gguf file (served by llama.cpp with "
                          "grammar-constrained JSON); empty = the embedded local model"
    )
    roles: dict[str, str] = Field(default_factory=dict, description="per-role model overrides (same forms)")
    api_base: str | None = Field(None, description="base URL for the agents' model (e.g. a vLLM server)")
    api_key: SecretStr | None = Field(None, description="API key for the agents' model, if not in the provider's env var")
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    context_window: int | None = Field(
        None, ge=512, description="tokens the agents' model reads; empty = litellm's model info, or n_ctx for the "
                                  "embedded model (4096 when unknown); sizes the context agents are given")


class EndpointConfig(_Section):
    """An OpenAI-compatible model under study: served by agentlab (llama.cpp, vllm) or external."""

    engine: Literal["llama.cpp", "vllm", "external"] = "llama.cpp"
    model: str | None = Field(
        None, description="GGUF path (llama.cpp), model id (vllm) or served name (external); empty = embedded"
    )
    url: str | None = Field(None, description="base URL of an external endpoint, e.g. http://host:8000/v1")
    api_key: SecretStr | None = None
    gpus: list[int] = Field(default_factory=list, description="GPU ids for vllm")
    tensor_parallel_size: int = Field(1, ge=1)
    n_ctx: int = Field(4096, ge=256, description="context size of one request for llama.cpp")
    parallel: int | None = Field(
        None, ge=1, le=256, description="llama.cpp slots decoded together (continuous batching); empty = sized "
                                        "from the cores (4 per core, 4 to 16) and n_ctx (parallel * n_ctx <= 65536 "
                                        "tokens of KV cache)")


class ServerConfig(_Section):
    url: str | None = Field(None, description="preprint server URL; empty = a local server started for the run")
    api_key: SecretStr | None = Field(None, description="this lab's API key on the preprint server")


class BudgetConfig(_Section):
    max_usd: float | None = Field(10.0, ge=0, description="agents' LLM spend per run (USD)")
    max_tokens: int | None = Field(None, ge=0, description="agents' LLM tokens per run")
    max_jobs: int = Field(50, ge=1, description="jobs per lab run")
    max_wall_minutes: float | None = Field(None, gt=0, description="wall time per lab run")


class LLMConfig(_Section):
    timeout_s: float = Field(180.0, gt=0, description="per-call timeout")
    max_retries: int = Field(4, ge=0, description="retries on 429, 5xx, timeouts, connection errors")
    backoff_base_s: float = Field(0.5, ge=0)
    backoff_max_s: float = Field(20.0, ge=0)
    structured_retries: int = Field(2, ge=0, description="re-asks when a structured answer fails validation")
    cache: bool = Field(False, description="cache responses in SQLite for reproducible reruns")


class SandboxConfig(_Section):
    """Isolation of agent-written code (package ``sandbox``)."""

    backend: Literal["bubblewrap", "process"] = Field(
        "bubblewrap", description="bubblewrap (isolated) or process (rlimits only, isolates nothing)"
    )
    bwrap_path: str | None = Field(None, description="bwrap executable; empty = found on PATH")
    uid: int = Field(65534, ge=1, description="unprivileged uid sandboxed code runs as when agentlab runs as root")
    gid: int = Field(65534, ge=1)
    drop_privileges: bool = Field(True, description="as root: run sandboxed code as uid/gid, not root")
    use_cgroups: bool = Field(True, description="per-run memory/pids cgroups where writable (else rlimits)")
    env_passthrough: list[str] = Field(
        default_factory=lambda: ["LANG", "LC_ALL", "LC_CTYPE", "TZ", "TERM"],
        description="host environment variables copied into the sandbox (names that look like secrets never are)",
    )
    timeout_s: float = Field(600.0, gt=0, description="default wall-clock limit per run")
    memory_mb: int = Field(2048, ge=16, description="default memory limit per run")
    disk_mb: int = Field(2048, ge=1, description="default workdir size limit per run")
    max_procs: int = Field(256, ge=4, description="default process limit per run")


class JobsConfig(_Section):
    """Job queue and GPU scheduler (package ``agentlab.jobs``)."""

    backend: Literal["local", "ray"] = Field("local", description="local scheduler or a Ray cluster")
    gpus: list[int] | None = Field(
        None, description="GPU ids to schedule on; empty = detected with nvidia-smi; [] = none"
    )
    max_concurrent: int = Field(2, ge=1, description="jobs running at once (local scheduler and across a Ray cluster)")
    cpus: float | None = Field(None, gt=0, description="CPU cores to schedule on; empty = all cores")
    ray_address: str | None = Field(None, description="Ray cluster address (host:port, ray://host:port, auto); "
                                    "empty = the Ray instance running on this machine, else a new local one")
    warm_start: bool = Field(True, description="local scheduler: keep the next evaluation job's sandbox started "
                             "and waiting (its first model request goes out without Python's start-up)")
    warm_idle_s: float = Field(300.0, gt=0, description="an unused waiting sandbox exits after this long (s)")
    max_losses: int = Field(3, ge=1, description="Ray: a job whose node or worker was lost this many times ends "
                            "failed (before that it runs again, a training job from its last checkpoint)")
    node_death_wait_s: float = Field(30.0, ge=0, description="Ray: how long a job killed from outside waits for its "
                                     "node to be declared dead (then it runs again), else it failed on its own (s)")


class GoalsConfig(_Section):
    """The goal queue on the preprint server (labs started with ``--from-queue``)."""

    lease_s: float = Field(300.0, ge=1.0, le=86_400.0, description="a claimed goal returns to the queue this long "
                           "after the lab's last heartbeat (a killed lab's goal comes back then)")
    heartbeat_s: float | None = Field(None, gt=0, description="seconds between heartbeats; empty = a third of lease_s")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid")

    agents: AgentsConfig = Field(default_factory=AgentsConfig)
    model_under_study: EndpointConfig = Field(default_factory=EndpointConfig)
    endpoints: dict[str, EndpointConfig] = Field(
        default_factory=dict, description="further named models under study"
    )
    server: ServerConfig = Field(default_factory=ServerConfig)
    data_dir: Path = Field(
        Path("~/.cache/agentlab/data"), description="benchmark files (math500/test.jsonl, ...)"
    )
    workspace: Path = Field(Path(".agentlab"), description="labs, jobs, ledgers, logs")
    budgets: BudgetConfig = Field(default_factory=BudgetConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    jobs: JobsConfig = Field(default_factory=JobsConfig)
    goals: GoalsConfig = Field(default_factory=GoalsConfig)

    def model_for_role(self, role: str | None) -> str | None:
        """The agents' model for a role: its override, else the default (None = embedded)."""
        if role and role in self.agents.roles:
            return self.agents.roles[role]
        return self.agents.model

    @property
    def db_path(self) -> Path:
        """SQLite file for the usage ledger, response cache and other lab-side records."""
        return self.workspace / "agentlab.db"

    @property
    def jobs_db_path(self) -> Path:
        """SQLite file of the job store every scheduler, lab and `agentlab jobs` command of this workspace shares."""
        return self.workspace / "jobs.db"


# Path-valued keys; relative values in a config file are relative to that file's folder.
_PATH_KEYS = {"data_dir", "workspace"}


def user_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "agentlab" / CONFIG_FILE_NAME


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: invalid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot read: {exc.strerror}") from None
    for key in _PATH_KEYS:
        if isinstance(data.get(key), str):
            p = Path(data[key]).expanduser()
            data[key] = str(p if p.is_absolute() else (path.parent / p))
    return data


def _env_layer() -> dict[str, Any]:
    return EnvSettingsSource(Settings, env_prefix=ENV_PREFIX, env_nested_delimiter="__")()


def _merge(into: dict, layer: dict, source: str, sources: dict[str, str], prefix: str = "") -> None:
    for key, value in layer.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value, source, sources, dotted + ".")
        elif isinstance(value, dict):
            into[key] = {}
            _merge(into[key], value, source, sources, dotted + ".")
            sources.setdefault(dotted, source)
        else:
            into[key] = value
            sources[dotted] = source
            # a leaf replaces any deeper provenance below it
            for k in [k for k in sources if k.startswith(dotted + ".")]:
                sources[k] = source


def _source_of(loc: str, sources: dict[str, str]) -> str:
    parts = loc.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in sources:
            return sources[".".join(parts[:i])]
    return "defaults"


def load_settings(
    config_file: Path | None = None,
    overrides: dict[str, Any] | None = None,
    with_sources: bool = False,
) -> Settings | tuple[Settings, dict[str, str]]:
    """Load and validate the effective configuration.

    ``overrides`` are CLI flags, as a nested dict (``{"agents": {"model": "..."}}``) or dotted keys.
    """
    layers: list[tuple[str, dict[str, Any]]] = []
    if config_file is not None:
        if not config_file.exists():
            raise ConfigError(f"config file {config_file}: not found")
        layers.append((str(config_file), _read_toml(config_file)))
    else:
        for path in (user_config_path(), Path.cwd() / CONFIG_FILE_NAME):
            if path.is_file():
                layers.append((str(path), _read_toml(path)))
    try:
        env = _env_layer()
    except Exception as exc:  # pydantic-settings raises on malformed JSON in complex env values
        raise ConfigError(f"environment ({ENV_PREFIX}*): {exc}") from None
    layers.append(("env", env))
    if overrides:
        layers.append(("cli", _nest(overrides)))

    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for source, layer in layers:
        _merge(merged, layer, source, sources)
    try:
        # init kwargs only: the env layer was already merged above, with provenance
        settings = Settings.model_validate(merged)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(f"invalid config: {loc} (from {_source_of(loc, sources)}): {err['msg']}{more}") from None
    settings.data_dir = settings.data_dir.expanduser()
    settings.workspace = settings.workspace.expanduser()
    return (settings, sources) if with_sources else settings


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        if value is None:
            continue
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        if isinstance(value, dict):
            node.setdefault(parts[-1], {}).update(value)
        else:
            node[parts[-1]] = value
    return out


def flatten(settings: Settings) -> dict[str, Any]:
    """Dotted key -> value for display; secrets stay SecretStr (masked when printed)."""
    out: dict[str, Any] = {}

    def walk(obj: Any, prefix: str) -> None:
        if isinstance(obj, BaseModel):
            for name in type(obj).model_fields:
                walk(getattr(obj, name), f"{prefix}{name}.")
        elif isinstance(obj, dict) and obj:
            for k, v in obj.items():
                walk(v, f"{prefix}{k}.")
        else:
            out[prefix.rstrip(".")] = obj

    walk(settings, "")
    return out
