"""Overhead of one evaluation job: from ``submit()`` to the job's first model request.

    .venv/bin/python benchmarks/bench_job_overhead.py [--jobs 10] [--modes cold,warm] [--profile]

A real evaluation job (``agentlab.eval.sandbox_job:run_eval``, the ``direct`` technique on one problem) goes
through the local scheduler, the bubblewrap sandbox and the metered model proxy, exactly as a lab's job
does, to a tiny OpenAI-compatible stub server in this process that answers at once and records when each
request arrives: so what is measured is the job machinery, not a model. Jobs run one at a time. Per job:

    dispatch   submit() -> the scheduler claims the job
    start      claimed -> the first request reaches the model server (the harness's probe of /models)
    total      submit() -> the first chat completion reaches the model server (the issue's figure)
    done       submit() -> the job's end (result recorded)

and the medians, for each mode:

    cold   ``warm_start=False``: a fresh sandbox and Python per job (the path before warm sandboxes)
    warm   ``warm_start=True``: the job takes the sandbox the scheduler started and prepared after the
           previous job (before each submit the benchmark waits until it is ready, as a lab's jobs,
           seconds apart, find it)

``--profile`` also times the bare sandbox (``python -c pass`` in bubblewrap) and prints a cold job's slowest
imports (``python -X importtime`` inside the sandbox). To measure an older checkout's cold path, run this
file with that checkout first on PYTHONPATH and ``--modes cold``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))  # last: a checkout on PYTHONPATH comes first

from agentlab.jobs import JobSpec, JobStore, LocalScheduler, Resources
from sandbox import Limits, ProxyConfig, SandboxOptions, run

MODEL = "stub-model"


class Stub:
    """An OpenAI-compatible server on 127.0.0.1 answering at once; records arrival times (perf_counter)."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, str]] = []  # (time, "GET /v1/models" | "POST /v1/chat/completions")
        self.chat = threading.Event()  # set by every chat completion (the benchmark waits on it: no polling)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out at once (no 40 ms delayed-ACK stall)

            def log_message(self, *args):
                pass

            def _send(self, obj) -> None:
                data = json.dumps(obj).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                outer.arrivals.append((time.perf_counter(), "GET " + self.path))
                self._send({"object": "list", "data": [{"id": MODEL, "object": "model"}]})

            def do_POST(self):
                outer.arrivals.append((time.perf_counter(), "POST " + self.path))
                outer.chat.set()
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                answer = {"role": "assistant", "content": "The answer is \\boxed{4}."}
                self._send({"id": "x", "object": "chat.completion", "model": MODEL,
                            "choices": [{"index": 0, "finish_reason": "stop", "message": answer}],
                            "usage": {"prompt_tokens": 10, "completion_tokens": 6, "total_tokens": 16}})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def first_after(self, t0: float, kind: str = "") -> float | None:
        return next((t for t, what in list(self.arrivals) if t >= t0 and kind in what), None)


def eval_job(stub: Stub, i: int, env: dict[str, str] | None = None) -> JobSpec:
    from agentlab.techniques import get_technique

    problem = {"id": f"p{i}", "question": "What is 2 + 2?", "answer": "4", "benchmark": "bench", "grader": "math"}
    args = {"spec": get_technique("direct", max_tokens=16).model_dump(mode="json"), "problems": [problem],
            "model": MODEL, "benchmark": "bench", "subset": f"overhead-{i}", "concurrency": 1,
            "timeout_s": 30, "max_retries": 0}
    proxy = ProxyConfig(upstream=stub.url, max_requests=None, max_tokens=None, allowed_models=[MODEL],
                        default_model=MODEL)
    return JobSpec(kind="eval", name=f"overhead-{i}", target="agentlab.eval.sandbox_job:run_eval", args=args,
                   network="proxy", env=env or {}, proxy=proxy,
                   resources=Resources(cpus=1.0, memory_mb=2048, timeout_s=120))


