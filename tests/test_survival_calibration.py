"""Calibration, bootstrap optimism, Grønnesby–Borgan and Hosmer–Lemeshow against oracles."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.datasets import load_rossi
from matplotlib.figure import Figure
from scipy import stats

from ceusflow.errors import InputError
from ceusflow.survival.calibration import (
    calibrate_bootstrap,
    calibration,
    gronnesby_borgan,
    hosmer_lemeshow,
    plot_calibration,
    rank_groups,
)
from ceusflow.survival.cox import fit_cox, linear_predictor, predict_survival

matplotlib.use("Agg")
COLS = ["fin", "age", "prio", "mar"]


@pytest.fixture(scope="module")
def rossi() -> pd.DataFrame:
    return load_rossi()


@pytest.fixture(scope="module")
def cal(rossi):
    fit = fit_cox(rossi["week"], rossi["arrest"], rossi[COLS])
    pred = predict_survival(fit, rossi, 40.0)
    return pred, calibration(rossi["week"], rossi["arrest"], pred, horizon=40.0, groups=4)


def test_group_km_matches_lifelines(rossi, cal):
    pred, res = cal
    groups = rank_groups(pred, 4)
    assert list(res.table["n"]) == [108] * 4
    assert np.all(np.diff(res.table["predicted"]) > 0)  # lowest predicted survival first
    for k, row in res.table.iterrows():
        m = groups == k
        km = KaplanMeierFitter().fit(rossi["week"][m], rossi["arrest"][m])
        assert row["predicted"] == pytest.approx(pred[m].mean())
        assert row["observed"] == pytest.approx(km.survival_function_at_times(40.0).iloc[0])
        ci = km.confidence_interval_.loc[:40.0].iloc[-1]  # exponential Greenwood (log-log)
        assert row["low"] == pytest.approx(ci.iloc[0], rel=1e-9)
        assert row["high"] == pytest.approx(ci.iloc[1], rel=1e-9)


def test_slope_and_intercept_match_their_definitions(rossi, cal):
    pred, res = cal
    df = pd.DataFrame({"c": np.log(-np.log(pred)), "t": rossi["week"], "e": rossi["arrest"]})
    ref = CoxPHFitter().fit(df, "t", "e", fit_options={"precision": 1e-12})
    assert res.slope == pytest.approx(ref.params_["c"], rel=1e-6)
    assert res.slope_se == pytest.approx(ref.standard_errors_["c"], rel=1e-6)
    assert res.slope == pytest.approx(1.0, rel=1e-6)  # apparent: the model refitted on itself
    km_all = KaplanMeierFitter().fit(rossi["week"], rossi["arrest"])
    observed = km_all.survival_function_at_times(40.0).iloc[0]
    assert res.intercept == pytest.approx(observed - pred.mean(), abs=1e-12)


def test_calibration_rejects_risk_scores(rossi):
    with pytest.raises(InputError, match="between 0 and 1"):
        calibration(rossi["week"], rossi["arrest"], rossi["age"], horizon=24.0)


def _overfit_data(n: int = 90, noise: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = pd.DataFrame(rng.normal(size=(n, noise + 1)), columns=[f"v{i}" for i in range(noise + 1)])
    t = rng.exponential(np.exp(-0.5 * x["v0"]) * 20.0)
    c = rng.uniform(10, 60, n)
    return np.minimum(t, c), t <= c, x


def test_calibrate_bootstrap_shrinks_an_overfit_model():
    t, e, x = _overfit_data()
    res = calibrate_bootstrap(t, e, x, horizon=12.0, n_boot=40, rng=3, groups=3)
    tab = res.table
    np.testing.assert_allclose(tab["observed_corrected"], tab["observed"] - tab["optimism"])
    assert res.slope_corrected < 0.9  # many noise covariates: predictions are too extreme
    spread = tab["observed"].iloc[-1] - tab["observed"].iloc[0]
    corrected_spread = tab["observed_corrected"].iloc[-1] - tab["observed_corrected"].iloc[0]
    assert corrected_spread < spread
    again = calibrate_bootstrap(t, e, x, horizon=12.0, n_boot=40, rng=3, groups=3)
    pd.testing.assert_frame_equal(tab, again.table)


def test_calibrate_bootstrap_one_replicate_by_hand():
    t, e, x = _overfit_data(noise=2)
    res = calibrate_bootstrap(t, e, x, horizon=12.0, n_boot=1, rng=11, groups=2)
    pred = predict_survival(fit_cox(t, e, x), x, 12.0)
    cut = np.sort(pred)[len(pred) // 2 - 1]
    idx = np.random.default_rng(11).integers(0, len(t), len(t))
    boot = fit_cox(t[idx], e[idx], x.iloc[idx])

    def error(tt, ee, p):
        out = []
        for m in (p <= cut, p > cut):
            km = KaplanMeierFitter().fit(tt[m], ee[m]).survival_function_at_times(12.0).iloc[0]
            out.append(km - p[m].mean())
        return np.array(out)

    train = error(t[idx], e[idx], predict_survival(boot, x.iloc[idx], 12.0))
    test = error(t, e, predict_survival(boot, x, 12.0))
    np.testing.assert_allclose(res.table["optimism"], train - test, rtol=1e-9)
    lp = linear_predictor(boot, x)
    slope = CoxPHFitter().fit(pd.DataFrame({"lp": lp, "t": t, "e": e}), "t", "e").params_["lp"]
    assert res.slope_corrected == pytest.approx(slope, rel=1e-5)


def test_gronnesby_borgan_matches_martingale_residuals_and_score_test(rossi):
    cph = CoxPHFitter().fit(rossi[[*COLS, "week", "arrest"]], "week", "arrest")
    lp = np.log(cph.predict_partial_hazard(rossi).to_numpy())
    gb = gronnesby_borgan(rossi["week"], rossi["arrest"], lp, groups=5)
    groups = rank_groups(lp, 5)
    resid = cph.compute_residuals(rossi[[*COLS, "week", "arrest"]], "martingale")
    resid = resid.sort_index()["martingale"].to_numpy()
    o_minus_e = pd.Series(resid).groupby(groups).sum().to_numpy()
    np.testing.assert_allclose(gb.table["observed"] - gb.table["expected"], o_minus_e, atol=1e-9)
    # the statistic: score test of group indicators with lp as offset (statsmodels, Breslow)
    dummies = np.eye(5)[groups][:, 1:]
    model = sm.PHReg(rossi["week"], dummies, status=rossi["arrest"], offset=lp, ties="breslow")
    score, hess = model.score(np.zeros(4)), model.hessian(np.zeros(4))
    expected = float(score @ np.linalg.solve(-hess, score))
    assert gb.statistic == pytest.approx(expected, rel=1e-9)
    assert gb.df == 4 and gb.p_value == pytest.approx(stats.chi2.sf(expected, 4))


def test_gronnesby_borgan_detects_misfit(rossi):
    wrong = -rossi["prio"].to_numpy(float)  # wrong sign: higher prio = later arrest
    gb = gronnesby_borgan(rossi["week"], rossi["arrest"], wrong, groups=5)
    assert gb.p_value < 0.01


def test_hosmer_lemeshow_direct(rossi):
    rng = np.random.default_rng(0)
    p = rng.uniform(0.05, 0.6, 300)
    y = (rng.random(300) < p).astype(int)
    hl = hosmer_lemeshow(y, p, groups=10)
    order = np.argsort(p, kind="stable")
    stat = 0.0
    for chunk in np.array_split(order, 10):
        o, ex, n = y[chunk].sum(), p[chunk].sum(), len(chunk)
        stat += (o - ex) ** 2 / (ex * (1 - ex / n))
    assert hl.statistic == pytest.approx(stat, rel=1e-12)
    assert hl.p_value == pytest.approx(stats.chi2.sf(stat, 8), rel=1e-12)
    bad = hosmer_lemeshow(y, np.clip(p * 1.6, 0, 1), groups=10)
    assert bad.p_value < 0.01 < hl.p_value


def test_plot_calibration(rossi, cal):
    _, res = cal
    t, e, x = _overfit_data(noise=2)
    boot = calibrate_bootstrap(t, e, x, horizon=12.0, n_boot=3, rng=0, groups=3)
    fig = plot_calibration(res, boot)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    assert ax.get_xlim() == (0.0, 1.0) and "Observed" in ax.get_ylabel()
    assert len(ax.get_legend().get_texts()) == 3
