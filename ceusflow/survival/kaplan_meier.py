"""Kaplan–Meier curves, the k-group log-rank test and the hazard ratio of a grouping.

Conventions: times in months (any unit works; it is carried through), ``group`` labels are kept
as given (booleans become ``"low"``/``"high"``), hazard ratios are of the comparison level vs the
reference level from a one-covariate Cox model with Efron ties (as R ``coxph`` and lifelines).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import xarray as xr
from numpy.typing import NDArray
from scipy import stats

from ceusflow.errors import ConvergenceWarning, InputError
from ceusflow.survival._inputs import survival_arrays

ConfType = Literal["log-log", "log", "plain"]


@dataclass(frozen=True)
class LogRank:
    """k-group log-rank test (Mantel 1966; Peto & Peto 1972).

    Attributes
    ----------
    statistic : float
        Chi-square statistic ``(O - E)' V^- (O - E)``.
    df : int
        Degrees of freedom, k - 1.
    p_value : float
        Upper tail of the chi-square distribution.
    groups : tuple
        Group labels in the order of ``observed`` and ``expected``.
    observed, expected : ndarray (k,)
        Observed and expected numbers of events per group.
    """

    statistic: float
    df: int
    p_value: float
    groups: tuple[Any, ...]
    observed: NDArray[np.float64]
    expected: NDArray[np.float64]


@dataclass(frozen=True)
class HazardRatio:
    """Hazard ratio of ``comparison`` vs ``reference`` (Cox model, Efron ties, Wald inference).

    Attributes
    ----------
    estimate, low, high : float
        HR and its ``1 - alpha`` Wald interval.
    coef, se : float
        Log hazard ratio and its standard error.
    p_value : float
        Two-sided Wald p-value.
    reference, comparison : Any
        Group labels (baseline and compared level).
    n, n_events : int
        Patients and events used.
    """

    estimate: float
    low: float
    high: float
    coef: float
    se: float
    p_value: float
    reference: Any
    comparison: Any
    n: int
    n_events: int


def _group_labels(group: Any, n: int) -> NDArray[Any]:
    """Validate group labels into an array (booleans mapped to "low"/"high")."""
    if group is None:
        return np.full(n, "all", dtype=object)
    g = np.asarray(group).ravel()
    if g.shape != (n,):
        raise InputError("group", f"has {g.size} values for {n} times", "align the columns")
    if g.dtype == bool:
        return np.where(g, "high", "low").astype(object)
    if g.dtype.kind == "f" and not np.all(np.isfinite(g)):
        raise InputError("group", "contains NaN", "drop patients without a group")
    return g


def _km_one(
    t: NDArray[np.float64],
    e: NDArray[np.bool_],
    grid: NDArray[np.float64],
    z: float,
    conf_type: str,
) -> dict[str, NDArray[np.float64]]:
    """KM estimate, Greenwood CI and counts of one group on the common time grid."""
    at_risk, events, censored = _counts(t, e, grid)
    surv, gw = _product_limit(at_risk, events)
    low, high = _confidence(surv, gw, z, conf_type)
    beyond = grid > t.max()
    out = {"survival": surv, "low": low, "high": high}
    for v in out.values():
        v[beyond] = np.nan
    return out | {"at_risk": at_risk, "events": events, "censored": censored}


def _product_limit(
    at_risk: NDArray[np.float64], events: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Kaplan–Meier survival and the Greenwood sum ``sum d / (n (n - d))`` at each grid time."""
    with np.errstate(divide="ignore", invalid="ignore"):
        surv = np.cumprod(np.where(at_risk > 0, 1 - events / at_risk, 1.0))
        gw = np.cumsum(np.where(at_risk > events, events / (at_risk * (at_risk - events)), 0.0))
    return surv, gw


