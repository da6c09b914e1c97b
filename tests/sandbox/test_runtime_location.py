"""The sandbox runs this Python runtime wherever it lives: a venv under /tmp is bound on top of the
sandbox's private /tmp, not hidden by it (a checkout under /tmp once failed every job)."""

from __future__ import annotations

import json
import site
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.requires("bubblewrap")


def test_a_venv_under_tmp_runs_in_the_sandbox(tmp_path):
    assert str(tmp_path).startswith("/tmp/")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    # the host side imports sandbox from this checkout and its dependencies from the project's venv
    env = {"PYTHONPATH": f"{REPO}:{':'.join(site.getsitepackages())}", "PATH": "/usr/bin:/bin"}
    code = ("import json, sandbox\n"
            "r = sandbox.run(code='import sys; print(sys.prefix)', limits=sandbox.Limits(timeout_s=120))\n"
            "print(json.dumps({'exit': r.exit_code, 'out': r.stdout_tail, 'err': r.stderr_tail}))\n")
    out = subprocess.run([str(python), "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["exit"] == 0, res["err"]
    assert res["out"].strip() == str(venv)  # the sandboxed program ran on the venv under /tmp
