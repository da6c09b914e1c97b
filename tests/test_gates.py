"""The gate of tests/conftest.py: a test that needs a missing component is skipped with the fix as the
reason, and under CI=true (where ``make test`` must have installed everything) it fails instead."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import COMPONENTS, Component, require

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def gone(monkeypatch):
    """A component that is never installed."""
    monkeypatch.setitem(COMPONENTS, "gone", Component("the gone tool", lambda: False, "apt-get install gone"))
    return "gone"


@pytest.mark.parametrize("ci", ["true", "1", "yes"])
def test_a_missing_component_fails_under_ci(gone, monkeypatch, ci):
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match=r"CI=true.*needs the gone tool, which is missing: apt-get install gone"):
        require(gone)


@pytest.mark.parametrize("ci", [None, "", "false", "0"])
def test_a_missing_component_skips_outside_ci(gone, monkeypatch, ci):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception, match="needs the gone tool, which is missing: apt-get install gone"):
        require(gone)


def test_present_components_pass_and_an_unknown_name_is_an_error(monkeypatch):
    monkeypatch.setitem(COMPONENTS, "here", Component("a tool", lambda: True, "nothing to do"))
    monkeypatch.setenv("CI", "true")
    require("here")
    with pytest.raises(pytest.fail.Exception, match=r"unknown component.*'bwrap'"):
        require("bwrap")  # a typo must not pass silently


def test_every_component_names_its_fix():
    for name, component in COMPONENTS.items():
        assert component.what and component.fix, name
        assert isinstance(component.present(), bool), name


def _run_gated_test(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess:
    """A one-test session with this conftest as a plugin, needing bubblewrap, with no bwrap on PATH."""
    (tmp_path / "test_gated.py").write_text(
        "import pytest\n\n@pytest.mark.requires('bubblewrap')\ndef test_in_the_sandbox():\n    pass\n")
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    env = {"PATH": str(empty_bin), "PYTHONPATH": str(REPO), "HOME": str(tmp_path)}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-ra", "-p", "no:cacheprovider", "-p", "tests.conftest",
                           "-c", str(REPO / "pyproject.toml"), "--rootdir", str(tmp_path), str(tmp_path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)


def test_the_mark_fails_the_test_under_ci_without_bubblewrap(tmp_path):
    r = _run_gated_test(tmp_path, ci="true")
    assert r.returncode == 1, r.stdout[-2000:]
    assert "1 error" in r.stdout and "needs bubblewrap (the sandbox), which is missing" in r.stdout
    assert "apt-get install -y bubblewrap" in r.stdout


def test_the_mark_skips_the_test_without_ci(tmp_path):
    r = _run_gated_test(tmp_path, ci=None)
    assert r.returncode == 0, r.stdout[-2000:]
    assert "1 skipped" in r.stdout and "SKIPPED" in r.stdout  # -ra lists it with the reason
    assert "needs bubblewrap (the sandbox), which is missing: sudo apt-get install -y bubblewrap" in r.stdout
