"""The classical comparator: a ridge-penalised Cox model on handcrafted time-intensity features.

Takes a DataFrame of features per patient (whatever the preprocessing computes: peak intensity,
time to peak, wash-in / wash-out slopes, AUC, per phase), so it does not depend on how they are
computed. Fitted on the training patients of one arm only; missing values are imputed with the
*training* medians; the ridge penalty follows ``ceusflow.survival.fit_cox`` (lifelines scale).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ceusflow.errors import InputError
from ceusflow.survival import concordance, fit_cox, linear_predictor
from ceusflow.survival.concordance import Concordance
from ceusflow.survival.cox import CoxFit

__all__ = ["BaselineResult", "fit_baseline", "evaluate_baseline"]


@dataclass(frozen=True)
class BaselineResult:
    """A handcrafted-feature Cox model and its evaluation.

    Attributes
    ----------
    fit : CoxFit
        The penalised Cox fit on the training patients.
    medians : Series
        Training medians used to impute missing feature values.
    risk : Series
        Log relative hazard of every patient given (index: patient key).
    train_cindex, valid_cindex : Concordance
        Harrell's C (with the infinitesimal-jackknife 95 % CI) on the training and the
        validation patients.
    """

    fit: CoxFit
    medians: pd.Series
    risk: pd.Series
    train_cindex: Concordance
    valid_cindex: Concordance


def fit_baseline(features: pd.DataFrame, duration: Sequence[float] | np.ndarray,
                 event: Sequence[bool] | np.ndarray, *, penalizer: float = 0.1
                 ) -> tuple[CoxFit, pd.Series]:
    """Fit the penalised Cox model on training patients.

    Parameters
    ----------
    features : DataFrame (patient, feature)
        Numeric handcrafted features of the training patients.
    duration, event : array-like (patient,)
        Follow-up (months) and progression, aligned with the rows of ``features``.
    penalizer : float
        Ridge penalty of :func:`ceusflow.survival.fit_cox`.

    Returns
    -------
    tuple of (CoxFit, Series)
        The fit and the training medians used for imputation.
    """
    numeric = _numeric(features)
    medians = numeric.median()
    return fit_cox(duration, event, numeric.fillna(medians), penalizer=penalizer), medians


def evaluate_baseline(features: pd.DataFrame, duration: pd.Series, event: pd.Series,
                      train_patients: Sequence[str], *, penalizer: float = 0.1) -> BaselineResult:
    """Fit on the training patients, score everyone, report train and validation C-indices.

    Parameters
    ----------
    features : DataFrame
        Features of the patients of one arm, indexed by patient key.
    duration, event : Series
        Outcomes indexed by patient key (at least every row of ``features``).
    train_patients : sequence of str
        Training keys; every other row of ``features`` is validation.
    penalizer : float
        Ridge penalty.

    Returns
    -------
    BaselineResult
    """
    keys = features.index.astype(str)
    is_train = keys.isin([str(k) for k in train_patients])
    if is_train.sum() < 2 or (~is_train).sum() < 2:
        raise InputError("train_patients", f"leaves {int(is_train.sum())} training and "
                         f"{int((~is_train).sum())} validation patients", "need >= 2 of each")
    missing = keys.difference(duration.index.astype(str))
    if len(missing):
        raise InputError("duration", f"has no row for {len(missing)} patient(s)",
                         "pass outcomes for every patient with features")
    t = duration.set_axis(duration.index.astype(str)).reindex(keys).to_numpy(float)
    e = event.set_axis(event.index.astype(str)).reindex(keys).to_numpy().astype(bool)
    fit, medians = fit_baseline(features[is_train], t[is_train], e[is_train], penalizer=penalizer)
    lp = linear_predictor(fit, _numeric(features).fillna(medians))
    risk = pd.Series(lp, index=features.index, name="baseline_risk")
    c_train = concordance(t[is_train], e[is_train], lp[is_train])
    c_valid = concordance(t[~is_train], e[~is_train], lp[~is_train])
    return BaselineResult(fit, medians, risk, c_train, c_valid)


def _numeric(features: pd.DataFrame) -> pd.DataFrame:
    bad = [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    if bad:
        raise InputError("features", f"non-numeric column(s) {bad}", "one-hot encode or drop them")
    if features.shape[1] == 0:
        raise InputError("features", "has no columns", "pass the time-intensity features")
    return features.astype(float)
