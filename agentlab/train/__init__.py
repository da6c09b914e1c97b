"""Training: TRL recipes (SFT, DPO, GRPO) run as sandboxed scheduler jobs of kind ``train``.

    recipe.py         the validated spec (model, data source, LoRA or full, bounded hyperparameters, budgets)
    data.py           training rows without leaks (never a problem of the protected report split)
    runner.py, runs.py  host side: prepare a run, submit its job, collect checkpoint + records, resume
    sandbox_train.py  inside the sandbox: the TRL trainer, per-step records, checkpoints, time budget
    outputs.py        records, the PNG curve, the checkpoint's content hash
    models.py         loading a base model (HF dir, .gguf, cached HF id) or a trained checkpoint
    serve.py          a trained checkpoint as an OpenAI-compatible endpoint for the harness, served as its base is
    gguf.py           a checkpoint as a GGUF (the base's quantization; Q8_0 below 8 bits)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from agentlab.jobs.rerun_hooks import register_rerun

if TYPE_CHECKING:
    from agentlab.jobs.spec import JobSpec


def _rerun_after_loss(spec: JobSpec, previous_workdir: Path) -> JobSpec | None:
    # the runner, imported only when called: jobs import this package inside the sandbox
    from agentlab.train.runner import rerun_after_loss

    return rerun_after_loss(spec, previous_workdir)


# a training job whose Ray node was lost goes on from its last checkpoint whichever process schedules it: every
# process that imports the training wing (the CLI, a lab that trains) gives the schedulers the hook
register_rerun(_rerun_after_loss)
