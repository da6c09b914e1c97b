"""Escape battery: every case must be contained by the bubblewrap backend."""

from __future__ import annotations

import os
import socket
import subprocess
import textwrap
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest

from sandbox import BubblewrapMissing, Limits, SandboxError, SandboxOptions, read_workdir_file, run
from tests.sandbox.conftest import needs_bwrap
from tests.sandbox.waits import wait_until

pytestmark = [needs_bwrap, pytest.mark.integration]


def sb(code: str, opts: SandboxOptions, tmp_path: Path, **kw):
    kw.setdefault("limits", Limits(timeout_s=30, memory_mb=256, disk_mb=64))
    return run(code=textwrap.dedent(code), options=opts, workdir=tmp_path / "work", **kw)


def test_runs_and_reports(opts, tmp_path):
    r = sb("import os; print('hello', os.getcwd()); open('a.txt','w').write('x')", opts, tmp_path)
    assert r.exit_code == 0 and r.killed_by is None
    assert "hello /job" in r.stdout_tail
    assert "a.txt" in r.artifacts and (r.artifacts_dir / "a.txt").read_text() == "x"
    assert r.stdout_path.read_text().startswith("hello")
    assert "bubblewrap" in r.isolation


def test_exit_code_and_stderr(opts, tmp_path):
    r = sb("import sys; print('bad', file=sys.stderr); sys.exit(3)", opts, tmp_path)
    assert r.exit_code == 3 and "bad" in r.stderr_tail and r.killed_by is None


def test_cannot_read_host_secret_file(opts, tmp_path):
    secret = "S3CRET-" + uuid.uuid4().hex
    planted = [tmp_path / "secret.txt", Path.home() / f".agentlab-test-secret-{uuid.uuid4().hex}",
               Path("/var/tmp") / f"agentlab-test-secret-{uuid.uuid4().hex}"]
    for p in planted:
        p.write_text(secret)
    try:
        paths = [str(p) for p in planted] + ["/etc/shadow", "/root/.bash_history"]
        r = sb(f"""
            import os
            for p in {paths!r}:
                try:
                    print(p, open(p).read())
                except Exception as exc:
                    print(p, 'DENIED', type(exc).__name__)
            """, opts, tmp_path)
    finally:
        for p in planted:
            p.unlink()
    assert r.exit_code == 0, r.stderr_tail
    assert secret not in r.stdout_path.read_text()
    assert r.stdout_tail.count("DENIED") == len(paths)


def test_cannot_read_host_env_secret(opts, tmp_path, monkeypatch):
    secret = "sk-" + uuid.uuid4().hex
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    monkeypatch.setenv("LANG", "C.UTF-8")
    r = sb("""
        import os
        print(dict(os.environ))
        for pid in os.listdir('/proc'):
            if pid.isdigit():
                try: print(open(f'/proc/{pid}/environ','rb').read())
                except Exception as exc: print('denied', exc)
        """, opts, tmp_path)
    assert r.exit_code == 0
    assert secret not in r.stdout_path.read_text()
    assert "OPENAI_API_KEY" not in r.stdout_path.read_text()
    with pytest.raises(SandboxError, match="looks like a secret"):
        sb("pass", opts, tmp_path, env={"OPENAI_API_KEY": secret})


def test_cannot_write_outside_workdir(opts, tmp_path):
    marker = f"agentlab-escape-{uuid.uuid4().hex}"
    targets = [str(tmp_path / marker), f"/etc/{marker}", f"/usr/{marker}", f"/{marker}", f"/job/../{marker}",
               f"/var/tmp/{marker}", str(Path.home() / marker)]
    r = sb(f"""
        for p in {targets!r}:
            try:
                open(p, 'w').write('pwned'); print(p, 'WROTE')
            except Exception as exc:
                print(p, 'DENIED', type(exc).__name__)
        open('/tmp/{marker}', 'w').write('private tmp is fine')
        """, opts, tmp_path)
    assert r.exit_code == 0, r.stderr_tail
    assert "WROTE" not in r.stdout_tail
    for t in targets + [f"/tmp/{marker}"]:
        assert not Path(t).exists(), t


