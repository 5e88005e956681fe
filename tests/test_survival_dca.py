"""Survival decision curves against dcurves on its bundled survival data."""

from __future__ import annotations

from pathlib import Path

import dcurves
import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from ceusflow.errors import InputError
from ceusflow.survival.decision_curve import decision_curve, plot_decision_curve

matplotlib.use("Agg")
THRESHOLDS = np.round(np.arange(0.01, 0.99, 0.01), 2)


@pytest.fixture(scope="module")
def df_surv() -> pd.DataFrame:
    return pd.read_csv(Path(dcurves.data) / "df_surv.csv")


def _reference(df: pd.DataFrame, models: list[str], horizon: float,
               thresholds: np.ndarray) -> pd.DataFrame:
    ref = dcurves.dca(data=df, outcome="cancer", modelnames=models, thresholds=thresholds,
                      time=horizon, time_to_outcome_col="ttcancer")
    return ref[["model", "threshold", "net_benefit"]].astype({"net_benefit": float})


# dcurves is slow (lifelines KM fits per threshold and model): 0.02 grid at 1.5 y, coarser at 3
@pytest.mark.parametrize(("horizon", "thresholds"),
                         [(1.5, THRESHOLDS[::2]), (3.0, THRESHOLDS[::7])])
def test_matches_dcurves(df_surv, horizon, thresholds):
    risks = {"cancerpredmarker": df_surv["cancerpredmarker"],
             "marker_risk": 1 - np.exp(-0.3 * df_surv["marker"])}
    df = df_surv.assign(marker_risk=risks["marker_risk"])
    ours = decision_curve(df["ttcancer"], df["cancer"], risks, horizon=horizon,
                          thresholds=thresholds)
    ref = _reference(df, list(risks), horizon, thresholds)
    merged = ours.merge(ref, on=["model", "threshold"], suffixes=("", "_ref"))
    assert len(merged) == len(ours) == len(thresholds) * 4
    defined = merged["net_benefit_ref"].notna()
    assert defined.sum() > len(thresholds) * 2
    np.testing.assert_allclose(merged.loc[defined, "net_benefit"],
                               merged.loc[defined, "net_benefit_ref"], rtol=1e-6, atol=1e-12)
    assert merged.loc[~defined, "net_benefit"].isna().all()


def test_undefined_when_test_positives_not_followed_to_horizon():
    time = np.array([1.0, 2.0, 3.0, 30.0, 40.0])
    event = np.array([1, 1, 1, 0, 0])
    risk = np.array([0.9, 0.9, 0.9, 0.1, 0.1])
    out = decision_curve(time, event, risk, horizon=24.0, thresholds=[0.5, 0.05])
    model = out[out["model"] == "model"].set_index("threshold")["net_benefit"]
    assert np.isnan(model[0.5])  # positives all leave before 24
    assert model[0.05] == pytest.approx(0.6 - 0.05 / 0.95 * 0.4)  # everyone positive
    none = out[out["model"] == "none"]["net_benefit"]
    assert (none == 0).all()


def test_treat_all_uses_km_risk(df_surv):
    from lifelines import KaplanMeierFitter

    out = decision_curve(df_surv["ttcancer"], df_surv["cancer"], df_surv["cancerpredmarker"],
                         horizon=1.5, thresholds=[0.1, 0.2])
    km = KaplanMeierFitter().fit(df_surv["ttcancer"], df_surv["cancer"])
    risk = 1 - km.survival_function_at_times(1.5).iloc[0]
    treat_all = out[out["model"] == "all"]["net_benefit"].to_numpy()
    np.testing.assert_allclose(treat_all, [risk - 0.1 / 0.9 * (1 - risk),
                                           risk - 0.2 / 0.8 * (1 - risk)], rtol=1e-12)


def test_inputs_validated(df_surv):
    t, e = df_surv["ttcancer"], df_surv["cancer"]
    with pytest.raises(InputError, match="probabilities"):
        decision_curve(t, e, {"m": df_surv["marker"] * 10})
    with pytest.raises(InputError, match="reserved"):
        decision_curve(t, e, {"all": df_surv["cancerpredmarker"]})
    with pytest.raises(InputError, match="thresholds"):
        decision_curve(t, e, df_surv["cancerpredmarker"], thresholds=[1.0])


def test_plot_decision_curve(df_surv):
    out = decision_curve(df_surv["ttcancer"], df_surv["cancer"],
                         {"marker": df_surv["cancerpredmarker"]}, horizon=1.5)
    fig = plot_decision_curve(out)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["marker", "all", "none"]
    assert ax.get_xlabel() == "Threshold probability"
