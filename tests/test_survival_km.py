"""Kaplan–Meier, log-rank and hazard ratio vs lifelines and statsmodels; KM figure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.datasets import load_rossi
from lifelines.statistics import multivariate_logrank_test
from matplotlib.figure import Figure
from statsmodels.duration.hazard_regression import PHReg

from ceusflow.errors import InputError
from ceusflow.survival.kaplan_meier import (
    hazard_ratio,
    kaplan_meier,
    logrank,
    median_survival,
    survival_at,
)
from ceusflow.survival.plots_km import plot_kaplan_meier


@pytest.fixture(scope="module")
def rossi() -> pd.DataFrame:
    return load_rossi()


def _tied(seed: int, n: int = 90):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 15, n).astype(float), rng.random(n) < 0.6, rng.integers(0, 3, n)


@pytest.mark.parametrize("source", ["rossi", "tied"])
def test_km_matches_lifelines(rossi, source):
    if source == "rossi":
        time, event, group = rossi.week, rossi.arrest, rossi.fin
    else:
        time, event, group = _tied(0)
    km = kaplan_meier(time, event, group)
    for g in km.group.values:
        sel = np.asarray(group) == g
        ref = KaplanMeierFitter().fit(np.asarray(time)[sel], np.asarray(event)[sel])
        ours = survival_at(km.sel(group=g), ref.survival_function_.index.to_numpy())
        s = ref.survival_function_.to_numpy()[:, 0]
        assert np.allclose(ours.survival, s, atol=1e-12)
        inside = (s > 0) & (s < 1)
        ci = ref.confidence_interval_.to_numpy()
        assert np.allclose(ours.low[inside], ci[inside, 0], atol=1e-10)
        assert np.allclose(ours.high[inside], ci[inside, 1], atol=1e-10)
        assert np.array_equal(ours.at_risk, ref.event_table.at_risk.to_numpy())
        table = km.sel(group=g, time=ref.event_table.index.to_numpy())
        assert np.array_equal(table.events, ref.event_table.observed.to_numpy())
        assert np.array_equal(table.censored, ref.event_table.censored.to_numpy())
        assert median_survival(km).sel(group=g).item() == ref.median_survival_time_


def test_km_step_function_and_follow_up_end():
    time = np.array([1.0, 2.0, 2.0, 3.0, 5.0])
    event = np.array([1, 1, 0, 1, 0])
    km = kaplan_meier(time, event)
    at = survival_at(km, [0.0, 1.5, 2.0, 4.0, 5.0, 6.0]).survival.sel(group="all").values
    expected = [1.0, 0.8, 0.8 * 3 / 4, 0.8 * 3 / 4 * 1 / 2, 0.3, np.nan]
    assert np.allclose(at, expected, equal_nan=True)
    assert median_survival(km).item() == 3.0
    assert km.time.attrs["units"] == "month"


def test_conf_types_bracket_the_estimate(rossi):
    for conf_type in ("log", "plain", "log-log"):
        km = kaplan_meier(rossi.week, rossi.arrest, conf_type=conf_type)
        ok = np.isfinite(km.survival)
        assert bool(((km.low <= km.survival) & (km.survival <= km.high)).where(ok, True).all())


@pytest.mark.parametrize("groups", ["fin", "race_fin"])
def test_logrank_matches_lifelines(rossi, groups):
    group = rossi.fin if groups == "fin" else rossi.race * 2 + rossi.fin
    ours = logrank(rossi.week, rossi.arrest, group)
    ref = multivariate_logrank_test(rossi.week, group, rossi.arrest)
    assert ours.statistic == pytest.approx(ref.test_statistic, rel=1e-10)
    assert ours.p_value == pytest.approx(ref.p_value, rel=1e-8)
    assert ours.df == group.nunique() - 1
    assert ours.observed.sum() == pytest.approx(ours.expected.sum())


def test_logrank_tied_data_matches_lifelines():
    time, event, group = _tied(3)
    ours = logrank(time, event, group)
    ref = multivariate_logrank_test(time, group, event)
    assert ours.statistic == pytest.approx(ref.test_statistic, rel=1e-10)


def test_hazard_ratio_matches_lifelines_and_statsmodels(rossi):
    hr = hazard_ratio(rossi.week, rossi.arrest, rossi.fin == 1)
    df = pd.DataFrame({"w": rossi.week, "a": rossi.arrest, "x": rossi.fin})
    cph = CoxPHFitter().fit(df, "w", "a")  # Efron ties
    assert hr.coef == pytest.approx(cph.params_["x"], rel=1e-5)
    assert hr.se == pytest.approx(cph.standard_errors_["x"], rel=1e-5)
    sm = PHReg(
        rossi.week, rossi.fin.to_numpy(float)[:, None], status=rossi.arrest, ties="efron"
    ).fit()
    assert hr.coef == pytest.approx(sm.params[0], rel=1e-6)
    assert hr.se == pytest.approx(sm.bse[0], rel=1e-6)
    assert (hr.reference, hr.comparison, hr.n, hr.n_events) == ("low", "high", 432, 114)
    assert hr.low < hr.estimate < hr.high and hr.estimate == pytest.approx(np.exp(hr.coef))


def test_hazard_ratio_tied_times_and_reference():
    time, event, group = _tied(5)
    labels = np.where(group == 0, "a", "b")
    hr = hazard_ratio(time, event, labels)
    sm = PHReg(
        time, (labels == "b").astype(float)[:, None], status=event.astype(float), ties="efron"
    ).fit()
    assert hr.coef == pytest.approx(sm.params[0], rel=1e-6)
    flipped = hazard_ratio(time, event, labels, reference="b")
    assert flipped.coef == pytest.approx(-hr.coef, rel=1e-8)
    with pytest.raises(InputError, match="two"):
        hazard_ratio(time, event, group)
    with pytest.raises(InputError, match="reference"):
        hazard_ratio(time, event, labels, reference="c")


def test_bad_input():
    with pytest.raises(InputError, match="group"):
        kaplan_meier([1, 2], [1, 0], [0, 1, 1])
    with pytest.raises(InputError, match="single level"):
        logrank([1, 2], [1, 0], [0, 0])
    with pytest.raises(InputError, match="time"):
        kaplan_meier([-1, 2], [1, 0])


def test_plot_kaplan_meier(rossi):
    km = kaplan_meier(rossi.week, rossi.arrest, rossi.fin == 1)
    lr = logrank(rossi.week, rossi.arrest, rossi.fin)
    fig = plot_kaplan_meier(km, logrank=lr, title="Rossi")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert "At risk" in texts and "216" in texts  # both arms start with 216 at risk
    assert any("log-rank p" in t.get_text() for t in ax.get_legend().get_texts())
    assert ax.get_title() == "Rossi"
    bare = plot_kaplan_meier(km, at_risk_table=False)
    assert not bare.axes[0].texts


_data = st.integers(min_value=2, max_value=40).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(0, 12), min_size=n, max_size=n),
        st.lists(st.booleans(), min_size=n, max_size=n),
        st.lists(st.integers(0, 2), min_size=n, max_size=n),
    )
)


@settings(max_examples=50, deadline=None)
@given(_data)
def test_law_km_non_increasing_in_unit_interval(data):
    time, event, group = (np.asarray(v) for v in data)
    km = kaplan_meier(time, event, group)
    for g in km.group.values:
        s = km.survival.sel(group=g).values
        s = s[np.isfinite(s)]
        assert np.all((s >= 0) & (s <= 1)) and np.all(np.diff(s) <= 1e-15)


@settings(max_examples=50, deadline=None)
@given(_data, st.permutations(["x", "y", "z"]))
def test_law_logrank_invariant_to_relabelling(data, names):
    time, event, group = (np.asarray(v) for v in data)
    if np.unique(group).size < 2 or not event.any():
        return
    a = logrank(time, event, group)
    b = logrank(time, event, np.asarray(names)[group])
    assert b.statistic == pytest.approx(a.statistic, rel=1e-9, abs=1e-12)
    assert b.p_value == pytest.approx(a.p_value, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_one_kaplan_meier_and_one_logrank(seed):
    """calibration.km_at and table_one.logrank_p are this module's estimator, not copies."""
    from ceusflow.survival.calibration import km_at
    from ceusflow.survival.table_one import logrank_p

    time, event, group = _tied(seed)
    km = kaplan_meier(time, event)
    for horizon in (0.0, 3.0, 7.5, 14.0, 14.5, float(time.max()) + 1):
        ref = survival_at(km, horizon)
        got = km_at(time, event, horizon)
        want = [float(ref[k].sel(group="all")) for k in ("survival", "low", "high")]
        np.testing.assert_allclose(got, want, rtol=1e-13, equal_nan=True)
    two = group == 1
    assert logrank_p(time, event, two) == logrank(time, event, two).p_value


def test_logrank_with_a_group_never_at_risk_matches_lifelines():
    """Found by the relabelling law: group 1 leaves before the first event, so dropping a different
    group left a numerically singular block; the full generalised inverse is label-invariant."""
    t = np.array([2, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 1, 2, 1, 2, 2, 2], float)
    e = np.zeros(t.size, bool)
    e[[0, 19, 20, 21]] = True
    g = np.zeros(t.size, int)
    g[7], g[21] = 1, 2
    ref = multivariate_logrank_test(t, g, e).test_statistic
    for labels in (g, np.array(["x", "z", "y"])[g], np.array(["c", "b", "a"])[g]):
        assert logrank(t, e, labels).statistic == pytest.approx(ref, rel=1e-9)


def test_hazard_ratio_of_a_group_without_events_is_not_estimable():
    time = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    event = np.array([1, 1, 1, 0, 0, 0])
    group = np.array(["high", "high", "high", "low", "low", "low"])
    with pytest.raises(InputError, match="'low' group has no events"):
        hazard_ratio(time, event, group)
