"""Runs INSIDE the sandbox: the training job's target (kind ``train``,
``target = "agentlab.train.sandbox_train:run_train"``), one TRL trainer (SFT, DPO or GRPO).

The job has no network. Its working directory (``/job``) holds the recipe, the training rows
(``train.jsonl``, built and leak-checked on the host), and receives ``output/checkpoint-N`` (the resume
points, every ``save_steps``), ``output/metrics.jsonl`` (one record per step: loss or reward, learning
rate, tokens), ``final/`` (the adapter or full weights, with ``agentlab_checkpoint.json``) and
``curve.png``. A resumed attempt gets the killed attempt's ``output`` folder read-only at ``resume_dir``;
it copies the last checkpoint and the records up to it, and TRL continues from that step.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any

OUTPUT = "output"
FINAL = "final"


def _setup_env(threads: int) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HOME", str(Path(".hf").absolute()))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("WANDB_DISABLED", "true")
    Path(".tmp").mkdir(exist_ok=True)  # the sandbox's /tmp is a small tmpfs: temporary files go to the workdir
    os.environ["TMPDIR"] = str(Path(".tmp").absolute())
    import torch

    torch.set_num_threads(max(1, threads))


def _last_checkpoint(folder: Path) -> Path | None:
    cks = [p for p in folder.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()
           and (p / "trainer_state.json").is_file()]
    return max(cks, key=lambda p: int(p.name.split("-")[-1]), default=None)


def _restore(resume_dir: str | None) -> tuple[str | None, int]:
    """Copy the killed attempt's last complete checkpoint (and its records up to it) into ``output/``."""
    from agentlab.train.outputs import METRICS_FILE, read_metrics

    out = Path(OUTPUT)
    out.mkdir(exist_ok=True)
    src = Path(resume_dir) if resume_dir else None
    ck = _last_checkpoint(src) if src and src.is_dir() else None
    if ck is None:
        return None, 0
    dst = out / ck.name
    if not dst.exists():
        shutil.copytree(ck, dst)
    step = int(ck.name.split("-")[-1])
    with (out / METRICS_FILE).open("w") as fh:
        for r in read_metrics(src / METRICS_FILE):  # type: ignore[operator]
            if r.get("step", 0) <= step:
                fh.write(json.dumps(r) + "\n")
    return str(dst), step


def _callbacks(max_s: float, state: dict[str, Any]) -> list[Any]:
    from transformers import TrainerCallback

    from agentlab.train.outputs import METRICS_FILE

    class Records(TrainerCallback):
        """One JSON line per logged step; the time budget stops training (and saves) when spent."""

        def on_log(self, args, st, control, logs=None, **kw):
            logs = {k: v for k, v in (logs or {}).items() if isinstance(v, (int, float))}
            if "train_runtime" in logs:
                return
            rec = {"step": st.global_step, "t": round(time.monotonic() - state["t0"], 3), **logs}
            if "reward" not in rec and "rewards/correctness/mean" in rec:
                rec["reward"] = rec["rewards/correctness/mean"]
            state["records"].append(rec)
            with open(Path(OUTPUT) / METRICS_FILE, "a") as fh:
                fh.write(json.dumps(rec) + "\n")

        def on_step_end(self, args, st, control, **kw):
            if time.monotonic() - state["t0"] > max_s:
                state["stopped_by"] = "time"
                control.should_training_stop = True
                control.should_save = True
            return control

    return [Records()]


def _reward_funcs(weights: dict[str, float]) -> tuple[list[Any], list[float]]:
    """The project's grader as GRPO reward (1 for a correct answer), plus an optional format reward."""
    from agentlab.bench.grading import grade
    from agentlab.bench.registry import Problem

    def _text(c: Any) -> str:
        return c[-1]["content"] if isinstance(c, list) else str(c)

    def correctness(prompts: list, completions: list, problem_json: list[str], **kw: Any) -> list[float]:
        return [float(grade(Problem.model_validate_json(pj), _text(c)).correct)
                for c, pj in zip(completions, problem_json)]

    def boxed_format(prompts: list, completions: list, **kw: Any) -> list[float]:
        return [1.0 if "\\boxed{" in _text(c) else 0.0 for c in completions]

    funcs, ws = [correctness], [weights["correctness"]]
    if weights.get("format"):
        funcs.append(boxed_format)
        ws.append(weights["format"])
    return funcs, ws


