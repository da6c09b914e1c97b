"""Every file in examples/ works as shipped: configs parse with the project's loader, technique specs
validate, goals files import into a real preprint server on loopback (and a bad one adds nothing)."""

from __future__ import annotations

import sys
import tomllib

import pytest
from typer.testing import CliRunner

from agentlab.cli import app
from agentlab.cli.common import state
from agentlab.config import load_settings
from agentlab.lab.goals_file import read_goals_file
from agentlab.techniques import TechniqueSpec, get_technique
from tests.conftest import REPO

EXAMPLES = REPO / "examples"
CONFIGS = sorted((EXAMPLES / "configs").glob("*.toml"))
TECHNIQUES = sorted((EXAMPLES / "techniques").glob("*.yaml"))
GOALS = sorted([*(EXAMPLES / "goals").glob("*.yaml"), *(EXAMPLES / "goals").glob("*.jsonl")])


def _cli(args: list[str]):
    state._settings = None  # settings are cached per process; each invocation reads the env afresh
    return CliRunner().invoke(app, args)


@pytest.fixture(autouse=True)
def _fresh_cli_settings():
    yield
    state._settings = None


def test_the_examples_exist_and_the_readme_names_each_file():
    assert {p.stem for p in CONFIGS} >= {"openai", "anthropic", "vllm-gpus", "shared-server"}
    assert TECHNIQUES and any(p.suffix == ".jsonl" for p in GOALS) and any(p.suffix == ".yaml" for p in GOALS)
    readme = (EXAMPLES / "README.md").read_text()
    for path in [*CONFIGS, *TECHNIQUES, *GOALS]:
        assert str(path.relative_to(EXAMPLES)) in readme, f"examples/README.md does not mention {path.name}"


# -- configs --------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_parses_with_the_settings_loader(path, workspace):
    settings = load_settings(config_file=path)
    assert settings.agents.model  # every example names the agents' model
    assert not _keys_named("api_key", tomllib.loads(path.read_text())), "secrets belong in env vars, not files"
    assert _cli(["--config", str(path), "config", "show"]).exit_code == 0


def _keys_named(name: str, table: dict, prefix: str = "") -> list[str]:
    found = []
    for key, value in table.items():
        if key == name:
            found.append(prefix + key)
        if isinstance(value, dict):
            found += _keys_named(name, value, f"{prefix}{key}.")
    return found


def test_configs_say_what_their_names_promise(workspace, monkeypatch):
    cfg = {p.stem: p for p in CONFIGS}
    vllm = load_settings(config_file=cfg["vllm-gpus"]).model_under_study
    assert (vllm.engine, vllm.gpus, vllm.tensor_parallel_size) == ("vllm", [0, 1], 2)
    assert load_settings(config_file=cfg["openai"]).agents.model.startswith("openai/")
    assert load_settings(config_file=cfg["anthropic"]).agents.model.startswith("anthropic/")
    monkeypatch.setenv("AGENTLAB_SERVER__API_KEY", "alk_from_env")
    shared, sources = load_settings(config_file=cfg["shared-server"], with_sources=True)
    assert shared.server.url and shared.server.api_key.get_secret_value() == "alk_from_env"
    assert sources["server.api_key"] == "env" and sources["server.url"] == str(cfg["shared-server"])


# -- techniques -----------------------------------------------------------------------------------

@pytest.mark.parametrize("path", TECHNIQUES, ids=lambda p: p.name)
def test_technique_spec_validates_and_the_cli_loads_it(path, workspace):
    spec = TechniqueSpec.load(path)
    assert get_technique(str(path)) == spec  # the loader behind `eval run --technique FILE`
    r = _cli(["techniques", "show", str(path)])
    assert r.exit_code == 0, r.output
    assert f"spec_hash: {spec.spec_hash()}" in r.output


def test_the_custom_technique_plans_votes_and_refines():
    spec = TechniqueSpec.load(EXAMPLES / "techniques" / "plan_solve_vote_refine.yaml")
    assert [s.name for s in spec.steps] == ["plan"] and "{plan}" in spec.template
    assert spec.chains.n > 1 and spec.chains.aggregation == "majority"
    assert spec.refine is not None and spec.refine.rounds == 1


