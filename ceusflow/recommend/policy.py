"""Per-patient treatment recommendation with a bootstrap CI, and its value on simulated truth.

Beyond the paper: every patient (not only the cross-stratified swap candidates) gets the expected
2-year PFS gain of the other treatment over the one received, read from the two nomograms, with a
percentile-bootstrap CI from refitting both nomograms on bootstrap resamples of their training
sets. "Swap" is said only when that CI lies entirely above zero.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from numpy.typing import NDArray

from ceusflow.conventions import DURATION, EVENT, PATIENT, TREATMENT, TREATMENTS
from ceusflow.errors import ConvergenceWarning, InputError
from ceusflow.recommend._inputs import aligned, vector
from ceusflow.survival.cox import fit_cox, predict_survival

#: A precomputed (n_boot, n_patients, 2) array (last axis RFA, SR), a DataArray with dims
#: ``boot, patient, treatment``, or a callable ``f(*, n_boot, rng)`` returning either.
BootstrapSource = NDArray[np.float64] | xr.DataArray | Callable[..., Any]
Covariates = Sequence[str] | Mapping[str, Sequence[str]]


def _generator(rng: np.random.Generator | int | None) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _covariates_for(covariates: Covariates, arm: str) -> list[str]:
    if isinstance(covariates, Mapping):
        if arm not in covariates:
            raise InputError("covariates", f"no entry for {arm}", f"give covariates for {TREATMENTS}")
        return list(covariates[arm])
    return list(covariates)


def _check_frame(frame: pd.DataFrame, name: str, columns: list[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputError(name, f"missing columns {missing}", "add them or change covariates")


def _fit_predict(train: pd.DataFrame, patients: pd.DataFrame, cols: list[str], horizon: float,
                 idx: NDArray[np.intp] | None = None) -> tuple[NDArray[np.float64], bool]:
    rows = train if idx is None else train.iloc[idx]
    fit = fit_cox(rows[DURATION].to_numpy(), rows[EVENT].to_numpy(), rows[cols])
    return predict_survival(fit, patients[cols], horizon), fit.converged


def _checked_inputs(train_rfa: pd.DataFrame, train_sr: pd.DataFrame, patients: pd.DataFrame,
                    covariates: Covariates) -> dict[str, tuple[pd.DataFrame, list[str]]]:
    out = {}
    for arm, train in zip(TREATMENTS, (train_rfa, train_sr), strict=True):
        cols = _covariates_for(covariates, arm)
        _check_frame(train, f"train_{arm.lower()}", [DURATION, EVENT, *cols])
        _check_frame(patients, "patients", cols)
        out[arm] = (train, cols)
    return out


def nomogram_predictions(train_rfa: pd.DataFrame, train_sr: pd.DataFrame, patients: pd.DataFrame,
                         covariates: Covariates, *, horizon: float = 24.0) -> pd.DataFrame:
    """Both nomograms' point predictions of PFS at ``horizon`` for every patient.

    Parameters
    ----------
    train_rfa, train_sr : DataFrame
        Training sets of the RFA and SR nomograms: ``duration`` (months), ``event`` (0/1) and the
        covariate columns.
    patients : DataFrame
        Patients to score (index = patient labels), with every covariate column of both models.
    covariates : sequence of str or mapping {"RFA": [...], "SR": [...]}
        Nomogram covariates (e.g. ``signature_rfa, age, plt, tumor_size_cm`` for RFA).
    horizon : float
        Time at which PFS is read, months (the paper: 24).

    Returns
    -------
    DataFrame
        Indexed by patient, columns ``pfs2y_rfa`` and ``pfs2y_sr`` (probabilities at ``horizon``).
    """
    inputs = _checked_inputs(train_rfa, train_sr, patients, covariates)
    cols = {f"pfs2y_{arm.lower()}": _fit_predict(train, patients, c, horizon)[0]
            for arm, (train, c) in inputs.items()}
    return pd.DataFrame(cols, index=patients.index.rename(PATIENT))


def bootstrap_nomogram_predictions(train_rfa: pd.DataFrame, train_sr: pd.DataFrame, patients: pd.DataFrame,
                                   covariates: Covariates, horizon: float = 24.0, n_boot: int = 200,
                                   rng: np.random.Generator | int | None = None) -> xr.DataArray:
    """Refit both nomograms on bootstrap resamples of their training sets and predict every patient.

    Replicate ``b`` draws ``rng.integers(0, n_rfa, n_rfa)`` rows of ``train_rfa`` and then
    ``rng.integers(0, n_sr, n_sr)`` rows of ``train_sr`` (with replacement), fits
    :func:`ceusflow.survival.fit_cox` with the fixed ``covariates`` (variable selection is not
    repeated) and reads :func:`ceusflow.survival.predict_survival` at ``horizon``. A resample
    without any event has no partial likelihood: that replicate's predictions are NaN (counted in
    ``attrs["n_without_events"]``; small arms draw one now and then), to be dropped like diverged
    fits.

    Parameters
    ----------
    train_rfa, train_sr : DataFrame
        Nomogram training sets: ``duration`` (months), ``event`` (0/1) and the covariates.
    patients : DataFrame
        Patients to predict (index = patient labels).
    covariates : sequence of str or mapping {"RFA": [...], "SR": [...]}
        Covariates of the two nomograms.
    horizon : float
        Months (the paper: 24).
    n_boot : int
        Bootstrap replicates.
    rng : numpy Generator, int or None
        Randomness of the resampling (an int is recorded in ``attrs["seed"]``).

    Returns
    -------
    DataArray (boot, patient, treatment)
        PFS probability at ``horizon``; ``treatment`` = ("RFA", "SR"); attrs ``horizon``,
        ``n_nonconverged`` (Cox fits that hit the iteration limit), ``n_without_events``
        (replicates left NaN) and ``seed``.
    """
    if n_boot < 2:
        raise InputError("n_boot", f"must be >= 2, got {n_boot}", "use 200 or more")
    inputs, gen = _checked_inputs(train_rfa, train_sr, patients, covariates), _generator(rng)
    out = np.empty((n_boot, len(patients), 2))
    bad = empty = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for b in range(n_boot):
            for j, (train, cols) in enumerate(inputs.values()):
                idx = gen.integers(0, len(train), len(train))
                if not np.asarray(train[EVENT].to_numpy()[idx], dtype=bool).any():
                    out[b, :, j], empty = np.nan, empty + 1
                    continue
                out[b, :, j], ok = _fit_predict(train, patients, cols, horizon, idx)
                bad += not ok
    if bad:
        warnings.warn(f"{bad} of {2 * n_boot} bootstrap Cox fits did not converge", ConvergenceWarning, stacklevel=2)
    return xr.DataArray(out, dims=("boot", PATIENT, TREATMENT),
                        coords={PATIENT: patients.index.to_numpy(), TREATMENT: list(TREATMENTS)},
                        name="pfs", attrs={"horizon": float(horizon), "n_nonconverged": bad,
                                           "n_without_events": empty,
                                           "seed": rng if isinstance(rng, int) else None})


def _boot_array(source: Any, labels: NDArray[Any], n: int) -> NDArray[np.float64]:
    if isinstance(source, xr.DataArray):
        missing = {"boot", PATIENT, TREATMENT} - set(source.dims)
        if missing:
            raise InputError("bootstrap_predictions", f"lacks dims {sorted(missing)}", "use (boot, patient, treatment)")
        _, (source,) = aligned({"bootstrap_predictions": source}, reference=labels)
        source = source.sel({TREATMENT: list(TREATMENTS)}).transpose("boot", PATIENT, TREATMENT).to_numpy()
    arr = np.asarray(source, dtype=float)
    if arr.ndim != 3 or arr.shape[1:] != (n, 2) or arr.shape[0] < 2:
        raise InputError("bootstrap_predictions", f"has shape {arr.shape}, expected (n_boot >= 2, {n}, 2)",
                         "last axis is (RFA, SR)")
    if not np.all(np.isfinite(arr)):
        raise InputError("bootstrap_predictions", "contains NaN or infinite values", "drop failed replicates")
    return arr


def _bootstrap(source: BootstrapSource | None, labels: NDArray[Any], n: int, n_boot: int,
               rng: np.random.Generator | int | None) -> NDArray[np.float64]:
    if source is None:
        raise InputError("bootstrap_predictions", "is needed for the CI of the gain",
                         "pass bootstrap_nomogram_predictions(...) or a callable f(*, n_boot, rng)")
    if callable(source):
        source = source(n_boot=n_boot, rng=_generator(rng))
    return _boot_array(source, labels, n)


def _treatment_vector(treatment: Any) -> NDArray[np.str_]:
    trt = np.asarray(treatment.to_numpy() if isinstance(treatment, pd.Series | xr.DataArray) else treatment,
                     dtype=str)
    bad = sorted(set(trt.tolist()) - set(TREATMENTS))
    if bad:
        raise InputError("treatment", f"unknown values {bad[:5]}", f"use {TREATMENTS}")
    return trt


def recommend(pfs2y_rfa: Any, pfs2y_sr: Any, *, treatment: Any, n_boot: int = 200,
              rng: np.random.Generator | int | None = None,
              bootstrap_predictions: BootstrapSource | None = None, level: float = 0.95) -> pd.DataFrame:
    """Recommend RFA or SR per patient; "swap" only when the gain's bootstrap CI excludes zero.

    Parameters
    ----------
    pfs2y_rfa, pfs2y_sr : array-like, Series or DataArray (patient)
        2-year PFS predicted by the RFA and SR nomograms (fitted on the full training sets),
        probabilities. Labelled inputs are aligned on patient labels.
    treatment : array-like (patient) of {"RFA", "SR"}
        Treatment each patient received.
    n_boot : int
        Replicates requested from a callable ``bootstrap_predictions`` (an array sets its own).
    rng : numpy Generator, int or None
        Passed to a callable ``bootstrap_predictions``; an int is recorded in ``attrs["seed"]``.
    bootstrap_predictions : ndarray (n_boot, n, 2), DataArray (boot, patient, treatment) or callable
        Both nomograms' predictions refitted on bootstrap resamples (last axis RFA, SR), e.g.
        ``bootstrap_nomogram_predictions(...)``, or ``f(*, n_boot, rng)`` returning them
        (``functools.partial(bootstrap_nomogram_predictions, train_rfa, train_sr, patients, covs)``).
    level : float
        Confidence level of the percentile CI.

    Returns
    -------
    DataFrame
        Indexed by patient: ``treatment`` (received), ``pfs2y_rfa``, ``pfs2y_sr``, ``recommend``
        (RFA|SR), ``swap`` (bool), ``gain_2y`` (other minus received, point estimate),
        ``gain_2y_lo``, ``gain_2y_hi`` (percentile bootstrap CI of the gain); probability units.
        ``attrs``: ``n_boot``, ``level``, ``seed``, ``ci``.
    """
    if not 0 < level < 1:
        raise InputError("level", f"must be in (0, 1), got {level}", "use 0.95")
    labels, (rfa, sr, trt) = aligned({"pfs2y_rfa": pfs2y_rfa, "pfs2y_sr": pfs2y_sr, "treatment": treatment})
    rfa, sr, trt = vector(rfa, "pfs2y_rfa"), vector(sr, "pfs2y_sr"), _treatment_vector(trt)
    boot = _bootstrap(bootstrap_predictions, np.asarray(labels), rfa.size, n_boot, rng)
    return _recommendation_table(np.asarray(labels), trt, rfa, sr, boot, level, rng)


def _recommendation_table(labels: NDArray[Any], trt: NDArray[np.str_], rfa: NDArray[np.float64],
                          sr: NDArray[np.float64], boot: NDArray[np.float64], level: float,
                          rng: Any) -> pd.DataFrame:
    on_rfa = trt == "RFA"
    sign = np.where(on_rfa, 1.0, -1.0)  # gain = other - received = sign * (SR - RFA)
    gain_boot = sign * (boot[..., 1] - boot[..., 0])
    lo, hi = np.quantile(gain_boot, [(1 - level) / 2, (1 + level) / 2], axis=0)
    swap = lo > 0
    other = np.where(on_rfa, "SR", "RFA")
    table = pd.DataFrame({"treatment": trt, "pfs2y_rfa": rfa, "pfs2y_sr": sr,
                          "recommend": np.where(swap, other, trt), "swap": swap,
                          "gain_2y": sign * (sr - rfa), "gain_2y_lo": lo, "gain_2y_hi": hi},
                         index=pd.Index(labels, name=PATIENT))
    table.attrs.update(n_boot=int(boot.shape[0]), level=level, ci="percentile bootstrap",
                       seed=rng if isinstance(rng, int) else None)
    return table


@dataclass(frozen=True)
class PolicyValue:
    """Mean true 2-year PFS under several treatment policies (simulated cohorts with truth).

    Attributes
    ----------
    n : int
        Patients.
    recommended, observed, oracle : float
        Mean true 2-year PFS if every patient gets the recommended treatment, the treatment
        received, or the truly better one; probability units.
    all_rfa, all_sr : float
        Mean true 2-year PFS if everyone got RFA / SR.
    gain : float
        ``recommended - observed``.
    regret : float
        ``oracle - recommended`` (>= 0).
    captured : float
        ``gain / (oracle - observed)``: share of the attainable gain realised (NaN if none).
    n_swap : int
        Patients the recommendation moves to the other treatment.
    swap_precision : float
        Share of those swaps for which the other treatment is truly better (NaN if no swap).
    n_should_swap : int
        Patients whose truly better treatment is not the one received.
    swap_recall : float
        Share of ``n_should_swap`` that the recommendation swaps (NaN if none).
    """

    n: int
    recommended: float
    observed: float
    oracle: float
    all_rfa: float
    all_sr: float
    gain: float
    regret: float
    captured: float
    n_swap: int
    swap_precision: float
    n_should_swap: int
    swap_recall: float


def _share(num: NDArray[np.bool_], den: NDArray[np.bool_]) -> float:
    return float(num[den].mean()) if den.any() else float("nan")


def policy_value(recommendation: pd.DataFrame, true_pfs2y_rfa: Any, true_pfs2y_sr: Any) -> PolicyValue:
    """Value of the recommended policy vs the observed assignment vs the oracle, on known truth.

    Parameters
    ----------
    recommendation : DataFrame
        Output of :func:`recommend` (columns ``treatment`` and ``recommend``, index = patient).
    true_pfs2y_rfa, true_pfs2y_sr : array-like or Series (patient)
        True 2-year PFS under RFA and SR (the simulator's ``pfs24_rfa``/``pfs24_sr``), aligned on
        the recommendation's index when labelled, else in its row order.

    Returns
    -------
    PolicyValue
        Mean true 2-year PFS under each policy, gain, regret and swap precision/recall.
    """
    _check_frame(recommendation, "recommendation", [TREATMENT, "recommend"])
    labels = recommendation.index.to_numpy()
    _, (t_rfa, t_sr) = aligned({"true_pfs2y_rfa": true_pfs2y_rfa, "true_pfs2y_sr": true_pfs2y_sr}, reference=labels)
    t_rfa, t_sr = vector(t_rfa, "true_pfs2y_rfa"), vector(t_sr, "true_pfs2y_sr")
    got, rec = _treatment_vector(recommendation[TREATMENT]), _treatment_vector(recommendation["recommend"])
    value = {k: np.where(v == "RFA", t_rfa, t_sr) for k, v in (("got", got), ("rec", rec))}
    oracle = np.maximum(t_rfa, t_sr)
    swap, should = rec != got, np.where(got == "RFA", t_sr > t_rfa, t_rfa > t_sr)
    means = [float(x.mean()) for x in (value["rec"], value["got"], oracle, t_rfa, t_sr)]
    room = means[2] - means[1]
    return PolicyValue(len(labels), *means, means[0] - means[1], means[2] - means[0],
                       (means[0] - means[1]) / room if room > 0 else float("nan"), int(swap.sum()),
                       _share(should, swap), int(should.sum()), _share(swap, should))