def _trainer(recipe: Any, model: Any, tok: Any, dataset: Any, use_cpu: bool, callbacks: list) -> Any:
    import torch
    from trl import DPOConfig, DPOTrainer, GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer

    h = recipe.hyper
    common = dict(output_dir=OUTPUT, max_steps=recipe.max_steps, per_device_train_batch_size=h.batch_size,
                  gradient_accumulation_steps=h.grad_accum, learning_rate=h.learning_rate,
                  lr_scheduler_type=h.lr_scheduler, warmup_steps=int(h.warmup_ratio * recipe.max_steps),
                  weight_decay=h.weight_decay, logging_steps=1, save_steps=recipe.save_steps, save_total_limit=2,
                  seed=recipe.seed, data_seed=recipe.seed, report_to="none", use_cpu=use_cpu,
                  dataloader_num_workers=0, gradient_checkpointing=False, disable_tqdm=True,
                  bf16=not use_cpu and torch.cuda.is_bf16_supported())
    peft_config = None
    if recipe.finetune == "lora":
        from peft import LoraConfig

        lo = recipe.lora
        peft_config = LoraConfig(r=lo.r, lora_alpha=lo.alpha, lora_dropout=lo.dropout,
                                 target_modules=lo.target_modules, task_type="CAUSAL_LM")
    kw = dict(model=model, processing_class=tok, train_dataset=dataset, peft_config=peft_config, callbacks=callbacks)
    if recipe.method == "sft":
        return SFTTrainer(args=SFTConfig(max_length=h.max_seq_len, **common), **kw)
    if recipe.method == "dpo":
        return DPOTrainer(args=DPOConfig(max_length=h.max_seq_len, beta=h.beta, **common), **kw)
    funcs, weights = _reward_funcs(recipe.reward.model_dump())
    cfg = GRPOConfig(num_generations=h.num_generations, max_completion_length=h.max_completion_length,
                     temperature=h.temperature, beta=h.beta, reward_weights=weights, **common)
    return GRPOTrainer(reward_funcs=funcs, args=cfg, **kw)


def _peak_memory_mb(use_cpu: bool) -> float:
    if not use_cpu:
        import torch

        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _tokens_per_s(records: list[dict[str, Any]]) -> float | None:
    pts = [(r["t"], r["num_tokens"]) for r in records if "num_tokens" in r]
    if len(pts) < 2 or pts[-1][0] <= pts[0][0]:
        return None
    return round((pts[-1][1] - pts[0][1]) / (pts[-1][0] - pts[0][0]), 1)


def run_train(recipe: dict[str, Any], model_ref: str, data_file: str = "train.jsonl",
              resume_dir: str | None = None, threads: int = 2, base_ref: str | None = None) -> dict[str, Any]:
    """Job target: train, save ``final/``, write the curve; returns the run's figures (JSON).

    ``model_ref`` is the base model as the job sees it; ``base_ref`` as the host names it (for the checkpoint)."""
    _setup_env(threads)
    from datasets import Dataset

    from agentlab.train.models import META_FILE, load_base
    from agentlab.train.outputs import CURVE_FILE, METRICS_FILE, content_hash, read_metrics, write_curve
    from agentlab.train.recipe import Recipe

    rec = Recipe.parse(recipe)
    state: dict[str, Any] = {"t0": time.monotonic(), "records": [], "stopped_by": "max_steps"}
    resume_from, resumed_step = _restore(resume_dir)
    import torch

    use_cpu = not torch.cuda.is_available()
    rows = [json.loads(line) for line in Path(data_file).read_text().splitlines() if line.strip()]
    model, tok = load_base(model_ref)
    print(f"loaded {model_ref} in {time.monotonic() - state['t0']:.1f}s; {len(rows)} rows; "
          f"resume from step {resumed_step}", file=sys.stderr, flush=True)
    state["t0"] = time.monotonic()
    trainer = _trainer(rec, model, tok, Dataset.from_list(rows), use_cpu,
                       _callbacks(rec.time_budget_s(0 if use_cpu else torch.cuda.device_count()), state))
    out = trainer.train(resume_from_checkpoint=resume_from)
    wall = time.monotonic() - state["t0"]
    trainer.save_model(FINAL)
    if rec.finetune == "lora":
        tok.save_pretrained(FINAL)
    Path(FINAL, "training_args.bin").unlink(missing_ok=True)  # a pickle: not part of the checkpoint
    Path(FINAL, META_FILE).write_text(json.dumps({"base": base_ref or model_ref, "method": rec.method, "finetune": rec.finetune,
                                                  "recipe_hash": rec.recipe_hash(), "steps": out.global_step}))
    records = read_metrics(Path(OUTPUT) / METRICS_FILE)
    write_curve(records, CURVE_FILE, title=f"{rec.name}: {rec.method} ({rec.finetune}) on {Path(model_ref).name}")
    last = next((r for r in reversed(records) if "loss" in r), {})
    return {"steps": out.global_step, "resumed_from_step": resumed_step, "stopped_by": state["stopped_by"],
            "train_wall_s": round(wall, 1), "final_loss": last.get("loss"), "final_reward": last.get("reward"),
            "tokens_per_s": _tokens_per_s(state["records"]), "peak_memory_mb": _peak_memory_mb(use_cpu),
            "checkpoint_hash": content_hash(FINAL), "device": "cpu" if use_cpu else "cuda"}