def km_point(
    time: NDArray[np.float64],
    event: NDArray[np.bool_],
    t: float,
    *,
    alpha: float = 0.05,
    conf_type: ConfType = "log-log",
) -> tuple[float, float, float]:
    """Kaplan–Meier survival at one time with its pointwise CI, for validated arrays (fast path).

    The same estimator as :func:`kaplan_meier` followed by :func:`survival_at` (shared
    kernels), without the xarray containers, for loops over bootstrap replicates and thresholds.

    Parameters
    ----------
    time, event : ndarray (n,)
        Follow-up times (float) and event indicator (bool), already validated.
    t : float
        Time at which to read the curve (right-continuous).
    alpha, conf_type
        As in :func:`kaplan_meier`.

    Returns
    -------
    tuple of float
        ``(survival, low, high)``; NaNs when ``t`` is after the last follow-up (or no patients).
    """
    if time.size == 0 or t > time.max():
        return np.nan, np.nan, np.nan
    grid = np.unique(time[event & (time <= t)])
    if grid.size == 0:
        return 1.0, 1.0, 1.0
    at_risk, events, _ = _counts(time, event, grid)
    surv, gw = _product_limit(at_risk, events)
    z = float(stats.norm.ppf(1 - alpha / 2))
    low, high = _confidence(surv[-1:], gw[-1:], z, conf_type)
    return float(surv[-1]), float(low[0]), float(high[0])


def _counts(
    t: NDArray[np.float64], e: NDArray[np.bool_], grid: NDArray[np.float64]
) -> tuple[NDArray[np.float64], ...]:
    """Numbers at risk (time >= t), events and censorings at each grid time."""
    at_risk = (t.size - np.searchsorted(np.sort(t), grid, side="left")).astype(float)
    pos = np.searchsorted(grid, t)
    hit = grid[np.minimum(pos, grid.size - 1)] == t
    events = np.bincount(pos[hit & e], minlength=grid.size).astype(float)
    censored = np.bincount(pos[hit & ~e], minlength=grid.size).astype(float)
    return at_risk, events, censored


