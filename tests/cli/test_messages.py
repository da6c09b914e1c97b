"""A message the CLI prints (a result, an error, a note) is one line whatever the terminal's width and however long
the paths in it are: a user copies it and a script reads it line by line."""

from __future__ import annotations

import os
import subprocess
import sys

GOALS = "- text: Improve arithmetic accuracy of a small model\n  benchmark: basic_arithmetic\n"


def _agentlab(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "40", "AGENTLAB_WORKSPACE": str(tmp_path / "ws"),
           "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    return subprocess.run([sys.executable, "-m", "agentlab", *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)


def test_results_and_errors_are_one_line_on_a_narrow_terminal_with_a_long_path(tmp_path):
    folder = tmp_path / ("a-checkout-under-a-long-path-" * 4) / "examples"
    folder.mkdir(parents=True)
    goals = folder / "goals.yaml"
    goals.write_text(GOALS)

    r = _agentlab(tmp_path, "goals", "import", "--dry-run", str(goals))
    assert r.returncode == 0, r.stderr
    assert f"{goals}: 1 valid goal(s); nothing added (--dry-run)" in r.stdout.splitlines(), r.stdout
    assert "item 1: would add: Improve arithmetic accuracy of a small model [basic_arithmetic]" in r.stdout.splitlines()

    r = _agentlab(tmp_path, "goals", "import", str(folder / "missing.yaml"))
    assert r.returncode == 1
    assert r.stderr.splitlines() == [f"error: {folder / 'missing.yaml'}: no such file"]