def test_cannot_connect_to_host_service(opts, tmp_path):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    srv.settimeout(0.2)
    port = srv.getsockname()[1]
    accepted, done = [], threading.Event()

    def accept():  # until the run is over, then once more for a connection still in the backlog
        while not accepted:
            try:
                accepted.append(srv.accept())
            except TimeoutError:
                if done.is_set():
                    return

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    hosts = ("127.0.0.1", "localhost", "10.0.2.2", "172.17.0.1")
    try:
        r = sb(f"""
            import socket
            for host in {hosts!r}:
                try:
                    socket.create_connection((host, {port}), timeout=2); print(host, 'CONNECTED')
                except Exception as exc:
                    print(host, 'BLOCKED', type(exc).__name__)
            """, opts, tmp_path)
    finally:
        done.set()
        t.join(timeout=30)
        srv.close()
    assert r.exit_code == 0, r.stderr_tail
    # one line per host, each attempt refused: the script ran to its end and reached nothing
    assert [line.split()[:2] for line in r.stdout_tail.splitlines()] == [[h, "BLOCKED"] for h in hosts], r.stdout_tail
    assert not accepted


def test_no_dns_or_internet(opts, tmp_path):
    r = sb("""
        import socket
        try:
            print('dns', socket.getaddrinfo('pypi.org', 443)); print('RESOLVED')
        except Exception as exc:
            print('dns BLOCKED', type(exc).__name__)
        for addr in [('1.1.1.1', 53), ('151.101.0.223', 443)]:
            try:
                socket.create_connection(addr, timeout=3); print(addr, 'CONNECTED')
            except Exception as exc:
                print(addr, 'BLOCKED', type(exc).__name__)
        import os
        print('ifaces', os.listdir('/sys/class/net') if os.path.exists('/sys/class/net') else 'none')
        """, opts, tmp_path)
    assert r.exit_code == 0, r.stderr_tail
    assert "RESOLVED" not in r.stdout_tail and "CONNECTED" not in r.stdout_tail
    assert r.stdout_tail.count("BLOCKED") == 3
    assert r.stdout_tail.splitlines()[-1] in ("ifaces none", "ifaces ['lo']"), r.stdout_tail


def _leftovers(token: str) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(token in (c or "") for c in (p.info["cmdline"] or [])):
                out.append(p)
        except psutil.Error:
            pass
    return out


def test_fork_bomb_contained(opts, tmp_path):
    token = "forkbomb-" + uuid.uuid4().hex
    r = sb(f"""
        import os, sys, time
        sys.argv.append({token!r})
        n = 0
        while True:
            try:
                if os.fork() == 0:
                    time.sleep(60)
                    os._exit(0)
                n += 1
            except OSError:
                print('fork refused after', n, flush=True)
                break
        time.sleep(60)
        """, opts, tmp_path, limits=Limits(timeout_s=10, max_procs=32, memory_mb=256))
    assert r.killed_by == "wall_timeout" and r.exit_code == 137, (r.killed_by, r.exit_code, r.stderr_tail)
    lines = r.stdout_tail.splitlines()
    assert len(lines) == 1 and lines[0].startswith("fork refused after "), r.stdout_tail
    # the run's own processes (launcher, bwrap, the program) count against the 32 too, a handful at most:
    # the program forked up to the limit, not less (0 would mean fork never worked) and not more
    assert 32 - 8 <= int(lines[0].split()[-1]) < 32, lines[0]
    wait_until(lambda: not _leftovers(token), 30, "the fork bomb's processes to be gone")


def test_memory_bomb_killed_and_named(opts, tmp_path):
    r = sb("""
        blocks = []
        while True:
            blocks.append(bytearray(16 * 1024 * 1024))
        """, opts, tmp_path, limits=Limits(timeout_s=30, memory_mb=128))
    assert r.exit_code != 0
    assert r.killed_by == "memory", (r.killed_by, r.stderr_tail)
    assert "128 MB" in (r.limit_message or "")


def test_disk_fill_stopped(opts, tmp_path):
    r = sb("""
        chunk = b'x' * (1024 * 1024)
        with open('big.bin', 'wb') as fh:
            while True:
                fh.write(chunk)
        """, opts, tmp_path, limits=Limits(timeout_s=30, disk_mb=20))
    assert r.killed_by == "disk", (r.killed_by, r.exit_code, r.stderr_tail)
    assert (tmp_path / "work" / "big.bin").stat().st_size <= 20 * 1024 * 1024


def test_disk_fill_many_files_stopped(opts, tmp_path):
    r = sb("""
        import os, time
        chunk = b'x' * (1024 * 1024)
        i = 0
        while True:
            with open(f'f{i}.bin', 'wb') as fh:
                fh.write(chunk)
            i += 1
            time.sleep(0.01)
        """, opts, tmp_path, limits=Limits(timeout_s=60, disk_mb=20, max_file_mb=2))
    assert r.killed_by == "disk", (r.killed_by, r.stderr_tail)
    total = sum(p.stat().st_size for p in (tmp_path / "work").glob("f*.bin"))
    assert total < 40 * 1024 * 1024


