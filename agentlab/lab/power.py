"""How many report-split problems a lab evaluates: enough to detect the smallest gain worth reporting, within
the budget.

The plan states the smallest gain worth reporting (``LabConfig.min_gain``, in absolute accuracy). After the
dev experiments, the best one and the baseline have answered the same dev problems; the share on which they
disagree (the dev discordance, taken at the upper end of its 80% confidence bound: a few dev problems often
show less disagreement than the report split will) sets how many report problems McNemar's test needs for
80% power to detect that gain at alpha 0.05 (``agentlab.eval.stats.mcnemar_sample_size``). The report split gets that many: at
most ``LabConfig.report_n`` (the budget) and at most what the benchmark has. A demo keeps its tiny split and
says so. The paper states the sizing and the power the report split achieved."""

from __future__ import annotations

from typing import Any

from agentlab.eval.stats import mcnemar_power, mcnemar_sample_size, wilson_interval
from agentlab.lab.models import Paired, ReportSizing
from agentlab.lab.state import LabConfig

ALPHA, POWER = 0.05, 0.8
Z_DISCORDANCE = 0.8416  # sizes for the dev discordance's one-sided 80% upper bound (z of 0.80)
EXAMPLE_DISCORDANCE = 0.2  # the plan's example only: the dev discordance is not known before the experiments


def discordance(discordant: int, n: int, min_gain: float, z: float = 0.0) -> float:
    """The share of problems two techniques disagree on, read as at least ``min_gain``: a gain of min_gain
    needs at least that share of problems to change (near-identical techniques often disagree on none of a
    few dev problems). ``z`` > 0: the upper end of its one-sided Wilson bound at that z instead of the share
    seen (the few dev problems under-estimate it as often as not: 2 of 40 on dev, 15 of 155 on the report)."""
    share = (wilson_interval(discordant, n, z)[1] if z else discordant / n) if n else 0.0
    return min(1.0, max(share, min_gain))


def size_report_split(config: LabConfig, available: int, paired: Paired | None) -> ReportSizing:
    """The report split's size from the best experiment's paired dev comparison with the baseline
    (``paired``: n, wins, losses), within ``config.report_n`` and the ``available`` problems; a demo keeps
    its size."""
    gain, budget = config.min_gain, min(config.report_n, available)
    sizing = ReportSizing(min_gain=gain, cap=config.report_n, available=available, report_n=budget,
                          demo=config.demo)
    if not paired or not paired.n:
        return sizing
    discordant = paired.wins + paired.losses
    p_disc = discordance(discordant, paired.n, gain, Z_DISCORDANCE)
    needed = mcnemar_sample_size(p_disc, gain, ALPHA, POWER)
    n = budget if config.demo else min(needed, budget)
    power = mcnemar_power(n, p_disc, gain, ALPHA)
    return sizing.model_copy(update={"report_n": n, "discordant": discordant, "paired_n": paired.n,
                                     "needed": needed, "planned_power": power})


def with_achieved(sizing: ReportSizing, comparison: Paired | None) -> ReportSizing:
    """``sizing`` with the power the report split achieved for min_gain, at its own discordance."""
    if not comparison or not comparison.n:
        return sizing
    n, discordant = comparison.n, comparison.wins + comparison.losses
    power = mcnemar_power(n, discordance(discordant, n, sizing.min_gain), sizing.min_gain, ALPHA)
    return sizing.model_copy(update={"achieved": {"n": n, "discordant": discordant, "power": power}})


def plan_sizing(config: LabConfig, available: int) -> dict[str, Any]:
    """What the plan states before any experiment: the smallest gain worth reporting, the budget, and how
    many report problems that gain needs at the least (a technique never worse than the baseline) and in an
    example."""
    gain = config.min_gain
    least = mcnemar_sample_size(gain, gain, ALPHA, POWER)
    budget = f"at most {config.report_n} problems" + (
        f" (the benchmark's report split has {available})" if available < config.report_n else "")
    text = (f"Smallest gain worth reporting: {_points(gain)} of accuracy. The report split is sized after "
            "the dev experiments from how often the best one and the baseline disagree on the dev split (the "
            "upper end of its 80% confidence bound), for "
            f"80% power (McNemar's test, alpha 0.05), {budget}: that takes at least {least} problems (a "
            "technique that never loses to the baseline)")
    if gain < EXAMPLE_DISCORDANCE:
        text += (f", {mcnemar_sample_size(EXAMPLE_DISCORDANCE, gain, ALPHA, POWER)} when they disagree on "
                 f"{EXAMPLE_DISCORDANCE:.0%} of the problems")
    text += "."
    if config.demo:
        text += f" Demo-size run. {demo_text(min(config.report_n, available), gain)}"
    return {"min_gain": gain, "cap": config.report_n, "available": available, "least_needed": least,
            "text": text}


def demo_text(report_n: int, gain: float) -> str:
    """What a demo-size run is (the plan and the paper's banner say it)."""
    least = mcnemar_sample_size(gain, gain, ALPHA, POWER)
    return (f"The report split keeps its {report_n} problems, far fewer than the {least} or more that 80% "
            f"power for a gain of {_points(gain)} needs: the run exercises the lab, it is too small to show "
            "a gain.")


def sizing_text(s: ReportSizing) -> str:
    """The paper's sizing line (one paragraph; the claim checker skips it as generated)."""
    gain = _points(s.min_gain)
    text = f"Report-split sizing: the smallest gain worth reporting is {gain} of accuracy."
    if s.needed is None:
        text += (" No dev experiment was paired with the baseline, so the report split has the budget's "
                 f"{s.report_n} problems.")
    else:
        text += (f" On the dev split the best experiment and the baseline disagreed on {s.discordant} of "
                 f"{s.paired_n} problems; sized for the upper end of that share's 80% confidence bound, 80% "
                 f"power to detect {gain} with McNemar's test at alpha 0.05 needs {s.needed} report "
                 f"problems{_limits(s)}. The report split has {s.report_n} problems "
                 f"(planned power {s.planned_power:.0%}).")
    if s.achieved:
        a = s.achieved
        text += (f" On the report split they disagreed on {a['discordant']} of {a['n']} problems, which "
                 f"gives {a['power']:.0%} power for a gain of {gain}.")
    return text


def _limits(s: ReportSizing) -> str:
    """What kept the report split below the sizing's need: the budget, the benchmark, or a demo's size."""
    if s.needed is None or s.report_n >= s.needed:
        return ""
    out = []
    if s.cap < s.needed:
        out.append(f"the budget allows {s.cap} (report_n)")
    if s.available < min(s.cap, s.needed):
        out.append(f"the benchmark's report split has only {s.available}")
    if s.demo:
        out.append("a demo keeps its size")
    return "; " + "; ".join(out)


def _points(gain: float) -> str:
    return f"{100 * gain:g} points"
