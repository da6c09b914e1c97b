"""Power and sample size of the paired McNemar test (``agentlab.eval.stats``) against known values and an
exact reference computation."""

from __future__ import annotations

import math

import pytest

from agentlab.eval.stats import mcnemar, mcnemar_power, mcnemar_sample_size


def _connor(p_disc: float, delta: float) -> float:
    """Connor's formula with the textbook quantiles z(0.975) = 1.959964 and z(0.80) = 0.841621, by hand."""
    return (1.959964 * math.sqrt(p_disc) + 0.841621 * math.sqrt(p_disc - delta**2)) ** 2 / delta**2


@pytest.mark.parametrize("p_disc,delta,n", [
    (0.2, 0.05, 626),    # a 5-point gain when a fifth of the problems are discordant
    (0.05, 0.05, 155),   # the least: the technique never loses to the baseline
    (0.3, 0.1, 234),
    (0.5, 0.5, 14),      # every discordant pair goes one way
])
def test_sample_size_known_values(p_disc, delta, n):
    assert mcnemar_sample_size(p_disc, delta) == n == math.ceil(_connor(p_disc, delta))


def test_power_inverts_the_sample_size():
    for p_disc, delta in [(0.2, 0.05), (0.3, 0.1), (0.12, 0.08)]:
        n = mcnemar_sample_size(p_disc, delta)
        assert mcnemar_power(n, p_disc, delta) >= 0.8 > mcnemar_power(n - 1, p_disc, delta)
    # the old default report split of 20: Phi((0.05 sqrt(20) - 1.96 sqrt(0.2)) / sqrt(0.1975)) = Phi(-1.469)
    assert mcnemar_power(20, 0.2, 0.05) == pytest.approx(0.0709, abs=0.0005)
    assert mcnemar_sample_size(0.2, 0.05, power=0.9) > 626
    assert mcnemar_sample_size(0.2, 0.05, alpha=0.01) > 626


def _exact_power(n: int, p_disc: float, delta: float, alpha: float = 0.05) -> float:
    """The power of the exact McNemar test (``stats.mcnemar``) with n pairs, summed exactly: D discordant
    pairs are Binomial(n, p_disc); of them, W wins are Binomial(D, q) with q = (p_disc + delta) / (2 p_disc);
    the test rejects when mcnemar(W, D - W) < alpha."""
    from scipy.stats import binom  # its callers are marked requires("scipy")

    q = (p_disc + delta) / (2 * p_disc)
    power = 0.0
    for d in range(n + 1):
        k = int(binom.ppf(alpha / 2, d, 0.5)) - 1  # the largest k with 2 P(W <= k) < alpha under the null
        if k < 0:
            continue
        assert mcnemar(k, d - k) < alpha <= mcnemar(k + 1, d - k - 1)
        power += binom.pmf(d, n, p_disc) * (binom.cdf(k, d, q) + binom.sf(d - k - 1, d, q))
    return power


@pytest.mark.parametrize("p_disc,delta", [(0.2, 0.05), (0.3, 0.1), (0.5, 0.2)])
@pytest.mark.requires("scipy")
def test_sample_size_reaches_80_percent_power_with_the_exact_test(p_disc, delta):
    n = mcnemar_sample_size(p_disc, delta)
    assert _exact_power(n, p_disc, delta) == pytest.approx(0.8, abs=0.03)
    assert _exact_power(n // 2, p_disc, delta) < 0.6  # and half of it falls well short


def test_a_gain_needs_at_least_that_many_discordant_pairs():
    with pytest.raises(ValueError, match="delta <= p_disc"):
        mcnemar_sample_size(0.04, 0.05)
    with pytest.raises(ValueError):
        mcnemar_power(100, 0.2, 0.0)
