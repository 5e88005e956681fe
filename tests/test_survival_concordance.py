"""Concordance: exact agreement with scikit-survival and lifelines, IJ variance, laws."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lifelines.utils import concordance_index
from sksurv.datasets import load_veterans_lung_cancer, load_whas500
from sksurv.metrics import concordance_index_censored, concordance_index_ipcw
from sksurv.util import Surv

from ceusflow.errors import InputError
from ceusflow.survival.concordance import (
    _prepare,
    _ratio_and_influence,
    _weighted_c,
    compare_concordance,
    concordance,
)


def _tied_data(seed: int, n: int = 80) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    time = rng.integers(1, 12, n).astype(float)  # many tied times
    event = rng.random(n) < 0.5  # about half censored
    risk = rng.integers(0, 6, n).astype(float)  # many tied scores
    return time, event, risk


def _brute_weighted(time, event, risk, w):
    """O(n^2) weighted Harrell's C from the definition (pair weight w_i w_j)."""
    num = den = 0.0
    for i in range(time.size):
        if not event[i]:
            continue
        later = (time > time[i]) | ((time == time[i]) & ~event)
        den += w[i] * np.sum(w[later])
        num += w[i] * np.sum(w[later] * ((risk[later] < risk[i]) + 0.5 * (risk[later] == risk[i])))
    return num / den


@pytest.mark.parametrize("seed", range(25))
def test_harrell_equals_sksurv_and_lifelines_with_ties(seed):
    time, event, risk = _tied_data(seed)
    ref, conc, disc, tied, _ = concordance_index_censored(event, time, risk)
    c = concordance(time, event, risk, ci="none")
    assert c.estimate == pytest.approx(ref, abs=1e-14)
    assert (c.n_concordant, c.n_tied_risk, c.n_comparable) == (conc, tied, conc + disc + tied)
    # lifelines wants a survival-like score: the opposite sign of risk
    assert concordance_index(time, -risk, event) == pytest.approx(c.estimate, abs=1e-14)


@pytest.mark.parametrize("dataset", ["whas500", "veterans"])
def test_harrell_on_bundled_datasets(dataset):
    if dataset == "whas500":
        x, y = load_whas500()
        time, event, risk = y["lenfol"], y["fstat"], x["age"].to_numpy(float)
    else:
        x, y = load_veterans_lung_cancer()
        time, event = y["Survival_in_days"], y["Status"]
        risk = -x["Karnofsky_score"].to_numpy(float)  # better performance status = lower risk
    ref = concordance_index_censored(event, time, risk)
    c = concordance(time, event, risk, ci="none")
    assert c.estimate == pytest.approx(ref[0], abs=1e-14)
    assert (c.n_concordant, c.n_tied_risk) == (ref[1], ref[3])
    assert concordance_index(time, -risk, event) == pytest.approx(c.estimate, abs=1e-14)


@pytest.mark.parametrize("tau", [None, 1000.0, 365.0])
def test_uno_equals_sksurv_ipcw(tau):
    x, y = load_whas500()
    time, event, risk = y["lenfol"], y["fstat"], x["bmi"].to_numpy(float)
    train = slice(0, 300)
    test = slice(300, None)
    ref = concordance_index_ipcw(y[train], y[test], risk[test], tau=tau)
    c = concordance(
        time[test],
        event[test],
        risk[test],
        method="uno",
        tau=tau,
        ci="none",
        train=(time[train], event[train]),
    )
    assert c.estimate == pytest.approx(ref[0], rel=1e-12)


def test_uno_same_sample_tied_data():
    time, event, risk = _tied_data(3, 120)
    tau = 9.0
    y = Surv.from_arrays(event, time)
    ref = concordance_index_ipcw(y, y, risk, tau=tau)[0]
    assert concordance(
        time, event, risk, method="uno", tau=tau, ci="none"
    ).estimate == pytest.approx(ref, rel=1e-12)


def test_ij_influence_is_the_derivative_of_weighted_c():
    time, event, risk = _tied_data(5, 40)
    s = _prepare(time, event, risk, "harrell", None, None)
    c, infl, _ = _ratio_and_influence(s, True)
    h = 1e-6
    ones = np.ones(time.size)
    for k in (0, 7, 19, 33):
        w = ones.copy()
        w[k] += h
        fd = (_brute_weighted(time, event, risk, w) - c) / h
        assert infl[k] == pytest.approx(fd, abs=1e-5)
        assert _weighted_c(s, w) == pytest.approx(_brute_weighted(time, event, risk, w), abs=1e-12)


def test_ij_se_agrees_with_bootstrap_and_ci_brackets_estimate():
    rng = np.random.default_rng(0)
    n = 300
    time = rng.exponential(20, n)
    event = rng.random(n) < 0.6
    risk = -time + rng.normal(0, 20, n)
    ij = concordance(time, event, risk)
    boot = concordance(time, event, risk, ci="bootstrap", n_boot=400, rng=1)
    assert ij.low < ij.estimate < ij.high and boot.low < boot.estimate < boot.high
    assert boot.se == pytest.approx(ij.se, rel=0.25)
    assert concordance(time, event, risk, ci="bootstrap", n_boot=50, rng=7) == concordance(
        time, event, risk, ci="bootstrap", n_boot=50, rng=7
    )


def test_compare_concordance_is_antisymmetric_and_zero_for_identical_scores():
    rng = np.random.default_rng(1)
    n = 200
    time = rng.exponential(20, n)
    event = rng.random(n) < 0.6
    a = -time + rng.normal(0, 10, n)
    b = -time + rng.normal(0, 30, n)
    ab, ba = compare_concordance(time, event, a, b), compare_concordance(time, event, b, a)
    assert ab.difference == pytest.approx(-ba.difference)
    assert ab.p_value == pytest.approx(ba.p_value)
    assert ab.difference == pytest.approx(
        concordance(time, event, a).estimate - concordance(time, event, b).estimate
    )
    assert ab.difference > 0 and ab.low < ab.difference < ab.high
    same = compare_concordance(time, event, a, a)
    assert same.difference == 0 and same.p_value == 1.0
    boot = compare_concordance(time, event, a, b, ci="bootstrap", n_boot=300, rng=2)
    assert boot.se == pytest.approx(ab.se, rel=0.35)


def test_accepts_pandas_and_rejects_bad_input():
    x, y = load_whas500()
    c = concordance(x["age"] * 0 + y["lenfol"], x["age"] * 0 + y["fstat"], x["age"], ci="none")
    assert 0.5 < c.estimate < 1
    with pytest.raises(InputError, match="risk"):
        concordance([1, 2, 3], [1, 0, 1], [0.1, 0.2])
    with pytest.raises(InputError, match="comparable"):
        concordance([1, 2, 3], [0, 0, 0], [0.1, 0.2, 0.3])
    with pytest.raises(InputError, match="method"):
        concordance([1, 2, 3], [1, 0, 1], [0.1, 0.2, 0.3], method="somers")  # type: ignore[arg-type]


_data = st.integers(min_value=3, max_value=40).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(1, 10), min_size=n, max_size=n),
        st.lists(st.booleans(), min_size=n, max_size=n),
        st.lists(st.integers(-5, 5), min_size=n, max_size=n),
    )
)


@settings(max_examples=50, deadline=None)
@given(_data)
def test_law_monotone_invariance_and_negation(data):
    """C is a rank statistic; tied risks count 1/2, so C(risk) + C(-risk) = 1 exactly."""
    time, event, risk = (np.asarray(v, dtype=float) for v in data)
    try:
        c = concordance(time, event, risk, ci="none").estimate
    except InputError:
        return  # no comparable pair
    assert concordance(
        time, event, np.exp(risk / 3) + risk**3, ci="none"
    ).estimate == pytest.approx(c, abs=1e-12)
    assert concordance(time, event, -risk, ci="none").estimate == pytest.approx(1 - c, abs=1e-12)
