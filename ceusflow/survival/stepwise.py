"""Backward stepwise Cox selection by AIC (R ``step()`` semantics) and its bootstrap stability."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from ceusflow.errors import ConvergenceWarning, InputError
from ceusflow.survival._inputs import survival_arrays
from ceusflow.survival.cox import CoxFit, Ties, _covariate_matrix, _fit


@dataclass(frozen=True)
class Stepwise:
    """Result of a stepwise selection.

    Attributes
    ----------
    selected : tuple of str
        Covariates in the final model (after the optional p filter), in input order.
    fit : CoxFit
        The final model refitted on ``selected``.
    trace : DataFrame
        One row per candidate per step, as R ``step(trace=TRUE)`` prints: ``step`` (0-based),
        ``term`` (``"- name"`` or ``"<none>"``), ``df`` (parameters removed), ``loglik``,
        ``aic`` (``-2 loglik + k * p`` of the model after that move) and ``chosen``.
    aic_selected : tuple of str
        Covariates chosen by AIC alone, before the p filter.
    k : float
        Penalty per parameter (2 = AIC, log(n_events) or log(n) = BIC-like).
    p_filter : float or None
        The Wald-p threshold applied after selection, if any.
    """

    selected: tuple[str, ...]
    fit: CoxFit
    trace: pd.DataFrame
    aic_selected: tuple[str, ...]
    k: float
    p_filter: float | None


def _criterion(fit: CoxFit, k: float) -> float:
    return -2.0 * fit.loglik + k * len(fit.names)


def _subset_fit(t: NDArray[np.float64], e: NDArray[np.bool_], x: NDArray[np.float64],
                names: tuple[str, ...], keep: list[str], ties: str) -> CoxFit:
    cols = [names.index(n) for n in keep]
    return _fit(t, e, x[:, cols], tuple(keep), ties, 0.0)


def _one_step(t: NDArray[np.float64], e: NDArray[np.bool_], x: NDArray[np.float64],
              names: tuple[str, ...], current: list[str], ties: str, k: float
              ) -> tuple[list[dict[str, Any]], str | None]:
    """Evaluate ``<none>`` and every single-term drop; return the rows and the term to drop."""
    rows = []
    for term in [None, *current]:
        keep = [c for c in current if c != term]
        fit = _subset_fit(t, e, x, names, keep, ties)
        rows.append({"term": "<none>" if term is None else f"- {term}", "df": int(term is not None),
                     "loglik": fit.loglik, "aic": _criterion(fit, k), "drop": term})
    best = min(rows, key=lambda r: r["aic"])  # ties go to <none> (listed first): R keeps the model
    return rows, best["drop"]


def _backward(t: NDArray[np.float64], e: NDArray[np.bool_], x: NDArray[np.float64],
              names: tuple[str, ...], ties: str, k: float) -> tuple[list[str], pd.DataFrame]:
    current, rows, step = list(names), [], 0
    while True:
        step_rows, drop = _one_step(t, e, x, names, current, ties, k)
        for r in step_rows:
            rows.append({"step": step, **r, "chosen": r["drop"] == drop})
        if drop is None:
            break
        current.remove(drop)
        step += 1
    trace = pd.DataFrame(rows).drop(columns="drop")
    return current, trace


def stepwise_aic(time: Any, event: Any, covariates: pd.DataFrame, *,
                 direction: Literal["backward"] = "backward", k: float = 2.0,
                 p_filter: float | None = None, ties: Ties = "efron") -> Stepwise:
    """Backward elimination by AIC, as R ``step(coxph(...), direction="backward")``.

    At each step every single-covariate drop is fitted; the drop that lowers
    ``-2 loglik + k * p`` most is taken; selection stops when no drop lowers it (a tie with
    the current model keeps the current model, as R does). Each column is one term: a
    categorical variable one-hot encoded into several columns is dropped column by column,
    unlike R which drops a factor whole.

    Parameters
    ----------
    time, event : array-like (n,)
        Follow-up time and event indicator.
    covariates : DataFrame (n, p)
        Candidate covariates (numeric).
    direction : {"backward"}
        Only backward elimination is implemented (what the paper used).
    k : float
        Penalty per parameter; 2 gives AIC.
    p_filter : float, optional
        The paper's extra step: after AIC selection keep only covariates with Wald
        ``p < p_filter`` and refit once. ``None`` (default) skips it.
    ties : {"efron", "breslow"}
        Tie handling of every Cox fit.

    Returns
    -------
    Stepwise
        Selected covariates, final fit and the step trace.
    """
    if direction != "backward":
        raise InputError("direction", f"{direction!r} is not supported", "use 'backward'")
    if not np.isfinite(k) or k < 0:
        raise InputError("k", f"must be finite and >= 0, got {k}", "use 2 for AIC")
    if p_filter is not None and not 0 < p_filter <= 1:
        raise InputError("p_filter", f"must be in (0, 1], got {p_filter}", "use 0.05 or None")
    t, e = survival_arrays(time, event)
    x, names = _covariate_matrix(covariates, t.size)
    if not e.any():
        raise InputError("event", "no events observed", "a Cox model needs at least one event")
    kept, trace = _backward(t, e, x, names, ties, float(k))
    fit = _subset_fit(t, e, x, names, kept, ties)
    if p_filter is not None:
        fit = _subset_fit(t, e, x, names, [n for n in kept if fit.params.loc[n, "p"] < p_filter],
                          ties)
    return Stepwise(fit.names, fit, trace, tuple(kept), float(k), p_filter)


def selection_frequency(time: Any, event: Any, covariates: pd.DataFrame, *, n_boot: int = 100,
                        rng: np.random.Generator | int | None = None, k: float = 2.0,
                        p_filter: float | None = None, ties: Ties = "efron") -> pd.Series:
    """Bootstrap inclusion frequency of each covariate under :func:`stepwise_aic`.

    Parameters
    ----------
    time, event : array-like (n,)
        Follow-up time and event indicator.
    covariates : DataFrame (n, p)
        Candidate covariates.
    n_boot : int
        Bootstrap resamples (patients drawn with replacement).
    rng : Generator, int or None
        Random source or seed.
    k, p_filter, ties
        As in :func:`stepwise_aic`.

    Returns
    -------
    Series
        Fraction of resamples (0–1) in which each covariate was selected, indexed by
        covariate in input order; ``attrs["n_boot"]`` holds the number of resamples used
        (resamples without any event are skipped).
    """
    if n_boot < 1:
        raise InputError("n_boot", f"must be >= 1, got {n_boot}", "use e.g. 100")
    t, e = survival_arrays(time, event)
    x, names = _covariate_matrix(covariates, t.size)
    gen = np.random.default_rng(rng)
    counts, used = pd.Series(0.0, index=pd.Index(names, name="covariate")), 0
    frame = pd.DataFrame(x, columns=list(names))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for _ in range(n_boot):
            idx = gen.integers(0, t.size, t.size)
            if not e[idx].any():
                continue  # a resample without events cannot be fitted; it is not counted
            sel = stepwise_aic(t[idx], e[idx], frame.iloc[idx].reset_index(drop=True), k=k,
                               p_filter=p_filter, ties=ties).selected
            counts[list(sel)] += 1.0
            used += 1
    out = counts / max(used, 1)
    out.attrs["n_boot"] = used
    return out
