"""Concordance: exact agreement with scikit-survival and lifelines, IJ variance, laws."""

from __future__ import annotations

import importlib
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lifelines.datasets import load_rossi
from lifelines.utils import concordance_index
from sksurv.datasets import load_veterans_lung_cancer, load_whas500
from sksurv.metrics import concordance_index_censored, concordance_index_ipcw
from sksurv.util import Surv

from ceusflow.errors import InputError
from ceusflow.survival import _pair_counts
from ceusflow.survival._pair_counts import first_member, first_member_sums, second_member
from ceusflow.survival.concordance import (
    _prepare,
    _ratio_and_influence,
    _weighted_c,
    compare_concordance,
    concordance,
)

concordance_module = importlib.import_module("ceusflow.survival.concordance")  # the package re-exports the function


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


def test_ties_are_exact_equality_not_sksurv_tolerance():
    """Tied risks are exact float equality (as lifelines and R). scikit-survival's default
    ``tied_tol=1e-8`` also ties scores that differ by rounding; with ``tied_tol=0`` it agrees."""
    df = load_rossi()
    time, event = df["week"].to_numpy(float), df["arrest"].to_numpy(bool)
    risk = (df["prio"] - df["age"] / 10).to_numpy(float)  # e.g. 5 - 3.2 != 3 - 1.2 in floats
    c = concordance(time, event, risk, ci="none")
    exact = concordance_index_censored(event, time, risk, tied_tol=0)
    assert (c.estimate, c.n_concordant, c.n_tied_risk) == (exact[0], exact[1], exact[3])
    assert concordance_index(time, -risk, event) == pytest.approx(c.estimate, abs=1e-14)
    assert concordance_index_censored(event, time, risk)[3] > c.n_tied_risk  # sksurv's default
    assert concordance(time, event, np.round(risk, 6), ci="none").estimate == pytest.approx(
        concordance_index_censored(event, time, risk)[0], abs=1e-14
    )


@pytest.mark.parametrize("dataset", ["whas500", "veterans", "rossi"])
def test_harrell_on_bundled_datasets(dataset):
    if dataset == "rossi":  # lifelines' bundled data; weekly times, many ties
        df = load_rossi()
        time, event = df["week"].to_numpy(float), df["arrest"].to_numpy(bool)
        risk = df["prio"].to_numpy(float) + df["age"].to_numpy(float) / 100
    elif dataset == "whas500":
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
    assert concordance(time, event, risk, method="uno", tau=tau, ci="none").estimate == pytest.approx(ref, rel=1e-12)


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
        assert _weighted_c(s, w[s.order]) == pytest.approx(_brute_weighted(time, event, risk, w), abs=1e-12)


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
    assert ab.difference == pytest.approx(concordance(time, event, a).estimate - concordance(time, event, b).estimate)
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
    assert concordance(time, event, np.exp(risk / 3) + risk**3, ci="none").estimate == pytest.approx(c, abs=1e-12)
    assert concordance(time, event, -risk, ci="none").estimate == pytest.approx(1 - c, abs=1e-12)


# --------------------------------------------------------------------------- compareC (Kang 2015)


def test_compare_c_reproduces_published_r_output():
    """R 3.4.4, compareC 1.3.2: compareC(c(50,30,20,10,10), c(1,0,1,0,1), y, z).

    Printed: est.c 1.0000000 0.1666667; est.diff_c 0.8333333; est.vardiff_c 0.04115226;
    est.varCxy 1.619075e-16; est.varCxz 0.04115226; est.cov -5.396917e-17; zscore 4.107919;
    pval 3.992397e-05 (quoted in wjn0/compare_concordance's test suite). compareC's scores are
    survival-like, so ours get the opposite sign.
    """
    time, status = [50, 30, 20, 10, 10], [1, 0, 1, 0, 1]
    y = np.array([0.2, 0.2, 0.1, 0.2, -0.3])
    z = np.array([0.3, 0.0, 0.1, -0.3, 0.5])
    r = compare_concordance(time, status, -y, -z)
    assert (r.estimate_a, r.estimate_b) == pytest.approx((1.0, 0.1666667), abs=5e-8)
    assert r.difference == pytest.approx(0.8333333, abs=5e-8)
    assert r.se**2 == pytest.approx(0.04115226, abs=5e-9)
    assert r.var_b == pytest.approx(0.04115226, abs=5e-9)
    assert abs(r.var_a) < 1e-15 and abs(r.cov) < 1e-15
    assert r.z == pytest.approx(4.107919, abs=5e-7)
    assert r.p_value == pytest.approx(3.992397e-05, abs=5e-12)
    assert r.ci_method == "kang"


