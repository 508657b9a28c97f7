"""t5lab.study.stats against hand-computed values and closed forms (and mpmath where present)."""

from __future__ import annotations

import math

import pytest

from t5lab.study.stats import betainc, curve_band, first_reaching, t_cdf, t_interval, t_ppf, t_sf2, welch

# two-sided 97.5% quantiles from any t table
T_TABLE = {1: 12.7062, 2: 4.3027, 3: 3.1824, 4: 2.7764, 9: 2.2622, 30: 2.0423}


@pytest.mark.parametrize("df,value", T_TABLE.items())
def test_t_quantiles_match_the_table(df, value):
    assert t_ppf(0.975, df) == pytest.approx(value, abs=1e-4)
    assert t_ppf(0.025, df) == pytest.approx(-value, abs=1e-4)


@pytest.mark.parametrize("t", [0.0, 0.3, 1.0, 2.0, 7.5])
def test_t_tails_match_closed_forms(t):
    # df=1 is the Cauchy distribution: P(|T| > t) = 1 - 2 atan(t) / pi
    assert t_sf2(t, 1) == pytest.approx(1 - 2 * math.atan(t) / math.pi, abs=1e-12)
    # df=2: F(t) = 1/2 + t / (2 sqrt(2 + t^2))
    assert t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-12)
    # large df tends to the normal
    assert t_cdf(t, 1e7) == pytest.approx(0.5 * (1 + math.erf(t / math.sqrt(2))), abs=1e-6)


def test_betainc_against_mpmath():
    mpmath = pytest.importorskip("mpmath")
    for a, b, x in [(1.85, 0.5, 0.37), (25, 0.5, 0.998), (0.5, 0.5, 0.01), (3.0, 7.0, 0.9)]:
        want = float(mpmath.betainc(a, b, 0, x, regularized=True))
        assert betainc(a, b, x) == pytest.approx(want, abs=1e-12)
    assert betainc(2, 3, 0.0) == 0.0 and betainc(2, 3, 1.0) == 1.0
    # I_x(1, 1) = x, I_x(a, 1) = x^a
    assert betainc(1, 1, 0.3) == pytest.approx(0.3, abs=1e-14)
    assert betainc(2.5, 1, 0.6) == pytest.approx(0.6**2.5, abs=1e-14)


def test_t_interval_by_hand():
    # mean 2, sd 1, n 3: 2 ± t(0.975, 2) / sqrt(3)
    i = t_interval([1.0, 2.0, 3.0])
    assert i.mean == 2.0 and i.sd == pytest.approx(1.0) and i.n == 3
    assert i.half_width == pytest.approx(4.302653 / math.sqrt(3), abs=1e-5)
    one = t_interval([0.7])
    assert one.mean == 0.7 and math.isnan(one.low) and math.isnan(one.high)


def test_welch_by_hand():
    a, b = [0.9, 0.8, 0.85], [0.7, 0.75, 0.6]
    c = welch(a, b)
    # var_a/n = 1/1200, var_b/n = 7/3600: se^2 = 1/360, t = (1/6) sqrt(360) = sqrt(10)
    assert c.diff == pytest.approx(1 / 6)
    assert c.t == pytest.approx(math.sqrt(10))
    # Welch-Satterthwaite: (1/360)^2 / ((1/1200)^2 / 2 + (7/3600)^2 / 2) = 100/29
    assert c.df == pytest.approx(100 / 29)
    # Cohen's d: pooled variance (2 * 0.0025 + 2 * 0.035/6) / 4 = 1/240
    assert c.cohens_d == pytest.approx(math.sqrt(240) / 6)
    half = t_ppf(0.975, 100 / 29) / math.sqrt(360)
    assert (c.low, c.high) == pytest.approx((1 / 6 - half, 1 / 6 + half))
    assert c.p == pytest.approx(t_sf2(math.sqrt(10), 100 / 29))
    mpmath = pytest.importorskip("mpmath")
    df = 100 / 29
    assert c.p == pytest.approx(float(mpmath.betainc(df / 2, 0.5, 0, df / (df + 10), regularized=True)), abs=1e-12)
    assert 0.04 < c.p < 0.045  # two-sided, reported as p=0.042


def test_welch_equal_variances_integer_df():
    # equal n and variances: df = 2(n - 1) = 4, t = 2 / sqrt(2/3) for these samples
    c = welch([1.0, 2.0, 3.0], [3.0, 4.0, 5.0])
    assert c.df == pytest.approx(4.0)
    assert c.t == pytest.approx(-2 / math.sqrt(2 / 3))
    assert c.cohens_d == pytest.approx(-2.0)


def test_welch_without_spread_and_too_few():
    same = welch([1.0, 1.0], [1.0, 1.0])
    assert same.p == 1.0 and same.diff == 0.0 and same.cohens_d == 0.0
    apart = welch([1.0, 1.0], [0.5, 0.5])
    assert apart.p == 0.0 and apart.low == apart.high == 0.5
    with pytest.raises(ValueError, match="at least two"):
        welch([1.0], [1.0, 2.0])


def test_first_reaching_and_bands():
    xs, ys = [10, 20, 30], [0.2, 0.6, 0.9]
    assert first_reaching(xs, ys, 0.5, lower_is_better=False) == 20
    assert first_reaching(xs, ys, 0.95, lower_is_better=False) is None
    assert first_reaching(xs, [3.0, 2.0, 1.0], 2.0, lower_is_better=True) == 20
    band = curve_band([([1, 2, 3], [1.0, 2.0, 3.0]), ([1, 2], [3.0, 4.0])])
    assert [x for x, _ in band] == [1, 2]  # steps both curves have
    assert band[0][1].mean == 2.0 and band[1][1].mean == 3.0


def test_holm_by_hand():
    from t5lab.study.stats import holm

    # sorted 0.01, 0.02, 0.04, 0.30 -> x4, x3, x2, x1 = 0.04, 0.06, 0.08, 0.30 (already monotone)
    assert holm([0.04, 0.01, 0.30, 0.02]) == pytest.approx([0.08, 0.04, 0.30, 0.06])
    # monotone step: 0.01 * 3 = 0.03, 0.011 * 2 = 0.022 -> raised to 0.03; 0.5 capped stays 0.5
    assert holm([0.011, 0.01, 0.5]) == pytest.approx([0.03, 0.03, 0.5])
    assert holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []
