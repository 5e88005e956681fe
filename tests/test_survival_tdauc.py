"""Time-dependent AUC and ROC vs scikit-survival's cumulative_dynamic_auc; ROC figure."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure
from sksurv.datasets import load_veterans_lung_cancer, load_whas500
from sksurv.metrics import cumulative_dynamic_auc

from ceusflow.errors import InputError
from ceusflow.survival.plots_km import plot_td_roc
from ceusflow.survival.td_auc import td_auc, td_roc


@pytest.fixture(scope="module")
def whas():
    x, y = load_whas500()
    return y["lenfol"] / 30.4375, y["fstat"], x["age"].to_numpy(float), y


@pytest.mark.parametrize("horizon", [6.0, 24.0, 48.0])
def test_matches_sksurv_same_sample(whas, horizon):
    time, event, risk, y = whas
    ours = td_auc(time, event, time, event, risk, horizon=horizon, n_boot=0)
    y_months = y.copy()
    y_months["lenfol"] = time
    ref, _ = cumulative_dynamic_auc(y_months, y_months, risk, [horizon])
    assert ours.estimate == pytest.approx(float(ref[0]), abs=1e-14)
    assert ours.n_cases == int(np.sum(event & (time <= horizon)))
    assert ours.n_controls == int(np.sum(time > horizon))
    roc = td_roc(time, event, time, event, risk, horizon=horizon)
    assert np.trapezoid(roc.tpr, roc.fpr) == pytest.approx(ours.estimate, abs=1e-12)


def test_matches_sksurv_train_test_split():
    x, y = load_veterans_lung_cancer()
    risk = -x["Karnofsky_score"].to_numpy(float)
    time, event = y["Survival_in_days"], y["Status"]
    rng = np.random.default_rng(0)
    idx = rng.permutation(time.size)
    tr, te = idx[:90], idx[90:]
    te = te[time[te] < time[tr].max()]  # IPCW needs test times inside the training follow-up
    horizon = 100.0
    ours = td_auc(time[tr], event[tr], time[te], event[te], risk[te], horizon=horizon, n_boot=0)
    ref, _ = cumulative_dynamic_auc(y[tr], y[te], risk[te], [horizon])
    assert ours.estimate == pytest.approx(float(ref[0]), abs=1e-14)
    roc = td_roc(time[tr], event[tr], time[te], event[te], risk[te], horizon=horizon)
    assert np.trapezoid(roc.tpr, roc.fpr) == pytest.approx(ours.estimate, abs=1e-12)
    assert roc.tpr[0] == 0 and roc.fpr[0] == 0 and roc.tpr[-1] == 1 and roc.fpr[-1] == 1
    assert np.all(np.diff(roc.tpr) >= 0) and np.all(np.diff(roc.fpr) >= 0)


def test_bootstrap_interval_is_seeded_and_brackets(whas):
    time, event, risk, _ = whas
    a = td_auc(time, event, time, event, risk, horizon=24.0, n_boot=40, rng=3)
    b = td_auc(time, event, time, event, risk, horizon=24.0, n_boot=40, rng=3)
    assert a == b
    assert a.low < a.estimate < a.high and a.n_boot == 40 and a.horizon == 24.0


def test_bad_horizon(whas):
    time, event, risk, _ = whas
    with pytest.raises(InputError, match="horizon"):
        td_auc(time, event, time, event, risk, horizon=1e6)
    with pytest.raises(InputError, match="risk"):
        td_auc(time, event, time, event, risk[:-1])


def test_plot_td_roc(whas):
    time, event, risk, _ = whas
    roc = td_roc(time, event, time, event, risk, horizon=24.0)
    auc = td_auc(time, event, time, event, risk, horizon=24.0, n_boot=20, rng=0)
    fig = plot_td_roc(roc, auc=auc)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert "AUC" in ax.get_legend().get_texts()[0].get_text()
    assert "24 months" in ax.get_title()
    assert np.allclose(ax.lines[0].get_xdata(), roc.fpr)
