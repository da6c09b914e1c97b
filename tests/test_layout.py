"""The dependency direction of the house: ``sandbox/`` and ``preprint_server/`` import nothing from the
lab core (``agentlab``) or the agent roles (``agents``). The core depends on them, never the reverse."""

from __future__ import annotations

import ast
import json
import os
import re
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


# -- jobs know no evaluation: agentlab.eval depends on agentlab.jobs, never the reverse ------------------

def imports_of(directory: Path, forbidden: str) -> list[str]:
    """``file:line: module`` for every import of ``forbidden`` (or a submodule) by a module under ``directory``."""
    out = []
    for path in sorted(directory.rglob("*.py")):
        for line, name in imported_names(ast.parse(path.read_text(), filename=str(path))):
            if name == forbidden or name.startswith(forbidden + "."):
                out.append(f"{path.name}:{line}: {name}")
    return out


def test_jobs_import_nothing_from_eval():
    """The schedulers get evaluation's completion cache as a hook (``agentlab.jobs.cache_hooks``)."""
    assert imports_of(REPO / "agentlab" / "jobs", "agentlab.eval") == [], \
        "agentlab/jobs must not import agentlab.eval: register a hook from agentlab.eval instead"


def test_the_jobs_rule_sees_a_lazy_import_of_eval(tmp_path):
    (tmp_path / "execute.py").write_text(  # the shape of the import the rule forbids: inside a function
        "def job_cache(spec, workspace):\n    from agentlab.eval.shared_cache import JobCache\n"
        "    return JobCache.for_job(spec, workspace)\n")
    assert imports_of(tmp_path, "agentlab.eval") == ["execute.py:2: agentlab.eval.shared_cache"]


# -- the rest of the preprint server enters the search engine through preprint_server.search only ---------

SEARCH_PACKAGE = REPO / "preprint_server" / "search"


def search_internals_imported(source: str) -> list[tuple[int, str]]:
    """(line, module) of every import in `source` that reaches past ``preprint_server.search`` (its
    ``__init__``, the entry point) into one of its modules."""
    modules = {p.stem for p in SEARCH_PACKAGE.glob("*.py")} - {"__init__"}
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module == "preprint_server.search":
            names = [f"{node.module}.{alias.name}" for alias in node.names]  # a module among the names?
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [(node.lineno, name) for name in names
                  if name.startswith("preprint_server.search.") and name.split(".")[2] in modules]
    return found


def test_the_server_enters_search_through_its_entry_point_only():
    outside = [p for p in sorted((REPO / "preprint_server").rglob("*.py")) if SEARCH_PACKAGE not in p.parents]
    assert outside and (SEARCH_PACKAGE / "__init__.py").exists()
    reaching_in = [f"{p.relative_to(REPO)}:{line}: {name}" for p in outside
                   for line, name in search_internals_imported(p.read_text())]
    assert reaching_in == [], "import these from preprint_server.search (add them to its __init__ if needed)"


def test_the_search_rule_sees_submodule_imports_in_any_form():
    source = ("from preprint_server.search import SearchIndex, index\n"
              "from preprint_server.search.embedding import Embedder\n"
              "def f():\n    import preprint_server.search.gate\n")
    assert search_internals_imported(source) == [
        (1, "preprint_server.search.index"), (2, "preprint_server.search.embedding"), (4, "preprint_server.search.gate")]


# -- the CLI: its command modules stand alone and start at once; no one outside imports its private helpers --

CLI_PACKAGE = REPO / "agentlab" / "cli"
COMMAND_MODULE = re.compile(r"agentlab\.cli\.\w+_cmd")
# what commands run on, imported only when they run: `agentlab --help` must not wait seconds for them
HEAVY_MODULES = ("litellm", "langgraph", "torch", "transformers", "chromadb", "ray")
HEAVY_AGENTLAB_MODULES = ("agentlab.llm.gateway", "agentlab.lab.run", "agentlab.lab.graph", "agentlab.lab.parallel")


