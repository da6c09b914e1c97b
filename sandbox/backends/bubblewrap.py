"""The ``bubblewrap`` backend: fresh namespaces, a read-only minimal root, only the workdir writable.

As root, bwrap runs privileged without a user namespace and ``setpriv`` drops the program to an
unprivileged uid (``sandbox.uid``, default 65534) with no capabilities; as a normal user, bwrap
uses an unprivileged user namespace. Either way: no network (unless ``network='host'``), new pid,
ipc, uts and cgroup namespaces, a new session, die-with-parent, ``no_new_privs``.

The file system inside is assembled from scratch: ``/usr`` (and the merged-usr links), a short list
of ``/etc`` files, the Python runtime (venv and base prefix), the workdir at ``/job``, a size-limited
private ``/tmp``, a minimal ``/dev`` and a new ``/proc``. Nothing else of the host is visible: not
``/root``, ``/home``, the repository, the workspace or other jobs.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from sandbox.backends.process import Prepared
from sandbox.types import BubblewrapMissing

JOB_DIR = "/job"
LIB_DIR = "/opt/agentlab/lib"
SOCKET_PATH = "/run/agentlab/model.sock"

ETC_FILES = [
    "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "nsswitch.conf", "passwd", "group", "hosts",
    "localtime", "timezone", "ssl", "ca-certificates", "ca-certificates.conf", "alternatives",
    "mime.types", "os-release", "fonts", "matplotlibrc",
]
MERGED_USR = ["bin", "sbin", "lib", "lib32", "lib64", "libx32"]
GPU_SHARED_NODES = ["nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset"]  # names under /dev
GPU_SYS_PATHS = ["/sys/devices", "/sys/bus/pci", "/sys/module/nvidia", "/sys/class/drm"]

INSTALL_HINT = (
    "install it with `sudo apt-get install -y bubblewrap` (Debian/Ubuntu; `dnf install bubblewrap` on Fedora), "
    "or set the bwrap path with sandbox.bwrap_path (AGENTLAB_SANDBOX__BWRAP_PATH), "
    "or opt into the unisolated fallback with sandbox.backend = \"process\" (AGENTLAB_SANDBOX__BACKEND=process)"
)


def find_bwrap(path: str | None) -> str:
    """The bwrap executable, or :class:`BubblewrapMissing` with instructions."""
    if path:
        p = Path(path)
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
        found = shutil.which(path) if os.sep not in path else None
        if found:
            return found
        raise BubblewrapMissing(f"bubblewrap not found at {path}: {INSTALL_HINT}")
    found = shutil.which("bwrap")
    if not found:
        raise BubblewrapMissing(f"bubblewrap (bwrap) is not installed: {INSTALL_HINT}")
    return found


def runtime_paths() -> list[str]:
    """Host folders the Python runtime needs (venv, base prefix) outside /usr."""
    out: list[str] = []
    for p in {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
              str(Path(os.path.realpath(sys.executable)).parent.parent)}:
        rp = os.path.realpath(p)
        if rp.startswith("/usr/") or rp == "/usr" or rp == "/":
            continue
        out.append(p)
        if rp != p:
            out.append(rp)
    try:
        import site

        user_site = site.getusersitepackages()
        if user_site and os.path.isdir(user_site) and site.ENABLE_USER_SITE:
            out.append(user_site)  # packages installed with pip --user (read-only inside)
    except (AttributeError, ImportError):
        pass
    return sorted(set(out))


class _Argv:
    """bwrap's arguments as they are assembled; records the folders that exist inside so far."""

    def __init__(self, bwrap: str) -> None:
        self.args: list[str] = [bwrap]
        self.made: set[str] = {"/"}

    def parents(self, target: str) -> None:
        # bwrap creates missing parents 0700; an unprivileged uid could not traverse them
        parts = Path(target).parent.parts
        for i in range(2, len(parts) + 1):
            d = str(Path(*parts[:i]))
            if d not in self.made:
                self.args.extend(["--perms", "0755", "--dir", d])
                self.made.add(d)

    def bind(self, flag: str, src: str, dst: str) -> None:
        self.parents(dst)
        self.args.extend([flag, src, dst])
        self.made.add(dst)


