"""Statistics of evaluation records: Wilson intervals, the exact McNemar test and its power, percentiles."""

from __future__ import annotations

import math
from statistics import NormalDist

Z95 = 1.959963984540054


def wilson_interval(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% by default)."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)


def mcnemar(wins: int, losses: int) -> float:
    """Exact (binomial) two-sided McNemar p-value from the discordant pairs."""
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def mcnemar_sample_size(p_disc: float, delta: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Pairs a two-sided McNemar test at level ``alpha`` needs to detect a gain ``delta`` in accuracy with
    the given power, when a share ``p_disc`` of the pairs are discordant (one technique right, the other
    wrong).

    The normal approximation of Connor (1987):
    n = (z_a sqrt(p_disc) + z_b sqrt(p_disc - delta^2))^2 / delta^2, with z_a = z(1 - alpha/2) and
    z_b = z(power). A gain of delta needs at least that share of pairs to change, so
    ``0 < delta <= p_disc <= 1`` (ValueError otherwise)."""
    _check_mcnemar_effect(p_disc, delta)
    z_a, z_b = NormalDist().inv_cdf(1 - alpha / 2), NormalDist().inv_cdf(power)
    return math.ceil((z_a * math.sqrt(p_disc) + z_b * math.sqrt(p_disc - delta**2)) ** 2 / delta**2)


def mcnemar_power(n: int, p_disc: float, delta: float, alpha: float = 0.05) -> float:
    """Power of the same test with ``n`` pairs, from the same approximation solved for z_b:
    Phi((delta sqrt(n) - z_a sqrt(p_disc)) / sqrt(p_disc - delta^2))."""
    _check_mcnemar_effect(p_disc, delta)
    z_a = NormalDist().inv_cdf(1 - alpha / 2)
    spread = math.sqrt(p_disc - delta**2)
    if spread == 0:  # every pair discordant, all one way: no spread, the test rejects once n is large enough
        return 1.0 if delta * math.sqrt(n) > z_a * math.sqrt(p_disc) else 0.0
    return NormalDist().cdf((delta * math.sqrt(n) - z_a * math.sqrt(p_disc)) / spread)


def _check_mcnemar_effect(p_disc: float, delta: float) -> None:
    if not 0 < delta <= p_disc <= 1:
        raise ValueError(f"need 0 < delta <= p_disc <= 1, got delta={delta}, p_disc={p_disc}")


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    pos = (len(v) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)
