"""Answer extraction and grading.

- ``math`` (MATH-500, AIME, AMC): ``math-verify`` — boxed answers first, then the last answer in
  the text; LaTeX and sympy equivalence (fractions vs decimals, intervals, sets, degrees, units,
  ``\\text{}``, ``\\dfrac``...), with its own timeouts.
- ``gsm8k``: the final number (``#### N``, ``\\boxed{N}``, "the answer is N", else the last number),
  thousands separators and currency signs dropped, compared exactly as a rational number.
- ``reasoning_gym``: the task's own scorer on the extracted answer.

Grading never hangs: math-verify's timeouts use SIGALRM, which only works in the main thread, and a
pathological answer (``9^{9^{9^9}}``) holds the GIL inside sympy's integer arithmetic, so no thread can
bound it. Outside the main thread, math grading therefore runs in a child process (``_MathWorker``)
that is killed at its deadline; the answer then counts as wrong.
"""

from __future__ import annotations

import logging
import multiprocessing
import re
import threading
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

from agentlab.bench.registry import Problem, import_reasoning_gym

MATH_TIMEOUT_S = 5
log = logging.getLogger(__name__)


@dataclass
class Grade:
    correct: bool
    extracted: str | None  # the model's answer as graded (None: nothing found)
    score: float = 0.0


def _timeout() -> int | None:
    return MATH_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None


# -- math (math-verify) -------------------------------------------------------------------------

def _parse_gold(gold: str) -> list:
    gold = gold.strip()
    text = gold if gold.startswith("$") and gold.endswith("$") and len(gold) > 1 else f"${gold}$"
    from math_verify import parse  # lazy: sympy costs ~0.6 s at import, the CLI should start fast

    parsed = parse(text, parsing_timeout=_timeout())
    return parsed or parse(gold, parsing_timeout=_timeout())


def _parse_pred(text: str) -> list:
    from math_verify import parse

    return parse(text, parsing_timeout=_timeout())


def _math_equal(gold_parsed: list, pred_parsed: list) -> bool:
    if not gold_parsed or not pred_parsed:
        return False
    try:
        from math_verify import verify

        return bool(verify(gold_parsed, pred_parsed, timeout_seconds=_timeout()))
    except Exception:
        return False


def _shown(parsed: list) -> str | None:
    if not parsed:
        return None
    return str(parsed[-1]) if isinstance(parsed[-1], str) else str(parsed[0])


def _math_extract(text: str) -> str | None:
    return _shown(_parse_pred(text))


def _math_grade(gold: str, response: str) -> tuple[bool, str | None]:
    pred = _parse_pred(response)
    return _math_equal(_parse_gold(gold), pred), _shown(pred)


def _math_equivalent(gold: str, predicted: str) -> bool:
    pred = predicted if "\\boxed" in predicted else "\\boxed{" + predicted + "}"
    return _math_equal(_parse_gold(gold), _parse_pred(pred))


class _MathWorker:
    """math-verify in a child process, one call at a time, for callers outside the main thread. A call
    past its deadline kills the child (the next call starts a fresh one) and returns the default."""

    START_S = 60.0  # a fresh child imports sympy and math-verify first (slow on a busy machine)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool: Any = None

    def call(self, fn: Any, args: tuple, default: Any) -> Any:
        with self._lock:
            fresh = self._pool is None
            if fresh:
                self._pool = multiprocessing.get_context("spawn").Pool(1)
            # parse gold, parse prediction and verify each have math-verify's own SIGALRM timeout in the child
            deadline = 4 * MATH_TIMEOUT_S + (self.START_S if fresh else 0.0)
            try:
                return self._pool.apply_async(fn, args).get(timeout=deadline)
            except multiprocessing.TimeoutError:
                log.warning("math grading passed %.0f s; the answer counts as wrong", deadline)
                self._pool.terminate()
                self._pool = None
                return default


_WORKER = _MathWorker()


def _math(fn: Any, *args: Any, default: Any) -> Any:
    """``fn(*args)`` here in the main thread (math-verify's SIGALRM timeouts work there), else in the
    child process with a deadline."""
    if threading.current_thread() is threading.main_thread():
        return fn(*args)
    return _WORKER.call(fn, args, default)


# -- gsm8k (exact numbers) ------------------------------------------------------------------------

_NUM = r"-?\$?\s?\d[\d,]*(?:\.\d+)?|-?\$?\s?\.\d+"
_GSM_PATTERNS = [
    re.compile(r"####\s*(" + _NUM + ")"),
    re.compile(r"\\boxed\{\s*\\?\$?\s*(" + _NUM + r")\s*\}"),
    re.compile(r"answer\s*(?:is|:)\s*[:\s]*\**\s*\\?\(?\s*(" + _NUM + ")", re.I),
]


