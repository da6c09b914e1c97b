"""Runs a job's ``target`` callable inside the sandbox: ``python -m agentlab.jobs.sandbox_entry``.

Reads ``job_call.json`` ({"target": "pkg.mod:function", "args": {...}}) from the working directory,
imports the module, calls ``function(**args)`` and writes the JSON-serializable return value to
``$AGENTLAB_RESULT``. An exception prints its traceback to stderr and exits with status 1.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback

CALL_FILE = "job_call.json"


def main() -> int:
    with open(CALL_FILE) as fh:
        call = json.load(fh)
    module_name, _, func_name = call["target"].partition(":")
    try:
        func = getattr(importlib.import_module(module_name), func_name)
        value = func(**call.get("args", {}))
        text = json.dumps(value, default=str)
    except Exception:
        traceback.print_exc()
        return 1
    with open(os.environ.get("AGENTLAB_RESULT", "result.json"), "w") as fh:
        fh.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
