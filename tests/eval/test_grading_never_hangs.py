"""Grading never hangs: a pathological answer (a power tower sympy would expand for minutes while holding
the GIL) is graded wrong within math-verify's timeouts, in the main thread (SIGALRM) and in any other thread
(a child process killed at its deadline)."""

import threading

import pytest

from agentlab.bench.grading import answers_equivalent, extract_answer, grade
from agentlab.bench.registry import Problem

TOWER = r"The answer is $\boxed{9^{9^{9^{9}}}}$."
HANG_GUARD_S = 240  # far above the grading deadlines: only a hang gets near it


def _problem(answer: str = "1") -> Problem:
    return Problem(id="p", question="?", answer=answer, benchmark="math500", grader="math")


def test_pathological_answer_in_the_main_thread_is_wrong_not_stuck():
    g = grade(_problem(), TOWER)
    assert not g.correct and g.extracted is not None


@pytest.mark.timeout(HANG_GUARD_S + 60)
def test_pathological_answer_in_another_thread_is_wrong_not_stuck():
    out: dict = {}

    def work():
        out["tower"] = grade(_problem(), TOWER)
        out["normal"] = grade(_problem(r"\frac{1}{2}"), r"so $\boxed{0.5}$")  # the worker still grades
        out["extract"] = extract_answer(r"$\boxed{\dfrac{3}{4}}$", "math")
        out["vote"] = answers_equivalent(r"\frac{1}{2}", "0.5", "math")

    t = threading.Thread(target=work, daemon=True)
    t.start()
    t.join(HANG_GUARD_S)
    assert not t.is_alive(), "grading hung in a worker thread"
    assert not out["tower"].correct
    assert out["normal"].correct and out["normal"].extracted
    assert out["extract"] and out["vote"] is True


@pytest.mark.timeout(HANG_GUARD_S + 60)
def test_a_call_past_its_deadline_kills_the_child_and_the_next_call_gets_a_fresh_one(monkeypatch):
    import time

    from agentlab.bench import grading

    worker = grading._MathWorker()
    worker.call(abs, (-1,), default=None)  # the child is up: later deadlines have no start-up allowance
    monkeypatch.setattr(grading, "MATH_TIMEOUT_S", 0.5)  # deadline 2 s; the call would take 600 s
    child = worker._pool._pool[0]
    assert worker.call(time.sleep, (600,), default="timed out") == "timed out"
    child.join(30)
    assert not child.is_alive() and worker._pool is None
    assert worker.call(abs, (-3,), default=None) == 3
