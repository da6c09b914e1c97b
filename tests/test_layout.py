"""The dependency direction of the house: ``sandbox/`` and ``preprint_server/`` import nothing from the
lab core (``agentlab``) or the agent roles (``agents``). The core depends on them, never the reverse."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOWER_PACKAGES = ("sandbox", "preprint_server")
UPPER_PACKAGES = ("agentlab", "agents")
ENTRY_MODULES = ("sandbox", "sandbox.executor", "sandbox.proxy", "preprint_server.app", "preprint_server.client",
                 "preprint_server.serve")


def is_upper(module: str) -> bool:
    return any(module == top or module.startswith(top + ".") for top in UPPER_PACKAGES)


def imported_names(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) of every absolute import anywhere in the tree (inside functions too), including
    ``importlib.import_module("...")`` and ``__import__("...")`` with a literal name."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value))
    return found


def upward_imports(package: str) -> list[str]:
    out = []
    for path in sorted((REPO / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        out += [f"{path.relative_to(REPO)}:{line}: {name}" for line, name in imported_names(tree) if is_upper(name)]
    return out


def test_lower_packages_import_nothing_from_the_core():
    for package in LOWER_PACKAGES:
        assert list((REPO / package).rglob("*.py")), f"no Python files under {package}/"
        assert upward_imports(package) == [], f"{package}/ must not import agentlab or agents"


def test_the_scan_sees_imports_inside_functions():
    tree = ast.parse("def f():\n    from agentlab.config import load_settings\n    import agents.base\n"
                     "    importlib.import_module('agentlab.sqlite')\n")
    assert [name for _, name in imported_names(tree) if is_upper(name)] == [
        "agentlab.config", "agents.base", "agentlab.sqlite"]


def test_importing_lower_packages_loads_no_core_module():
    code = (
        "import importlib, json, sys\n"
        f"for name in {list(ENTRY_MODULES)!r}:\n"
        "    importlib.import_module(name)\n"
        f"tops = {UPPER_PACKAGES!r}\n"
        "print(json.dumps(sorted(m for m in sys.modules if m in tops or m.startswith(tuple(t + '.' for t in tops)))))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                       check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1]) == [], "importing sandbox/preprint_server loaded these"


# -- functions you can read at once; settings loaded only by the CLI ---------------------------------

CODE_PACKAGES = ("agentlab", "agents", "sandbox", "preprint_server")
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 500, 100


def python_files(*packages: str) -> list[Path]:
    return [p for package in packages for p in sorted((REPO / package).rglob("*.py"))]


def test_no_module_over_500_lines_and_no_function_over_100():
    too_long = []
    for path in python_files(*CODE_PACKAGES):
        text = path.read_text()
        if text.count("\n") > MAX_MODULE_LINES:
            too_long.append(f"{path.relative_to(REPO)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}(): {length} lines")
    assert too_long == [], "split these so a reader sees them at once"


def test_only_the_cli_loads_settings():
    """Everything below the CLI receives a typed ``Settings`` (or the values it needs) instead of reading
    the config files and environment itself."""
    allowed = {REPO / "agentlab" / "config.py"}
    callers = []
    for path in python_files(*CODE_PACKAGES):
        if path in allowed or (REPO / "agentlab" / "cli") in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Name) and node.id == "load_settings" or (
                    isinstance(node, ast.alias) and node.name == "load_settings"):
                callers.append(f"{path.relative_to(REPO)}:{getattr(node, 'lineno', '?')}")
    assert callers == [], "pass Settings down from the CLI instead"
