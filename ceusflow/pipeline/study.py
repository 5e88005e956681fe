"""The paper's analysis on a per-patient table: pure functions from signatures to numbers and figures.

Input: a DataFrame indexed by pseudonymous patient key with ``treatment``, ``duration`` (months),
``event``, ``split`` (train|val), the clinical covariates, and both models' signatures
``signature_rfa``/``signature_sr`` (higher = higher risk); the handcrafted baseline also takes a
table of time-intensity features per patient. Nothing here reads or writes files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ceusflow import survival
from ceusflow.pipeline.config import StudyConfig

TREATMENTS = ("RFA", "SR")
#: Candidate clinical covariates of the nomograms, coded as the paper's Fig. 3 and Table 1 do.
CANDIDATES = {
    "age_gt60": lambda d: (d["age"] > 60).astype(float),
    "cirrhosis": lambda d: d["cirrhosis"].astype(float),
    "hbv": lambda d: (d["etiology"] == "HBV").astype(float),
    "afp_ge200": lambda d: (pd.to_numeric(d["afp"], errors="coerce") >= 200).astype(float),
    "alt_gt40": lambda d: (d["alt"] > 40).astype(float),
    "wbc": lambda d: d["wbc"].astype(float),
    "plt_lt100": lambda d: (d["plt"] < 100).astype(float),
    "pt": lambda d: d["pt"].astype(float),
    "tbil": lambda d: d["tbil"].astype(float),
    "alb_lt35": lambda d: (d["alb"] < 35).astype(float),
    "perivascular": lambda d: d["perivascular"].astype(float),
    "periphery": lambda d: d["periphery"].astype(float),
    "size_gt2": lambda d: (d["tumor_size_cm"] > 2).astype(float),
    "albi_grade": lambda d: d["albi_grade"].astype(float),
}

#: Ridge penalty of the handcrafted TIC baseline (lifelines scale; fixed, not tuned).
BASELINE_PENALIZER = 0.1


@dataclass
class StudyResults:
    """Numbers, per-patient predictions and figures of one study."""

    metrics: dict[str, Any] = field(default_factory=dict)
    predictions: pd.DataFrame | None = None
    figures: dict[str, Figure] = field(default_factory=dict)


def design_matrix(patients: pd.DataFrame) -> pd.DataFrame:
    """Candidate covariates (paper coding) for every patient; rows with a missing value keep NaN."""
    return pd.DataFrame({name: code(patients) for name, code in CANDIDATES.items()}, index=patients.index)


def _cindex(group: pd.DataFrame, score: pd.Series, config: StudyConfig) -> dict[str, float]:
    c = survival.concordance(group["duration"], group["event"], score, ci="ij")
    return {"estimate": c.estimate, "low": c.low, "high": c.high, "n": int(len(group))}


def signature_metrics(patients: pd.DataFrame, arm: str,
                      config: StudyConfig) -> tuple[dict[str, Any], dict[str, Figure]]:
    """R-RFA or R-SR on its own group: cut-point on training, then KM, log-rank, HR, C, td-AUC per cohort."""
    own = patients[patients["treatment"] == arm]
    sig = f"signature_{arm.lower()}"
    train, val = own[own["split"] == "train"], own[own["split"] == "val"]
    cut = survival.cutpoint(train["duration"], train["event"], train[sig], min_prop=config.statistics.cut_min_prop,
                            max_prop=config.statistics.cut_max_prop)
    out: dict[str, Any] = {"cutpoint": {"threshold": cut.threshold, "statistic": cut.statistic,
                                        "p_value_lau94": cut.p_value}}
    figures: dict[str, Figure] = {}
    for name, cohort in (("train", train), ("val", val)):
        high = survival.stratify(cohort[sig], cut.threshold)
        groups = np.where(high, "high", "low")
        res: dict[str, Any] = {"c_index": _cindex(cohort, cohort[sig], config),
                               "share_high_risk": float(high.mean())}
        if 0 < high.sum() < len(high):
            lr = survival.logrank(cohort["duration"], cohort["event"], groups)
            res["logrank_p"] = lr.p_value
            try:
                hr = survival.hazard_ratio(cohort["duration"], cohort["event"], groups)
                res["hr"] = {"estimate": hr.estimate, "low": hr.low, "high": hr.high, "p": hr.p_value}
            except ValueError as err:  # InputError: not estimable in this cohort
                res["hr"] = {"note": str(err)}
            km = survival.kaplan_meier(cohort["duration"], cohort["event"], groups)
            figures[f"km_{arm}_{name}"] = survival.plot_kaplan_meier(
                km, logrank=lr, title=f"R-{arm} signature, {name} cohort (cut on training)")
        res["td_auc_24m"] = _td_auc(train, cohort, sig, config)
        out[name] = res
    roc = _td_roc_figure(train, val, sig, arm, config)
    if roc is not None:
        figures[f"tdroc_{arm}"] = roc
    return out, figures


def _td_roc_figure(train: pd.DataFrame, val: pd.DataFrame, sig: str, arm: str,
                   config: StudyConfig) -> Figure | None:
    """Time-dependent ROC of the signature at the horizon, training and validation cohorts on one plot."""
    horizon = config.statistics.horizon_months
    fig = Figure(figsize=(5.2, 5.2))
    ax = fig.subplots()
    drawn = 0
    for name, cohort in (("training", train), ("validation", val)):
        try:
            roc = survival.td_roc(train["duration"], train["event"], cohort["duration"], cohort["event"],
                                  cohort[sig], horizon=horizon)
        except ValueError:  # InputError: no case or no control at the horizon in this cohort
            continue
        area = float(np.trapezoid(roc.tpr.values, roc.fpr.values))
        survival.plot_td_roc(roc, ax=ax, label=f"{name} (AUC {area:.3f})",
                             title=f"R-{arm} signature: time-dependent ROC at {horizon:g} months")
        drawn += 1
    return fig if drawn else None


def _td_auc(train: pd.DataFrame, cohort: pd.DataFrame, sig: str, config: StudyConfig) -> dict[str, float]:
    try:
        auc = survival.td_auc(train["duration"], train["event"], cohort["duration"], cohort["event"], cohort[sig],
                              horizon=config.statistics.horizon_months, n_boot=config.statistics.n_boot,
                              rng=config.seed)
    except ValueError as err:  # InputError: horizon outside follow-up, no cases...
        return {"estimate": float("nan"), "note": str(err)}
    return {"estimate": auc.estimate, "low": auc.low, "high": auc.high}


def screen_candidates(duration: pd.Series, event: pd.Series, x: pd.DataFrame, *, p_max: float = 0.1,
                      events_per_term: int = 10) -> list[str]:
    """Univariable Cox screening of candidate covariates, as the paper's "significant prognostic values".

    Keeps covariates with univariable p < ``p_max``, strongest first, at most one per
    ``events_per_term`` events (the usual events-per-variable rule), so that small cohorts do not
    feed stepwise selection more terms than their events can support.
    """
    pvals = {}
    for name in x.columns:
        if x[name].nunique() > 1:
            fit = survival.fit_cox(duration, event, x[[name]])
            if fit.converged:
                pvals[name] = float(fit.params.loc[name, "p"])
    ranked = sorted((p, n) for n, p in pvals.items() if p < p_max)
    cap = max(int(event.sum()) // events_per_term, 1)
    return [n for _, n in ranked[:cap]]


def _stepwise(patients: pd.DataFrame, arm: str, x: pd.DataFrame, config: StudyConfig,
              keep: tuple[str, ...] = ()) -> Any:
    train = (patients["treatment"] == arm) & (patients["split"] == "train") & x.notna().all(axis=1)
    t, e = patients.loc[train, "duration"], patients.loc[train, "event"]
    clinical = [c for c in x.columns if c not in keep]
    chosen = screen_candidates(t, e, x.loc[train, clinical], events_per_term=10)
    terms = [*chosen, *keep]
    if not terms:
        return None
    return survival.stepwise_aic(t, e, x.loc[train, terms], p_filter=config.statistics.stepwise_p_filter or None)


def fit_nomogram(patients: pd.DataFrame, arm: str, config: StudyConfig) -> tuple[Any, list[str], pd.DataFrame]:
    """Screened clinical candidates plus the signature, backward stepwise AIC (+ optional p filter).

    Fitted on the arm's training cohort. Returns the final Cox fit, the selected terms and the arm's
    design matrix (all patients). The signature is always offered to the selection.
    """
    x = design_matrix(patients).assign(signature=patients[f"signature_{arm.lower()}"])
    step = _stepwise(patients, arm, x, config, keep=("signature",))
    selected = list(step.selected) or ["signature"]
    fit = step.fit if step.selected else _fit_terms(patients, arm, x, selected)
    return fit, selected, x


def _fit_terms(patients: pd.DataFrame, arm: str, x: pd.DataFrame, terms: list[str]) -> Any:
    train = (patients["treatment"] == arm) & (patients["split"] == "train") & x[terms].notna().all(axis=1)
    return survival.fit_cox(patients.loc[train, "duration"], patients.loc[train, "event"], x.loc[train, terms])


def nomogram_predictions(patients: pd.DataFrame, config: StudyConfig) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Both nomograms' 2-year PFS for every patient, and each nomogram's selection and C-index."""
    horizon = config.statistics.horizon_months
    preds, info = pd.DataFrame(index=patients.index), {}
    for arm in TREATMENTS:
        fit, selected, x = fit_nomogram(patients, arm, config)
        complete = x[selected].notna().all(axis=1)
        pfs = pd.Series(np.nan, index=patients.index)
        pfs[complete] = survival.predict_survival(fit, x.loc[complete, selected], horizon)
        preds[f"pfs2y_{arm.lower()}"] = pfs
        own = patients["treatment"] == arm
        info[arm] = {"selected": selected, "coefficients": fit.params.reset_index().to_dict("records"),
                     "aic": fit.aic}
        for name in ("train", "val"):
            rows = own & (patients["split"] == name) & complete
            info[arm][f"c_index_{name}"] = _cindex(patients[rows], 1 - pfs[rows], config)
    return preds, info


def _clinical_only(patients: pd.DataFrame, arm: str, config: StudyConfig) -> pd.Series:
    """2-year PFS from a nomogram of clinical variables only (the decision-curve comparator)."""
    x = design_matrix(patients)
    step = _stepwise(patients, arm, x, config)
    out = pd.Series(np.nan, index=patients.index)
    if step is None or not step.selected:
        return out  # no clinical variable carries prognostic information here
    selected = list(step.selected)
    complete = x[selected].notna().all(axis=1)
    out[complete] = survival.predict_survival(step.fit, x.loc[complete, selected], config.statistics.horizon_months)
    return out


def nomogram_figures(patients: pd.DataFrame, arm: str, config: StudyConfig) -> dict[str, Figure]:
    """The drawn nomogram and the forest plot of the arm's final Cox model."""
    fit, selected, x = fit_nomogram(patients, arm, config)
    rows = (patients["treatment"] == arm) & (patients["split"] == "train")
    nomo = survival.nomogram(fit, x.loc[rows, selected].dropna(), horizon=config.statistics.horizon_months)
    return {f"nomogram_{arm}": survival.plot_nomogram(nomo), f"forest_{arm}": survival.plot_forest(fit)}


def calibration_and_dca(patients: pd.DataFrame, preds: pd.DataFrame, arm: str,
                        config: StudyConfig) -> tuple[dict[str, Any], dict[str, Figure]]:
    """Calibration (grouped KM vs predicted, slope; GB and the paper's logistic HL) and decision curves."""
    horizon = config.statistics.horizon_months
    own = patients["treatment"] == arm
    pfs = preds[f"pfs2y_{arm.lower()}"]
    clinical = _clinical_only(patients, arm, config)
    out: dict[str, Any] = {}
    figures: dict[str, Figure] = {}
    for name in ("train", "val"):
        rows = own & (patients["split"] == name) & pfs.notna()
        try:
            out[name], figs = _calibration_one(patients[rows], pfs[rows], clinical[rows], horizon)
        except ValueError as err:  # InputError: too few patients or events past the horizon
            out[name], figs = {"note": str(err)}, {}
        figures.update({f"{kind}_{arm}_{name}": fig for kind, fig in figs.items()})
    return out, figures


