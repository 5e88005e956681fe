"""Nomogram: rms scaling, points by hand equal predict_survival, and the drawing."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
from lifelines.datasets import load_rossi
from matplotlib.figure import Figure

from ceusflow.errors import InputError
from ceusflow.survival.cox import fit_cox, predict_survival
from ceusflow.survival.nomogram import nomogram, nomogram_points, plot_nomogram

matplotlib.use("Agg")
COLS = ["fin", "age", "prio", "mar"]


@pytest.fixture(scope="module")
def setup():
    rossi = load_rossi()
    fit = fit_cox(rossi["week"], rossi["arrest"], rossi[COLS])
    return rossi, fit, nomogram(fit, rossi, horizon=24.0)


def test_widest_effect_gets_100_points(setup):
    rossi, fit, nomo = setup
    ranges = {c: abs(fit.params.loc[c, "coef"]) * (rossi[c].max() - rossi[c].min()) for c in COLS}
    widest = max(ranges, key=ranges.get)
    tab = nomo.table
    for c in COLS:
        pts = tab.loc[tab["variable"] == c, "points"]
        assert pts.min() == pytest.approx(0.0, abs=1e-12)
        assert pts.max() == pytest.approx(100.0 * ranges[c] / ranges[widest], rel=1e-12)
    assert nomo.max_points == pytest.approx(100.0 * sum(ranges.values()) / ranges[widest])


def test_points_by_hand_equal_predict_survival(setup):
    rossi, fit, nomo = setup
    patient = rossi.iloc[17]
    # by hand: read each predictor's points off its (linear) scale, add, convert
    beta = fit.params["coef"]
    widest = max(abs(beta[c]) * (rossi[c].max() - rossi[c].min()) for c in COLS)
    points = 0.0
    for c in COLS:
        lo_end = min(beta[c] * rossi[c].min(), beta[c] * rossi[c].max())
        points += 100.0 / widest * (beta[c] * patient[c] - lo_end)
    total, surv = nomogram_points(nomo, patient[COLS])
    assert total == pytest.approx(points, rel=1e-12)
    expected = predict_survival(fit, rossi.iloc[[17]], 24.0)[0]
    assert surv == pytest.approx(expected, rel=1e-10)
    # and for every patient
    got = np.array([nomogram_points(nomo, r)[1] for _, r in rossi[COLS].iterrows()])
    np.testing.assert_allclose(got, predict_survival(fit, rossi, 24.0), rtol=1e-10)


def test_points_survival_maps_are_inverse(setup):
    _, _, nomo = setup
    pts = np.linspace(0, nomo.max_points, 7)
    np.testing.assert_allclose(nomo.points_at_survival(nomo.survival_at_points(pts)), pts,
                               atol=1e-9)
    assert np.all(np.diff(nomo.survival_at_points(pts)) < 0)  # more points, worse survival


def test_inputs_validated(setup):
    rossi, fit, nomo = setup
    with pytest.raises(InputError, match="missing columns"):
        nomogram(fit, rossi.drop(columns="age"))
    with pytest.raises(InputError, match="missing values"):
        nomogram_points(nomo, {"fin": 1.0})


def test_plot_nomogram_rows(setup):
    _, _, nomo = setup
    fig = plot_nomogram(nomo)
    assert isinstance(fig, Figure)
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert labels == ["Points", *COLS, "Total points", "Linear predictor", "24-month survival"]
    prio_ticks = [t.get_text() for t in fig.axes[3].get_xticklabels()]
    assert "0" in prio_ticks and len(prio_ticks) >= 3
    assert list(nomo.table.columns) == ["variable", "value", "points"]
