"""Time-dependent (cumulative/dynamic) AUC and ROC at a horizon, IPCW as scikit-survival.

Cases are patients with an event by the horizon ``t`` (weighted by ``1 / G(T_i)``, the censoring
survival estimated on the training outcomes); controls are patients still event-free after ``t``
(Uno et al. 2007; Hung & Chiang 2010). The point estimate is scikit-survival's
``cumulative_dynamic_auc``; the CI is a percentile bootstrap over test patients.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from ceusflow.errors import InputError
from ceusflow.survival._inputs import survival_arrays


@dataclass(frozen=True)
class TimeAUC:
    """Cumulative/dynamic AUC at a horizon.

    Attributes
    ----------
    estimate : float
        AUC at ``horizon`` (0.5 = no discrimination).
    low, high : float
        Percentile bootstrap interval (NaN when ``n_boot=0``).
    horizon : float
        Time of the evaluation, months.
    n_cases, n_controls : int
        Events by the horizon and patients event-free beyond it (test set).
    n_boot : int
        Bootstrap replicates that could be evaluated.
    """

    estimate: float
    low: float
    high: float
    horizon: float
    n_cases: int
    n_controls: int
    n_boot: int


def _arrays(
    time_train: Any, event_train: Any, time_test: Any, event_test: Any, risk: Any, horizon: float
) -> tuple[NDArray[Any], ...]:
    t_tr, e_tr = survival_arrays(time_train, event_train)
    t_te, e_te, r = survival_arrays(time_test, event_test, risk, names=("risk",))
    if not (np.isfinite(horizon) and t_te.min() <= horizon < t_te.max()):
        raise InputError(
            "horizon",
            f"{horizon} is outside the test follow-up [{t_te.min():g}, {t_te.max():g})",
            "choose a horizon inside follow-up",
        )
    if not np.any(e_te & (t_te <= horizon)):
        raise InputError("event_test", "no event by the horizon", "choose a later horizon")
    return t_tr, e_tr, t_te, e_te, r


def _auc(
    t_tr: NDArray[Any],
    e_tr: NDArray[Any],
    t_te: NDArray[Any],
    e_te: NDArray[Any],
    r: NDArray[Any],
    horizon: float,
) -> float:
    from sksurv.metrics import cumulative_dynamic_auc
    from sksurv.util import Surv

    auc, _ = cumulative_dynamic_auc(
        Surv.from_arrays(e_tr, t_tr), Surv.from_arrays(e_te, t_te), r, [horizon]
    )
    return float(np.asarray(auc).ravel()[0])


def _boot(
    arrays: tuple[NDArray[Any], ...], horizon: float, n_boot: int, rng: np.random.Generator
) -> NDArray[np.float64]:
    t_tr, e_tr, t_te, e_te, r = arrays
    reps = []
    for _ in range(n_boot):
        i = rng.integers(0, t_te.size, t_te.size)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                value = _auc(t_tr, e_tr, t_te[i], e_te[i], r[i], horizon)
        except ValueError:  # horizon outside the resample's follow-up, no case or no control
            continue
        if np.isfinite(value):
            reps.append(value)
    return np.asarray(reps)


def td_auc(
    time_train: Any,
    event_train: Any,
    time_test: Any,
    event_test: Any,
    risk: Any,
    *,
    horizon: float = 24.0,
    n_boot: int = 200,
    alpha: float = 0.05,
    rng: np.random.Generator | int | None = None,
) -> TimeAUC:
    """Cumulative/dynamic AUC of a risk score at a horizon, with a bootstrap CI.

    Parameters
    ----------
    time_train, event_train : array-like (n_train,)
        Training outcomes (months, event indicator): estimate the censoring distribution.
    time_test, event_test : array-like (n,)
        Outcomes of the patients being scored.
    risk : array-like (n,)
        Risk score of the test patients; higher = earlier event.
    horizon : float
        Evaluation time, months (24 = the paper's 2-year AUC).
    n_boot : int
        Bootstrap replicates over test patients (0 = no CI).
    alpha : float
        1 - confidence level.
    rng : numpy Generator, int or None
        Randomness of the bootstrap.

    Returns
    -------
    TimeAUC
        AUC, percentile CI, horizon and case/control counts.
    """
    arrays = _arrays(time_train, event_train, time_test, event_test, risk, horizon)
    _, _, t_te, e_te, _ = arrays
    try:
        estimate = _auc(*arrays, horizon)
    except ValueError as err:
        raise InputError("time_test", str(err), "check the horizon and the censoring") from err
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    reps = _boot(arrays, horizon, n_boot, gen) if n_boot > 0 else np.empty(0)
    low, high = np.quantile(reps, [alpha / 2, 1 - alpha / 2]) if reps.size else (np.nan, np.nan)
    n_cases = int(np.sum(e_te & (t_te <= horizon)))
    return TimeAUC(
        estimate,
        float(low),
        float(high),
        float(horizon),
        n_cases,
        int(np.sum(t_te > horizon)),
        int(reps.size),
    )


def td_roc(
    time_train: Any,
    event_train: Any,
    time_test: Any,
    event_test: Any,
    risk: Any,
    *,
    horizon: float = 24.0,
) -> xr.Dataset:
    """Cumulative-case / dynamic-control ROC curve at a horizon (IPCW sensitivity).

    Parameters
    ----------
    time_train, event_train : array-like (n_train,)
        Training outcomes (months, event indicator) for the censoring distribution.
    time_test, event_test : array-like (n,)
        Outcomes of the patients being scored.
    risk : array-like (n,)
        Risk score of the test patients; higher = earlier event.
    horizon : float
        Evaluation time, months.

    Returns
    -------
    xarray.Dataset (threshold)
        ``tpr`` (IPCW sensitivity) and ``fpr`` (1 - specificity) of the rule ``risk >= threshold``,
        from (0, 0) at ``threshold=inf`` to (1, 1); its trapezoidal area equals :func:`td_auc`'s
        estimate. ``attrs["horizon"]`` in months.
    """
    from sksurv.nonparametric import CensoringDistributionEstimator
    from sksurv.util import Surv

    t_tr, e_tr, t_te, e_te, r = _arrays(
        time_train, event_train, time_test, event_test, risk, horizon
    )
    cens = CensoringDistributionEstimator().fit(Surv.from_arrays(e_tr, t_tr))
    try:
        ipcw = cens.predict_ipcw(Surv.from_arrays(e_te, t_te))
    except ValueError as err:
        raise InputError("time_test", str(err), "check the horizon and the censoring") from err
    case_w = np.where(e_te & (t_te <= horizon), ipcw, 0.0)
    control = (t_te > horizon).astype(float)
    thresholds, inverse = np.unique(-r, return_inverse=True)  # decreasing risk
    tp = np.cumsum(np.bincount(inverse, weights=case_w))
    fp = np.cumsum(np.bincount(inverse, weights=control))
    ds = xr.Dataset(
        {
            "tpr": ("threshold", np.r_[0.0, tp / tp[-1]]),
            "fpr": ("threshold", np.r_[0.0, fp / fp[-1]]),
        },
        coords={"threshold": np.r_[np.inf, -thresholds]},
    )
    ds.attrs["horizon"] = float(horizon)
    return ds
