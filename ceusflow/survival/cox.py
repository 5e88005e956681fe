"""Cox proportional-hazards regression (Efron or Breslow ties) by Newton–Raphson.

The partial likelihood, its gradient and Hessian are computed without a Python loop over
patients: risk-set sums are reverse cumulative sums over the time-sorted data, and Efron's
tie correction is applied over one row per observed event (``l / d_j`` fractions).

Conventions
-----------
* Covariates are centred at their sample means before fitting (coefficients and the partial
  likelihood do not change). ``baseline_cumhaz`` is therefore the cumulative hazard of a
  patient at the covariate means (R ``survfit.coxph`` default, lifelines
  ``baseline_cumulative_hazard_``), and :func:`linear_predictor` returns
  ``(x - means) @ coef`` (R ``predict(type="lp")``).
* The baseline estimator matches the ties method: Efron's adjusted increments
  ``sum_l 1 / (S0(R_j) - l/d_j S0(D_j))`` for ``ties="efron"`` (R ``survfit.coxph``),
  ``d_j / S0(R_j)`` for ``ties="breslow"``.
* ``risk`` (the linear predictor) is higher for an earlier event.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy import stats

from ceusflow.errors import ConvergenceWarning, InputError
from ceusflow.survival._inputs import survival_arrays

Ties = Literal["efron", "breslow"]
_Z975 = float(stats.norm.ppf(0.975))


@dataclass(frozen=True)
class CoxFit:
    """A fitted Cox model.

    Attributes
    ----------
    params : DataFrame
        Indexed by covariate; columns ``coef`` (log-HR per unit), ``se``, ``hr``, ``hr_low``,
        ``hr_high`` (95 % Wald CI), ``z``, ``p`` (two-sided Wald).
    loglik, loglik_null : float
        Partial log-likelihood at the estimate (without penalty) and at ``coef = 0``.
    aic : float
        ``-2 loglik + 2 p`` (R ``AIC(coxph)``).
    n, n_events : int
        Patients and observed events.
    baseline_time : ndarray
        Distinct event times (input time units), ascending.
    baseline_cumhaz : ndarray
        Cumulative hazard at ``baseline_time`` for a patient at the covariate ``means``.
    converged : bool
        Whether Newton–Raphson met its tolerance.
    ties : {"efron", "breslow"}
        Tie handling.
    names : tuple of str
        Covariate names, in column order.
    means : ndarray
        Centring values of the covariates.
    vcov : ndarray (p, p)
        Covariance of the coefficients (inverse observed information).
    penalizer : float
        Ridge penalty used (0 = none).
    """

    params: pd.DataFrame
    loglik: float
    loglik_null: float
    aic: float
    n: int
    n_events: int
    baseline_time: NDArray[np.float64]
    baseline_cumhaz: NDArray[np.float64]
    converged: bool
    ties: str
    names: tuple[str, ...]
    means: NDArray[np.float64]
    vcov: NDArray[np.float64]
    penalizer: float = 0.0

    @property
    def coef(self) -> NDArray[np.float64]:
        """Coefficients (log hazard ratio per covariate unit) as an array."""
        return self.params["coef"].to_numpy()


@dataclass(frozen=True)
class _Design:
    """Time-sorted data with per-event-time group bookkeeping."""

    x: NDArray[np.float64]  # (n, p), centred, sorted by descending time
    event: NDArray[np.bool_]
    last: NDArray[np.intp]  # per distinct event time: last index of its risk set (desc order)
    group: NDArray[np.intp]  # per event row: index of its event time
    frac: NDArray[np.float64]  # per event row: l / d_j (Efron) or 0 (Breslow)
    times: NDArray[np.float64]  # distinct event times, ascending


def _covariate_matrix(covariates: Any, n: int) -> tuple[NDArray[np.float64], tuple[str, ...]]:
    frame = pd.DataFrame(covariates)
    if frame.shape[0] != n:
        raise InputError("covariates", f"has {frame.shape[0]} rows for {n} times", "align rows")
    try:
        x = frame.to_numpy(dtype=float)
    except (TypeError, ValueError) as err:
        raise InputError("covariates", "must be numeric", "one-hot encode categories") from err
    if not np.all(np.isfinite(x)):
        raise InputError("covariates", "contains NaN or infinite values", "impute or drop rows")
    return x, tuple(str(c) for c in frame.columns)


def _design(time: NDArray[np.float64], event: NDArray[np.bool_], x: NDArray[np.float64],
            ties: str) -> _Design:
    order = np.lexsort((event, -time))  # descending time; censored before events at a tie
    t, e, xs = time[order], event[order], x[order]
    times, inv = np.unique(t[e], return_inverse=True)
    # last position (desc order) with time >= each distinct event time
    last = np.searchsorted(-t, -times, side="right") - 1
    group = inv.astype(np.intp)
    counts = np.bincount(group, minlength=times.size)
    by_group = np.argsort(group, kind="stable")
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    frac = np.empty(group.size)
    frac[by_group] = (np.arange(group.size) - starts[group[by_group]]) / counts[group[by_group]]
    if ties == "breslow":
        frac[:] = 0.0
    return _Design(xs, e, last, group, frac, times)


def _loglik_parts(d: _Design, beta: NDArray[np.float64], hessian: bool = True
                  ) -> tuple[float, NDArray[np.float64], NDArray[np.float64]]:
    """Partial log-likelihood, gradient and Hessian (Efron; Breslow when ``frac`` is 0)."""
    eta = d.x @ beta
    w = np.exp(eta - eta.max())  # common scale cancels in ratios; restored in loglik below
    xw = d.x * w[:, None]
    s0r, s1r = np.cumsum(w)[d.last], np.cumsum(xw, axis=0)[d.last]
    ev = np.flatnonzero(d.event)
    k = d.times.size
    s0d = np.bincount(d.group, weights=w[ev], minlength=k)
    s1d = np.stack([np.bincount(d.group, weights=xw[ev, j], minlength=k)
                    for j in range(d.x.shape[1])], axis=1) if d.x.shape[1] else np.zeros((k, 0))
    den = s0r[d.group] - d.frac * s0d[d.group]
    num1 = s1r[d.group] - d.frac[:, None] * s1d[d.group]
    ll = float(eta[ev].sum() - np.sum(np.log(den) + eta.max()))
    grad = d.x[ev].sum(axis=0) - (num1 / den[:, None]).sum(axis=0)
    if not hessian:
        return ll, grad, np.zeros((beta.size, beta.size))
    xxw = d.x[:, :, None] * xw[:, None, :]
    s2r = np.cumsum(xxw, axis=0)[d.last]
    s2d = np.zeros((k, beta.size, beta.size))
    np.add.at(s2d, d.group, xxw[ev])
    num2 = s2r[d.group] - d.frac[:, None, None] * s2d[d.group]
    mean1 = num1 / den[:, None]
    hess = -(num2 / den[:, None, None]).sum(axis=0) + mean1.T @ mean1
    return ll, grad, hess


def _penalised(d: _Design, beta: NDArray[np.float64], pen: NDArray[np.float64]
               ) -> tuple[float, NDArray[np.float64], NDArray[np.float64]]:
    ll, g, h = _loglik_parts(d, beta)
    return ll - 0.5 * float(np.sum(pen * beta**2)), g - pen * beta, h - np.diag(pen)


def _newton(d: _Design, pen: NDArray[np.float64], max_iter: int = 50
            ) -> tuple[NDArray[np.float64], bool]:
    """Maximise the (penalised) partial likelihood; halve steps that lower it."""
    beta = np.zeros(d.x.shape[1])
    if beta.size == 0:
        return beta, True
    ll, g, h = _penalised(d, beta, pen)
    for _ in range(max_iter):
        step = np.linalg.lstsq(-h, g, rcond=None)[0]
        for _half in range(30):
            ll_new, g_new, h_new = _penalised(d, beta + step, pen)
            if np.isfinite(ll_new) and ll_new >= ll - 1e-12 * abs(ll):
                break
            step = step / 2.0
        beta, ll, g, h = beta + step, ll_new, g_new, h_new
        if np.max(np.abs(step)) < 1e-10:
            return beta, True
    return beta, False


def _baseline(d: _Design, beta: NDArray[np.float64]) -> NDArray[np.float64]:
    """Cumulative baseline hazard at ``d.times`` (covariates centred, so at the means)."""
    w = np.exp(d.x @ beta)
    s0r = np.cumsum(w)[d.last]
    s0d = np.bincount(d.group, weights=w[d.event], minlength=d.times.size)
    increments = np.bincount(d.group, weights=1.0 / (s0r[d.group] - d.frac * s0d[d.group]),
                             minlength=d.times.size)
    return np.cumsum(increments)


def _params_table(names: tuple[str, ...], beta: NDArray[np.float64],
                  vcov: NDArray[np.float64]) -> pd.DataFrame:
    se = np.sqrt(np.diag(vcov))
    z = beta / se
    return pd.DataFrame(
        {"coef": beta, "se": se, "hr": np.exp(beta), "hr_low": np.exp(beta - _Z975 * se),
         "hr_high": np.exp(beta + _Z975 * se), "z": z, "p": 2.0 * stats.norm.sf(np.abs(z))},
        index=pd.Index(names, name="covariate"),
    )


def fit_cox(time: Any, event: Any, covariates: pd.DataFrame, *, ties: Ties = "efron",
            penalizer: float = 0.0) -> CoxFit:
    """Fit a Cox proportional-hazards model by Newton–Raphson with step halving.

    Parameters
    ----------
    time : array-like (n,)
        Follow-up time (e.g. months), >= 0.
    event : array-like (n,)
        1/True where the event was observed, 0/False when censored.
    covariates : DataFrame (n, p)
        Numeric covariates (one-hot encode categories); column names become ``names``.
    ties : {"efron", "breslow"}
        Tie handling. Efron is the default of R ``coxph`` and lifelines; statsmodels ``PHReg``
        and scikit-survival default to Breslow.
    penalizer : float
        Ridge penalty ``0.5 * penalizer * n * sum((coef * sd)^2)`` with ``sd`` the sample
        standard deviation of each covariate (the convention of lifelines ``CoxPHFitter``).

    Returns
    -------
    CoxFit
        Coefficients (log-HR per covariate unit), SEs, HRs with 95 % CI, Wald p, partial
        log-likelihoods, AIC and the baseline cumulative hazard at the covariate means.

    Raises
    ------
    InputError
        On malformed input, an unknown ``ties``, a negative ``penalizer`` or no events.
    """
    if ties not in get_args(Ties):
        raise InputError("ties", f"{ties!r} is not supported", f"use one of {get_args(Ties)}")
    if not np.isfinite(penalizer) or penalizer < 0:
        raise InputError("penalizer", f"must be finite and >= 0, got {penalizer}", "use 0 for none")
    t, e = survival_arrays(time, event)
    x, names = _covariate_matrix(covariates, t.size)
    if not e.any():
        raise InputError("event", "no events observed", "a Cox model needs at least one event")
    return _fit(t, e, x, names, ties, float(penalizer))


def _fit(t: NDArray[np.float64], e: NDArray[np.bool_], x: NDArray[np.float64],
         names: tuple[str, ...], ties: str, penalizer: float) -> CoxFit:
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # diverging fits warn once, below
        return _fit_unguarded(t, e, x, names, ties, penalizer)


def _fit_unguarded(t: NDArray[np.float64], e: NDArray[np.bool_], x: NDArray[np.float64],
                   names: tuple[str, ...], ties: str, penalizer: float) -> CoxFit:
    means = x.mean(axis=0)
    d = _design(t, e, x - means, ties)
    sd = x.std(axis=0, ddof=1) if t.size > 1 else np.ones(x.shape[1])
    pen = penalizer * t.size * sd**2
    beta, converged = _newton(d, pen)
    if not converged:
        warnings.warn("Cox fit did not converge in 50 Newton steps (separation or collinearity?)",
                      ConvergenceWarning, stacklevel=4)
    ll, _, h = _loglik_parts(d, beta)
    vcov = np.linalg.pinv(-(h - np.diag(pen))) if beta.size else np.zeros((0, 0))
    ll0 = _loglik_parts(d, np.zeros_like(beta), hessian=False)[0]
    return CoxFit(_params_table(names, beta, vcov), ll, ll0, -2.0 * ll + 2.0 * beta.size, t.size,
                  int(e.sum()), d.times, _baseline(d, beta), converged, ties, names, means, vcov,
                  penalizer)


def _new_matrix(fit: CoxFit, covariates: Any) -> NDArray[np.float64]:
    frame = pd.DataFrame(covariates)
    missing = [n for n in fit.names if n not in frame.columns]
    if missing:
        raise InputError("covariates", f"missing columns {missing}", "pass the fitted covariates")
    x, _ = _covariate_matrix(frame[list(fit.names)], frame.shape[0])
    return x


def linear_predictor(fit: CoxFit, covariates: pd.DataFrame) -> NDArray[np.float64]:
    """Centred linear predictor ``(x - means) @ coef`` (higher = earlier event).

    Parameters
    ----------
    fit : CoxFit
        A fitted model.
    covariates : DataFrame (m, >= p)
        Must contain the fitted covariate columns (others are ignored).

    Returns
    -------
    ndarray (m,)
        Log relative hazard versus a patient at the covariate means.
    """
    return (_new_matrix(fit, covariates) - fit.means) @ fit.coef


def baseline_cumhaz_at(fit: CoxFit, t: float | NDArray[np.float64]) -> NDArray[np.float64]:
    """Right-continuous step interpolation of the baseline cumulative hazard.

    Parameters
    ----------
    fit : CoxFit
        A fitted model.
    t : float or ndarray
        Time(s) in the units of the fitted ``time``.

    Returns
    -------
    ndarray
        ``H0(t)`` at the covariate means (0 before the first event time).
    """
    idx = np.searchsorted(fit.baseline_time, np.asarray(t, dtype=float), side="right") - 1
    return np.where(idx >= 0, fit.baseline_cumhaz[np.maximum(idx, 0)], 0.0)


def predict_survival(fit: CoxFit, covariates: pd.DataFrame, t: float) -> NDArray[np.float64]:
    """Predicted survival probability ``S(t | x) = exp(-H0(t) exp(lp))``.

    Parameters
    ----------
    fit : CoxFit
        A fitted model.
    covariates : DataFrame (m, >= p)
        Patients to predict.
    t : float
        Horizon in the units of the fitted ``time`` (e.g. 24 months); must be >= 0.

    Returns
    -------
    ndarray (m,)
        Survival probabilities in [0, 1].
    """
    if not np.isfinite(t) or t < 0:
        raise InputError("t", f"must be finite and >= 0, got {t}", "pass a horizon in time units")
    with np.errstate(over="ignore"):  # exp overflow -> survival 0, the right limit
        return np.exp(-baseline_cumhaz_at(fit, float(t)) * np.exp(linear_predictor(fit, covariates)))
