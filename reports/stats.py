"""Statistics over seeds: mean, sample standard deviation, a 95% t-interval, and paired t-tests.

Seeds are few (often 3 to 5), so the interval uses Student's t with n-1 degrees of freedom rather than
the normal approximation, and two models are compared on the seeds they share (a paired test removes
the part of the spread that comes from the seed's data order and initialisation, which both runs share).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    std: float  # sample standard deviation (ddof=1); NaN for n < 2
    ci95: float  # half-width of the 95% t-interval of the mean; NaN for n < 2

    @property
    def low(self) -> float:
        return self.mean - self.ci95

    @property
    def high(self) -> float:
        return self.mean + self.ci95


def summarize(values: Iterable[float]) -> Summary:
    """Mean, std and 95% CI of the finite values (NaNs, e.g. from failed runs, are left out)."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    n = len(x)
    if n == 0:
        return Summary(0, math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if n < 2:
        return Summary(1, mean, math.nan, math.nan)
    std = float(x.std(ddof=1))
    ci95 = float(sps.t.ppf(0.975, n - 1) * std / math.sqrt(n))
    return Summary(n, mean, std, ci95)


@dataclass(frozen=True)
class Paired:
    n: int  # shared seeds with a finite value on both sides
    mean_diff: float  # mean of a - b over the shared seeds
    t: float
    p: float  # two-sided; NaN when the test is undefined (n < 2 or all differences equal)

    @property
    def significant(self) -> bool:
        return math.isfinite(self.p) and self.p < 0.05


def paired(a: Mapping[int, float], b: Mapping[int, float]) -> Paired:
    """Paired t-test of a - b over the seeds both mappings (seed -> value) have a finite value for."""
    seeds = sorted(s for s in set(a) & set(b) if math.isfinite(a[s]) and math.isfinite(b[s]))
    xa = np.asarray([a[s] for s in seeds], dtype=float)
    xb = np.asarray([b[s] for s in seeds], dtype=float)
    n = len(seeds)
    if n == 0:
        return Paired(0, math.nan, math.nan, math.nan)
    diff = xa - xb
    if n < 2 or np.ptp(diff) <= 1e-9 * max(1.0, float(np.abs(diff).max())):
        # ttest_rel divides by the std of the differences; with none it says nothing useful.
        return Paired(n, float(diff.mean()), math.nan, math.nan)
    result = sps.ttest_rel(xa, xb)
    return Paired(n, float(diff.mean()), float(result.statistic), float(result.pvalue))
