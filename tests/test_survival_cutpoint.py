"""Maximally selected log-rank cut-points vs the published outputs of R maxstat.

Reference values: cran/maxstat ``tests/Examples/maxstat-Ex.Rout.save`` (R 2.15.3), the printed
results of the documented examples ``maxstat.test(Surv(time, cens) ~ MGE, data=DLBCL,
smethod="LogRank", ...)`` and ``maxstat.test(Surv(month, cens) ~ EF, data=hohnloser, ...)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ceusflow.errors import InputError
from ceusflow.survival.cutpoint import (
    _candidates,
    cutpoint,
    logrank_scores,
    p_lausen92,
    p_lausen94,
    stratify,
)

REF = Path("/work/shared/data/reference")
if not REF.exists():  # the checkout's sibling shared/ directory
    REF = Path(__file__).resolve().parents[2] / "shared" / "data" / "reference"
needs_ref = pytest.mark.skipif(not REF.exists(), reason="reference data not present")


@pytest.fixture(scope="module")
def dlbcl() -> pd.DataFrame:
    # model.frame drops the rows with missing time/cens, as maxstat.test does
    return pd.read_csv(REF / "maxstat-DLBCL.csv").dropna(subset=["time", "cens", "MGE"])


@pytest.fixture(scope="module")
def hohnloser() -> pd.DataFrame:
    return pd.read_csv(REF / "maxstat-hohnloser.csv")


@needs_ref
def test_dlbcl_statistic_and_cutpoint(dlbcl):
    res = cutpoint(dlbcl.time, dlbcl.cens, dlbcl.MGE, pvalue="none")
    assert len(dlbcl) == 40
    assert round(res.statistic, 4) == 3.1772  # "M = 3.1772"
    assert round(res.threshold, 7) == 0.1860526  # "estimated cutpoint 0.1860526"
    assert np.isnan(res.p_value)
    assert res.n_low + res.n_high == 40
    assert res.statistics.max() == res.statistic and res.cuts.size == res.statistics.size


@needs_ref
def test_dlbcl_lausen_p_values_at_published_m(dlbcl):
    """maxstat prints Lau92/Lau94 for DLBCL only with integer scores (M = 3.171)."""
    m = _candidates(np.sort(dlbcl.MGE.to_numpy()), 0.1, 0.9)
    assert round(p_lausen92(3.171, 0.1, 0.9), 5) == 0.03611
    assert round(p_lausen94(3.171, 40, m), 5) == 0.02435


@needs_ref
def test_dlbcl_permutation_p_matches_conditional_monte_carlo(dlbcl):
    res = cutpoint(dlbcl.time, dlbcl.cens, dlbcl.MGE, pvalue="permutation", n_perm=3000, rng=0)
    se = np.sqrt(0.0102 * (1 - 0.0102) / 3000)
    assert abs(res.p_value - 0.0102) < 4 * se + 0.001  # R condMC, B = 9999: p = 0.0102


@needs_ref
@pytest.mark.parametrize(("pvalue", "expected"), [("lau92", 0.01065), ("lau94", 0.005453)])
def test_hohnloser(hohnloser, pvalue, expected):
    res = cutpoint(hohnloser.month, hohnloser.cens, hohnloser.EF, pvalue=pvalue)
    assert round(res.statistic, 4) == 3.5691
    assert res.threshold == 39
    assert res.p_value == pytest.approx(expected, abs=5e-7 if pvalue == "lau94" else 5e-6)
    high = stratify(hohnloser.EF, res.threshold)
    assert (int((~high).sum()), int(high.sum())) == (res.n_low, res.n_high)


def test_lausen_published_tables():
    # pLausen94(2.5, 20, 0.25, 0.75) = 0.073 (Lausen et al. 1994, p. 489)
    assert round(p_lausen94(2.5, 20, np.arange(5, 16)), 3) == 0.073
    # Lausen & Schumacher 1992 Table 2: 5 % quantiles 3.054 (0.1-0.9), 2.829 (0.25-0.75)
    assert p_lausen92(3.054, 0.1, 0.9) == pytest.approx(0.05, abs=5e-4)
    assert p_lausen92(2.829, 0.25, 0.75) == pytest.approx(0.05, abs=5e-4)
    assert p_lausen92(3.588, 0.1, 0.9) == pytest.approx(0.01, abs=2e-4)


def test_logrank_scores_definition():
    time = np.array([3.0, 1.0, 2.0, 2.0, 5.0, 4.0])
    event = np.array([1, 1, 0, 1, 0, 1], dtype=bool)
    n = time.size
    expected = []
    for i in range(n):
        s = sum(
            event[j] / (n - np.sum(time <= time[j]) + 1) for j in range(n) if time[j] <= time[i]
        )
        expected.append(event[i] - s)
    assert np.allclose(logrank_scores(time, event), expected)


def test_profile_equals_direct_standardization():
    rng = np.random.default_rng(4)
    n = 60
    time, event = rng.exponential(10, n), rng.random(n) < 0.7
    score = np.round(rng.normal(size=n), 1)
    res = cutpoint(time, event, score, pvalue="none")
    a = logrank_scores(time, event)
    for cut, stat in zip(res.cuts, res.statistics, strict=True):
        low = score <= cut
        m = low.sum()
        mean = m / n * a.sum()
        var = m * (n - m) / (n**2 * (n - 1)) * (n * np.sum(a**2) - a.sum() ** 2)
        assert stat == pytest.approx(abs(a[low].sum() - mean) / np.sqrt(var))
        assert 0.1 * n - 1 < m <= 0.9 * n


def test_bad_input():
    with pytest.raises(InputError, match="min_prop"):
        cutpoint([1, 2, 3], [1, 0, 1], [1, 2, 3], min_prop=0.9, max_prop=0.1)
    with pytest.raises(InputError, match="score"):
        cutpoint(np.arange(1.0, 21), np.ones(20), np.ones(20))
    with pytest.raises(InputError, match="score"):
        stratify([0.1, np.nan], 0.0)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000))
def test_law_monotone_transform_moves_threshold_only(seed):
    rng = np.random.default_rng(seed)
    n = 40
    time, event = rng.exponential(10, n), rng.random(n) < 0.6
    event[0] = True
    score = rng.integers(0, 15, n).astype(float)
    a = cutpoint(time, event, score, pvalue="lau94")
    b = cutpoint(time, event, np.exp(score / 4), pvalue="lau94")
    assert b.statistic == pytest.approx(a.statistic)
    assert b.threshold == pytest.approx(np.exp(a.threshold / 4))
    assert 0.0 <= a.p_value <= 1.0
    assert np.array_equal(stratify(score, a.threshold), stratify(np.exp(score / 4), b.threshold))
