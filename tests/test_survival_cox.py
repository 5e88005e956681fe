"""Cox regression against lifelines, statsmodels and scikit-survival; laws by hypothesis."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from hypothesis import given, settings
from hypothesis import strategies as st
from lifelines import CoxPHFitter
from lifelines.datasets import load_rossi
from matplotlib.figure import Figure
from sksurv.linear_model import CoxPHSurvivalAnalysis
from sksurv.util import Surv

from ceusflow.errors import InputError
from ceusflow.survival.cox import fit_cox, linear_predictor, predict_survival
from ceusflow.survival.forest import plot_forest

matplotlib.use("Agg")
RTOL = 1e-6


@pytest.fixture(scope="module")
def rossi() -> pd.DataFrame:
    return load_rossi()


def _x(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns=["week", "arrest"])


@pytest.fixture(scope="module")
def lifelines_fit(rossi):
    # tight tolerance so that the oracle itself is accurate to far better than RTOL
    return CoxPHFitter().fit(rossi, "week", "arrest", fit_options={"precision": 1e-12})


def test_efron_matches_lifelines(rossi, lifelines_fit):
    fit = fit_cox(rossi["week"], rossi["arrest"], _x(rossi))
    ref = lifelines_fit
    np.testing.assert_allclose(fit.params["coef"], ref.params_, rtol=RTOL)
    np.testing.assert_allclose(fit.params["se"], ref.standard_errors_, rtol=RTOL)
    np.testing.assert_allclose(fit.params["p"], ref.summary["p"], rtol=1e-5)
    np.testing.assert_allclose(fit.params["hr_low"], ref.summary["exp(coef) lower 95%"], rtol=RTOL)
    assert fit.loglik == pytest.approx(ref.log_likelihood_, rel=RTOL)
    assert fit.loglik_null == pytest.approx(ref._ll_null_, rel=RTOL)
    assert fit.aic == pytest.approx(ref.AIC_partial_, rel=RTOL)
    assert fit.converged and fit.ties == "efron"
    assert (fit.n, fit.n_events) == (432, 114)


@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_matches_statsmodels_phreg(rossi, ties):
    fit = fit_cox(rossi["week"].to_numpy(), rossi["arrest"].to_numpy(), _x(rossi), ties=ties)
    ref = sm.PHReg(rossi["week"], _x(rossi), status=rossi["arrest"], ties=ties).fit()
    np.testing.assert_allclose(fit.coef, ref.params, rtol=RTOL)
    np.testing.assert_allclose(fit.params["se"], ref.bse, rtol=RTOL)
    assert fit.loglik == pytest.approx(ref.llf, rel=RTOL)


def test_ties_conventions_differ_on_tied_data(rossi):
    """rossi has tied weeks: Efron and Breslow must give different answers (pins the default)."""
    efron = fit_cox(rossi["week"], rossi["arrest"], _x(rossi))
    breslow = fit_cox(rossi["week"], rossi["arrest"], _x(rossi), ties="breslow")
    assert abs(efron.loglik - breslow.loglik) > 0.1
    default_sm = sm.PHReg(rossi["week"], _x(rossi), status=rossi["arrest"]).fit()
    assert default_sm.llf == pytest.approx(breslow.loglik, rel=RTOL)  # statsmodels: Breslow


def test_penalized_matches_lifelines(rossi):
    fit = fit_cox(rossi["week"], rossi["arrest"], _x(rossi), penalizer=0.1)
    ref = CoxPHFitter(penalizer=0.1).fit(rossi, "week", "arrest",
                                         fit_options={"precision": 1e-12})
    np.testing.assert_allclose(fit.coef, ref.params_, rtol=RTOL)
    np.testing.assert_allclose(fit.params["se"], ref.standard_errors_, rtol=RTOL)


def test_breslow_survival_matches_sksurv(rossi):
    x = _x(rossi).astype(float)
    fit = fit_cox(rossi["week"], rossi["arrest"], x, ties="breslow")
    ref = CoxPHSurvivalAnalysis(ties="breslow", tol=1e-12, n_iter=200).fit(
        x, Surv.from_arrays(rossi["arrest"].astype(bool), rossi["week"]))
    np.testing.assert_allclose(fit.coef, ref.coef_, rtol=RTOL)
    sf = ref.predict_survival_function(x.iloc[:20])
    for t in (10.0, 24.0, 52.0):
        expected = np.array([f(t) for f in sf])
        np.testing.assert_allclose(predict_survival(fit, x.iloc[:20], t), expected, rtol=1e-6)


def _efron_baseline_loop(time, event, lp):
    """Efron-adjusted baseline cumulative hazard, written as a plain loop (the oracle)."""
    w, out, cum = np.exp(lp), [], 0.0
    for t in np.unique(time[event]):
        at_risk, dead = time >= t, (time == t) & event
        d = dead.sum()
        cum += sum(1.0 / (w[at_risk].sum() - k / d * w[dead].sum()) for k in range(d))
        out.append(cum)
    return np.array(out)


def test_efron_baseline_matches_loop(rossi):
    fit = fit_cox(rossi["week"], rossi["arrest"], _x(rossi))
    lp = linear_predictor(fit, _x(rossi))
    expected = _efron_baseline_loop(rossi["week"].to_numpy(float),
                                    rossi["arrest"].to_numpy(bool), lp)
    np.testing.assert_allclose(fit.baseline_cumhaz, expected, rtol=1e-10)


def test_baseline_matches_lifelines_without_ties():
    rng = np.random.default_rng(3)
    x = pd.DataFrame({"a": rng.normal(size=80), "b": rng.binomial(1, 0.4, 80)})
    t = rng.exponential(np.exp(-0.7 * x["a"] + 0.5 * x["b"]))
    e = rng.random(80) < 0.7
    fit = fit_cox(t, e, x)
    ref = CoxPHFitter().fit(x.assign(t=t, e=e), "t", "e", fit_options={"precision": 1e-12})
    ref_h = ref.baseline_cumulative_hazard_.iloc[:, 0]
    ref_h = ref_h[ref_h.diff().fillna(ref_h.iloc[0]) > 0]  # keep event times only
    np.testing.assert_allclose(fit.baseline_time, ref_h.index.to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(fit.baseline_cumhaz, ref_h.to_numpy(), rtol=RTOL)
    t_event = float(fit.baseline_time[20])  # lifelines interpolates between event times
    surv = ref.predict_survival_function(x.iloc[:5], times=[t_event]).to_numpy().ravel()
    np.testing.assert_allclose(predict_survival(fit, x.iloc[:5], t_event), surv, rtol=RTOL)


def test_linear_predictor_is_centred_and_risk_signed(rossi):
    fit = fit_cox(rossi["week"], rossi["arrest"], _x(rossi))
    lp = linear_predictor(fit, _x(rossi))
    assert lp.mean() == pytest.approx(0.0, abs=1e-12)
    # higher lp = earlier event: lp agrees with lifelines' log partial hazard up to a constant
    ref = np.log(CoxPHFitter().fit(rossi, "week", "arrest").predict_partial_hazard(rossi))
    assert np.corrcoef(lp, ref)[0, 1] > 0.999999


def test_inputs_validated(rossi):
    with pytest.raises(InputError, match="ties"):
        fit_cox(rossi["week"], rossi["arrest"], _x(rossi), ties="exact")
    with pytest.raises(InputError, match="covariates"):
        fit_cox(rossi["week"], rossi["arrest"], _x(rossi).iloc[:10])
    with pytest.raises(InputError, match="no events"):
        fit_cox(rossi["week"], np.zeros(len(rossi)), _x(rossi))
    fit = fit_cox(rossi["week"], rossi["arrest"], _x(rossi))
    with pytest.raises(InputError, match="missing columns"):
        predict_survival(fit, _x(rossi).drop(columns="age"), 24.0)


def _small_data(seed: int, n: int = 40) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    x = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
    t = np.round(rng.exponential(np.exp(-0.5 * x["a"])), 1) + 0.1  # ties on purpose
    e = rng.random(n) < 0.75
    e[0] = True
    return t, e, x


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), c=st.floats(0.1, 10.0))
def test_coef_scales_inversely_with_covariate(seed, c):
    t, e, x = _small_data(seed)
    base = fit_cox(t, e, x)
    scaled = fit_cox(t, e, x.assign(a=c * x["a"]))
    assert scaled.coef[0] == pytest.approx(base.coef[0] / c, rel=1e-6, abs=1e-9)
    assert scaled.loglik == pytest.approx(base.loglik, rel=1e-9)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), perm_seed=st.integers(0, 10_000))
def test_loglik_invariant_to_row_order(seed, perm_seed):
    t, e, x = _small_data(seed)
    perm = np.random.default_rng(perm_seed).permutation(len(t))
    a = fit_cox(t, e, x)
    b = fit_cox(t[perm], e[perm], x.iloc[perm])
    assert b.loglik == pytest.approx(a.loglik, rel=1e-10)
    np.testing.assert_allclose(b.coef, a.coef, rtol=1e-7, atol=1e-10)


def test_plot_forest(rossi):
    fig = plot_forest(fit_cox(rossi["week"], rossi["arrest"], _x(rossi)))
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_yticklabels()] == list(_x(rossi).columns)
