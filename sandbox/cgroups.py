"""Per-run cgroups: memory limit, process limit, total CPU accounting, kill-all.

cgroup v2 (unified hierarchy) where ``/sys/fs/cgroup/cgroup.controllers`` exists and is writable;
cgroup v1 controllers (memory, pids, cpuacct) where their folders are writable (root); otherwise
``None`` and the caller falls back to rlimits.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
PARENT = "agentlab"


def _write(path: Path, value: str) -> bool:
    try:
        path.write_text(value)
        return True
    except OSError:
        return False


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _kv(text: str | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


class RunCgroup:
    """The cgroup(s) of one run. ``procs_files`` are what the launcher writes its pid into."""

    version: int = 0

    def __init__(self, name: str, memory_bytes: int, pids_max: int) -> None:
        self.name = name
        self.memory_bytes = memory_bytes
        self.pids_max = pids_max
        self.dirs: dict[str, Path] = {}
        self.features: list[str] = []

    # --- creation -------------------------------------------------------------------------
    @classmethod
    def create(cls, name: str, memory_bytes: int, pids_max: int) -> RunCgroup | None:
        cg = cls(name, memory_bytes, pids_max)
        if (ROOT / "cgroup.controllers").exists():
            return cg if cg._create_v2() else None
        return cg if cg._create_v1() else None

    def _create_v2(self) -> bool:
        parent = ROOT / PARENT
        try:
            parent.mkdir(exist_ok=True)
        except OSError:
            return False
        wanted = [c for c in ("memory", "pids", "cpu") if c in (_read(ROOT / "cgroup.controllers") or "").split()]
        for c in wanted:
            _write(ROOT / "cgroup.subtree_control", f"+{c}")
            _write(parent / "cgroup.subtree_control", f"+{c}")
        d = parent / self.name
        try:
            d.mkdir()
        except OSError:
            return False
        self.version = 2
        self.dirs = {"unified": d}
        if _write(d / "memory.max", str(self.memory_bytes)):
            _write(d / "memory.swap.max", "0")
            self.features.append("memory")
        if _write(d / "pids.max", str(self.pids_max)):
            self.features.append("pids")
        if (d / "cpu.stat").exists():
            self.features.append("cpuacct")
        if "memory" not in self.features:
            self.destroy()
            return False
        return True

    def _create_v1(self) -> bool:
        for ctrl in ("memory", "pids", "cpuacct"):
            base = ROOT / ctrl
            if not (base / "cgroup.procs").exists():
                continue
            d = base / PARENT / self.name
            try:
                d.mkdir(parents=True)
            except OSError:
                continue
            ok = True
            if ctrl == "memory":
                ok = _write(d / "memory.limit_in_bytes", str(self.memory_bytes))
                # swap must not extend the limit (file absent when swap accounting is off)
                if ok and (d / "memory.memsw.limit_in_bytes").exists():
                    _write(d / "memory.memsw.limit_in_bytes", str(self.memory_bytes))
            elif ctrl == "pids":
                ok = _write(d / "pids.max", str(self.pids_max))
            if ok:
                self.dirs[ctrl] = d
                self.features.append(ctrl)
            else:
                _rmdir(d)
        if "memory" not in self.dirs:
            self.destroy()
            return False
        self.version = 1
        return True

    # --- use ----------------------------------------------------------------------------------
    @property
    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs.values()]

    def _mem_dir(self) -> Path:
        return self.dirs.get("unified") or self.dirs["memory"]

    def pids(self) -> list[int]:
        d = self._mem_dir()
        return [int(p) for p in (_read(d / "cgroup.procs") or "").split()]

    def cpu_seconds(self) -> float | None:
        if self.version == 2:
            usec = _kv(_read(self.dirs["unified"] / "cpu.stat")).get("usage_usec")
            return usec / 1e6 if usec is not None else None
        if "cpuacct" in self.dirs:
            text = _read(self.dirs["cpuacct"] / "cpuacct.usage")
            return int(text) / 1e9 if text and text.strip().isdigit() else None
        return None

    def peak_bytes(self) -> int | None:
        if self.version == 2:
            text = _read(self.dirs["unified"] / "memory.peak")
        else:
            text = _read(self.dirs["memory"] / "memory.max_usage_in_bytes")
        return int(text) if text and text.strip().isdigit() else None

    def oom_killed(self) -> bool:
        if self.version == 2:
            return _kv(_read(self.dirs["unified"] / "memory.events")).get("oom_kill", 0) > 0
        d = self.dirs["memory"]
        if _kv(_read(d / "memory.oom_control")).get("oom_kill", 0) > 0:
            return True
        peak = self.peak_bytes()
        failcnt = _read(d / "memory.failcnt")
        return bool(failcnt and failcnt.strip() != "0" and peak and peak >= self.memory_bytes * 0.95)

    def kill_all(self) -> None:
        if self.version == 2 and _write(self.dirs["unified"] / "cgroup.kill", "1"):
            return
        for _ in range(50):
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.01)

    def destroy(self) -> None:
        if self.dirs:
            self.kill_all()
        for d in self.dirs.values():
            _rmdir(d)
        self.dirs = {}


def _rmdir(d: Path) -> None:
    for _ in range(100):
        try:
            d.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.02)