# -- goals ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def preprint(tmp_path_factory):
    """A real preprint server on loopback and one lab key."""
    from preprint_server import crud
    from preprint_server.core.config import ServerSettings
    from preprint_server.db import Database
    from preprint_server.search import default_embedder
    from preprint_server.serve import start_local_server

    data = tmp_path_factory.mktemp("preprints")
    db = Database(ServerSettings(data_dir=data).db_path)
    try:
        key = crud.create_key(db, "examples-lab")
    finally:
        db.engine.dispose()
    url, stop = start_local_server(data, embedder=default_embedder())
    yield url, key
    stop()


@pytest.fixture
def server_env(preprint, workspace, monkeypatch):
    from preprint_server.client import PreprintClient

    url, key = preprint
    monkeypatch.setenv("AGENTLAB_SERVER__URL", url)
    monkeypatch.setenv("AGENTLAB_SERVER__API_KEY", key)
    with PreprintClient(url, key) as client:
        yield client


def _goal_keys(goals) -> set[tuple]:
    return {(g.text, g.benchmark, g.baseline) for g in goals}


def test_every_goals_file_imports_and_lists_back(server_env):
    expected: set[tuple] = set()
    for path in GOALS:
        r = _cli(["goals", "import", str(path)])
        assert r.exit_code == 0, r.output
        expected |= _goal_keys(read_goals_file(path))
    listed = server_env.list_goals()
    assert _goal_keys(listed) == expected and len(listed) == len(expected)
    assert any(g.baseline == 0.702 and g.benchmark == "math500" for g in listed)
    r = _cli(["goals", "list"])
    assert r.exit_code == 0 and "gsm8k" in r.output  # the baseline is in `goals show` and the API (above)
    # importing the same file again adds nothing twice
    r = _cli(["goals", "import", str(GOALS[0])])
    assert r.exit_code == 0 and "0 goal(s) added" in r.output
    assert len(server_env.list_goals()) == len(expected)


BAD_GOALS = [
    ("bad.yaml", ("- text: A good goal that must not be added\n  benchmark: gsm8k\n"
                  "- text: Beat the baseline\n  benchmark: math500\n  baseline: 70.2\n"),
     "bad.yaml: item 2: baseline: Input should be less than or equal to 1"),
    ("bad.jsonl", '{"text": "A good goal that must not be added"}\n\n{"text": "x", "deadline": "May"}\n',
     "bad.jsonl: item 2 (line 3): unknown field 'deadline'"),
    ("typo.yaml", "- text: Improve MATH-500\n  benchmark: math-500\n",
     "typo.yaml: item 1: benchmark: unknown benchmark 'math-500'"),
]


@pytest.mark.parametrize("name,content,message", BAD_GOALS, ids=[b[0] for b in BAD_GOALS])
def test_a_bad_goals_file_is_rejected_in_one_line_and_adds_nothing(name, content, message, server_env,
                                                                   tmp_path, monkeypatch, capsys):
    from agentlab.cli import main

    before = len(server_env.list_goals())
    bad = tmp_path / name
    bad.write_text(content)
    monkeypatch.setattr(sys, "argv", ["agentlab", "goals", "import", str(bad)])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert len(server_env.list_goals()) == before


def test_a_server_refusal_says_how_many_goals_went_in(server_env, tmp_path, monkeypatch, capsys):
    from agentlab.cli import main

    goals = tmp_path / "goals.yaml"
    goals.write_text("- text: A goal the server refuses\n  benchmark: gsm8k\n")
    monkeypatch.setenv("AGENTLAB_SERVER__API_KEY", "not-a-key")  # reads are public, adding needs a valid key
    monkeypatch.setattr(sys, "argv", ["agentlab", "goals", "import", str(goals)])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "goals.yaml: item 1:" in err and "0 goal(s) added before it" in err, err


def test_dry_run_validates_without_adding(server_env):
    before = len(server_env.list_goals())
    r = _cli(["goals", "import", "--dry-run", str(EXAMPLES / "goals" / "math500.yaml")])
    assert r.exit_code == 0 and "3 valid goal(s); nothing added" in r.output
    assert len(server_env.list_goals()) == before
