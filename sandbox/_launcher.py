"""Runs between fork and the sandbox: join cgroups, set rlimits, start the sandbox, supervise it.

Invoked as ``python -I -S _launcher.py CONFIG_JSON -- ARGV...`` so that no ``preexec_fn`` runs
Python code in a forked child of a multi-threaded host (which can deadlock). Stdlib only.

Why a supervisor and not a plain exec: the sandbox must die with the host, even when the host is
SIGKILLed. A parent-death signal alone is racy: if the host dies while bwrap is still setting up
its inner process (before that process arms its own --die-with-parent), the inner process and the
sandboxed program survive as orphans. The supervisor outlives the host by one poll, then kills the
run's whole cgroup (or its child and process group when there is no cgroup), and exits.
"""

import json
import os
import resource
import signal
import sys
import time


def _cgroup_pids(procs_files: list[str]) -> set[int]:
    pids: set[int] = set()
    for path in procs_files:
        try:
            with open(path) as fh:
                pids.update(int(line) for line in fh if line.strip())
        except (OSError, ValueError):
            pass
    return pids


def _kill_run(child: int, procs_files: list[str]) -> None:
    for _ in range(50):
        pids = (_cgroup_pids(procs_files) | {child}) - {os.getpid()}
        alive = False
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                alive = True
            except ProcessLookupError:
                pass
        if not alive:
            break
        time.sleep(0.02)
    # last, our own process group (the process backend's descendants without a cgroup); this ends us too
    os.killpg(0, signal.SIGKILL)


def main() -> None:
    cfg = json.loads(sys.argv[1])
    argv = sys.argv[3:]
    # the host's pid as the host saw it: if the host died before this line ran, getppid() would
    # already be init's and the check below would pass
    parent = cfg.get("parent_pid") or os.getppid()
    procs_files = cfg.get("cgroup_procs", [])
    for procs in procs_files:
        with open(procs, "w") as fh:
            fh.write(str(os.getpid()))
    for name, soft, hard in cfg.get("rlimits", []):
        resource.setrlimit(getattr(resource, name), (soft, hard))
    if cfg.get("new_session"):
        os.setsid()
    if cfg.get("drop_to"):
        uid, gid = cfg["drop_to"]
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    if os.getppid() != parent:
        os._exit(137)
    child = os.fork()
    if child == 0:
        try:
            os.execvp(argv[0], argv)
        except OSError as exc:
            os.write(2, f"sandbox: cannot execute {argv[0]}: {exc.strerror}\n".encode())
            os._exit(127)
    # the host stops a run by killing this process group; pass other terminations on to the child
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda s, _f: os.kill(child, s))
    while True:
        pid, status = os.waitpid(child, os.WNOHANG)
        if pid:
            break
        if os.getppid() != parent:  # the host is gone: nothing may outlive it
            _kill_run(child, procs_files)
            os._exit(137)
        time.sleep(0.05)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    os._exit(os.WEXITSTATUS(status))


if __name__ == "__main__":
    main()
