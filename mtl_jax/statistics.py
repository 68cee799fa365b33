"""Statistics over seeds: sample spread, 95% intervals, paired bootstrap comparisons.

A results table compares methods trained with the same seeds, so the honest question
for a difference is whether it exceeds seed noise. `mean_interval` gives the Student-t
95% interval of a mean over seeds; `paired_difference` the mean of per-seed
differences (method − reference on the same seed) with a percentile bootstrap 95%
interval. With n seeds the bootstrap can only resample those n differences: for n = 3 its
interval spans from about the smallest to the largest difference, so it excludes 0
exactly when all three seeds agree on the sign. That is the honest resolution of three
seeds; more seeds narrow it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

# Two-sided 95% Student-t critical values t_{0.975, df}, df = 1 … 30 (beyond: ≈ normal).
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip
_NORMAL975 = 1.960
BOOTSTRAP_RESAMPLES = 10_000


def sample_std(values: Sequence[float]) -> float:
    """The sample standard deviation (n − 1 in the denominator); 0 for one value."""
    values = np.asarray(values, np.float64)
    return float(np.std(values, ddof=1)) if values.size > 1 else 0.0


def t_critical(df: int) -> float:
    """t_{0.975, df}, the two-sided 95% Student-t critical value."""
    if df < 1:
        raise ValueError(f"t_critical needs df >= 1, got {df}")
    return _T975[df - 1] if df <= len(_T975) else _NORMAL975


def mean_interval(values: Sequence[float]) -> float | None:
    """Half-width of the 95% Student-t interval of the mean; None for fewer than 2."""
    values = np.asarray(values, np.float64)
    if values.size < 2:
        return None
    return t_critical(values.size - 1) * sample_std(values) / np.sqrt(values.size)


class PairedDifference(NamedTuple):
    """`mean` of the per-seed differences, its bootstrap 95% interval `[low, high]`, the
    number of pairs, and whether the interval excludes 0 (a difference beyond seed
    noise)."""

    mean: float
    low: float
    high: float
    pairs: int

    @property
    def beyond_noise(self) -> bool:
        return self.pairs >= 2 and (self.low > 0 or self.high < 0)


def paired_difference(
    values: Sequence[float],
    reference: Sequence[float],
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> PairedDifference:
    """`values − reference`, paired by position (the same seed), with a percentile
    bootstrap 95% interval of the mean difference (`resamples` draws of the pairs with
    replacement, from a fixed `seed`, so a table is reproducible).

    Raises:
      ValueError: the two sequences differ in length or are empty.
    """
    values = np.asarray(values, np.float64)
    reference = np.asarray(reference, np.float64)
    if values.shape != reference.shape or values.ndim != 1 or values.size == 0:
        raise ValueError(
            f"paired_difference needs two equal-length, non-empty sequences, got "
            f"{values.shape} and {reference.shape}"
        )
    differences = values - reference
    mean = float(differences.mean())
    if differences.size == 1:
        return PairedDifference(mean, mean, mean, 1)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, differences.size, size=(resamples, differences.size))
    means = differences[picks].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return PairedDifference(mean, float(low), float(high), int(differences.size))
