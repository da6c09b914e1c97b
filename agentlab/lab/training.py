"""Training as a technique of a lab run (DESIGN.md decision 6): the recipe a training proposal becomes, the
``train`` job that runs it, and the trained checkpoint served as the model under study is served, for the
evaluation jobs of ``agentlab.lab.experiments.Experiments`` (which mixes this in)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentlab.lab.models import Experiment, JobResult, TrainingRequest
from agentlab.techniques import TechniqueSpec, builtin_techniques, get_technique


CPU_BATCH = 8  # examples one CPU training step holds at once: SmolLM2-135M at batch 16 and 32 (sequences of 256
# tokens) exceeded a train job's 6144 MB; a larger batch asked runs as gradient accumulation of batches of 8


class TrainingExperiments:
    """The training side of ``Experiments``: it uses the run's settings, config, splits (``problems``), scheduler,
    evaluation database and model under study (``endpoint``)."""

    def trainable_model(self) -> str:
        """The weights a training technique starts from: the model under study's own (raises RecipeError)."""
        from agentlab.train.recipe import RecipeError

        mus = self.settings.model_under_study
        if mus.engine == "external":
            raise RecipeError("training techniques need the model under study's weights, and an external endpoint "
                              "has none here: serve a local model (model_under_study.engine = llama.cpp or vllm)")
        return mus.model or "embedded"

    def trainable_techniques(self) -> list[str]:
        """One-prompt techniques (no pre-steps): training renders their prompt for every training problem."""
        return [n for n, s in builtin_techniques().items()
                if s.kind == "prompt" and not s.steps and s.template and not s.chains.templates]

    def training_eval_spec(self, technique: str, method: str, iteration: int) -> TechniqueSpec:
        """The technique a trained model is evaluated with, named after the training (its records never pass as
        the untrained model's: they also name the checkpoint as the model)."""
        spec = get_technique(technique, max_tokens=self.config.max_tokens_per_answer)
        return spec.model_copy(update={"name": f"{method}_e{iteration}_{technique}"[:80],
                                       "description": f"{technique} on the model after {method} training "
                                                      f"(experiment {iteration})"})

    def recipe(self, proposal: TrainingRequest | dict[str, Any], iteration: int) -> Any:
        """A validated ``agentlab.train.Recipe`` from a training proposal (a ``TrainingRequest`` or its dict): the
        model under study's weights, data the lab may train on (generated problems, or the benchmark's dev pool
        without the dev problems the lab tunes on; never the report split), the lab's step and time bounds.
        Raises RecipeError naming the field."""
        from agentlab.bench import Subset
        from agentlab.bench.registry import GymBenchmark, generated_count, get_benchmark
        from agentlab.train.recipe import Recipe

        proposal = TrainingRequest.model_validate(proposal)
        cfg, bench = self.config, self.config.benchmark
        sub = Subset.model_validate({**cfg.subset, "seed": cfg.seed})
        asked = proposal.model_dump(include={"learning_rate", "batch_size", "num_generations"})
        hyper = {k: v for k, v in asked.items() if v}
        hyper["max_seq_len"] = 128 + cfg.max_tokens_per_answer
        hyper["max_completion_length"] = cfg.max_tokens_per_answer
        steps = max(1, min(proposal.max_steps or cfg.train_max_steps, cfg.train_max_steps))
        batch = proposal.batch_size or 8
        if proposal.method == "grpo":  # prompts x generations: a whole number of groups
            gens = int(hyper.setdefault("num_generations", 4))
            batch = hyper["batch_size"] = max(gens, batch - batch % gens)
        gpus = 1 if self.settings.jobs.gpus else 0
        if not gpus and proposal.method == "sft" and batch > CPU_BATCH:  # the same batch, accumulated
            hyper["batch_size"], hyper["grad_accum"] = CPU_BATCH, -(-batch // CPU_BATCH)
        data: dict[str, Any] = {"size": min(steps * batch, 5000), "technique": proposal.evaluate_with or "direct",
                                "target": proposal.target or "boxed",
                                "protect": {"benchmark": bench, "seeds": [cfg.seed], "dev_fraction": sub.dev_fraction},
                                "exclude_ids": [p.id for p in self.problems("dev") + self.confirm_problems()]}
        if isinstance(get_benchmark(bench), GymBenchmark):  # fresh problems from the generator, at another seed
            data.update(source="reasoning_gym", task=bench, seed=1000 + cfg.seed + iteration)
            # the report split may reach past the generator's default count: protect all of it
            data["protect"]["size"] = max(get_benchmark(bench).size, generated_count(self.problems("report")))
        else:
            data.update(source="benchmark", benchmark=bench)
        lora_r = proposal.lora_r or 16
        return Recipe.parse({"name": f"{proposal.method}_e{iteration}", "method": proposal.method,
                             "model": self.trainable_model(), "finetune": "lora", "lora": {"r": lora_r, "alpha": 2 * lora_r},
                             "data": data, "hyper": hyper, "max_steps": steps, "max_minutes": cfg.train_max_minutes,
                             "save_steps": max(1, steps // 2), "seed": cfg.seed,
                             "resources": {"gpus": gpus, "cpus": 2.0, "memory_mb": max(cfg.job_memory_mb, 6144)}},
                            where="training recipe")

    def recipe_adjustments(self, requested: dict[str, Any], recipe: Any) -> list[str]:
        """What the engineer asked for (``requested``: the training proposal's fields it wrote) that ``recipe`` does
        not do, each as ``"field asked -> ran (why)"``."""
        h = recipe.hyper
        ran = {"max_steps": recipe.max_steps,
               "batch_size": h.batch_size if h.grad_accum == 1 else f"{h.batch_size} x grad_accum {h.grad_accum}"}
        why = {"max_steps": f"the lab's train_max_steps is {self.config.train_max_steps}",
               "batch_size": f"grpo needs whole groups of {h.num_generations} generations" if recipe.method == "grpo"
               else f"a CPU job holds at most {CPU_BATCH} examples at once in its memory: the rest accumulate"}
        return differences({k: requested[k] for k in ran if k in requested}, ran, why)

    def train(self, recipe: Any) -> JobResult:
        """Run ``recipe`` as a ``train`` job of this run (the lab's scheduler, the sandbox); the result's ``training``
        summarises the run (recipe, steps, final loss or reward, checkpoint hash, curve)."""
        from agentlab.train.data import check_disjoint_ids
        from agentlab.train.runner import execute_run, prepare_run
        from agentlab.train.runs import RunStore

        ws = Path(self.settings.workspace)
        run = prepare_run(recipe, ws, Path(self.settings.data_dir), eval_db=self.eval_db)
        used = RunStore(ws).manifest(run.run_id).get("problem_ids") or []
        check_disjoint_ids(used, self.problems("report"), what="the report split")  # never trains on what it reports
        check_disjoint_ids(used, self.problems("dev"), what="the dev problems it is tuned on")
        check_disjoint_ids(used, self.confirm_problems(), what="the problems the best node is confirmed on")
        run = execute_run(run, ws, self.scheduler(), lab=self.lab, owner_run=self.run_id)
        summary = training_summary(run, ws)
        if run.status != "succeeded":
            return JobResult(status="failed", training=summary, job_id=(run.jobs or [None])[-1],
                             error=f"training run {run.run_id} {run.status}: {run.error}")
        return JobResult(status="succeeded", training=summary, job_id=run.jobs[-1])

    def endpoint_for(self, checkpoint: str | None) -> Any:
        """The model under study, or (a training run id) its checkpoint, served like it, once per run."""
        if checkpoint is None:
            return self.endpoint()
        if checkpoint not in self._checkpoints:
            from agentlab.train.serve import checkpoint_endpoint

            self._checkpoints[checkpoint] = checkpoint_endpoint(Path(self.settings.workspace), checkpoint,
                                                                threads=2, mus=self.settings.model_under_study)
        return self._checkpoints[checkpoint][0]


def differences(asked: dict[str, Any], ran: dict[str, Any], why: dict[str, str]) -> list[str]:
    """``"field asked -> ran (why)"`` for each field the lab does not run as the engineer asked."""
    return [f"{k} {asked[k]} -> {ran[k]} ({why[k]})" for k in asked if asked[k] != ran[k]]


def training_summary(run: Any, workspace: Path) -> dict[str, Any]:
    """What the agents and the paper see of a training run: its recipe, data, steps, last metrics and outputs."""
    from agentlab.train.outputs import CURVE_FILE, METRICS_FILE, read_metrics
    from agentlab.train.recipe import Recipe
    from agentlab.train.runs import RunStore

    folder = RunStore(workspace).dir(run.run_id)
    metrics = read_metrics(folder / METRICS_FILE)
    last = {k: v for k, v in (metrics[-1] if metrics else {}).items()
            if k in ("step", "loss", "reward", "learning_rate") and v is not None}
    recipe = Recipe.model_validate(run.recipe)
    return {"run_id": run.run_id, "method": run.method, "finetune": run.finetune, "status": run.status,
            "max_steps": run.max_steps, "steps": last.get("step", 0), "last": last, "n_train": run.n_train,
            "dropped_leaks": run.dropped_leaks,
            "data": recipe.data.model_dump(include={"source", "task", "benchmark", "seed", "size", "technique",
                                                    "target"}),
            "hyper": recipe.hyper.model_dump(include={"learning_rate", "batch_size", "max_seq_len", "num_generations"}),
            "lora_r": recipe.lora.r, "checkpoint_hash": run.checkpoint_hash,
            "curve": str(folder / CURVE_FILE) if (folder / CURVE_FILE).is_file() else None,
            "wall_s": (run.result or {}).get("wall_s"), "recipe": run.recipe}


RECIPE_KEYS = ("method", "target", "learning_rate", "batch_size", "lora_r", "max_steps")
# the standard LoRA SFT recipe (the training proposal's defaults): what the tuning stage tries when the engineer's
# own recipe did not beat the baseline, as a search tries the default configuration beside its own
STANDARD_RECIPE = {"method": "sft", "target": "worked", "learning_rate": 1e-3, "batch_size": 8, "lora_r": 16}


def lost_trainings(experiments: list[Experiment]) -> list[dict[str, Any]]:
    """The training proposals whose trained model did not clearly beat the baseline (lost, tied, failed, or a gain
    with McNemar p >= 0.05 on the dev split)."""
    return [e.training_proposal.model_dump() for e in experiments if e.training_proposal and not e.clear_win]


def tuning_recipe(experiments: list[Experiment], max_steps: int) -> dict[str, Any] | None:
    """The standard recipe at the lab's step budget when an earlier training lost and none ran it yet, else None
    (the engineer proposes): a weak engineer's first recipe often collapses a small model or teaches the wrong
    target, and it tends to send back a variant of the same."""
    lost = lost_trainings(experiments)
    if not lost or any(all(t.get(k) == v for k, v in STANDARD_RECIPE.items()) for t in lost):
        return None
    return {**STANDARD_RECIPE, "max_steps": max_steps}


def retraining_change(proposed: dict[str, Any], experiments: list[Experiment]) -> tuple[dict[str, Any], str] | None:
    """(fields to change, why) when a training proposal repeats the recipe of an earlier training that did not beat
    the baseline, else None: the search's tuning stage needs a different recipe, and a weak engineer often sends
    the same one back. The lab changes one knob: sft's target to worked steps (what a small model learns from),
    else the learning rate down by 4."""
    if not any(all(f.get(k) == proposed.get(k) for k in RECIPE_KEYS) for f in lost_trainings(experiments)):
        return None
    why = "the proposal repeats a recipe that did not beat the baseline: the lab changed "
    if proposed.get("method", "sft") == "sft" and proposed.get("target") != "worked":
        return {"target": "worked"}, why + f"target {proposed.get('target')} -> worked"
    lr = float(proposed.get("learning_rate") or 1e-3)
    return {"learning_rate": lr / 4}, why + f"learning_rate {lr:g} -> {lr / 4:g}"
