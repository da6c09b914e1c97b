"""Runs a job's ``target`` callable inside the sandbox: ``python -m agentlab.jobs.sandbox_entry``.

Reads ``job_call.json`` ({"target": "pkg.mod:function", "args": {...}}) from the working directory,
imports the module, calls ``function(**args)`` and writes the JSON-serializable return value to
``$AGENTLAB_RESULT``. An exception prints its traceback to stderr and exits with status 1.

Warm start (``--warm MODULE IDLE_S``): the scheduler starts the sandbox before the job exists (a warm runner,
``agentlab.jobs.warm``). The entry imports MODULE and calls its ``warm(hint)`` if it has one (``hint``: what
the module's ``warm_hint(args)`` said on the host of the previous job of this kind, ``.agentlab_warm.json``), writes
``.agentlab_ready``, then waits (no CPU: ``select`` on the FIFO ``.agentlab_go`` the host made in the workdir)
until the host writes ``job_call.json`` and signals; then it runs the call as above. With no call after IDLE_S
seconds it exits with status 75 and nothing else happens. Stdlib only before the call (it starts fast).
"""

from __future__ import annotations

import importlib
import json
import os
import sys

CALL_FILE = "job_call.json"
WARM_FIFO = ".agentlab_go"
WARM_READY = ".agentlab_ready"
WARM_HINT = ".agentlab_warm.json"
WARM_IDLE_EXIT = 75  # EX_TEMPFAIL: a warm sandbox nobody used


def _await_call(module: str, idle_s: float) -> bool:
    """Warm up for ``module`` and wait for the call; False when none came within ``idle_s``."""
    import select
    import time

    fd = os.open(WARM_FIFO, os.O_RDWR | os.O_NONBLOCK)  # read-write: a writer always exists, no EOF ever
    mod = importlib.import_module(module)
    if callable(getattr(mod, "warm", None)):
        hint = None
        if os.path.exists(WARM_HINT):  # from the module's warm_hint(args) of the previous job of this kind
            with open(WARM_HINT) as fh:
                hint = json.load(fh)
        mod.warm(hint)
    with open(WARM_READY, "w"):
        pass
    idle_from = time.monotonic()
    deadline = idle_from + idle_s
    while not os.path.exists(CALL_FILE):
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        if select.select([fd], [], [], left)[0]:
            try:
                os.read(fd, 4096)
            except BlockingIOError:
                pass
    os.close(fd)
    print(f"agentlab: warm start (waited {time.monotonic() - idle_from:.2f} s for the job)", file=sys.stderr,
          flush=True)
    return True


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--warm"] and not _await_call(argv[1], float(argv[2])):
        return WARM_IDLE_EXIT
    with open(CALL_FILE) as fh:
        call = json.load(fh)
    module_name, _, func_name = call["target"].partition(":")
    try:
        func = getattr(importlib.import_module(module_name), func_name)
        value = func(**call.get("args", {}))
        text = json.dumps(value, default=str)
    except Exception:
        import traceback

        traceback.print_exc()
        return 1
    with open(os.environ.get("AGENTLAB_RESULT", "result.json"), "w") as fh:
        fh.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
