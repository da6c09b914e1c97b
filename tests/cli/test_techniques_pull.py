"""`agentlab techniques pull PAPER_ID`: a lab's paper publishes every technique it evaluated (its baseline too);
without a name the pull takes the one the paper proposes, says which, and the others stay pullable by name."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from agentlab.techniques import TechniqueError, TechniqueSpec, get_technique
from agentlab.techniques.published import choose_published
from tests.lab.conftest import lab_settings, preprint, tiny_config  # noqa: F401 - fixtures

BASELINE = get_technique("zero_shot_cot", max_tokens=64)
PROPOSED = get_technique("self_consistency", k=3, max_tokens=64)


def _published(*specs: TechniqueSpec) -> list[SimpleNamespace]:
    return [SimpleNamespace(name=s.name, spec_hash=s.spec_hash(), spec=s.model_dump(mode="json")) for s in specs]


def test_the_proposed_technique_is_the_one_the_paper_prints():
    published = _published(BASELINE, PROPOSED)
    body = f"## 3 Method\n\nTechnique specification (as run by the harness):\n\n```json\n{PROPOSED.to_json()}\n```\n"
    assert choose_published("p1", published, body=body).spec_hash == PROPOSED.spec_hash()
    long_spec = f"published with this paper (`agentlab techniques pull PAPER_ID:{PROPOSED.name}`)."
    assert choose_published("p1", published, body=long_spec).spec_hash == PROPOSED.spec_hash()
    assert choose_published("p1", published, name=BASELINE.name, body=body).spec_hash == BASELINE.spec_hash()
    assert choose_published("p1", published[:1]).spec_hash == BASELINE.spec_hash()  # its only one
    with pytest.raises(TechniqueError, match="does not say which one it proposes: pick one as p1:NAME"):
        choose_published("p1", published, body="```json\n{\"not\": \"a spec\"}\n```")
    with pytest.raises(TechniqueError, match="has no technique 'nope'"):
        choose_published("p1", published, name="nope")
    with pytest.raises(TechniqueError, match="publishes no techniques"):
        choose_published("p1", [])


@pytest.mark.integration
def test_pull_without_a_name_takes_a_lab_papers_proposed_technique(lab_settings, llm, preprint, tmp_path,  # noqa: F811
                                                                   monkeypatch):
    from agentlab.cli import app
    from agentlab.cli.common import state
    from agentlab.lab.run import start_lab
    from preprint_server.client import PreprintClient

    cfg = tiny_config(server_url=preprint["url"], max_iterations=1, literature_top_n=0)
    out = start_lab(lab_settings, "Improve arithmetic accuracy of a small model", cfg, server_key=preprint["key"])
    assert out.status == "done", out.state.get("stop_reason")
    paper_id = out.state["publication"]["paper_id"]
    proposed = TechniqueSpec.parse(out.state["best"]["spec"])
    baseline = get_technique(cfg.baseline, max_tokens=cfg.max_tokens_per_answer)
    with PreprintClient(preprint["url"]) as c:
        hashes = {t.spec_hash for t in c.techniques(paper_id)}
    assert {proposed.spec_hash(), baseline.spec_hash()} <= hashes and proposed.spec_hash() != baseline.spec_hash()

    monkeypatch.setenv("AGENTLAB_SERVER__URL", preprint["url"])
    monkeypatch.setattr(state, "_settings", None)
    r = CliRunner().invoke(app, ["techniques", "pull", paper_id, "-o", str(tmp_path / "proposed.yaml")])
    assert r.exit_code == 0, r.output
    assert f"pulled {proposed.name}, the technique paper {paper_id} proposes" in r.output
    assert TechniqueSpec.parse((tmp_path / "proposed.yaml").read_text()).spec_hash() == proposed.spec_hash()
    r = CliRunner().invoke(app, ["techniques", "pull", f"{paper_id}:{baseline.name}", "-o", str(tmp_path / "b.yaml")])
    assert r.exit_code == 0, r.output
    assert TechniqueSpec.parse((tmp_path / "b.yaml").read_text()).spec_hash() == baseline.spec_hash()