def _csign(t, d):
    """compareC's pair sign of the outcome: +1 when i outlived a j with an event, -1 vice versa."""
    n = t.size
    a = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            if t[i] != t[j]:
                first, sign = (j, 1.0) if t[i] > t[j] else (i, -1.0)
                a[i, j] = sign * d[first]
            elif d[i] != d[j]:
                a[i, j] = 1.0 if d[j] else -1.0
    return a


def _ucov_brute(k, m):
    """Unbiased covariance of two order-2 U-statistics: t_k t_m minus the mean over all ordered
    quadruples of distinct patients of k_ij m_kl (O(n^4); the definition, not the closed form)."""
    n = k.shape[0]
    tk, tm = k.sum() / (n * (n - 1)), m.sum() / (n * (n - 1))
    rk, rm = k.sum(1), m.sum(1)
    # sum over distinct (i, j, k, l) of k_ij m_kl by inclusion–exclusion over shared indices
    total = k.sum() * m.sum() - 4 * rk @ rm + 2 * (k * m).sum()
    return tk * tm - total / (n * (n - 1) * (n - 2) * (n - 3))


def _compare_c_brute(time, status, y, z):
    """compareC's estC/vardiffC from their formulas on dense pair matrices (scores survival-like)."""
    a = _csign(time, status)
    xx, xy, xz = a * a, a * np.sign(y[:, None] - y[None, :]), a * np.sign(z[:, None] - z[None, :])
    n = time.size
    t11, t12, t13 = (m.sum() / (n * (n - 1)) for m in (xx, xy, xz))
    cv = _ucov_brute
    g2 = np.array([1 / t11, -t12 / t11**2]) / 2
    g3 = np.array([1 / t11, -t13 / t11**2]) / 2
    var_y = g2 @ np.array([[cv(xy, xy), cv(xx, xy)], [cv(xx, xy), cv(xx, xx)]]) @ g2
    var_z = g3 @ np.array([[cv(xz, xz), cv(xx, xz)], [cv(xx, xz), cv(xx, xx)]]) @ g3
    cov = g2 @ np.array([[cv(xy, xz), cv(xx, xy)], [cv(xx, xz), cv(xx, xx)]]) @ g3
    return (t12 / t11 + 1) / 2, (t13 / t11 + 1) / 2, var_y, var_z, cov


