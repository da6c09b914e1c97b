"""The agent roles depend on a narrow interface: the gateway, the technique schema and the typed views of the lab's
state (``agentlab.lab.models``, ``agentlab.lab.view``), nothing else of agentlab."""

from __future__ import annotations

import ast
from pathlib import Path

AGENTS = Path(__file__).resolve().parents[2] / "agents"
ALLOWED = {"agentlab.llm.gateway", "agentlab.techniques", "agentlab.lab.models", "agentlab.lab.view"}


def _agentlab_imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        out.update(n for n in names if n == "agentlab" or n.startswith("agentlab."))
    return out


def test_agents_import_only_the_gateway_techniques_and_the_state_views():
    files = sorted(AGENTS.glob("*.py"))
    assert files
    found = {f.name: _agentlab_imports(f) - ALLOWED for f in files}
    assert not {k: v for k, v in found.items() if v}, found