def _calibration_one(g: pd.DataFrame, pfs: pd.Series, clinical: pd.Series,
                     horizon: float) -> tuple[dict[str, Any], dict[str, Figure]]:
    cal = survival.calibration(g["duration"], g["event"], pfs, horizon=horizon, groups=3)
    gb = survival.gronnesby_borgan(g["duration"], g["event"], np.log(-np.log(pfs.clip(1e-9, 1 - 1e-9))), groups=5)
    known = (g["duration"] >= horizon) | g["event"]
    hl = survival.hosmer_lemeshow((g["event"] & (g["duration"] < horizon))[known], 1 - pfs[known], groups=5)
    risks = {"nomogram with signature": 1 - pfs}
    if clinical.notna().all():
        risks["clinical only"] = 1 - clinical
    dca = survival.decision_curve(g["duration"], g["event"], risks, horizon=horizon)
    metrics = {"calibration_slope": cal.slope, "calibration_in_the_large": cal.intercept,
               "gronnesby_borgan_p": gb.p_value, "hosmer_lemeshow_logistic_p": hl.p_value}
    return metrics, {"calibration": survival.plot_calibration(cal), "dca": survival.plot_decision_curve(dca)}


def baseline_metrics(patients: pd.DataFrame, features: pd.DataFrame, arm: str,
                     penalizer: float = BASELINE_PENALIZER) -> dict[str, Any]:
    """A handcrafted-feature comparator of one arm: penalised Cox on time-intensity features.

    Fitted on the arm's training patients only (:func:`ceusflow.model.evaluate_baseline`), scored
    on its training and validation patients, and compared with the arm's CNN signature on the
    validation patients (paired, Kang et al. 2015).

    Parameters
    ----------
    patients : DataFrame
        The per-patient table (module docstring).
    features : DataFrame (patient, feature)
        Handcrafted features, indexed by patient key; missing rows or values are imputed with the
        training medians (counted in the result).
    arm : {"RFA", "SR"}
    penalizer : float
        Ridge penalty (lifelines scale).

    Returns
    -------
    dict
        ``c_index_train``/``c_index_val`` with ``ci_train``/``ci_val`` (95 % IJ CI), ``n_train``,
        ``n_val``, ``features``, ``dropped_features`` (no training variation), imputation counts,
        ``converged`` and ``vs_signature_val``; or ``{"note": reason}`` when not estimable.
    """
    return comparator(patients, features, arm, penalizer)[0]