def test_quadruple_form_equals_distinct_index_average():
    rng = np.random.default_rng(4)
    n = 6
    k, m = (x + x.T for x in rng.normal(size=(2, n, n)))
    np.fill_diagonal(k, 0)
    np.fill_diagonal(m, 0)
    quads = [k[i, j] * m[p, q] for i, j, p, q in itertools.permutations(range(n), 4)]
    tk, tm = k.sum() / (n * (n - 1)), m.sum() / (n * (n - 1))
    assert _ucov_brute(k, m) == pytest.approx(tk * tm - np.mean(quads), rel=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_kang_variance_equals_brute_force_compare_c(seed):
    rng = np.random.default_rng(seed)
    n = 35
    time = rng.integers(1, 9, n).astype(float)  # tied times
    status = rng.random(n) < 0.55
    ra, rb = rng.integers(0, 5, n).astype(float), rng.integers(0, 3, n).astype(float)  # ties
    ref = _compare_c_brute(time, status, -ra, -rb)
    r = compare_concordance(time, status, ra, rb)
    got = (r.estimate_a, r.estimate_b, r.var_a, r.var_b, r.cov)
    assert got == pytest.approx(ref, rel=1e-11, abs=1e-15)
    assert r.se == pytest.approx(np.sqrt(ref[2] + ref[3] - 2 * ref[4]), rel=1e-11)


def test_kang_close_to_ij_and_only_for_harrell():
    rng = np.random.default_rng(8)
    n = 400
    time = rng.exponential(20, n)
    event = rng.random(n) < 0.6
    a, b = -time + rng.normal(0, 10, n), -time + rng.normal(0, 25, n)
    kang = compare_concordance(time, event, a, b)
    ij = compare_concordance(time, event, a, b, ci="ij")
    assert kang.se == pytest.approx(ij.se, rel=0.1)
    assert kang.var_a == pytest.approx(ij.var_a, rel=0.1)
    with pytest.raises(InputError, match="Harrell"):
        compare_concordance(time, event, a, b, method="uno", tau=30.0)
    assert np.isfinite(compare_concordance(time, event, a, b, method="uno", tau=30.0, ci="ij").p_value)


# --------------------------------------------------------------------------- kernels


@pytest.mark.parametrize("seed", range(6))
def test_numba_and_numpy_kernels_give_identical_counts(seed):
    pytest.importorskip("numba")
    time, event, risk = _tied_data(seed, 300)
    s = _prepare(time, event, risk, "harrell", None, None)
    w = np.random.default_rng(seed).integers(0, 4, time.size).astype(float)  # bootstrap-like
    for ws in (np.ones(time.size), w):
        fast = first_member(s, ws, use_numba=True)
        slow = first_member(s, ws, use_numba=False)
        for f, sl in zip(fast, slow, strict=True):
            np.testing.assert_array_equal(f * s.event, sl * s.event)
        for f, sl in zip(second_member(s, ws, use_numba=True), second_member(s, ws, use_numba=False), strict=True):
            np.testing.assert_array_equal(f, sl)
        np.testing.assert_array_equal(
            first_member_sums(s, ws, use_numba=True), first_member_sums(s, ws, use_numba=False)
        )


def test_results_identical_without_numba(monkeypatch):
    pytest.importorskip("numba")
    time, event, risk = _tied_data(11, 150)
    other = risk + np.random.default_rng(0).integers(0, 3, time.size)
    calls = {
        "none": lambda: concordance(time, event, risk, ci="none"),
        "ij": lambda: concordance(time, event, risk),
        "boot": lambda: concordance(time, event, risk, ci="bootstrap", n_boot=200, rng=5),
        "kang": lambda: compare_concordance(time, event, risk, other),
        "cmp_ij": lambda: compare_concordance(time, event, risk, other, ci="ij"),
    }
    with_numba = {k: f() for k, f in calls.items()}
    monkeypatch.setattr(_pair_counts, "numba_kernels", lambda: None)
    monkeypatch.setattr(concordance_module, "numba_kernels", lambda: None)
    for k, f in calls.items():
        a, b = with_numba[k], f()
        for name in a.__dataclass_fields__:
            x, y = getattr(a, name), getattr(b, name)
            if isinstance(x, float):
                assert x == pytest.approx(y, rel=1e-12, abs=1e-15, nan_ok=True), (k, name)
            else:
                assert x == y, (k, name)


def _by_patient(s):
    """A setup's per-position arrays in patient order, and its bucket key per position."""
    pos = np.argsort(s.order)
    return (s.time_rank[pos], s.event[pos], s.rank[pos], s.g[pos]), s.time_rank * 2 + s.event


def test_argsort_free_setup_equals_argsort_setups(monkeypatch):
    """The hashed/counting-sort setup equals the numba and numpy argsort setups up to the order of
    patients sharing time and event status (which no count depends on)."""
    pytest.importorskip("numba")
    from ceusflow.survival._concordance_kernels import fast_setup

    time, event, risk = _tied_data(2, 400)
    time[:3], risk[:2] = 0.0, (0.0, -0.0)  # a zero time and a signed zero tie
    fast = _prepare(time, event, risk, "harrell", None, None)
    np.testing.assert_array_equal(fast.order, fast_setup(time, event, risk, np.ones(time.size)).order)
    numba_setup = _pair_counts.make_setup(time, event, risk, np.ones(time.size))
    monkeypatch.setattr(_pair_counts, "numba_kernels", lambda: None)
    monkeypatch.setattr(concordance_module, "numba_kernels", lambda: None)
    numpy_setup = _prepare(time, event, risk, "harrell", None, None)
    for other in (numba_setup, numpy_setup):
        for name in ("time_rank", "time_starts", "event_starts", "event", "n_ranks", "g"):
            np.testing.assert_array_equal(getattr(fast, name), getattr(other, name), err_msg=name)
        for a, b in zip(_by_patient(fast)[0], _by_patient(other)[0], strict=True):
            np.testing.assert_array_equal(a, b)
    # time order, censored before events within a time, ranks dense, stable within a bucket
    t, e, key = time[fast.order], fast.event, _by_patient(fast)[1]
    assert np.all(np.diff(t) >= 0) and not np.any((np.diff(t) == 0) & e[:-1] & ~e[1:])
    assert np.all(np.diff(fast.order)[np.diff(key) == 0] > 0)
    assert set(np.unique(fast.rank)) == set(range(fast.n_ranks))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from([0.0, -0.0, 1.0, -1.5, 1e300, -1e-300, 5e-324, 2.5, 7.0]), min_size=1, max_size=60)
    | st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=60)
)
def test_dense_ranks_equal_numpy_unique(values):
    """The hash look-up (and whichever route dense_ranks picks) gives numpy's dense ranks;
    -0.0 ties with 0.0."""
    pytest.importorskip("numba")
    from ceusflow.survival import _concordance_kernels as kernels

    x = np.asarray(values, dtype=float)
    uniq, inverse = np.unique(x, return_inverse=True)
    np.testing.assert_array_equal(kernels._hash_ranks(x, uniq), inverse)
    rank, n_ranks = kernels.dense_ranks(x)
    np.testing.assert_array_equal(rank, inverse)
    assert n_ranks == uniq.size


