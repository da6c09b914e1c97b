"""Run a server command and stop it when the process that asked for it dies.

``python -m agentlab.llm._watchdog PARENT_PID -- CMD...``: a model server started for a lab, a test or
a benchmark must not outlive its owner, even when the owner is killed with SIGKILL and no cleanup
code runs. (``agentlab models serve --detach`` starts servers without it, on purpose.)
"""

import os
import signal
import subprocess
import sys
import time


def main() -> int:
    parent = int(sys.argv[1])
    cmd = sys.argv[sys.argv.index("--") + 1 :]
    child = subprocess.Popen(cmd)

    def stop(*_args) -> None:
        child.terminate()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while child.poll() is None:
        if os.getppid() != parent:  # re-parented: the owner is gone
            stop()
        time.sleep(0.5)
    return child.returncode


if __name__ == "__main__":
    sys.exit(main())
