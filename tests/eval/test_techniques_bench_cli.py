"""Technique specs, benchmark subsets and the CLI's bad-input paths."""

import json

import pytest
from typer.testing import CliRunner

from agentlab.bench import BenchmarkError, Subset, list_benchmarks, load_benchmark
from agentlab.cli import app
from agentlab.techniques import TechniqueError, TechniqueSpec, builtin_techniques, get_technique
from tests.conftest import SHARED_DATA

REQUIRED = {"zero_shot_cot", "few_shot_cot", "self_consistency", "mixed_temperature_consensus", "self_refine",
            "plan_and_solve", "least_to_most"}


def test_library_has_the_required_techniques():
    assert REQUIRED <= set(builtin_techniques())


@pytest.mark.parametrize("name", sorted(builtin_techniques()))
def test_specs_roundtrip_json_and_yaml_with_stable_hash(name):
    spec = builtin_techniques()[name]
    assert TechniqueSpec.from_json(spec.to_json()) == spec
    assert TechniqueSpec.from_yaml(spec.to_yaml()) == spec
    reordered = json.dumps(dict(reversed(list(json.loads(spec.to_json()).items()))))
    assert TechniqueSpec.parse(reordered).spec_hash() == spec.spec_hash()


def test_hash_depends_on_content_not_name():
    a = get_technique("self_consistency")
    assert get_technique("self_consistency", name="renamed").spec_hash() == a.spec_hash()
    assert get_technique("self_consistency", k=3).spec_hash() != a.spec_hash()
    assert a.spec_hash() == "7fbb9d4c8ecd07d7"  # pinned: a change here changes every cited record


def test_overrides():
    assert get_technique("self_consistency", k=8).chains.n == 8
    m = get_technique("mixed_temperature_consensus", k=3)
    assert m.chains.temperatures == [0.0, 0.6, 1.2]
    z = get_technique("zero_shot_cot", k=4)
    assert z.chains.aggregation == "majority" and z.sampling.temperature > 0
    assert get_technique("self_refine", rounds=2).refine.rounds == 2


def test_malformed_spec_field_level_messages():
    with pytest.raises(TechniqueError) as e:
        TechniqueSpec.parse({"name": "bad name!", "sampling": {"temperature": 3, "max_tokens": 0},
                             "chains": {"n": 3, "temperatures": [0.1]}, "extra": 1})
    msg = str(e.value)
    for field in ("name:", "sampling.temperature:", "sampling.max_tokens:", "chains:", "extra:"):
        assert field in msg
    with pytest.raises(TechniqueError, match=r"template: unknown variable\(s\) \['answr'\]"):
        TechniqueSpec.parse({"name": "t", "template": "{question} {answr}"})
    with pytest.raises(TechniqueError, match="syntax error on line 1"):
        TechniqueSpec.parse({"name": "t", "kind": "code", "code": "def solve(:"})
    with pytest.raises(TechniqueError, match="exactly two arguments"):
        TechniqueSpec.parse({"name": "t", "kind": "code", "code": "def solve(problem):\n  pass"})
    with pytest.raises(TechniqueError, match="not valid JSON/YAML"):
        TechniqueSpec.parse("name: [unclosed")