@pytest.mark.parametrize("extra", [0, 1])
def test_hash_table_at_capacity_and_argsort_beyond(extra):
    """HASH_MAX_VALUES distinct values still hash (table half full); one more goes to argsort."""
    pytest.importorskip("numba")
    from ceusflow.survival import _concordance_kernels as kernels

    k = kernels.HASH_MAX_VALUES + extra
    rng = np.random.default_rng(0)
    x = rng.permutation(np.r_[np.zeros(3 * k), np.arange(1, k) * 0.1 + 1000.0])  # 3/4 zeros: k values
    assert not kernels._mostly_distinct(x)
    rank, n_ranks = kernels.dense_ranks(x)
    assert rank.dtype == (np.int32 if extra == 0 else np.int64)
    np.testing.assert_array_equal(rank, np.unique(x, return_inverse=True)[1])
    assert n_ranks == k


@pytest.mark.parametrize("kind", ["tied", "distinct", "mixed"])
def test_point_estimate_path_equals_setup_path_and_sksurv(kind):
    """``ci="none"`` (integer counts straight from the data) gives the C and pair counts of the
    per-patient set-up path and of scikit-survival, on hashed and argsort-ranked inputs."""
    rng = np.random.default_rng(7)
    n = 3000
    time = rng.exponential(20, n)
    risk = rng.normal(size=n) - time / 40
    if kind == "tied":
        time, risk = np.round(time), np.round(risk, 1)
    elif kind == "mixed":  # distinct times (argsort route), tied scores (hash route)
        risk = np.round(risk)
    event = rng.random(n) < 0.5
    point, full = concordance(time, event, risk, ci="none"), concordance(time, event, risk, ci="ij")
    fields = ("estimate", "n_concordant", "n_tied_risk", "n_comparable")
    assert [getattr(point, f) for f in fields] == [getattr(full, f) for f in fields]
    ref = concordance_index_censored(event, time, risk, tied_tol=0)
    assert (point.estimate, point.n_concordant, point.n_tied_risk) == (ref[0], ref[1], ref[3])
    assert point.n_comparable == ref[1] + ref[2] + ref[3]
    assert np.isnan([point.low, point.high, point.se]).all() and point.ci_method == "none"


def test_point_estimate_path_rejects_no_comparable_pairs():
    with pytest.raises(InputError, match="no comparable pairs"):
        concordance([1.0, 2.0, 3.0], [0, 0, 0], [0.1, 0.2, 0.3], ci="none")
