"""Statistics of a study: means with t-intervals over seeds, Welch's t-test, Cohen's d, thresholds.

Pure functions on lists of floats (no numpy, no scipy: scipy is not a dependency of t5lab).

Student's t distribution is computed from the regularized incomplete beta function,
``P(|T| > t) = I_{v / (v + t^2)}(v / 2, 1 / 2)`` (Abramowitz & Stegun 26.7.1 with 26.5.27), and
``I_x(a, b)`` by its continued fraction (A&S 26.5.8) evaluated with the modified Lentz method
(Press et al., Numerical Recipes, section 6.4 / 5.2), accurate to ~1e-12. Quantiles invert the CDF
by bisection (monotone, no derivative needed). tests/study/test_stats.py checks both against
tabulated values and against mpmath.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

CONFIDENCE = 0.95


# ------------------------------------------------------------------------------------------------
# Student's t distribution
# ------------------------------------------------------------------------------------------------


def _beta_cf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (A&S 26.5.8), modified Lentz."""
    tiny, eps = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for coeff in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),  # even term d_{2m}
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),  # odd term d_{2m+1}
        ):
            d = 1.0 + coeff * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + coeff / c
            c = c if abs(c) > tiny else tiny
            h *= c * d
        if abs(c * d - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function ``I_x(a, b)`` for ``a, b > 0``, ``0 <= x <= 1``."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x must lie in [0, 1], got {x}")
    if x in (0.0, 1.0):
        return x
    log_front = a * math.log(x) + b * math.log1p(-x) - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))
    # the fraction converges fast for x < (a + 1) / (a + b + 2); otherwise use I_x(a, b) = 1 - I_{1-x}(b, a)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_cf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_cf(b, a, 1.0 - x) / b


def t_sf2(t: float, df: float) -> float:
    """Two-sided tail ``P(|T| >= |t|)`` of Student's t with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    if math.isinf(t):
        return 0.0
    return betainc(df / 2.0, 0.5, df / (df + t * t))


def t_cdf(t: float, df: float) -> float:
    """``P(T <= t)``."""
    half = 0.5 * t_sf2(t, df)
    return 1.0 - half if t >= 0 else half


def t_ppf(q: float, df: float) -> float:
    """The ``q`` quantile of Student's t (bisection on :func:`t_cdf`)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must lie in (0, 1), got {q}")
    if q < 0.5:
        return -t_ppf(1.0 - q, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < q:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < q:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


# ------------------------------------------------------------------------------------------------
# Samples
# ------------------------------------------------------------------------------------------------


def mean(xs: list[float]) -> float:
    if not xs:
        raise ValueError("mean of an empty sample")
    return math.fsum(xs) / len(xs)


def sample_sd(xs: list[float]) -> float:
    """Sample standard deviation (``n - 1`` denominator); 0 for one value."""
    if len(xs) < 2:
        return 0.0
    m = mean(xs)
    return math.sqrt(math.fsum((x - m) ** 2 for x in xs) / (len(xs) - 1))


@dataclass(frozen=True)
class Interval:
    """A mean with its t-interval: ``mean ± t_{(1+c)/2, n-1} * sd / sqrt(n)``; NaN bounds for n < 2."""

    mean: float
    low: float
    high: float
    n: int
    sd: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2.0


def t_interval(xs: list[float], confidence: float = CONFIDENCE) -> Interval:
    """Mean of ``xs`` with a Student-t confidence interval (the seeds are the sample)."""
    xs = [float(x) for x in xs]
    m, n = mean(xs), len(xs)
    if n < 2:
        return Interval(m, math.nan, math.nan, n, 0.0)
    sd = sample_sd(xs)
    half = t_ppf(0.5 + confidence / 2.0, n - 1) * sd / math.sqrt(n)
    return Interval(m, m - half, m + half, n, sd)


@dataclass(frozen=True)
class Comparison:
    """Two samples compared: ``diff = mean(a) - mean(b)`` with Welch's CI and p-value, Cohen's d."""

    diff: float
    low: float
    high: float
    p: float
    t: float
    df: float
    cohens_d: float
    n_a: int
    n_b: int


def welch(a: list[float], b: list[float], confidence: float = CONFIDENCE) -> Comparison:
    """Welch's unequal-variance t-test of ``mean(a) - mean(b)`` (Welch 1947), and Cohen's d.

    Degrees of freedom by the Welch-Satterthwaite formula. Cohen's d divides the difference by the
    pooled standard deviation ``sqrt(((n_a-1) s_a^2 + (n_b-1) s_b^2) / (n_a + n_b - 2))``.
    When both samples have no spread (e.g. every seed reaches exact match 1.0) there is no
    test: the difference is exact, ``p`` is 1 for equal means and 0 otherwise, ``d`` is 0 or inf.

    Raises:
        ValueError: a sample with fewer than two values.
    """
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"Welch's t-test needs at least two values per sample, got {len(a)} and {len(b)}")
    na, nb = len(a), len(b)
    diff = mean(a) - mean(b)
    va, vb = sample_sd(a) ** 2, sample_sd(b) ** 2
    pooled = math.sqrt(((na - 1) * va + (nb - 1) * vb) / (na + nb - 2))
    ea, eb = va / na, vb / nb
    se = math.sqrt(ea + eb)
    if se == 0.0:
        same = diff == 0.0
        return Comparison(diff, diff, diff, 1.0 if same else 0.0, 0.0 if same else math.copysign(math.inf, diff),
                          math.inf, 0.0 if same else math.copysign(math.inf, diff), na, nb)
    df = (ea + eb) ** 2 / (ea**2 / (na - 1) + eb**2 / (nb - 1))
    t = diff / se
    half = t_ppf(0.5 + confidence / 2.0, df) * se
    d = diff / pooled if pooled > 0 else math.copysign(math.inf, diff)
    return Comparison(diff, diff - half, diff + half, t_sf2(t, df), t, df, d, na, nb)


# ------------------------------------------------------------------------------------------------
# Curves and thresholds
# ------------------------------------------------------------------------------------------------


def first_reaching(xs: list[float], ys: list[float], threshold: float, lower_is_better: bool) -> float | None:
    """The first ``x`` whose ``y`` reaches ``threshold`` (``<=`` when lower is better), or None."""
    for x, y in zip(xs, ys):
        if (y <= threshold) if lower_is_better else (y >= threshold):
            return x
    return None


def curve_band(curves: list[tuple[list[float], list[float]]], confidence: float = CONFIDENCE) -> list[tuple[float, Interval]]:
    """Per x that every curve has: the mean of the curves' values with its t-interval."""
    if not curves:
        return []
    common = set(curves[0][0])
    for xs, _ in curves[1:]:
        common &= set(xs)
    lookup = [dict(zip(xs, ys)) for xs, ys in curves]
    return [(x, t_interval([c[x] for c in lookup], confidence)) for x in sorted(common)]


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (Holm 1979), in the input order.

    The i-th smallest of m p-values is multiplied by ``m - i`` (i from 0), made monotone from the
    smallest up, and capped at 1: an adjusted p below alpha rejects with family-wise error <= alpha.
    """
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    out = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out
