"""Runs between fork and the sandbox: join cgroups, set rlimits, arm the parent-death signal, exec.

Invoked as ``python -I -S _launcher.py CONFIG_JSON -- ARGV...`` so that no ``preexec_fn`` runs
Python code in a forked child of a multi-threaded host (which can deadlock). Stdlib only.
"""

import ctypes
import json
import os
import resource
import signal
import sys


def main() -> None:
    cfg = json.loads(sys.argv[1])
    argv = sys.argv[3:]
    # the host's pid as the host saw it: if the host died before this line ran, getppid() would
    # already be init's and the check below would pass, leaving an orphan sandbox
    parent = cfg.get("parent_pid") or os.getppid()
    for procs in cfg.get("cgroup_procs", []):
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
    # SIGKILL when the host thread that started us goes away (PR_SET_PDEATHSIG = 1)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(137)
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        os.write(2, f"sandbox: cannot execute {argv[0]}: {exc.strerror}\n".encode())
        os._exit(127)


if __name__ == "__main__":
    main()
