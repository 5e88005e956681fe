"""Table 1 (characteristics by group, with tests) and the paper's balanced train/validation split.

Tests, two groups only:

* continuous, roughly normal: mean ± SD, Welch's t-test (``ttest_ind(equal_var=False)``);
* continuous, non-normal: median [IQR], Mann–Whitney U (two-sided, scipy's default method);
* categorical: counts (%), Pearson χ² (Yates-corrected for 2 × 2, as R ``chisq.test``), or
  Fisher's exact test for a 2 × 2 table with any expected count < 5.

A continuous column is treated as non-normal when listed in ``nonnormal``, or, when
``nonnormal`` is None, when a Shapiro–Wilk test rejects normality (p < 0.05) in either group.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy import stats

from ceusflow.errors import InputError
from ceusflow.survival._inputs import survival_arrays
from ceusflow.survival.kaplan_meier import logrank


@dataclass(frozen=True)
class Split:
    """A balanced train/validation split.

    Attributes
    ----------
    train, validation : ndarray of int
        Positional row indices (sorted) into the input DataFrame.
    n_draws : int
        Random draws needed until no characteristic differed at ``p < alpha``.
    min_p : float
        Smallest p-value of the accepted split (characteristics and log-rank).
    seed : int or None
        The integer seed passed as ``rng`` (None when a Generator or nothing was given).
    """

    train: NDArray[np.intp]
    validation: NDArray[np.intp]
    n_draws: int
    min_p: float
    seed: int | None


def _infer_kinds(df: pd.DataFrame, continuous: Sequence[str] | None,
                 categorical: Sequence[str] | None) -> tuple[list[str], list[str]]:
    if continuous is not None or categorical is not None:
        cont, cat = list(continuous or []), list(categorical or [])
    else:
        numeric = [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c])
                   and not pd.api.types.is_bool_dtype(df[c])]
        cont = [c for c in numeric if df[c].nunique() > 5]
        cat = [c for c in df.columns if c not in cont]
    missing = [c for c in cont + cat if c not in df.columns]
    if missing:
        raise InputError("table_one", f"unknown columns {missing}", "check the column names")
    return cont, cat


def _is_normal(a: NDArray[np.float64], b: NDArray[np.float64]) -> bool:
    return all(len(v) < 3 or stats.shapiro(v).pvalue >= 0.05 for v in (a, b))


def _continuous_row(name: str, a: NDArray[np.float64], b: NDArray[np.float64],
                    nonnormal: bool) -> dict[str, Any]:
    if nonnormal:
        def fmt(v: NDArray[np.float64]) -> str:
            q1, med, q3 = np.percentile(v, [25, 50, 75])
            return f"{med:.2f} [{q1:.2f}, {q3:.2f}]"
        p = stats.mannwhitneyu(a, b, alternative="two-sided").pvalue
        test = "Mann-Whitney U"
    else:
        def fmt(v: NDArray[np.float64]) -> str:
            return f"{v.mean():.2f} ± {v.std(ddof=1):.2f}"
        p = stats.ttest_ind(a, b, equal_var=False).pvalue
        test = "Welch t"
    return {"variable": name, "level": "", "a": fmt(a), "b": fmt(b), "test": test, "p": float(p)}


def _categorical_test(counts: NDArray[np.float64]) -> tuple[str, float]:
    counts = counts[counts.sum(axis=1) > 0]
    if counts.shape[0] < 2:
        return "none (one level)", float("nan")
    expected = stats.contingency.expected_freq(counts)
    if counts.shape == (2, 2) and np.any(expected < 5):
        return "Fisher exact", float(stats.fisher_exact(counts).pvalue)
    return "chi-squared", float(stats.chi2_contingency(counts).pvalue)


def _categorical_rows(name: str, col: pd.Series, grp: pd.Series,
                      levels: Sequence[Any]) -> list[dict[str, Any]]:
    tab = pd.crosstab(col, grp).reindex(columns=levels, fill_value=0)
    test, p = _categorical_test(tab.to_numpy(dtype=float))
    pct = tab / tab.sum(axis=0)
    rows = [{"variable": name, "level": "", "a": "", "b": "", "test": test, "p": p}]
    for lvl in tab.index:
        cells = [f"{tab.loc[lvl, g]} ({100 * pct.loc[lvl, g]:.1f}%)" for g in levels]
        rows.append({"variable": name, "level": str(lvl), "a": cells[0], "b": cells[1],
                     "test": "", "p": np.nan})
    return rows


def table_one(df: pd.DataFrame, group: str, *, continuous: Sequence[str] | None = None,
              categorical: Sequence[str] | None = None,
              nonnormal: Sequence[str] | None = None) -> pd.DataFrame:
    """Characteristics by group with the appropriate two-group tests.

    Parameters
    ----------
    df : DataFrame
        One row per patient.
    group : str
        Column with exactly two groups (e.g. train/validation, RFA/SR).
    continuous, categorical : sequence of str, optional
        Columns of each kind. When both are None, numeric columns with more than five
        distinct values are continuous and all others categorical.
    nonnormal : sequence of str, optional
        Continuous columns to summarise as median [IQR] with Mann–Whitney; None decides by
        Shapiro–Wilk (p < 0.05 in either group).

    Returns
    -------
    DataFrame
        Columns ``variable``, ``level`` (categorical levels; "" on the test row), one summary
        column per group (named by the group value), ``test`` and ``p``.
    """
    if group not in df.columns:
        raise InputError("group", f"column {group!r} not found", "name the grouping column")
    levels = sorted(df[group].dropna().unique().tolist())
    if len(levels) != 2:
        raise InputError("group", f"has {len(levels)} levels, need exactly 2", "")
    cont, cat = _infer_kinds(df.drop(columns=group), continuous, categorical)
    rows: list[dict[str, Any]] = []
    for c in cont:
        a, b = (df.loc[df[group] == g, c].dropna().to_numpy(dtype=float) for g in levels)
        skew = c in nonnormal if nonnormal is not None else not _is_normal(a, b)
        rows.append(_continuous_row(c, a, b, skew))
    for c in cat:
        rows.extend(_categorical_rows(c, df[c], df[group], levels))
    out = pd.DataFrame(rows, columns=["variable", "level", "a", "b", "test", "p"])
    return out.rename(columns={"a": str(levels[0]), "b": str(levels[1])})


def logrank_p(time: NDArray[np.float64], event: NDArray[np.bool_], group: NDArray[np.bool_]
              ) -> float:
    """Two-group log-rank p-value (chi-squared, 1 df): :func:`ceusflow.survival.logrank`'s."""
    return logrank(time, event, group).p_value