def to_number(text: str | None) -> Fraction | None:
    """``'1,234.50'``, ``'$7'``, ``'3/4'``, ``'-2.'`` -> an exact Fraction; None if not a number."""
    if text is None:
        return None
    t = text.strip().replace(",", "").replace("$", "").replace("\\!", "").replace(" ", "")
    t = t.rstrip(".").removesuffix("%")
    if not t:
        return None
    try:
        if "/" in t:
            num, den = t.split("/", 1)
            return Fraction(Decimal(num)) / Fraction(Decimal(den))
        return Fraction(Decimal(t))
    except (InvalidOperation, ValueError, ZeroDivisionError):
        return None


def extract_number(text: str) -> str | None:
    """The final numeric answer of a GSM8K-style response."""
    for pat in _GSM_PATTERNS:
        found = pat.findall(text)
        if found:
            return _clean_num(found[-1])
    nums = re.findall(_NUM, text)
    return _clean_num(nums[-1]) if nums else None


def _clean_num(s: str) -> str:
    return s.replace("$", "").replace(",", "").replace(" ", "").rstrip(".")


# -- reasoning-gym --------------------------------------------------------------------------------

_RG_PATTERNS = [
    re.compile(r"<answer>(.*?)</answer>", re.S | re.I),
    re.compile(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}"),
    re.compile(r"(?:final answer|answer)\s*(?:is|:)\s*\**\s*(.+)", re.I),
]


def extract_free_answer(text: str) -> str | None:
    """A free-form final answer: <answer> tags, \\boxed{}, "answer: X", else the last non-empty line."""
    for pat in _RG_PATTERNS:
        found = pat.findall(text)
        if found:
            ans = found[-1].strip().strip("*").strip()
            ans = re.sub(r"^\$+|\$+$", "", ans).strip().rstrip(".").strip()
            if ans:
                return ans
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else None


def _gym_score(problem: Problem, answer: str | None) -> float:
    if answer is None:
        return 0.0
    reasoning_gym = import_reasoning_gym()

    entry = problem.metadata.get("gym_entry") or {"question": problem.question, "answer": problem.answer,
                                                   "metadata": {}}
    fn = reasoning_gym.get_score_answer_fn(problem.metadata.get("gym_task") or problem.benchmark)
    try:
        return float(fn(answer, entry))
    except Exception:
        return 0.0


# -- public API -----------------------------------------------------------------------------------

def extract_answer(text: str, grader: str) -> str | None:
    """The answer a response commits to, as text (what votes are taken over)."""
    if grader == "math":
        return _math(_math_extract, text, default=None)
    if grader == "gsm8k":
        return extract_number(text)
    return extract_free_answer(text)


def grade(problem: Problem, response: str) -> Grade:
    """Grade a full model response against the problem's gold answer."""
    if problem.grader == "math":
        ok, shown = _math(_math_grade, problem.answer, response, default=(False, None))
        return Grade(ok, shown, float(ok))
    if problem.grader == "gsm8k":
        ans = extract_number(response)
        gold, got = to_number(problem.answer), to_number(ans)
        ok = gold is not None and got is not None and gold == got
        return Grade(ok, ans, float(ok))
    ans = extract_free_answer(response)
    score = _gym_score(problem, ans)
    if score < 1.0:  # numeric tasks: a trailing number is a fair second reading of the answer
        num = extract_number(response)
        if num is not None and num != ans:
            alt = _gym_score(problem, num)
            if alt > score:
                ans, score = num, alt
    return Grade(score >= 1.0, ans, score)


def is_equivalent(gold: str, predicted: str, grader: str = "math") -> bool:
    """Whether a predicted final answer (not a whole response) equals the gold answer."""
    if grader == "math":
        return _math(_math_equivalent, gold, predicted, default=False)
    if grader == "gsm8k":
        a, b = to_number(gold), to_number(extract_number(predicted) if predicted else None)
        return a is not None and b is not None and a == b
    return _norm(gold) == _norm(predicted)


def answers_equivalent(a: str | None, b: str | None, grader: str) -> bool:
    """Whether two extracted answers are the same answer (for majority votes)."""
    if a is None or b is None:
        return False
    if a == b:
        return True
    if grader == "math":
        return is_equivalent(a, b, "math")
    na, nb = to_number(a), to_number(b)
    if na is not None and nb is not None:
        return na == nb
    return _norm(a) == _norm(b)


def _norm(s: Any) -> str:
    return " ".join(str(s).strip().lower().rstrip(".").split())
