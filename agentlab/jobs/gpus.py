"""GPU inventory: from config (``jobs.gpus``) or detected with ``nvidia-smi``."""

from __future__ import annotations

import shutil
import subprocess

from pydantic import BaseModel


class GpuInfo(BaseModel):
    index: int
    uuid: str | None = None
    name: str | None = None
    memory_mb: int | None = None


def detect_gpus() -> list[GpuInfo]:
    """GPUs nvidia-smi reports on this host; [] without nvidia-smi or a driver."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run([smi, "--query-gpu=index,uuid,name,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.stdout.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 4 and parts[0].isdigit():
            mem = int(parts[3]) if parts[3].isdigit() else None
            gpus.append(GpuInfo(index=int(parts[0]), uuid=parts[1], name=parts[2], memory_mb=mem))
    return gpus


def inventory(configured: list[int] | None) -> list[GpuInfo]:
    """Configured ids (None = detect). Detected details are attached to configured ids when known."""
    detected = {g.index: g for g in detect_gpus()}
    if configured is None:
        return sorted(detected.values(), key=lambda g: g.index)
    return [detected.get(i, GpuInfo(index=i)) for i in configured]
