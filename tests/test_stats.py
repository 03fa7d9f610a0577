"""mlproj.stats against answers worked out by hand: Wilson intervals, McNemar's exact test, Newcombe's paired
difference interval, Welch's t-test and the seeded bootstrap."""

import math

import numpy as np
import pytest

from mlproj.stats import PairedResults, bootstrap_interval, mcnemar_exact, welch_test, wilson_interval

Z = 1.959963984540054  # the 97.5% point of the standard normal


def wilson_by_hand(k: int, n: int) -> tuple[float, float]:
    p = k / n
    centre = (p + Z**2 / (2 * n)) / (1 + Z**2 / n)
    half = Z * math.sqrt(p * (1 - p) / n + Z**2 / (4 * n**2)) / (1 + Z**2 / n)
    return centre - half, centre + half


@pytest.mark.parametrize(("k", "n"), [(7, 10), (912, 1000), (299, 300), (0, 10), (10, 10)])
def test_wilson_interval_is_the_textbook_formula(k: int, n: int) -> None:
    assert wilson_interval(k, n) == pytest.approx(wilson_by_hand(k, n), abs=1e-12)


def test_wilson_interval_of_seven_in_ten() -> None:
    low, high = wilson_interval(7, 10)
    assert (round(low, 4), round(high, 4)) == (0.3968, 0.8922)
    assert wilson_interval(0, 10) == pytest.approx((0.0, Z**2 / (10 + Z**2)))  # no mistakes seen is not certainty


@pytest.mark.parametrize(
    ("only_a", "only_b", "p"),
    [
        (1, 9, 2 * (1 + 10) / 2**10),  # 2 * P(X <= 1), X ~ Binomial(10, 1/2)
        (3, 12, 2 * (1 + 15 + 105 + 455) / 2**15),
        (12, 3, 2 * (1 + 15 + 105 + 455) / 2**15),  # symmetric
        (5, 5, 1.0),
        (0, 0, 1.0),  # no image where they disagree: nothing to tell them apart
        (0, 6, 2 / 2**6),
    ],
)
def test_mcnemar_exact_p_values(only_a: int, only_b: int, p: float) -> None:
    assert mcnemar_exact(only_a, only_b) == pytest.approx(p, rel=1e-12)


def newcombe_by_hand(both: int, only_b: int, only_a: int, neither: int, psi: float) -> tuple[float, float]:
    n = both + only_b + only_a + neither
    p1, p2 = (both + only_b) / n, (both + only_a) / n
    l1, u1 = wilson_by_hand(both + only_b, n)
    l2, u2 = wilson_by_hand(both + only_a, n)
    low = p1 - p2 - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2 - 2 * psi * (p1 - l1) * (u2 - p2))
    high = p1 - p2 + math.sqrt((p2 - l2) ** 2 + (u1 - p1) ** 2 - 2 * psi * (p2 - l2) * (u1 - p1))
    return low, high


def test_paired_difference_interval_is_newcombes() -> None:
    # Fagerland, Lydersen and Laake's paired examples: Bentur et al. 2009 (ad - bc = 5 <= n/2: no correlation term)
    bentur = PairedResults(both=1, only_b=1, only_a=7, neither=12)
    assert bentur.difference == pytest.approx(-6 / 21)
    assert bentur.difference_interval() == pytest.approx(newcombe_by_hand(1, 1, 7, 12, psi=0.0), abs=1e-12)
    # Cavo et al. 2012: ad - bc = 4624, corrected by n/2 = 80.5
    cavo = PairedResults(both=59, only_b=6, only_a=16, neither=80)
    psi = (59 * 80 - 6 * 16 - 161 / 2) / math.sqrt(65 * 96 * 75 * 86)
    assert cavo.difference_interval() == pytest.approx(newcombe_by_hand(59, 6, 16, 80, psi), abs=1e-12)
    low, high = cavo.difference_interval()
    assert low < cavo.difference < high < 0  # B (the second) is worse, and the interval says so


def test_paired_results_count_each_kind_of_image() -> None:
    a = np.array([1, 1, 1, 0, 0, 1, 0], dtype=bool)
    b = np.array([1, 0, 1, 1, 0, 1, 1], dtype=bool)
    paired = PairedResults.of(a, b)
    assert (paired.both, paired.only_a, paired.only_b, paired.neither) == (3, 1, 2, 1)
    assert (paired.accuracy_a, paired.accuracy_b, paired.difference) == pytest.approx((4 / 7, 5 / 7, 1 / 7))
    assert paired.p_value == pytest.approx(1.0)  # 1 vs 2 discordant: 2 * P(X <= 1) for Binomial(3) > 1, capped


def test_welch_test_of_two_groups_of_three() -> None:
    result = welch_test([1, 2, 3], [4, 5, 6])
    # t = 3 / sqrt(1/3 + 1/3), with 4 degrees of freedom, where Student's t has a closed-form CDF
    t = 3 / math.sqrt(2 / 3)
    x = t / math.sqrt(1 + t * t / 4)
    cdf = 0.5 + 0.375 * x * (1 - t * t / (12 * (1 + t * t / 4)))
    assert result.p_value == pytest.approx(2 * (1 - cdf), rel=1e-9)
    assert (result.mean_a, result.std_a, result.mean_b, result.std_b) == (2.0, 1.0, 5.0, 1.0)
    t_975_4 = 2.7764451051977987
    half = t_975_4 * math.sqrt(2 / 3)
    assert result.difference_interval == pytest.approx((3 - half, 3 + half))


def test_welch_test_without_spread() -> None:
    assert welch_test([0.9, 0.9], [0.9, 0.9]).p_value == 1.0
    assert welch_test([0.9, 0.9], [0.8, 0.8]).difference_interval == pytest.approx((-0.1, -0.1))


def test_bootstrap_interval_is_seeded_and_brackets_the_statistic() -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(0.5, 0.1, 400)
    first = bootstrap_interval(np.mean, [values])
    assert first == bootstrap_interval(np.mean, [values])  # fixed resamples and seed: the same every time
    assert first != bootstrap_interval(np.mean, [values], seed=1)
    low, high = first
    assert low < values.mean() < high
    assert high - low == pytest.approx(2 * Z * values.std() / math.sqrt(400), rel=0.15)  # the normal theory width
    perfect = np.ones(50)
    assert bootstrap_interval(np.mean, [perfect]) == (1.0, 1.0)