def test_busy_loop_past_cpu_limit(opts, tmp_path):
    r = sb("while True: pass", opts, tmp_path, limits=Limits(timeout_s=60, cpu_s=1))
    assert r.killed_by == "cpu" and r.timed_out
    assert r.cpu_s >= 1
    assert "CPU time limit 1 s" == r.limit_message


def test_busy_loop_in_many_processes_counts_total_cpu(opts, tmp_path):
    """Four processes each spin 1.5 s of CPU, under the per-process limit (RLIMIT_CPU 3 s for cpu_s=2),
    6 s together: only the run's total (its cgroup) can stop them, at about 2 s."""
    r = sb("""
        import os, time
        children = 0
        for _ in range(3):
            if os.fork() == 0:
                children = -1  # a child: no children of its own to wait for
                break
            children += 1
        while time.process_time() < 1.5:  # this process's own CPU time
            pass
        for _ in range(max(children, 0)):
            os.wait()
        """, opts, tmp_path, limits=Limits(timeout_s=60, cpu_s=2))
    if not any("cpuacct" in mechanism for mechanism in r.isolation):
        pytest.skip(f"no CPU accounting cgroup here ({r.isolation}): only per-process CPU limits apply")
    assert r.killed_by == "cpu" and r.limit_message == "CPU time limit 2 s", (r.killed_by, r.exit_code)
    # the whole run's CPU time: past the limit, short of the 6 s the four would have spent (the monitor
    # polls the cgroup 4 times a second: a late poll on a busy machine overshoots by a fraction of that)
    assert 2 <= r.cpu_s < 5, r.cpu_s


def test_sleep_past_wall_timeout(opts, tmp_path):
    # a shell sleeper: it starts in milliseconds, so a short limit does not race a Python start-up
    r = run(command=["sh", "-c", "echo start; exec sleep 600"], options=opts, workdir=tmp_path / "work",
            limits=Limits(timeout_s=2))
    assert r.timed_out and r.killed_by == "wall_timeout"
    assert r.exit_code == 137
    assert r.stdout_tail == "start\n", "partial output is kept"
    assert r.limit_message == "wall-clock timeout 2 s"
    assert 2 <= r.wall_s < 60


@pytest.mark.parametrize("ends", ["timeout", "normal_exit"])
def test_no_orphan_or_daemon_survives(opts, tmp_path, ends):
    token = "daemon-" + uuid.uuid4().hex
    r = sb(f"""
        import os, sys, time, subprocess
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.execvp(sys.executable, [sys.executable, '-c',
                    'import time\\nwhile True:\\n    open("/job/alive","a").write("x"); time.sleep(0.05)', {token!r}])
            os._exit(0)
        subprocess.Popen(['sleep', '1000', {token!r}], start_new_session=True)
        end = time.monotonic() + 60
        while not (os.path.exists('/job/alive') and os.path.getsize('/job/alive') > 1) and time.monotonic() < end:
            time.sleep(0.05)
        print('spawned', os.path.getsize('/job/alive') > 1, flush=True)
        {"time.sleep(600)" if ends == "timeout" else "pass"}
        """, opts, tmp_path, limits=Limits(timeout_s=10 if ends == "timeout" else 120))
    assert r.stdout_tail == "spawned True\n", (r.stdout_tail, r.stderr_tail)
    if ends == "timeout":
        assert (r.killed_by, r.exit_code) == ("wall_timeout", 137)
    else:
        assert (r.killed_by, r.exit_code) == (None, 0), r.stderr_tail
    wait_until(lambda: not _leftovers(token), 30, "the daemon and the detached sleep to be gone")
    alive = tmp_path / "work" / "alive"
    size = alive.stat().st_size
    time.sleep(0.5)  # nothing may write any more: the daemon is gone, not just quiet
    assert alive.stat().st_size == size


def test_cannot_see_host_processes(opts, tmp_path):
    r = sb("""
        import os
        pids = [p for p in os.listdir('/proc') if p.isdigit()]
        print('pids', len(pids))
        for p in pids:
            try: print(open(f'/proc/{p}/cmdline','rb').read().replace(b'\\0', b' '))
            except Exception: pass
        """, opts, tmp_path)
    assert r.exit_code == 0
    assert int(r.stdout_tail.split("pids")[1].split()[0]) <= 5
    text = r.stdout_path.read_text()
    host = " ".join(psutil.Process(os.getpid()).cmdline()[:2])
    assert host not in text
    assert all(("_main.py" in line or "bwrap" in line) for line in text.splitlines()[1:])