def test_spec_file(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(get_technique("plan_and_solve", name="mine").to_yaml())
    assert get_technique(str(path)).name == "mine"
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nchains: {n: 0}\n")
    with pytest.raises(TechniqueError, match=r"bad.yaml: invalid technique spec: chains.n"):
        get_technique(str(bad))


def test_unknown_technique_lists_valid_ones():
    with pytest.raises(TechniqueError, match="valid: direct, zero_shot_cot"):
        get_technique("tree_of_thoughts")


# -- benchmarks -----------------------------------------------------------------------------------

def test_loaders_and_fields():
    assert len(load_benchmark("math500", SHARED_DATA)) == 500
    assert len(load_benchmark("gsm8k", SHARED_DATA)) == 1319
    assert len(load_benchmark("aime24", SHARED_DATA)) == 30
    amc = load_benchmark("amc23", SHARED_DATA)
    assert len(amc) == 40 and amc[0].answer == "27"
    p = load_benchmark("math500", SHARED_DATA, limit=1)[0]
    assert p.level in {"1", "2", "3", "4", "5"} and p.subject
    assert {b["name"] for b in list_benchmarks()} >= {"math500", "gsm8k", "aime24", "amc23", "basic_arithmetic"}


def test_subsets_are_deterministic_and_splits_disjoint():
    dev = load_benchmark("math500", SHARED_DATA, split="dev")
    rep = load_benchmark("math500", SHARED_DATA, split="report")
    assert not {p.id for p in dev} & {p.id for p in rep} and len(dev) + len(rep) == 500
    assert [p.id for p in load_benchmark("gsm8k", SHARED_DATA, sample=20, seed=3)] == \
        [p.id for p in load_benchmark("gsm8k", SHARED_DATA, sample=20, seed=3)]
    assert [p.id for p in load_benchmark("gsm8k", SHARED_DATA, sample=20, seed=3)] != \
        [p.id for p in load_benchmark("gsm8k", SHARED_DATA, sample=20, seed=4)]
    lv = load_benchmark("math500", SHARED_DATA, levels=[5], subjects=["Algebra"])
    assert lv and all(p.level == "5" and p.subject == "Algebra" for p in lv)
    assert Subset(levels=["4", "5"], split="report", limit=10).describe() == "levels=4,5 split=report(0.3) first=10"


def test_procedural_benchmark_is_seeded():
    a = load_benchmark("basic_arithmetic", SHARED_DATA, limit=5, seed=1)
    assert a == load_benchmark("basic_arithmetic", SHARED_DATA, limit=5, seed=1)
    assert a != load_benchmark("basic_arithmetic", SHARED_DATA, limit=5, seed=2)
    assert load_benchmark("rg:gcd", SHARED_DATA, limit=2)[0].grader == "reasoning_gym"


def test_bad_benchmark_inputs(tmp_path):
    with pytest.raises(BenchmarkError, match="valid: math500, gsm8k"):
        load_benchmark("math5000", SHARED_DATA)
    with pytest.raises(BenchmarkError, match=r"not found at .*math500/test.jsonl"):
        load_benchmark("math500", tmp_path)
    with pytest.raises(BenchmarkError, match="invalid subset: limit"):
        load_benchmark("gsm8k", SHARED_DATA, limit=0)


# -- CLI ------------------------------------------------------------------------------------------

def _cli(args, **kw):
    from agentlab.cli.common import state

    state._settings = None
    return CliRunner().invoke(app, args, **kw)


def test_cli_techniques(workspace):
    r = _cli(["techniques", "list"])
    assert r.exit_code == 0 and "self_consistency" in r.output
    r = _cli(["techniques", "show", "self_consistency", "--k", "3", "--json"])
    assert r.exit_code == 0 and '"n": 3' in r.output


def test_cli_bad_inputs(workspace):
    from agentlab.errors import AgentlabError

    r = _cli(["eval", "run", "--benchmark", "nope", "--model-url", "http://127.0.0.1:9"])
    assert isinstance(r.exception, AgentlabError) and "valid: math500" in str(r.exception)
    r = _cli(["eval", "run", "--technique", "nope", "--model-url", "http://127.0.0.1:9"])
    assert "valid: direct" in str(r.exception)
    r = _cli(["eval", "run", "--limit", "2", "--model-url", "http://127.0.0.1:9", "--model-name", "m"])
    assert "not reachable" in str(r.exception) and "resume" in str(r.exception)


def test_cli_run_compare_list(workspace, scripted_server):
    import re

    srv = scripted_server(lambda b: "Answer: " + str(eval(re.search(r"Calculate (.*)\.", b["messages"][-1]["content"])
                                                          .group(1).replace("/", "//"))))
    url = f"http://127.0.0.1:{srv.port}/v1"
    r1 = _cli(["eval", "run", "-t", "direct", "--limit", "6", "--model-url", url])
    assert r1.exit_code == 0, r1.output
    run_a = re.search(r"run-[0-9a-f]{12}", r1.output).group(0)
    r2 = _cli(["eval", "run", "-t", "zero_shot_cot", "--limit", "6", "--model-url", url, "--baseline", run_a])
    assert r2.exit_code == 0, r2.output
    assert "exact McNemar p" in r2.output
    run_b = re.search(r"run-[0-9a-f]{12}", r2.output).group(0)
    assert (workspace / "eval" / "runs" / run_b / "accuracy.png").is_file()
    r3 = _cli(["eval", "compare", run_b, run_a, "--json"])
    assert r3.exit_code == 0 and '"n_paired": 6' in r3.output
    r4 = _cli(["eval", "list"])
    assert run_a[:8] in r4.output
