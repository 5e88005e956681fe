"""Calibration of predicted survival at a horizon, and goodness-of-fit tests.

* :func:`calibration` — patients grouped by predicted survival; per group the mean predicted
  survival against the Kaplan–Meier estimate at the horizon (log-log Greenwood 95 % CI).
* :func:`calibrate_bootstrap` — optimism-corrected calibration as ``rms::calibrate(cph,
  cmethod="KM", method="boot")``.
* :func:`gronnesby_borgan` — a survival goodness-of-fit test that respects censoring.
* :func:`hosmer_lemeshow` — the logistic test the paper reported; it ignores censoring.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from numpy.typing import NDArray
from scipy import stats

from ceusflow.errors import ConvergenceWarning, InputError
from ceusflow.survival._inputs import survival_arrays
from ceusflow.survival.cox import Ties, _covariate_matrix, _fit, predict_survival
from ceusflow.survival.kaplan_meier import km_point


@dataclass(frozen=True)
class Calibration:
    """Grouped calibration at a horizon.

    Attributes
    ----------
    table : DataFrame
        Per group (lowest predicted survival first): ``group``, ``n``, ``predicted`` (mean
        predicted survival), ``observed`` (KM survival at horizon), ``low``, ``high`` (95 % CI,
        log-log Greenwood); NaN where a group's follow-up ends before the horizon.
    slope : float
        Cox coefficient of ``log(-log S_pred(horizon))`` refitted on the outcome (van
        Houwelingen 2000); 1 is ideal, < 1 means predictions too extreme (overfitting).
    slope_se : float
        Standard error of ``slope``.
    intercept : float
        Calibration-in-the-large on the probability scale: KM survival of all patients at the
        horizon minus the mean predicted survival; 0 is ideal.
    horizon : float
        Time at which survival is compared (input time units).
    """

    table: pd.DataFrame
    slope: float
    slope_se: float
    intercept: float
    horizon: float


@dataclass(frozen=True)
class CalibrationBootstrap:
    """Optimism-corrected calibration (``rms::calibrate`` with ``cmethod="KM"``).

    Attributes
    ----------
    table : DataFrame
        Per group: ``group``, ``n``, ``predicted``, ``observed`` (apparent KM), ``optimism``
        (mean over resamples of the train-minus-test error ``observed - predicted``) and
        ``observed_corrected = observed - optimism``.
    slope_corrected : float
        Optimism-corrected calibration slope (apparent slope 1 minus its mean optimism).
    horizon : float
        Time of comparison.
    n_boot : int
        Bootstrap resamples used.
    """

    table: pd.DataFrame
    slope_corrected: float
    horizon: float
    n_boot: int


@dataclass(frozen=True)
class GoodnessOfFit:
    """A grouped goodness-of-fit test.

    Attributes
    ----------
    statistic : float
        Chi-squared statistic.
    df : int
        Degrees of freedom.
    p_value : float
        Upper tail of chi-squared(df).
    table : DataFrame
        Per group: ``group``, ``n``, ``observed``, ``expected``.
    method : str
        ``"gronnesby-borgan"`` or ``"hosmer-lemeshow"``.
    """

    statistic: float
    df: int
    p_value: float
    table: pd.DataFrame
    method: str


def rank_groups(values: NDArray[np.float64], groups: int) -> NDArray[np.intp]:
    """Split patients into ``groups`` equal-size groups by ascending ``values`` (stable ranks)."""
    order = np.argsort(values, kind="stable")
    g = np.empty(values.size, dtype=np.intp)
    g[order] = (np.arange(values.size) * groups) // values.size
    return g


def km_at(time: NDArray[np.float64], event: NDArray[np.bool_], horizon: float
          ) -> tuple[float, float, float]:
    """Kaplan–Meier survival at ``horizon`` with a log-log Greenwood 95 % CI.

    :func:`ceusflow.survival.kaplan_meier.km_point` (the kernel of ``kaplan_meier``); NaNs when
    nobody is followed up to the horizon (the estimate is undefined).
    """
    return km_point(time, event, horizon)


def _check_horizon(horizon: float, groups: int) -> None:
    if not np.isfinite(horizon) or horizon <= 0:
        raise InputError("horizon", f"must be > 0, got {horizon}", "e.g. 24 months")
    if groups < 2:
        raise InputError("groups", f"must be >= 2, got {groups}", "use e.g. 5 or 10")


def _group_table(t: NDArray[np.float64], e: NDArray[np.bool_], pred: NDArray[np.float64],
                 g: NDArray[np.intp], horizon: float) -> pd.DataFrame:
    rows = []
    for k in np.unique(g):
        m = g == k
        s, lo, hi = km_at(t[m], e[m], horizon)
        rows.append({"group": int(k), "n": int(m.sum()), "predicted": float(pred[m].mean()),
                     "observed": s, "low": lo, "high": hi})
    return pd.DataFrame(rows)


def _slope(t: NDArray[np.float64], e: NDArray[np.bool_], lp: NDArray[np.float64]
           ) -> tuple[float, float]:
    fit = _fit(t, e, lp[:, None], ("lp",), "efron", 0.0)
    return float(fit.coef[0]), float(fit.params["se"].iloc[0])


def calibration(time: Any, event: Any, predicted_survival: Any, *, horizon: float = 24.0,
                groups: int = 5) -> Calibration:
    """Predicted versus Kaplan–Meier-observed survival at a horizon.

    Parameters
    ----------
    time, event : array-like (n,)
        Follow-up time and event indicator.
    predicted_survival : array-like (n,)
        Each patient's predicted ``S(horizon)``, strictly inside (0, 1).
    horizon : float
        Time of comparison (input time units; 24 months = 2 years).
    groups : int
        Number of equal-size groups by predicted survival.

    Returns
    -------
    Calibration
        Group table, calibration slope and intercept (see :class:`Calibration`).
    """
    _check_horizon(horizon, groups)
    t, e, p = survival_arrays(time, event, predicted_survival, names=("predicted_survival",))
    if np.any((p <= 0) | (p >= 1)):
        raise InputError("predicted_survival", "must be strictly between 0 and 1",
                         "pass probabilities, not risk scores")
    table = _group_table(t, e, p, rank_groups(p, groups), horizon)
    slope, se = _slope(t, e, np.log(-np.log(p)))
    return Calibration(table, slope, se, km_at(t, e, horizon)[0] - float(p.mean()), float(horizon))


def _boot_error(t: NDArray[np.float64], e: NDArray[np.bool_], pred: NDArray[np.float64],
                cuts: NDArray[np.float64], groups: int, horizon: float) -> NDArray[np.float64]:
    g = np.searchsorted(cuts, pred, side="right")
    out = np.full(groups, np.nan)
    for k in range(groups):
        m = g == k
        if m.any():
            out[k] = km_at(t[m], e[m], horizon)[0] - pred[m].mean()
    return out


def calibrate_bootstrap(time: Any, event: Any, covariates: pd.DataFrame, *, horizon: float,
                        n_boot: int = 200, rng: np.random.Generator | int | None = None,
                        groups: int = 5, ties: Ties = "efron") -> CalibrationBootstrap:
    """Bootstrap optimism-corrected calibration of a Cox model (``rms::calibrate``, KM method).

    The model is fitted on all data; groups are fixed by the quantile cut points of its
    predicted survival. Each resample refits the model, and the error ``KM - mean predicted``
    per group is computed on the resample (train) and on the original data (test), grouping
    by the same cut points. The optimism is the mean train-minus-test error; the corrected
    observed survival is the apparent KM minus the optimism. Resamples whose group has no
    patient or no follow-up to the horizon are skipped for that group.

    Parameters
    ----------
    time, event : array-like (n,)
        Follow-up time and event indicator.
    covariates : DataFrame (n, p)
        Model covariates.
    horizon : float
        Time of comparison (input time units).
    n_boot : int
        Bootstrap resamples.
    rng : Generator, int or None
        Random source or seed.
    groups : int
        Number of groups.
    ties : {"efron", "breslow"}
        Cox tie handling.

    Returns
    -------
    CalibrationBootstrap
        Apparent and optimism-corrected observed survival per group, corrected slope.
    """
    _check_horizon(horizon, groups)
    if n_boot < 1:
        raise InputError("n_boot", f"must be >= 1, got {n_boot}", "use e.g. 200")
    t, e = survival_arrays(time, event)
    x, names = _covariate_matrix(covariates, t.size)
    frame = pd.DataFrame(x, columns=list(names))
    pred = predict_survival(_fit(t, e, x, names, ties, 0.0), frame, horizon)
    g = rank_groups(pred, groups)
    cuts = np.array([pred[g == k].max() for k in range(groups - 1)])
    opt, slopes = _optimism(t, e, x, names, ties, horizon, cuts, groups, n_boot, rng)
    table = _group_table(t, e, pred, np.searchsorted(cuts, pred, side="right"), horizon)
    table = table.drop(columns=["low", "high"]).assign(optimism=opt)
    table["observed_corrected"] = table["observed"] - table["optimism"]
    return CalibrationBootstrap(table, float(np.nanmean(slopes)), float(horizon), n_boot)


def _optimism(t: NDArray[np.float64], e: NDArray[np.bool_], x: NDArray[np.float64],
              names: tuple[str, ...], ties: str, horizon: float, cuts: NDArray[np.float64],
              groups: int, n_boot: int, rng: np.random.Generator | int | None
              ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    gen, frame = np.random.default_rng(rng), pd.DataFrame(x, columns=list(names))
    diffs, slopes = np.full((n_boot, groups), np.nan), np.full(n_boot, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for b in range(n_boot):
            idx = gen.integers(0, t.size, t.size)
            if not e[idx].any():
                continue
            fit = _fit(t[idx], e[idx], x[idx], names, ties, 0.0)
            p_train = predict_survival(fit, frame.iloc[idx], horizon)
            p_test = predict_survival(fit, frame, horizon)
            diffs[b] = (_boot_error(t[idx], e[idx], p_train, cuts, groups, horizon)
                        - _boot_error(t, e, p_test, cuts, groups, horizon))
            slopes[b] = _slope(t, e, (x - fit.means) @ fit.coef)[0]
    return np.nanmean(diffs, axis=0), slopes


def gronnesby_borgan(time: Any, event: Any, linear_predictor: Any, *,
                     groups: int = 10) -> GoodnessOfFit:
    """Grønnesby–Borgan goodness-of-fit test of a Cox model (Grønnesby & Borgan 1996).

    Patients are grouped by their linear predictor; the statistic is the score test of
    adding ``groups - 1`` group indicators to a Cox model with the linear predictor as a
    fixed offset (Breslow ties, counting-process form). Its score vector is observed minus
    expected events per group, the expected count being the sum of the patients' cumulative
    hazards ``H0(t_i) exp(lp_i)`` (martingale residuals summed per group with a sign
    change). Under a well-fitting model the statistic is chi-squared with ``groups - 1`` df.

    Parameters
    ----------
    time, event : array-like (n,)
        Follow-up time and event indicator.
    linear_predictor : array-like (n,)
        Cox linear predictor (higher = earlier event), e.g. :func:`linear_predictor`.
    groups : int
        Number of equal-size groups by linear predictor.

    Returns
    -------
    GoodnessOfFit
        Statistic, df, p-value and the observed/expected table.
    """
    if groups < 2:
        raise InputError("groups", f"must be >= 2, got {groups}", "use e.g. 10")
    t, e, lp = survival_arrays(time, event, linear_predictor, names=("linear_predictor",))
    g = rank_groups(lp, groups)
    u, info, expected = _gb_score(t, e, lp, g, groups)
    stat = float(u[1:] @ np.linalg.solve(info[1:, 1:], u[1:]))
    table = pd.DataFrame({"group": np.arange(groups), "n": np.bincount(g, minlength=groups),
                          "observed": np.bincount(g, weights=e.astype(float), minlength=groups),
                          "expected": expected})
    return GoodnessOfFit(stat, groups - 1, float(stats.chi2.sf(stat, groups - 1)), table,
                         "gronnesby-borgan")


def _gb_score(t: NDArray[np.float64], e: NDArray[np.bool_], lp: NDArray[np.float64],
              g: NDArray[np.intp], groups: int
              ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    order = np.argsort(-t, kind="stable")
    ts, es, w = t[order], e[order], np.exp(lp[order] - lp.max())
    onehot = np.eye(groups)[g[order]]
    times, inv = np.unique(ts[es], return_inverse=True)
    d = np.bincount(inv, minlength=times.size).astype(float)
    last = np.searchsorted(-ts, -times, side="right") - 1
    s0g = np.cumsum(onehot * w[:, None], axis=0)[last]  # (events times, groups)
    prob = s0g / s0g.sum(axis=1, keepdims=True)
    expected_by_time = d[:, None] * prob
    u = onehot[es].sum(axis=0) - expected_by_time.sum(axis=0)
    info = np.diag(expected_by_time.sum(axis=0)) - (prob * d[:, None]).T @ prob
    return u, info, expected_by_time.sum(axis=0)


def hosmer_lemeshow(observed_binary: Any, predicted_prob: Any, *, groups: int = 10
                    ) -> GoodnessOfFit:
    """Logistic Hosmer–Lemeshow test (deciles of risk), as the paper reported it.

    This test treats the outcome as binary (event by the horizon, yes/no) and therefore
    ignores censoring: patients censored before the horizon count as event-free, which biases
    the observed counts. Prefer :func:`gronnesby_borgan` for survival models; this function
    exists to reproduce the paper.

    Parameters
    ----------
    observed_binary : array-like (n,)
        1 if the event occurred (by the horizon), else 0.
    predicted_prob : array-like (n,)
        Predicted probability of the event, in [0, 1].
    groups : int
        Number of equal-size groups by predicted probability.

    Returns
    -------
    GoodnessOfFit
        ``sum (O - E)^2 / (E (1 - E / n_g))`` over groups, chi-squared with ``groups - 2`` df.
    """
    if groups < 3:
        raise InputError("groups", f"must be >= 3, got {groups}", "use e.g. 10")
    y = np.asarray(observed_binary, dtype=float).ravel()
    p = np.asarray(predicted_prob, dtype=float).ravel()
    if y.shape != p.shape or not np.all(np.isin(y, (0.0, 1.0))):
        raise InputError("observed_binary", "must be 0/1 and align with predicted_prob", "")
    if not np.all((p >= 0) & (p <= 1)):
        raise InputError("predicted_prob", "must lie in [0, 1]", "pass probabilities")
    g = rank_groups(p, groups)
    n = np.bincount(g, minlength=groups).astype(float)
    obs, exp = (np.bincount(g, weights=v, minlength=groups) for v in (y, p))
    stat = float(np.sum((obs - exp) ** 2 / (exp * (1.0 - exp / n))))
    table = pd.DataFrame({"group": np.arange(groups), "n": n.astype(int), "observed": obs,
                          "expected": exp})
    return GoodnessOfFit(stat, groups - 2, float(stats.chi2.sf(stat, groups - 2)), table,
                         "hosmer-lemeshow")


def plot_calibration(cal: Calibration, boot: CalibrationBootstrap | None = None) -> Figure:
    """Calibration plot: observed (KM, 95 % CI) against mean predicted survival.

    Parameters
    ----------
    cal : Calibration
        From :func:`calibration`.
    boot : CalibrationBootstrap, optional
        Adds the optimism-corrected observed survival.

    Returns
    -------
    Figure
        One axes with the identity line, x = predicted and y = observed survival.
    """
    fig = Figure(figsize=(4.5, 4.5))
    ax = fig.subplots()
    tab = cal.table
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="ideal")
    ax.errorbar(tab["predicted"], tab["observed"], marker="o",
                yerr=[tab["observed"] - tab["low"], tab["high"] - tab["observed"]],
                capsize=3, label="apparent (KM)")
    if boot is not None:
        ax.plot(boot.table["predicted"], boot.table["observed_corrected"], marker="x",
                linestyle="--", label="bias-corrected")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel=f"Predicted survival at {cal.horizon:g}",
           ylabel=f"Observed survival at {cal.horizon:g} (KM)")
    ax.legend(loc="upper left", fontsize=8)
    return fig
