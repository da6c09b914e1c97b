"""The grading table: equivalent and non-equivalent answer pairs, per grader."""

import pytest

from agentlab.bench import extract_answer, grade, is_equivalent, load_benchmark
from agentlab.bench.registry import Problem

# (gold, predicted final answer, equivalent?)
MATH_TABLE = [
    (r"\frac{1}{2}", "0.5", True),
    (r"\frac{1}{2}", "1/2", True),
    (r"\dfrac{3}{4}", r"\frac34", True),
    (r"\dfrac{3}{4}", "0.75", True),
    (r"[0,1)", "[0,1)", True),
    (r"(-\infty, 3]", r"(-\infty,3]", True),
    (r"\{1,2\}", r"\{2,1\}", True),
    (r"90^\circ", "90", True),
    (r"10\text{ cm}", "10", True),
    (r"\text{(C)}", "C", True),
    (r"\frac{\sqrt{2}}{2}", r"\sqrt{2}/2", True),
    (r"x^2+2x+1", r"(x+1)^2", True),
    (r"1,000", "1000", True),
    (r"10", "10.0", True),
    (r"5\%", "5", True),
    (r"x=3", "3", True),
    (r"\$18.90", "18.9", True),
    (r"2\pi", r"\pi \cdot 2", True),
    (r"\left( 3, \frac{\pi}{2} \right)", r"(3, \pi/2)", True),
    (r"\text{Monday}", "Monday", True),
    (r"-\frac{2}{3}", r"\frac{-2}{3}", True),
    (r"3\sqrt{13}", r"\sqrt{117}", True),
    (r"3", "4", False),
    (r"\frac{1}{2}", "0.51", False),
    (r"(1,2)", "(2,1)", False),
    (r"[0,1)", "[0,1]", False),
    (r"p - q", "q - p", False),
    (r"\sqrt{2}", "2", False),
    (r"\frac{3}{4}", r"\frac{4}{3}", False),
    (r"x^2+1", r"(x+1)^2", False),
    (r"90^\circ", "91", False),
    (r"\text{(C)}", "D", False),
]

GSM_TABLE = [
    ("18", "18", True),
    ("1000", "1,000", True),
    ("18", "$18", True),
    ("18", "18.00", True),
    ("18", "The answer is 18.", True),
    ("5", "#### 5", True),
    ("-3", "-3", True),
    ("0.5", ".5", True),
    ("18", "19", False),
    ("18", "1.8", False),
    ("1000", "100", False),
    ("-3", "3", False),
]

GYM_TABLE = [("spring", "Spring", True), ("spring", "summer", False)]


@pytest.mark.parametrize("gold,pred,expected", MATH_TABLE)
def test_math_table(gold, pred, expected):
    assert is_equivalent(gold, pred, "math") is expected


@pytest.mark.parametrize("gold,pred,expected", GSM_TABLE)
def test_gsm8k_table(gold, pred, expected):
    assert is_equivalent(gold, pred, "gsm8k") is expected


@pytest.mark.parametrize("gold,pred,expected", GYM_TABLE)
def test_free_table(gold, pred, expected):
    assert is_equivalent(gold, pred, "reasoning_gym") is expected


def test_table_is_large_and_balanced():
    table = MATH_TABLE + GSM_TABLE + GYM_TABLE
    assert len(table) >= 40
    assert sum(e for *_, e in table) >= 15 and sum(not e for *_, e in table) >= 15


def _p(answer, grader="math", **meta):
    return Problem(id="t", question="q", answer=answer, benchmark="t", grader=grader, metadata=meta)


def test_grade_full_responses_boxed_wins_over_later_numbers():
    r = "We compute 2+2 = 4, so the answer is $\\boxed{\\frac{1}{2}}$. Check: 7 apples."
    g = grade(_p(r"\frac{1}{2}"), r)
    assert g.correct and g.extracted is not None


def test_grade_last_answer_without_box():
    assert grade(_p("42"), "Adding them up we get 40 + 2 = 42").correct
    assert not grade(_p("42"), "I don't know").correct


def test_gsm8k_response_extraction():
    assert grade(_p("18", "gsm8k"), "She sells 9 eggs at $2 each, so she makes $18.\n#### 18").correct
    assert grade(_p("1200", "gsm8k"), "Total: 1,200 dollars. The answer is 1,200.").correct
    assert not grade(_p("18", "gsm8k"), "The answer is 16").correct
    assert extract_answer("no numbers here", "gsm8k") is None


def test_reasoning_gym_uses_its_scorer():
    p = load_benchmark("basic_arithmetic", ".", limit=1)[0]
    assert grade(p, f"Let me compute. Answer: {p.answer}").correct
    assert grade(p, f"<answer>{p.answer}</answer>").correct
    assert not grade(p, f"Answer: {int(p.answer) + 1}").correct


def test_reasoning_gym_imports_cellpylib_only_when_a_task_uses_it():
    """Grading in a fresh job process must not pay for matplotlib; game-of-life tasks still work."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from agentlab.bench.registry import import_reasoning_gym\n"
        "rg = import_reasoning_gym()\n"
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported eagerly'\n"
        "assert rg.get_score_answer_fn('basic_arithmetic')('4', {'answer': '4', 'metadata': {}}) == 1.0\n"
        "entry = rg.create_dataset('game_of_life', size=1, seed=1)[0]\n"
        "assert 'Game of Life' in entry['question'] and 'cellpylib.ca_functions' in sys.modules\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
