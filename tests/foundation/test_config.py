import pytest
from typer.testing import CliRunner

from agentlab.cli import app
from agentlab.config import ConfigError, load_settings


def test_defaults(workspace):
    s = load_settings()
    assert s.agents.model is None  # embedded model
    assert s.model_under_study.engine == "llama.cpp"
    assert s.budgets.max_usd == 10.0
    assert s.workspace == workspace


def test_layers_and_sources(workspace, tmp_path, monkeypatch):
    (tmp_path / "xdg" / "agentlab").mkdir(parents=True)
    (tmp_path / "xdg" / "agentlab" / "agentlab.toml").write_text(
        '[agents]\nmodel = "openai/gpt-4o-mini"\n[budgets]\nmax_usd = 3\nmax_jobs = 7\n'
    )
    (tmp_path / "agentlab.toml").write_text('[budgets]\nmax_usd = 2.5\n[agents.roles]\nreviewer = "anthropic/claude-3-5-haiku-latest"\n')
    monkeypatch.setenv("AGENTLAB_BUDGETS__MAX_JOBS", "9")
    s, src = load_settings(overrides={"agents.model": "openai/gpt-4o"}, with_sources=True)
    assert s.budgets.max_usd == 2.5 and src["budgets.max_usd"].endswith("/agentlab.toml")
    assert str(tmp_path / "agentlab.toml") == src["budgets.max_usd"]
    assert s.budgets.max_jobs == 9 and src["budgets.max_jobs"] == "env"
    assert s.agents.model == "openai/gpt-4o" and src["agents.model"] == "cli"
    assert s.model_for_role("reviewer") == "anthropic/claude-3-5-haiku-latest"
    assert s.model_for_role("postdoc") == "openai/gpt-4o"


def test_relative_paths_in_a_file_are_relative_to_the_file(workspace, tmp_path, monkeypatch):
    monkeypatch.delenv("AGENTLAB_WORKSPACE")
    monkeypatch.delenv("AGENTLAB_DATA_DIR", raising=False)
    cfg = tmp_path / "conf" / "lab.toml"
    cfg.parent.mkdir()
    cfg.write_text('workspace = "ws"\ndata_dir = "../bench-data"\n')
    s = load_settings(config_file=cfg)
    assert s.workspace == tmp_path / "conf" / "ws"
    assert s.data_dir == tmp_path / "conf" / ".." / "bench-data"


@pytest.mark.parametrize(
    "text, expected",
    [
        ('[budgets]\nmax_usd = "lots"\n', "budgets.max_usd"),
        ('[budgets]\nmax_usd = -1\n', "budgets.max_usd"),
        ('[agnets]\nmodel = "x"\n', "agnets"),
        ('[model_under_study]\nengine = "tgi"\n', "model_under_study.engine"),
    ],
)
def test_invalid_config_names_key_file_and_problem(workspace, tmp_path, text, expected):
    (tmp_path / "agentlab.toml").write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_settings()
    msg = str(exc.value)
    assert expected in msg and str(tmp_path / "agentlab.toml") in msg and "\n" not in msg


def test_invalid_env_value_names_env(workspace, monkeypatch):
    monkeypatch.setenv("AGENTLAB_LLM__MAX_RETRIES", "many")
    with pytest.raises(ConfigError, match=r"llm.max_retries \(from env\)"):
        load_settings()


def test_invalid_toml(workspace, tmp_path):
    (tmp_path / "agentlab.toml").write_text("[agents\nmodel=")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_settings()


def test_config_show_masks_secrets_and_shows_sources(workspace, tmp_path, monkeypatch):
    monkeypatch.setenv("AGENTLAB_SERVER__API_KEY", "sk-very-secret-value")
    (tmp_path / "agentlab.toml").write_text('[server]\nurl = "http://127.0.0.1:8000"\n')
    result = CliRunner().invoke(app, ["config", "show"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "sk-very-secret-value" not in result.output
    assert "********" in result.output
    assert "http://127.0.0.1:8000" in result.output and "agentlab.toml" in result.output


def test_cli_reports_bad_config_in_one_line(workspace, tmp_path):
    import subprocess
    import sys

    (tmp_path / "agentlab.toml").write_text('[budgets]\nmax_tokens = "x"\n')
    proc = subprocess.run([sys.executable, "-m", "agentlab", "config", "show"], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "budgets.max_tokens" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