def from_imports(source: str) -> list[tuple[int, str, str]]:
    """(line, module, name) of every absolute import anywhere in ``source``: ``from module import name``, or
    ``import module`` with an empty name."""
    found: list[tuple[int, str, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, "") for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [(node.lineno, node.module, alias.name) for alias in node.names]
    return found


def command_modules_imported(source: str) -> list[str]:
    """The CLI command modules (``agentlab/cli/*_cmd.py``) that ``source`` imports, in any form."""
    return [target for _, module, name in from_imports(source) for target in (module, f"{module}.{name}")
            if COMMAND_MODULE.fullmatch(target)]


def private_cli_imports(source: str) -> list[tuple[int, str, str]]:
    """The imports in ``source`` of a private (``_``-prefixed) name or module of ``agentlab.cli``."""
    return [(line, module, name) for line, module, name in from_imports(source)
            if (module + ".").startswith("agentlab.cli.")
            and any(part.startswith("_") for part in [*module.split("."), name] if part)]


def test_cli_command_modules_import_no_other_command_module():
    """No two CLI modules import each other: a command module (``lab_cmd``, ``labs_cmd``...) imports no other one,
    and what two commands share lives in a helper of the CLI (``common``, ``lab_view``, ``labs_view``,
    ``eval_run``) or in the library. Only the package's ``__init__`` imports the commands, to register them."""
    crossing = []
    for path in sorted(CLI_PACKAGE.glob("*.py")):
        if path.name != "__init__.py":
            crossing += [f"{path.relative_to(REPO)}: {target}" for target in command_modules_imported(path.read_text())
                         if target != f"agentlab.cli.{path.stem}"]
    assert crossing == [], "move what both commands use into a helper module or the library"


def test_benchmarks_and_tests_import_no_private_cli_name():
    found = []
    for path in python_files("benchmarks", "tests"):
        rel = str(path.relative_to(REPO))
        found += [f"{rel}:{line}: {module} {name}" for line, module, name in private_cli_imports(path.read_text())]
    assert found == [], "import these from the library (agentlab.lab.launch, agentlab.lab.launch_many, ...)"


def test_the_cli_scans_see_every_import_form():
    source = ("from agentlab.cli import lab_cmd, common\nimport agentlab.cli.labs_cmd\n"
              "def f():\n    from agentlab.cli.eval_cmd import _csv, run\n    from agentlab.cli._x import y\n")
    assert command_modules_imported(source) == ["agentlab.cli.lab_cmd", "agentlab.cli.labs_cmd",
                                                "agentlab.cli.eval_cmd", "agentlab.cli.eval_cmd"]
    assert private_cli_imports(source) == [(4, "agentlab.cli.eval_cmd", "_csv"), (5, "agentlab.cli._x", "y")]


CLI_START = """
import json, sys
from typer.testing import CliRunner
from agentlab.cli import app
for args in {commands!r}:
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, (args, r.output)
heavy = {heavy!r}
print(json.dumps(sorted(m for m in sys.modules if m in heavy or m.split(".")[0] in heavy)))
"""


def test_the_cli_starts_without_the_heavy_modules(tmp_path):
    """`agentlab --help`, a group's or a command's help and `config show` load none of litellm, LangGraph, torch,
    transformers, Chroma, Ray, the gateway or the lab's graph: they are imported by the commands that run on them."""
    commands = [["--help"], ["lab", "start", "--help"], ["labs", "run", "--help"], ["report", "check", "--help"],
                ["goals", "list", "--help"], ["papers", "search", "--help"], ["techniques", "pull", "--help"],
                ["eval", "run", "--help"], ["config", "show"]]
    code = CLI_START.format(commands=commands, heavy=[*HEAVY_MODULES, *HEAVY_AGENTLAB_MODULES])
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "xdg"), "AGENTLAB_WORKSPACE": str(tmp_path / "ws")}
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=300, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout.strip().splitlines()[-1]) == [], "the CLI's start imported these: import them lazily"