class BubblewrapBackend:
    name = "bubblewrap"
    dev_root = "/dev"  # where the host's GPU device nodes are found (tests point it at a fake tree)

    def __init__(self, bwrap_path: str | None = None) -> None:
        self.bwrap = find_bwrap(bwrap_path)
        self.setpriv = shutil.which("setpriv")

    def prepare(self, plan) -> Prepared:  # plan: sandbox.executor.Plan
        argv = _Argv(self.bwrap)
        privileged = os.geteuid() == 0
        drop = privileged and plan.drop_privileges and self.setpriv is not None
        isolation = _namespaces(argv, plan, privileged, drop)
        _system_files(argv, plan.limits.tmp_mb * 1024 * 1024)
        _run_files(argv, plan, isolation)
        if plan.gpus:
            _gpu_devices(argv, plan, isolation, Path(self.dev_root))
        argv.args += ["--remount-ro", "/", "--chdir", JOB_DIR]
        a = argv.args
        if drop:
            a += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP"]
            a += ["--", self.setpriv, "--reuid", str(plan.uid), "--regid", str(plan.gid), "--clear-groups",
                  "--inh-caps", "-all", "--bounding-set", "-all", "--"]
            isolation.append(f"uid-drop:{plan.uid}")
        else:
            a += ["--cap-drop", "ALL", "--"]
            isolation.append("user-namespace")
        a += plan.sandbox_command
        return Prepared(argv=a, cwd="/", isolation=isolation, drop_to=None)


def _namespaces(argv: _Argv, plan, privileged: bool, drop: bool) -> list[str]:
    """New namespaces (the network too, unless ``host``), the user mapping; the isolation list so far."""
    a = argv.args
    a += ["--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try"]
    if plan.network != "host":
        a.append("--unshare-net")
    if privileged and not drop:
        a += ["--unshare-user", "--uid", str(plan.uid), "--gid", str(plan.gid)]
    elif not privileged:
        a += ["--unshare-user"]
    a += ["--die-with-parent", "--new-session", "--hostname", "sandbox"]
    return ["bubblewrap", "namespaces:pid,ipc,uts,mount" + (",net" if plan.network != "host" else ""),
            "read-only-root", "new-session", "die-with-parent", "no-new-privs"]


def _system_files(argv: _Argv, tmp_bytes: int) -> None:
    """/usr and the merged-usr links, the listed /etc files, a private /tmp, the Python runtime (read-only)."""
    a, made = argv.args, argv.made
    a += ["--ro-bind", "/usr", "/usr"]
    made.add("/usr")
    for d in MERGED_USR:
        p = Path("/") / d
        if p.is_symlink():
            a += ["--symlink", os.readlink(p), str(p)]
        elif p.is_dir():
            a += ["--ro-bind", str(p), str(p)]
        made.add(str(p))
    a += ["--perms", "0755", "--dir", "/etc"]
    made.add("/etc")
    for name in ETC_FILES:
        p = Path("/etc") / name
        if p.exists():
            a += ["--ro-bind", str(p), str(p)]
    # a private /tmp before the runtime: a venv or checkout under /tmp is bound on top of it, not hidden
    a += ["--perms", "1777", "--size", str(tmp_bytes), "--tmpfs", "/tmp"]
    made.add("/tmp")
    for p in runtime_paths():
        if Path(p).exists() and not any(p == m or p.startswith(m.rstrip("/") + "/") for m in ("/usr",)):
            if os.path.islink(p):
                argv.parents(p)
                a += ["--symlink", os.readlink(p), p]
                made.add(p)
            else:
                argv.bind("--ro-bind", p, p)


def _run_files(argv: _Argv, plan, isolation: list[str]) -> None:
    """This run's mounts: its read-only binds, /dev, /proc, the workdir, the client helper and the proxy socket."""
    for src, dst in plan.ro_binds.items():
        argv.bind("--ro-bind", str(src), str(dst))
    argv.args += ["--dev", "/dev", "--proc", "/proc"]
    argv.bind("--bind", str(plan.workdir), JOB_DIR)
    argv.bind("--ro-bind", str(plan.client_helper), f"{LIB_DIR}/agentlab_client.py")
    if plan.proxy_socket is not None:
        argv.bind("--bind", str(plan.proxy_socket), SOCKET_PATH)
        isolation.append("model-proxy-socket")


def _gpu_devices(argv: _Argv, plan, isolation: list[str], dev_root: Path) -> None:
    """Only the assigned GPUs' device nodes, plus the shared control nodes and the sysfs they need;
    each found under ``dev_root`` on the host, bound at ``/dev/<name>`` inside."""
    for name in GPU_SHARED_NODES + [f"nvidia{g}" for g in plan.gpu_indices]:
        if (dev_root / name).exists():
            argv.args += ["--dev-bind", str(dev_root / name), f"/dev/{name}"]
    if (dev_root / "nvidia-caps").is_dir():
        argv.args += ["--dev-bind", str(dev_root / "nvidia-caps"), "/dev/nvidia-caps"]
    for p in GPU_SYS_PATHS:
        if os.path.exists(p):
            argv.bind("--ro-bind", p, p)
    isolation.append("gpu-devices:" + ",".join(str(g) for g in plan.gpu_indices))
