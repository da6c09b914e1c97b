"""Training jobs end to end with the real stack: the embedded SmolLM2-135M (dequantized GGUF), TRL's trainers,
the local scheduler and the bubblewrap sandbox. Tiny sizes: a few steps with short sequences."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from agentlab.bench.registry import load_benchmark
from agentlab.eval.records import ResultStore
from agentlab.jobs import JobStore, LocalScheduler
from agentlab.train.outputs import content_hash, read_metrics
from agentlab.train.recipe import Recipe
from agentlab.train.runner import execute_run, finish_run, job_spec, prepare_run
from agentlab.train.runs import RunStore
from agentlab.train.sandbox_train import _reward_funcs
from sandbox import SandboxOptions
from tests.conftest import SHARED_DATA
from tests.sandbox.waits import wait_until

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "train" / "sft_smollm2_cpu.yaml"
needs_training = pytest.mark.requires("bubblewrap", "train", "embedded-gguf")  # sandboxed TRL on SmolLM2's weights


def cli(*args, timeout=1500):
    return subprocess.run([sys.executable, "-m", "agentlab", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "250"}, check=False)


def tiny(**kw) -> Recipe:
    base = {"name": "tiny", "data": {"source": "reasoning_gym", "task": "basic_arithmetic", "size": 48},
            "hyper": {"batch_size": 2, "max_seq_len": 64, "learning_rate": 1e-3}, "max_steps": 2, "save_steps": 2,
            "lora": {"r": 4, "alpha": 8}, "resources": {"cpus": 2, "memory_mb": 6144}}
    for k, v in kw.items():
        base[k] = {**base[k], **v} if isinstance(v, dict) and k in base else v
    return Recipe.parse(base)


def scheduler(ws: Path) -> LocalScheduler:
    return LocalScheduler(JobStore(ws / "jobs.db"), ws, gpus=[], cpus=2,
                          sandbox_options=SandboxOptions(backend="bubblewrap"))


def test_grpo_reward_is_the_projects_grader():
    prob = load_benchmark("basic_arithmetic", SHARED_DATA, limit=1)[0]
    funcs, weights = _reward_funcs({"correctness": 1.0, "format": 0.5})
    right = [{"role": "assistant", "content": f"The final answer is \\boxed{{{prob.answer}}}."}]
    wrong = [{"role": "assistant", "content": "I think it is 123456."}]
    pj = [prob.model_dump_json()] * 2
    assert [f(prompts=[None, None], completions=[right, wrong], problem_json=pj) for f in funcs] == [[1.0, 0.0], [1.0, 0.0]]
    assert weights == [1.0, 0.5]


@pytest.mark.timeout(1800)
@needs_training
@pytest.mark.requires("llama.cpp")  # serves the checkpoint as its base is served
@pytest.mark.integration
@pytest.mark.slow
def test_sft_cli_checkpoint_curve_records_and_eval(workspace):
    r = cli("train", "run", str(EXAMPLE), "--max-steps", "2")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    [run] = RunStore(workspace).list()
    d = RunStore(workspace).dir(run.run_id)
    assert run.status == "succeeded" and run.result["steps"] == 2
    assert content_hash(run.checkpoint) == run.checkpoint_hash == run.result["checkpoint_hash"]
    assert (Path(run.checkpoint) / "adapter_model.safetensors").is_file()
    assert (d / "curve.png").read_bytes()[:4] == b"\x89PNG"
    recs = read_metrics(d / "metrics.jsonl")
    assert [m["step"] for m in recs] == [1, 2] and all("loss" in m and "learning_rate" in m for m in recs)
    assert run.result["tokens_per_s"] and run.result["peak_memory_mb"] > 100
    used = set(json.loads((d / "data" / "manifest.json").read_text())["problem_ids"])
    assert used and not used & {p.id for p in load_benchmark("basic_arithmetic", SHARED_DATA, split="report")}
    shown = cli("train", "show", run.run_id[:12])
    assert shown.returncode == 0 and run.checkpoint_hash in shown.stdout and "curve.png" in shown.stdout
    assert run.run_id in cli("train", "list").stdout
    ev = cli("eval", "run", "--checkpoint", run.run_id, "-b", "basic_arithmetic", "--split", "report", "-t", "direct",
             "--max-tokens", "12", "-n", "3", "-j", "1")
    assert ev.returncode == 0, ev.stdout[-2000:] + ev.stderr[-2000:]
    store = ResultStore(workspace / "eval" / "eval.db")
    [row] = store.list_runs()
    store.close()
    assert row["model"] == f"ckpt:{run.name}@{run.short_hash}"
    assert row["serving"] == "llama.cpp Q8_0"  # llama.cpp, as its base; Q8_0 keeps what training changed
    exported = cli("train", "export", run.run_id, str(workspace / "merged"))
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in (workspace / "merged").iterdir()}


def _kill_training(job_id: str) -> int:
    for p in psutil.process_iter(["cmdline"]):
        try:
            if "agentlab.jobs.sandbox_entry" in " ".join(p.info["cmdline"] or []) and \
                    p.environ().get("AGENTLAB_JOB_ID") == job_id:
                os.kill(p.pid, signal.SIGKILL)
                return p.pid
        except (psutil.Error, OSError):
            continue
    raise AssertionError(f"no training process for job {job_id}")


@pytest.mark.timeout(1800)
@needs_training
@pytest.mark.integration
@pytest.mark.slow
def test_resume_after_sigkill_continues_from_the_last_checkpoint(workspace):
    run = prepare_run(tiny(max_steps=6), workspace, SHARED_DATA)
    with scheduler(workspace) as s:
        job_id = s.submit(job_spec(run, workspace))
        run.jobs.append(job_id)
        ck = workspace / "jobs" / job_id / "work" / "output" / "checkpoint-2" / "trainer_state.json"
        wait_until(lambda: ck.is_file() or s.get(job_id).done, 1500, "the first checkpoint")
        assert not s.get(job_id).done, s.get(job_id).error
        _kill_training(job_id)
        killed = finish_run(run, s.wait(job_id, timeout=120), workspace)
        assert killed.status == "failed" and killed.checkpoint is None
        run = execute_run(killed, workspace, s, resume=True, poll_s=0.5)
    assert run.status == "succeeded", run.error
    assert run.result["resumed_from_step"] in (2, 4) and run.result["steps"] == 6
    steps = [m["step"] for m in read_metrics(RunStore(workspace).dir(run.run_id) / "metrics.jsonl")]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert len(run.jobs) == 2


@pytest.mark.timeout(1800)
@needs_training
@pytest.mark.integration
@pytest.mark.slow
def test_grpo_few_steps_with_the_grader_as_reward(workspace):
    rec = tiny(method="grpo", hyper={"batch_size": 2, "num_generations": 2, "max_completion_length": 8,
                                     "temperature": 1.0}, reward={"correctness": 1.0, "format": 0.5})
    run = prepare_run(rec, workspace, SHARED_DATA)
    with scheduler(workspace) as s:
        run = execute_run(run, workspace, s, poll_s=0.5)
    assert run.status == "succeeded", run.error
    recs = read_metrics(RunStore(workspace).dir(run.run_id) / "metrics.jsonl")
    assert [m["step"] for m in recs] == [1, 2]
    assert all(0.0 <= m["reward"] <= 1.5 and "rewards/correctness/mean" in m for m in recs)
    assert run.result["final_reward"] is not None and content_hash(run.checkpoint) == run.checkpoint_hash


@pytest.mark.timeout(1800)
@needs_training
@pytest.mark.integration
@pytest.mark.slow
def test_dpo_from_graded_pairs(workspace, tmp_path):
    from tests.train.test_recipe_data import _trace_db

    db, dev_id = _trace_db(tmp_path)
    rec = tiny(method="dpo", data={"source": "traces", "task": None, "eval_run": "run-traces",
                                   "protect": {"benchmark": "basic_arithmetic"}})
    run = prepare_run(rec, workspace, SHARED_DATA, eval_db=db)
    assert json.loads((RunStore(workspace).dir(run.run_id) / "data" / "manifest.json").read_text())["problem_ids"] == [dev_id]
    with scheduler(workspace) as s:
        run = execute_run(run, workspace, s, poll_s=0.5)
    assert run.status == "succeeded", run.error
    recs = read_metrics(RunStore(workspace).dir(run.run_id) / "metrics.jsonl")
    assert [m["step"] for m in recs] == [1, 2] and all("loss" in m for m in recs)
