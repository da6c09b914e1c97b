"""``code`` techniques in the sandbox: the harness's ``code_solver`` for agent-written ``solve()``.

A code technique is untrusted Python (``solve(problem, client)``). ``SandboxCodeSolver`` runs it for
all problems of an evaluation in one scheduler job (kind ``eval``, a ``code`` entry) in the bubblewrap
sandbox with ``network = "proxy"``: no network, no host files, no secrets in the environment; the only
way out is the metered proxy's unix socket to the model under study, with this job's request and token
budget (HTTP 429 ``budget_exhausted`` once spent). ``client`` inside is a thin wrapper over
``agentlab_client`` (``client.complete(prompt, **params)``, ``client.chat(messages, **params)``).

The sandbox sees each problem's id, question, benchmark and grader, never its gold answer; the harness
grades the returned text on the host. Tokens per problem are the proxy's metered total for the job
split evenly over the problems (the job's own counts could be forged, the proxy's cannot).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Callable

from agentlab.eval.errors import EvalError, RequestFailed

# the job's code: a file of its own, so what runs inside the sandbox is visible by name
DRIVER = (Path(__file__).parent / "sandbox_solve.py").read_text()


class CodeJobFailed(EvalError):
    """The sandboxed job of a code technique failed as a whole (its stderr tail is in the message)."""


class SandboxCodeSolver:
    """``code_solver`` for ``agentlab.eval.harness.evaluate``: ``await solve(spec, problem, endpoint)``.

    The first call starts one job for every problem given at construction; later calls await it.
    """

    def __init__(self, scheduler: Any, problems: list[Any], proxy: Any, *, lab: str = "default",
                 run_id: str | None = None, name: str = "", resources: Any = None,
                 on_submit: Callable[[str], None] | None = None) -> None:
        self.scheduler, self.problems, self.proxy = scheduler, list(problems), proxy
        self.lab, self.run_id, self.name, self.resources, self.on_submit = lab, run_id, name, resources, on_submit
        self.job_id: str | None = None
        self.job: Any = None
        self._task: asyncio.Future | None = None

    def job_spec(self, spec: Any) -> Any:
        from agentlab.jobs import JobSpec, Resources

        visible = [{"id": p.id, "question": p.question, "benchmark": p.benchmark, "grader": p.grader}
                   for p in self.problems]  # never the gold answer
        return JobSpec(kind="eval", name=self.name or f"code:{spec.name}", lab=self.lab, run_id=self.run_id,
                       code=DRIVER, files={"technique.py": spec.code, "problems.json": json.dumps(visible)},
                       network="proxy", proxy=self.proxy, resources=self.resources or Resources(memory_mb=1024))

    def _run_job(self, spec: Any) -> dict[str, Any]:
        self.job_id = self.scheduler.submit(self.job_spec(spec))
        if self.on_submit is not None:
            self.on_submit(self.job_id)
        job = self.job = self.scheduler.wait(self.job_id)
        if job.state != "succeeded" or not isinstance(job.result, dict):
            tail = job.stderr_tail()
            raise CodeJobFailed(f"code technique job {job.id} {job.state}: {job.error or 'no result'}"
                                + (f"\n--- stderr (tail) ---\n{tail}" if tail else ""))
        tokens = metered_tokens(Path(job.log_dir)) if job.log_dir else 0
        share = tokens // max(1, len(self.problems))
        return {pid: {**r, "tokens": share} for pid, r in job.result.items() if isinstance(r, dict)}

    async def solve(self, spec: Any, problem: Any, endpoint: Any) -> tuple[str, int]:
        if self._task is None:
            self._task = asyncio.ensure_future(asyncio.to_thread(self._run_job, spec))
        out = await asyncio.shield(self._task)
        r = out.get(problem.id)
        if r is None:
            raise RequestFailed("the code technique returned nothing for this problem")
        if r.get("error"):
            raise RequestFailed(f"solve() failed: {str(r['error'])[-600:]}")
        return str(r.get("text") or ""), int(r.get("tokens") or 0)


def metered_tokens(log_dir: Path) -> int:
    """Prompt + completion tokens the metered proxy let through for a job (its call log)."""
    total = 0
    try:
        with open(log_dir / "proxy_calls.jsonl") as fh:
            for line in fh:
                try:
                    e = json.loads(line)
                except ValueError:
                    continue
                total += int(e.get("prompt_tokens") or 0) + int(e.get("completion_tokens") or 0)
    except OSError:
        pass
    return total