def _confidence(
    surv: NDArray[np.float64], gw: NDArray[np.float64], z: float, conf_type: str
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Pointwise CI from the Greenwood sum ``gw`` = sum d / (n (n - d))."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if conf_type == "log-log":
            logs = np.log(surv)
            half = z * np.sqrt(gw) / logs
            low, high = np.exp(-np.exp(np.log(-logs) - half)), np.exp(-np.exp(np.log(-logs) + half))
        elif conf_type == "log":
            half = z * np.sqrt(gw)
            low, high = surv * np.exp(-half), surv * np.exp(half)
        else:
            half = z * surv * np.sqrt(gw)
            low, high = surv - half, surv + half
    low = np.where((surv >= 1) | (surv <= 0), surv, np.clip(low, 0, 1))
    high = np.where((surv >= 1) | (surv <= 0), surv, np.clip(high, 0, 1))
    return low, high


def kaplan_meier(
    time: Any,
    event: Any,
    group: Any = None,
    *,
    alpha: float = 0.05,
    conf_type: ConfType = "log-log",
) -> xr.Dataset:
    """Kaplan–Meier survival curves with Greenwood confidence bands and numbers at risk.

    Parameters
    ----------
    time : array-like (n,)
        Follow-up time, months.
    event : array-like (n,)
        1/True for an observed event.
    group : array-like (n,), optional
        Group labels (booleans become "low"/"high"); one curve per label.
    alpha : float
        1 - confidence level of the pointwise bands.
    conf_type : {"log-log", "log", "plain"}
        Transform of the Greenwood interval: log-log as lifelines (default), log as R's
        ``survfit`` default, or plain (linear).

    Returns
    -------
    xarray.Dataset (group, time)
        ``survival``, ``low``, ``high`` (step functions, right-continuous, NaN after a group's
        last follow-up), ``at_risk`` (patients with time >= t), ``events``, ``censored``.
        ``time`` (months) is 0 plus every distinct observed time of any group.
    """
    t, e = survival_arrays(time, event)
    labels = _group_labels(group, t.size)
    if conf_type not in ("log-log", "log", "plain"):
        raise InputError("conf_type", f"unknown {conf_type!r}", "use log-log, log or plain")
    if not 0 < alpha < 1:
        raise InputError("alpha", f"must be in (0, 1), got {alpha}", "use e.g. 0.05")
    grid = np.unique(np.r_[0.0, t])
    z = float(stats.norm.ppf(1 - alpha / 2))
    levels = _levels(labels)
    curves = [_km_one(t[labels == g], e[labels == g], grid, z, conf_type) for g in levels]
    data = {k: (("group", "time"), np.stack([c[k] for c in curves])) for k in curves[0]}
    ds = xr.Dataset(data, coords={"group": list(levels), "time": grid})
    ds["time"].attrs["units"] = "month"
    ds.attrs.update(alpha=alpha, conf_type=conf_type)
    return ds


def _levels(labels: NDArray[Any]) -> list[Any]:
    uniq = list(dict.fromkeys(labels.tolist()))
    try:
        return sorted(uniq)
    except TypeError:
        return uniq


def survival_at(km: xr.Dataset, t: float | Any) -> xr.Dataset:
    """Survival, CI and numbers at risk at given times (step function, NaN after follow-up).

    Parameters
    ----------
    km : xarray.Dataset (group, time)
        Output of :func:`kaplan_meier`.
    t : float or array-like
        Time(s) in the unit of ``km.time`` (months); >= 0.

    Returns
    -------
    xarray.Dataset
        ``survival``, ``low``, ``high`` (right-continuous; NaN after a group's last follow-up)
        and ``at_risk`` (patients with time >= t) at ``t``; dims ``group`` and, for array ``t``,
        ``time``.
    """
    tt = np.asarray(t, dtype=float)
    if not np.all(np.isfinite(tt)) or np.any(tt < 0):
        raise InputError("t", "must be finite and >= 0", "pass times in months")
    curves = km[["survival", "low", "high"]].sel(time=tt, method="ffill").assign_coords(time=tt)
    last = km.time.where(np.isfinite(km.survival)).max("time")
    curves = curves.where(curves.time <= last)
    padded = km.at_risk.reindex(time=np.r_[km.time.values, np.inf], fill_value=0.0)
    at_risk = padded.sel(time=tt, method="bfill").assign_coords(time=tt)
    return curves.assign(at_risk=at_risk)


def median_survival(km: xr.Dataset) -> xr.DataArray:
    """Median survival per group: the first time with ``survival <= 0.5`` (inf if not reached).

    Parameters
    ----------
    km : xarray.Dataset (group, time)
        Output of :func:`kaplan_meier`.

    Returns
    -------
    xarray.DataArray (group)
        Median time, months.
    """
    below = (km.survival <= 0.5).values
    times = km.time.values
    med = np.where(below.any(1), times[np.argmax(below, axis=1)], np.inf)
    return xr.DataArray(
        med,
        coords={"group": km.group.values},
        dims="group",
        name="median",
        attrs={"units": km.time.attrs.get("units", "")},
    )


def logrank(time: Any, event: Any, group: Any) -> LogRank:
    """Log-rank test of equal survival across k groups.

    Parameters
    ----------
    time : array-like (n,)
        Follow-up time, months.
    event : array-like (n,)
        1/True for an observed event.
    group : array-like (n,)
        Group labels (at least two distinct).

    Returns
    -------
    LogRank
        Chi-square statistic, df = k - 1, p-value, observed and expected events per group.
    """
    t, e = survival_arrays(time, event)
    labels = _group_labels(group, t.size)
    levels = _levels(labels)
    if len(levels) < 2:
        raise InputError("group", "has a single level", "a log-rank test needs two or more groups")
    ev_times = np.unique(t[e])
    per_group = [_counts(t[labels == g], e[labels == g], ev_times) for g in levels]
    n_g = np.stack([c[0] for c in per_group], axis=1)  # (m, k) at risk
    d_g = np.stack([c[1] for c in per_group], axis=1)  # (m, k) events
    n_tot, d_tot = n_g.sum(1), d_g.sum(1)
    expected = (d_tot / n_tot)[:, None] * n_g
    scale = d_tot * (n_tot - d_tot) / np.maximum(n_tot - 1, 1)
    frac = n_g / n_tot[:, None]
    cov = np.diag(scale @ frac) - np.einsum("m,mk,ml->kl", scale, frac, frac)
    diff = d_g.sum(0) - expected.sum(0)
    # generalised inverse of the full k x k matrix (rank k - 1): equal to the usual form that drops
    # one group, but invariant to which group that would be when a group never is at risk at an
    # event time (where dropping another group leaves a numerically singular block)
    stat = float(diff @ np.linalg.pinv(cov, rcond=1e-10, hermitian=True) @ diff)
    df = len(levels) - 1
    return LogRank(
        stat, df, float(stats.chi2.sf(stat, df)), tuple(levels), d_g.sum(0), expected.sum(0)
    )


def _efron_derivatives(
    beta: float, t: NDArray[np.float64], e: NDArray[np.bool_], x: NDArray[np.float64]
) -> tuple[float, float, float]:
    """Efron partial log-likelihood, score and information of one covariate."""
    ev_times, d = np.unique(t[e], return_counts=True)
    order = np.argsort(t, kind="stable")
    ts, xs, es = t[order], x[order], e[order]
    start = np.searchsorted(ts, ev_times, side="left")
    slot = np.searchsorted(ev_times, ts[es])
    r = np.exp(beta * xs)
    s_r = [np.cumsum((r * xs**p)[::-1])[::-1][start] for p in range(3)]
    s_d = [np.bincount(slot, weights=(r * xs**p)[es], minlength=d.size) for p in range(3)]
    rows = np.repeat(np.arange(d.size), d)
    frac = (np.arange(rows.size) - np.repeat(np.cumsum(d) - d, d)) / d[rows]
    a0, a1, a2 = (s_r[p][rows] - frac * s_d[p][rows] for p in range(3))
    loglik = beta * float(x[e].sum()) - float(np.log(a0).sum())
    score = float(x[e].sum() - np.sum(a1 / a0))
    info = float(np.sum(a2 / a0 - (a1 / a0) ** 2))
    return loglik, score, info


def _newton(
    t: NDArray[np.float64], e: NDArray[np.bool_], x: NDArray[np.float64]
) -> tuple[float, float]:
    """Maximise the Efron likelihood by Newton–Raphson with step halving; returns (beta, se)."""
    import warnings

    beta = 0.0
    ll, score, info = _efron_derivatives(beta, t, e, x)
    if not info > 0:
        raise InputError("group", "hazard ratio not estimable: no event while both groups were at risk",
                         "report the log-rank test or pool groups")
    for _ in range(50):
        if not info > 0:
            break
        step = score / info
        new = beta + step
        ll_new, s_new, i_new = _efron_derivatives(new, t, e, x)
        while ll_new < ll - 1e-12 and abs(step) > 1e-10:
            step /= 2
            new = beta + step
            ll_new, s_new, i_new = _efron_derivatives(new, t, e, x)
        beta, ll, score, info = new, ll_new, s_new, i_new
        if abs(step) < 1e-10:
            return beta, (1 / np.sqrt(info) if info > 0 else float("inf"))
    warnings.warn(
        "hazard_ratio: Newton-Raphson did not converge (separation?)",
        ConvergenceWarning,
        stacklevel=3,
    )
    return beta, (1 / np.sqrt(info) if info > 0 else float("inf"))


def hazard_ratio(
    time: Any, event: Any, group: Any, *, reference: Any = None, alpha: float = 0.05
) -> HazardRatio:
    """Hazard ratio between two groups from a one-covariate Cox model (Efron ties).

    Parameters
    ----------
    time : array-like (n,)
        Follow-up time, months.
    event : array-like (n,)
        1/True for an observed event.
    group : array-like (n,)
        Two-level grouping; booleans are read as high (True) vs low (False).
    reference : label, optional
        Baseline level. Default: ``"low"`` when present, else the first level in sorted order.
    alpha : float
        1 - confidence level of the Wald interval.

    Returns
    -------
    HazardRatio
        HR of the other level vs ``reference`` with Wald CI and p-value.

    Raises
    ------
    InputError
        Not two levels, no events, or a level without events (the MLE is infinite).
    """
    t, e = survival_arrays(time, event)
    labels = _group_labels(group, t.size)
    levels = _levels(labels)
    if len(levels) != 2:
        raise InputError("group", f"has {len(levels)} levels", "a hazard ratio needs exactly two")
    ref = reference if reference is not None else ("low" if "low" in levels else levels[0])
    if ref not in levels:
        raise InputError("reference", f"{ref!r} is not a group level", f"use one of {levels}")
    if not e.any():
        raise InputError("event", "no events", "a hazard ratio needs events")
    comp = levels[1] if ref == levels[0] else levels[0]
    for level in levels:  # the MLE is infinite (separation): say so instead of printing 1e15
        if not e[labels == level].any():
            raise InputError("group", f"the {level!r} group has no events, so the hazard ratio is not estimable",
                             "report the log-rank test and the Kaplan-Meier curves instead")
    beta, se = _newton(t, e, (labels == comp).astype(float))
    z = float(stats.norm.ppf(1 - alpha / 2))
    p = float(2 * stats.norm.sf(abs(beta / se)))
    with np.errstate(over="ignore"):  # near-separation: an infinite CI bound is the honest answer
        estimate, low, high = (float(np.exp(v)) for v in (beta, beta - z * se, beta + z * se))
    return HazardRatio(
        estimate,
        low,
        high,
        float(beta),
        float(se),
        p,
        ref,
        comp,
        t.size,
        int(e.sum()),
    )
