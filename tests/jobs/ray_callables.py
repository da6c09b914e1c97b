"""Job targets for the Ray cluster tests (imported inside the sandbox by agentlab.jobs.sandbox_entry)."""

import json
import os
import time
from pathlib import Path

SEED, JOURNAL = "seed.txt", "journal.txt"  # the shared cache's files in the job's workdir (test_ray_cluster.py)


def where(seconds: float = 0.0) -> dict:
    """Where the job ran (its Ray node, the GPUs it was given) and when, after sleeping ``seconds``."""
    start = time.time()
    time.sleep(seconds)
    return {"node": os.environ.get("AGENTLAB_RAY_NODE_ID"), "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "start": start, "end": time.time()}


def answer_all(items: list[str], seconds_each: float) -> dict:
    """An evaluation job in miniature: answers every item the shared cache (``seed.txt``) does not hold,
    ``seconds_each`` per answer, appending each to its journal as it goes; the journal starts with the node."""
    seed = Path(SEED)
    seeded = set(seed.read_text().split()) if seed.exists() else set()
    node = os.environ.get("AGENTLAB_RAY_NODE_ID", "")
    with open(JOURNAL, "a") as journal:
        journal.write(f"node:{node}\n")
        journal.flush()
        answered = []
        for item in items:
            if item in seeded:
                continue
            time.sleep(seconds_each)
            journal.write(item + "\n")
            journal.flush()
            answered.append(item)
    return {"node": node, "answered": answered, "seeded": sorted(seeded & set(items))}


def die_once() -> dict:
    """Killed (SIGKILL, as by its machine's end) the first time; the second time, seeded by the shared
    cache with the first one's journal, it ends well."""
    seeded = Path(SEED).exists()
    node = os.environ.get("AGENTLAB_RAY_NODE_ID", "")
    with open(JOURNAL, "a") as journal:
        journal.write(f"node:{node}\n{'second' if seeded else 'first'}\n")
    if not seeded:
        time.sleep(1.0)  # the journal reaches the driver
        os.kill(os.getpid(), 9)
    return {"node": node, "seeded": seeded}


def checkpointing(steps: int, seconds_each: float, resume_dir: str | None = None) -> dict:
    """A training job in miniature: ``steps`` steps of ``seconds_each``, a complete checkpoint after each
    (``output/checkpoint-<n>/trainer_state.json``, written whole), going on from the last checkpoint in
    ``resume_dir`` (an earlier attempt's ``output``, bound read-only) when given; ``node.txt`` names its node."""
    node = os.environ.get("AGENTLAB_RAY_NODE_ID", "")
    Path("node.txt").write_text(node)
    saved = Path(resume_dir).glob("checkpoint-*/trainer_state.json") if resume_dir else ()
    start = last = max((int(p.parent.name.split("-")[1]) for p in saved), default=0)
    for step in range(start + 1, steps + 1):
        time.sleep(seconds_each)
        ck = Path("output") / f"checkpoint-{step}"
        ck.mkdir(parents=True)
        (ck / "state.tmp").write_text(json.dumps({"global_step": step}))
        (ck / "state.tmp").rename(ck / "trainer_state.json")
        last = step
    return {"node": node, "start": start, "last": last}
