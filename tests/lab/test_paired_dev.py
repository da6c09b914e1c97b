"""Paired dev evidence and a sized report split, end to end with the scripted expert test double: the
baseline runs on the dev split first, every experiment carries its paired result against it, the ML engineer
is shown those and the wrong answers of the node it branches from, and the report split is sized from the dev
discordance."""

from __future__ import annotations

import pytest

from agentlab.eval.stats import mcnemar_sample_size
from agentlab.lab.dev_evidence import stored_evidence
from agentlab.lab.experiments import Experiments
from agentlab.lab.power import Z_DISCORDANCE, discordance
from agentlab.lab.run import start_lab
from agentlab.lab.store import LabStore
from tests.lab.conftest import tiny_config

pytestmark = pytest.mark.requires("bubblewrap")  # a lab run starts with a real sandboxed job (lab/preflight.py)


def test_baseline_runs_first_and_every_experiment_is_paired_with_it(lab_settings, llm, preprint):
    events: list[tuple[str, dict]] = []
    # a 50-point gain is the smallest worth reporting: it needs fewer report problems than the budget of 40
    # search_k=1: one expansion per round, so the second proposal sees the first's paired result
    cfg = tiny_config(server_url=preprint["url"], dev_n=8, report_n=40, min_gain=0.5, literature_top_n=0, search_k=1)
    out = start_lab(lab_settings, "Improve arithmetic accuracy of a small model", cfg,
                    server_key=preprint["key"], on_event=lambda kind, data: events.append((kind, data)))
    assert out.status == "done", out.state.get("stop_reason")
    st = out.state
    # the baseline ran on the dev split before any experiment, as a job of its own key
    started = [d["key"] for kind, d in events if kind == "job_started"]
    assert started[0] == "dev-baseline" and started[1] == "dev-1-0"
    base = st["dev_baseline"]
    assert base["record"]["split"] == "dev" and base["record"]["n"] == cfg.dev_n and base["evidence"]["wrong"]
    store = LabStore(lab_settings.db_path)
    assert store.experiment(out.run_id, "dev-baseline")["status"] == "succeeded"
    store.close()
    # every experiment is paired with it on the same dev problems
    for e in st["experiments"]:
        p = e["paired"]
        assert p["n"] == cfg.dev_n and p["wins"] + p["losses"] + p["ties"] == cfg.dev_n
        assert p["delta"] == pytest.approx(e["record"]["accuracy"] - base["record"]["accuracy"])
        assert 0 < p["p_value"] <= 1
    # the ML engineer is shown the paired results and the wrong answers of the node it branches from
    proposals = [p for p in llm.agent_prompts if "Propose the next experiment" in p]
    assert len(proposals) == 2
    assert "baseline zero_shot_cot: accuracy" in proposals[0]
    assert base["evidence"]["wrong"][0]["question"] in proposals[0]  # nothing ran yet: the baseline's misses
    first = st["experiments"][0]
    paired_line = f"vs the baseline on the same {cfg.dev_n} dev problems: {first['paired']['wins']} wins"
    assert paired_line in proposals[1]
    node = first if first["paired"]["delta"] > 0 else base  # the experiment that beat the baseline, else it
    assert node["evidence"]["wrong"][0]["question"] in proposals[1]
    # a resumed run that reuses a finished dev job rebuilds the same evidence from the eval db
    exps = Experiments(lab_settings, cfg, out.run_id, cfg.lab_name)
    rebuilt = stored_evidence(exps.eval_db, base["record"]["eval_run_id"], exps.problems("dev"))
    assert rebuilt.dump() == base["evidence"]
    # the report split was sized from the best experiment's dev discordance, within the budget
    final, best = st["final"], st["best"]
    # at the upper end of the dev discordance's 80% bound, as the lab sizes it (agentlab.lab.power)
    p_disc = discordance(best["paired"]["wins"] + best["paired"]["losses"], cfg.dev_n, cfg.min_gain, Z_DISCORDANCE)
    n = mcnemar_sample_size(p_disc, cfg.min_gain)
    assert final["sizing"]["needed"] == final["sizing"]["report_n"] == n < cfg.report_n
    assert final["technique"]["n"] == final["baseline"]["n"] == final["comparison"]["n"] == n
    assert f"first={n}" in final["technique"]["subset"]
    assert final["sizing"]["achieved"]["n"] == n and 0 <= final["sizing"]["achieved"]["power"] <= 1
    # the plan stated the smallest gain worth reporting and the paper states the sizing and its power
    assert st["plan"]["min_gain"] == 0.5
    assert "Smallest gain worth reporting: 50 points" in st["plan"]["sizing"]["text"]
    assert any(kind == "plan_sizing" for kind, _ in events)
    paper = st["report"]["markdown"]
    assert f"needs {n} report problems. The report split has {n} problems (planned power" in paper
    assert "which gives" in paper and "power for a gain of 50 points" in paper
    assert "Each dev experiment against the baseline on the same dev problems" in paper
    assert base["record"]["record_id"] in {r["record_id"] for r in st["report"]["records"]}
