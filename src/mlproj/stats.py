"""Confidence intervals and tests for classifier results: what tells a real difference from noise.

scipy does the statistics (Wilson intervals and exact binomial tests through `binomtest`, the bootstrap, Welch's
t-test); this module says how they apply to per-image results. It imports nothing from mlproj, so every layer may
use it.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 1000  # fixed, with a fixed seed: an interval is the same every time it is computed
BOOTSTRAP_SEED = 0

Interval = tuple[float, float]


def wilson_interval(successes: int, trials: int, confidence: float = CONFIDENCE) -> Interval:
    """The Wilson score interval of a proportion (an accuracy): unlike the normal approximation it stays inside
    [0, 1] and keeps its coverage near the ends (99% of 300 images)."""
    from scipy.stats import binomtest

    interval = binomtest(int(successes), int(trials)).proportion_ci(confidence, method="wilson")
    return float(interval.low), float(interval.high)


def bootstrap_interval(
    statistic: Callable[..., float],
    samples: Sequence[np.ndarray],
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
) -> Interval:
    """Percentile bootstrap of `statistic(*samples)` over images drawn with replacement, the same draw for every
    array (paired): for statistics with no closed-form interval, such as macro F1. Percentile rather than BCa,
    whose jackknife would cost one more evaluation per image."""
    from scipy.stats import bootstrap

    result = bootstrap(
        tuple(samples),
        statistic,
        n_resamples=resamples,
        paired=True,
        vectorized=False,
        method="percentile",
        confidence_level=confidence,
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: were A and B equally good, the images only one of them gets right would
    split between them like fair coin tosses (a binomial test); images both get right or wrong say nothing."""
    from scipy.stats import binomtest

    discordant = only_a + only_b
    return 1.0 if discordant == 0 else float(binomtest(only_a, discordant, 0.5).pvalue)


@dataclass(frozen=True)
class PairedResults:
    """Two classifiers on the same images: how many each got right alone, both, neither."""

    both: int
    only_a: int
    only_b: int
    neither: int

    @classmethod
    def of(cls, correct_a: np.ndarray, correct_b: np.ndarray) -> "PairedResults":
        a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
        return cls(int((a & b).sum()), int((a & ~b).sum()), int((~a & b).sum()), int((~a & ~b).sum()))

    @property
    def images(self) -> int:
        return self.both + self.only_a + self.only_b + self.neither

    @property
    def accuracy_a(self) -> float:
        return (self.both + self.only_a) / self.images

    @property
    def accuracy_b(self) -> float:
        return (self.both + self.only_b) / self.images

    @property
    def difference(self) -> float:
        """accuracy(B) - accuracy(A)."""
        return (self.only_b - self.only_a) / self.images

    @property
    def p_value(self) -> float:
        return mcnemar_exact(self.only_a, self.only_b)

    def difference_interval(self, confidence: float = CONFIDENCE) -> Interval:
        """Newcombe's square-and-add interval for a paired difference of proportions (Stat Med 1998, method 10,
        with the continuity-corrected correlation his later chapters and R's contingencytables use): the two
        Wilson intervals combined with the correlation between the paired results, so it is as well behaved
        near 0 and 1 as they are, and narrower than an unpaired interval when A and B agree on most images."""
        n = self.images
        right_b, right_a = self.both + self.only_b, self.both + self.only_a
        p_b, p_a = right_b / n, right_a / n
        low_b, high_b = wilson_interval(right_b, n, confidence)
        low_a, high_a = wilson_interval(right_a, n, confidence)
        margins = right_b * (n - right_b) * right_a * (n - right_a)
        association = self.both * self.neither - self.only_a * self.only_b
        if margins == 0 or 0 <= association <= n / 2:
            phi = 0.0
        else:
            phi = (association - n / 2 if association > 0 else association) / math.sqrt(margins)
        below = math.sqrt((p_b - low_b) ** 2 + (high_a - p_a) ** 2 - 2 * phi * (p_b - low_b) * (high_a - p_a))
        above = math.sqrt((p_a - low_a) ** 2 + (high_b - p_b) ** 2 - 2 * phi * (p_a - low_a) * (high_b - p_b))
        return self.difference - below, self.difference + above


@dataclass(frozen=True)
class GroupComparison:
    """Runs of A against runs of B (seeds, say): each group's mean and standard deviation, Welch's t-test."""

    mean_a: float
    std_a: float
    mean_b: float
    std_b: float
    p_value: float
    difference_interval: Interval  # of mean(B) - mean(A)

    @property
    def difference(self) -> float:
        return self.mean_b - self.mean_a


def welch_test(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> GroupComparison:
    """Welch's t-test (unequal variances) of mean(B) - mean(A); each group needs two values or more."""
    from scipy.stats import ttest_ind

    values_a, values_b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    difference = float(values_b.mean() - values_a.mean())
    if np.ptp(values_a) == 0 and np.ptp(values_b) == 0:  # no spread (seeds that change nothing): no t statistic
        p_value, interval = (1.0 if difference == 0 else 0.0), (difference, difference)
    else:
        result = ttest_ind(values_b, values_a, equal_var=False)
        ci = result.confidence_interval(confidence)
        p_value, interval = float(result.pvalue), (float(ci.low), float(ci.high))
    return GroupComparison(
        float(values_a.mean()),
        float(values_a.std(ddof=1)),
        float(values_b.mean()),
        float(values_b.std(ddof=1)),
        p_value,
        interval,
    )
