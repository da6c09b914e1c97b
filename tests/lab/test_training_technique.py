"""Training techniques in the lab, with real parts: a real preprint server, the bubblewrap sandbox, the real
embedded SmolLM2-135M under study (llama.cpp for the base model; its GGUF dequantized into transformers for
training with TRL; the trained checkpoint converted back to a GGUF at the base's quantization and served by
llama.cpp like its base); the agents are a scripted test double.

The ML engineer proposes ``train_model``: SFT with LoRA on generated problems, evaluated with ``direct``. The
lab trains in a sandboxed train job, evaluates the trained checkpoint on the dev split, then on the report
split against the untrained baseline (McNemar), and publishes a paper with the training curve and the records.
"""

from __future__ import annotations

import pytest

from agentlab.lab.run import start_lab
from agentlab.train.runs import RunStore
from preprint_server.client import PreprintClient
from tests.lab.conftest import tiny_config

pytestmark = pytest.mark.requires("bubblewrap")  # training and evaluation jobs run in the sandbox

TRAIN_PROPOSAL = {"technique": "train_model", "max_tokens": 24, "rationale": "learn the task from solutions"}
TRAINING = {"method": "sft", "evaluate_with": "direct", "target": "worked", "learning_rate": 1e-3, "max_steps": 2,
            "batch_size": 4, "lora_r": 8, "rationale": "worked arithmetic solutions"}


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(1800)
@pytest.mark.requires("train")
def test_a_lab_trains_evaluates_the_checkpoint_and_publishes_the_curve(embedded_settings, llm, preprint):
    settings = embedded_settings
    llm.script["TechniqueProposal"] = TRAIN_PROPOSAL
    llm.script["TrainingProposal"] = TRAINING
    cfg = tiny_config(server_url=preprint["url"], dev_n=2, report_n=3, max_iterations=1, concurrency=2, plan_turns=1,
                      literature_top_n=0, max_tokens_per_answer=24, allow_training=True, train_max_steps=2,
                      compare_prior_best=False)
    run = start_lab(settings, "Improve arithmetic accuracy of a small model by training it", cfg,
                    server_key=preprint["key"])
    assert run.status == "done", (run.state.get("stop_reason"), run.state.get("notes"))
    (exp,) = run.state["experiments"]
    t = exp["training"]
    assert t["status"] == "succeeded" and t["steps"] == 2 and t["checkpoint_hash"] and t["curve"]
    assert exp["record"] and exp["record"]["model"].startswith("ckpt:sft_e1@")  # the trained model, not its base
    assert exp["record"]["model_id"] == f"checkpoint:{t['checkpoint_hash'][:16]}"
    # nothing trained on is in the report split or among the dev problems the lab tunes on
    trained = set(RunStore(settings.workspace).manifest(t["run_id"])["problem_ids"])
    lab_problems = run.state["final"]["baseline"]  # the report records exist
    assert lab_problems and trained
    from agentlab.lab.experiments import Experiments

    ex = Experiments(settings, cfg, run.run_id, "test-lab")
    assert not trained & {p.id for p in ex.problems("report") + ex.problems("dev")}
    # the report split: the trained checkpoint against the untrained baseline, paired
    final = run.state["final"]
    assert final["technique"]["model"].startswith("ckpt:") and final["baseline"]["model_id"].startswith("gguf-sha256:")
    assert final["comparison"]["n"] == cfg.report_n and 0.0 <= final["comparison"]["p_value"] <= 1.0
    # the same engine; the checkpoint of this 4-bit base at Q8_0 (Q4_1 would round the training away), named
    assert final["baseline"]["serving"] == "llama.cpp Q4_1"
    assert final["technique"]["serving"] == exp["record"]["serving"] == "llama.cpp Q8_0"
    with PreprintClient(preprint["url"]) as c:
        paper = c.get_paper(run.state["publication"]["paper_id"])
        curve = c.artifact(paper.id, "train-e1.png")
    assert curve.startswith(b"\x89PNG")  # the training curve is published with the paper
    assert "**Training (experiment 1).** SFT" in paper.body and "figures/train-e1.png" in paper.body
    assert {r.model for r in paper.results} >= {final["technique"]["model"], final["baseline"]["model"]}


def test_training_needs_the_model_weights_and_says_so(lab_settings, llm, preprint):
    """An external model under study has no weights here: the experiment fails with the fix, the lab goes on."""
    assert lab_settings.model_under_study.engine == "external"
    llm.script.update({"TechniqueProposal": TRAIN_PROPOSAL, "TrainingProposal": TRAINING})
    cfg = tiny_config(server_url=preprint["url"], max_iterations=1, allow_training=True, literature_top_n=0,
                      plan_turns=1)
    run = start_lab(lab_settings, "Improve arithmetic accuracy by training", cfg, server_key=preprint["key"])
    (exp,) = run.state["experiments"]
    assert exp["record"] is None and "an external endpoint has none here" in exp["error"]
    assert any("no valid training recipe" in n for n in run.state["notes"])
    assert run.status == "done" and run.state["final"]["baseline"]  # the lab still reports its baseline