def comparator(patients: pd.DataFrame, features: pd.DataFrame, arm: str,
               penalizer: float = BASELINE_PENALIZER) -> tuple[dict[str, Any], pd.Series | None]:
    """:func:`baseline_metrics` and the comparator's log relative hazard of the arm's patients.

    Returns
    -------
    tuple of (dict, Series or None)
        The metrics, and the risk indexed by patient key (None when not estimable).
    """
    from ceusflow.model.baseline import evaluate_baseline  # ceusflow.model imports torch: only when needed

    own = patients[patients["treatment"] == arm]
    train = own.index[own["split"] == "train"]
    x = features.reindex(own.index).astype(float)
    usable = [c for c in x.columns if x.loc[train, c].nunique() > 1]
    missing = x[usable].isna()
    info: dict[str, Any] = {"features": usable, "dropped_features": [c for c in x.columns if c not in usable],
                            "penalizer": penalizer, "imputed_values": int(missing.to_numpy().sum()),
                            "imputed_patients": int(missing.any(axis=1).sum())}
    try:
        result = evaluate_baseline(x[usable], own["duration"], own["event"], list(train), penalizer=penalizer)
    except ValueError as err:  # InputError: no usable feature, too few patients or events
        return {**info, "note": str(err)}, None
    val = own.index[own["split"] == "val"]
    return ({**info, **_cindex_pair("train", result.train_cindex, len(train)),
             **_cindex_pair("val", result.valid_cindex, len(val)), "converged": bool(result.fit.converged),
             "vs_signature_val": _versus(own.loc[val], own.loc[val, f"signature_{arm.lower()}"], result.risk.loc[val],
                                         "signature minus baseline")},
            result.risk)