def measure(sched: LocalScheduler, stub: Stub, n: int, label: str, warm: bool) -> dict[str, float]:
    rows = []
    for i in range(n):
        if warm:  # a lab's jobs come seconds apart: its waiting sandbox is ready by then
            t_ready = time.perf_counter()
            while not sched.warm_ready() and time.perf_counter() - t_ready < 60:
                time.sleep(0.01)
        stub.chat.clear()
        t0 = time.perf_counter()
        wall0 = time.time()
        jid = sched.submit(eval_job(stub, i))
        while stub.first_after(t0, "chat/completions") is None:
            stub.chat.wait(120)
        t_chat = stub.first_after(t0, "chat/completions")
        t_any = stub.first_after(t0)
        job = sched.wait(jid, timeout=120)
        t_done = time.perf_counter()
        assert job.state == "succeeded", (job.state, job.error, job.stderr_tail())
        dispatch = (job.started_at or wall0) - wall0
        rows.append({"dispatch": dispatch, "start": (t_any - t0) - dispatch, "total": t_chat - t0,
                     "done": t_done - t0})  # type: ignore[operator]
        r = rows[-1]
        print(f"  {label} job {i + 1:2d}: dispatch {r['dispatch'] * 1000:6.1f} ms, start {r['start'] * 1000:7.1f} ms,"
              f" first chat completion {r['total'] * 1000:7.1f} ms, done {r['done']:.2f} s", flush=True)
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


def profile(sched: LocalScheduler, stub: Stub, opts: SandboxOptions, tmp: Path) -> None:
    cmd = [sys.executable, "-c", "pass"]
    times = []
    for i in range(5):
        t = time.perf_counter()
        r = run(command=cmd, options=opts, workdir=tmp / f"pass{i}", limits=Limits(timeout_s=60))
        times.append(time.perf_counter() - t)
        assert r.exit_code == 0, r.stderr_tail
    print(f"the sandbox alone ({opts.backend}, `python -c pass`, median of 5): "
          f"{statistics.median(times) * 1000:.0f} ms")
    job = sched.wait(sched.submit(eval_job(stub, 999, env={"PYTHONPROFILEIMPORTTIME": "1"})), timeout=120)
    rows = []
    for line in (Path(job.log_dir) / "stderr.log").read_text().splitlines():  # type: ignore[arg-type]
        if line.startswith("import time:") and "|" in line:
            parts = line[len("import time:"):].split("|")
            if parts[0].strip().isdigit():
                rows.append((int(parts[1]), parts[2][1:].rstrip()))
    top = [(us, name) for us, name in rows if not name.startswith(" ")]  # top-level imports (cumulative)
    print(f"imports in a cold job (python -X importtime, whole job): {sum(us for us, _ in top) / 1000:.0f} ms; "
          "slowest top-level:")
    for us, name in sorted(top, reverse=True)[:12]:
        print(f"  {us / 1000:7.1f} ms  {name}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=10)
    ap.add_argument("--modes", default="cold,warm", help="cold (warm_start=False), warm, or both")
    ap.add_argument("--profile", action="store_true", help="also profile imports and the bare sandbox")
    a = ap.parse_args()
    backend = "bubblewrap" if shutil.which("bwrap") else "process"
    opts = SandboxOptions(backend=backend)
    tmp = Path(tempfile.mkdtemp(prefix="bench-job-overhead-"))
    stub = Stub()
    results = {}
    try:
        for label in a.modes.split(","):
            warm = label == "warm"
            ws = tmp / f"ws-{label}"
            kw = {"warm_start": True} if warm else {}
            sched = LocalScheduler(JobStore(ws / "jobs.db"), ws, gpus=[], max_concurrent=1, cpus=2,
                                   sandbox_options=opts, **kw)
            try:
                sched.wait(sched.submit(eval_job(stub, -1)), timeout=120)  # page cache; the first waiting sandbox
                results[label] = med = measure(sched, stub, a.jobs, label, warm)
                print(f"{label}: submit -> first chat completion {med['total'] * 1000:.0f} ms (median of {a.jobs}; "
                      f"dispatch {med['dispatch'] * 1000:.0f} ms, then to the first request "
                      f"{med['start'] * 1000:.0f} ms); submit -> done {med['done']:.2f} s", flush=True)
                if a.profile and not warm:
                    profile(sched, stub, opts, tmp)
            finally:
                sched.shutdown()
        if {"cold", "warm"} <= set(results):
            c, w = results["cold"], results["warm"]
            print(f"evaluation job overhead ({backend}), submit -> first model request, median of {a.jobs}: "
                  f"cold start {c['total'] * 1000:.0f} ms, warm sandbox {w['total'] * 1000:.0f} ms; "
                  f"submit -> job done {c['done']:.2f} s vs {w['done']:.2f} s")
    finally:
        stub.httpd.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
