"""Host side: a run's workdir and log folder, files written in before the run, what the program left.

The workdir is the only place the program can write, so everything here treats its content as
hostile: symbolic links are never followed, sizes are counted without trusting the program.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path

from sandbox.types import SandboxError


def make_run_dirs(workdir: str | Path | None, log_dir: str | Path | None) -> tuple[Path, Path]:
    """Create the workdir and the log folder (a new temp folder by default); logs stay outside the workdir."""
    if workdir is None:
        base = Path(tempfile.mkdtemp(prefix="agentlab-sandbox-"))
        workdir = base / "work"
        log_dir = Path(log_dir) if log_dir else base
    else:
        workdir = Path(workdir)
        log_dir = Path(log_dir) if log_dir else workdir.with_name(workdir.name + ".logs")
    workdir = workdir.absolute()
    log_dir = log_dir.absolute()
    if log_dir == workdir or workdir in log_dir.parents:
        raise SandboxError("log_dir must be outside the workdir (the program could rewrite its own logs)")
    workdir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    return workdir, log_dir


def write_files(workdir: Path, files: Mapping[str, bytes | str]) -> None:
    root = workdir.resolve()
    for name, data in files.items():
        rel = Path(name)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise SandboxError(f"file name {name!r} must be a relative path inside the workdir")
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            data = data.encode()
        dest.write_bytes(data)


def chown_tree(root: Path, uid: int, gid: int) -> None:
    os.lchown(root, uid, gid)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for n in dirnames + filenames:
            os.lchown(os.path.join(dirpath, n), uid, gid)


def disk_usage(root: Path, cap: int) -> int:
    """Bytes allocated under root (never following links); stops counting once past cap."""
    total = 0
    stack = [str(root)]
    while stack:
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                for e in it:
                    try:
                        st = e.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    total += max(st.st_blocks * 512, st.st_size if stat.S_ISREG(st.st_mode) else 0)
                    if stat.S_ISDIR(st.st_mode):
                        stack.append(e.path)
                    if total > cap:
                        return total
        except OSError:
            continue
    return total


def hit_file_limit(workdir: Path, fsize: int, disk_mb: int) -> bool:
    """A file at the RLIMIT_FSIZE cap, or the workdir over its quota (Python ignores SIGXFSZ: EFBIG)."""
    cap = disk_mb * 1024 * 1024
    if disk_usage(workdir, cap) > cap:
        return True
    for dirpath, _, filenames in os.walk(workdir, followlinks=False):
        for n in filenames:
            try:
                st = os.lstat(os.path.join(dirpath, n))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and st.st_size >= fsize:
                return True
    return False


def list_artifacts(workdir: Path, limit: int = 10_000) -> list[str]:
    """Regular files under workdir, relative; symbolic links are never followed nor listed."""
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(workdir, followlinks=False):
        for n in filenames:
            p = os.path.join(dirpath, n)
            try:
                if stat.S_ISREG(os.lstat(p).st_mode):
                    out.append(os.path.relpath(p, workdir))
            except OSError:
                continue
            if len(out) >= limit:
                return sorted(out)
    return sorted(out)


def read_workdir_file(workdir: Path, name: str, max_bytes: int = 10 * 1024 * 1024) -> bytes | None:
    """Read a file the program left in its workdir without following links (None if absent/unsafe)."""
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts:
        return None
    dirfd = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        fd = dirfd
        for part in rel.parts[:-1]:
            nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            if fd != dirfd:
                os.close(fd)
            fd = nfd
        try:
            f = os.open(rel.parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
        except OSError:
            return None
        finally:
            if fd != dirfd:
                os.close(fd)
        try:
            if not stat.S_ISREG(os.fstat(f).st_mode):
                return None
            with os.fdopen(f, "rb", closefd=False) as fh:
                return fh.read(max_bytes + 1)[: max_bytes + 1]
        finally:
            os.close(f)
    finally:
        os.close(dirfd)