def combined_metrics(patients: pd.DataFrame, other_risk: pd.Series, arm: str) -> dict[str, Any]:
    """The CNN signature plus another risk score, each standardised on the training patients.

    ``z(signature) + z(other)``, with the mean and SD of each taken over the arm's training
    patients: an equal-weight ensemble with nothing fitted on outcomes beyond the two scores
    themselves. With the contrast-curve comparator as ``other`` it adds the kinetic traits the
    CNN misses (``docs/model.md``, "Session 9").

    Parameters
    ----------
    patients : DataFrame
        The per-patient table (module docstring).
    other_risk : Series
        Log relative hazard of the other model, indexed by patient key (at least the arm's).
    arm : {"RFA", "SR"}

    Returns
    -------
    dict
        ``c_index_train``/``c_index_val`` with ``ci_train``/``ci_val``, ``n_train``, ``n_val``,
        ``standardisation`` (the training means and SDs) and ``vs_signature_val`` (combined minus
        the CNN signature, paired); or ``{"note": reason}``.
    """
    own = patients[patients["treatment"] == arm]
    sig = own[f"signature_{arm.lower()}"].astype(float)
    other = other_risk.reindex(own.index).astype(float)
    train, val = own.index[own["split"] == "train"], own.index[own["split"] == "val"]
    moments = {name: (float(v.loc[train].mean()), float(v.loc[train].std())) for name, v in
               (("signature", sig), ("other", other))}
    if len(train) < 2 or any(not np.isfinite(sd) or sd <= 0 for _, sd in moments.values()):
        return {"note": f"{arm}: a score does not vary over the training patients"}
    combined = sum((v - moments[name][0]) / moments[name][1] for name, v in (("signature", sig), ("other", other)))
    out: dict[str, Any] = {"standardisation": {k: {"mean": m, "sd": sd} for k, (m, sd) in moments.items()}}
    for name, keys in (("train", train), ("val", val)):
        try:
            c = survival.concordance(own.loc[keys, "duration"], own.loc[keys, "event"], combined.loc[keys])
        except ValueError as err:
            return {**out, "note": f"{arm} {name}: {err}"}
        out.update(_cindex_pair(name, c, len(keys)))
    out["vs_signature_val"] = _versus(own.loc[val], combined.loc[val], sig.loc[val], "combined minus signature")
    return out


def _cindex_pair(name: str, c: Any, n: int) -> dict[str, Any]:
    return {f"c_index_{name}": c.estimate, f"ci_{name}": [c.low, c.high], f"n_{name}": n}


def _versus(val: pd.DataFrame, first: pd.Series, second: pd.Series, what: str) -> dict[str, Any]:
    """Paired validation C-index difference, ``first`` minus ``second`` (compareC); ``what`` names them."""
    try:
        cmp = survival.compare_concordance(val["duration"], val["event"], first, second)
    except ValueError as err:  # InputError: no comparable pair
        return {"note": str(err)}
    return {"difference": cmp.difference, "low": cmp.low, "high": cmp.high, "p_value": cmp.p_value,
            "method": f"compareC (Kang et al. 2015), {what}"}