def test_kill_the_parent(opts, tmp_path):
    canary = subprocess.Popen(["sleep", "300"])  # a host process the sandbox is told the pid of
    try:
        r = sb(f"""
            import os, signal
            for pid in (os.getppid(), 1, -1, {canary.pid}):
                try:
                    os.kill(pid, signal.SIGKILL); print(pid, 'SENT')
                except Exception as exc:
                    print(pid, 'REFUSED', type(exc).__name__)
            print('still here', flush=True)
            """, opts, tmp_path)
        canary_alive = canary.poll() is None
    finally:
        canary.kill()
        canary.wait()
    # the program's parent is the namespace's init (pid 1): killing it would end the run with 137
    assert r.exit_code == 0, (r.exit_code, r.stdout_tail, r.stderr_tail)
    lines = r.stdout_tail.splitlines()
    assert lines[2:] == ["-1 REFUSED ProcessLookupError", f"{canary.pid} REFUSED ProcessLookupError", "still here"]
    if any(i.startswith("uid-drop") for i in r.isolation):  # root: bwrap's init runs as another uid
        assert lines[:2] == ["1 REFUSED PermissionError"] * 2
    else:  # user namespace, same uid: the kernel drops a signal to the namespace's init from inside
        assert all(line in ("1 REFUSED PermissionError", "1 SENT") for line in lines[:2]), lines
    assert canary_alive, "a host process was killed from inside the sandbox"


def test_ptrace_refused(opts, tmp_path):
    r = sb(f"""
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        for pid in (1, os.getppid(), {os.getpid()}):
            rc = libc.ptrace(16, pid, None, None)  # PTRACE_ATTACH
            print(pid, 'ATTACHED' if rc == 0 else 'REFUSED', ctypes.get_errno())
        """, opts, tmp_path)
    assert r.exit_code == 0, r.stderr_tail
    assert "ATTACHED" not in r.stdout_tail and r.stdout_tail.count("REFUSED") == 3


def test_cannot_raise_own_limits(opts, tmp_path):
    r = sb("""
        import os, resource
        soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
        try:
            resource.setrlimit(resource.RLIMIT_CPU, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)); print('RAISED')
        except Exception as exc:
            print('REFUSED', type(exc).__name__)
        print('cgroupfs', os.path.exists('/sys/fs/cgroup/memory'))
        print('uid', os.getuid())
        """, opts, tmp_path)
    assert r.exit_code == 0, r.stderr_tail
    lines = r.stdout_tail.splitlines()
    assert lines[:2] == ["REFUSED ValueError", "cgroupfs False"], lines
    assert lines[2].startswith("uid ") and lines[2] != "uid 0"


def test_output_is_bounded(opts, tmp_path):
    r = sb("""
        import sys
        line = 'y' * 1023 + '\\n'
        for _ in range(30 * 1024):
            sys.stdout.write(line)
        print('THE END')
        """, opts, tmp_path, limits=Limits(timeout_s=60, max_log_mb=1))
    assert r.exit_code == 0
    assert r.stdout_truncated
    assert r.stdout_path.stat().st_size < 1024 * 1024 + 200
    assert "THE END" in r.stdout_tail


def test_artifacts_never_follow_links(opts, tmp_path):
    r = sb("""
        import os
        os.symlink('/etc/passwd', 'passwd_link')
        os.mkdir('d'); os.symlink('/usr', 'd/usr_link')
        open('real.txt', 'w').write('ok')
        """, opts, tmp_path)
    assert r.exit_code == 0
    assert r.artifacts == ["_main.py", "real.txt"]
    assert read_workdir_file(r.workdir, "passwd_link") is None
    assert read_workdir_file(r.workdir, "real.txt") == b"ok"


def test_bubblewrap_missing_is_explained(tmp_path):
    with pytest.raises(BubblewrapMissing) as exc:
        run(code="pass", options=SandboxOptions(bwrap_path=str(tmp_path / "no-bwrap")), workdir=tmp_path / "w")
    msg = str(exc.value)
    assert "apt-get install -y bubblewrap" in msg and "process" in msg


def test_logs_are_outside_the_workdir(opts, tmp_path):
    r = sb("import os; print(sorted(os.listdir('/job'))); print(os.path.exists('/job/../stdout.log'))",
           opts, tmp_path)
    assert r.exit_code == 0, r.stderr_tail
    assert r.workdir not in r.stdout_path.parents
    # inside: the workdir holds only the program, and no log is reachable beside it
    assert r.stdout_tail.splitlines() == ["['_main.py']", "False"], r.stdout_tail
    assert r.stdout_path.read_text() == r.stdout_tail
    assert not list(r.workdir.glob("*.log"))