def _split_pvalues(df: pd.DataFrame, is_train: NDArray[np.bool_],
                   surv: tuple[NDArray[np.float64], NDArray[np.bool_]] | None) -> float:
    frame = df.assign(_split=np.where(is_train, "train", "validation"))
    p = table_one(frame, "_split")["p"].dropna()
    ps = [float(p.min())] if len(p) else [1.0]
    if surv is not None:
        ps.append(logrank_p(surv[0], surv[1], is_train))
    return min(ps)


def balanced_split(df: pd.DataFrame, *, frac_train: float = 2 / 3, alpha: float = 0.05,
                   max_draws: int = 1000, rng: np.random.Generator | int | None = None,
                   time: Any = None, event: Any = None) -> Split:
    """Random train/validation split, re-drawn until no characteristic differs at ``p < alpha``.

    This is what the paper did for its 2:1 split. Every column of ``df`` is compared with
    :func:`table_one`'s tests; with ``time`` and ``event`` the PFS curves are also compared
    by log-rank. Deterministic for a given integer seed.

    Parameters
    ----------
    df : DataFrame
        Baseline characteristics, one row per patient.
    frac_train : float
        Training fraction in (0, 1); the training set has ``round(frac_train * n)`` rows.
    alpha : float
        Significance level a split must not reach on any comparison.
    max_draws : int
        Give up after this many draws.
    rng : Generator, int or None
        Random source or seed.
    time, event : array-like (n,) or str, optional
        Follow-up and event indicator (or names of columns of ``df``, which are then excluded
        from the characteristics).

    Returns
    -------
    Split
        Train and validation row positions and the number of draws.

    Raises
    ------
    InputError
        If no acceptable split is found in ``max_draws`` draws.
    """
    if not 0 < frac_train < 1 or not 0 < alpha < 1 or max_draws < 1:
        raise InputError("balanced_split", "need 0 < frac_train < 1, 0 < alpha < 1, "
                         "max_draws >= 1", "")
    chars, surv = _split_inputs(df, time, event)
    gen = np.random.default_rng(rng)
    n_train = int(round(frac_train * len(df)))
    for draw in range(1, max_draws + 1):
        is_train = np.zeros(len(df), dtype=bool)
        is_train[gen.permutation(len(df))[:n_train]] = True
        p_min = _split_pvalues(chars, is_train, surv)
        if p_min >= alpha:
            seed = rng if isinstance(rng, int) else None
            return Split(np.flatnonzero(is_train), np.flatnonzero(~is_train), draw, p_min, seed)
    raise InputError("balanced_split", f"no split with all p >= {alpha} in {max_draws} draws",
                     "raise max_draws or drop a characteristic")


def _split_inputs(df: pd.DataFrame, time: Any, event: Any
                  ) -> tuple[pd.DataFrame, tuple[NDArray[np.float64], NDArray[np.bool_]] | None]:
    if (time is None) != (event is None):
        raise InputError("time/event", "give both or neither", "")
    if time is None:
        return df.reset_index(drop=True), None
    drop = [c for c in (time, event) if isinstance(c, str)]
    t_col = df[time] if isinstance(time, str) else time
    e_col = df[event] if isinstance(event, str) else event
    t, e = survival_arrays(t_col, e_col)
    if t.size != len(df):
        raise InputError("time", f"has {t.size} values for {len(df)} rows", "align them")
    return df.drop(columns=drop).reset_index(drop=True), (t, e)
