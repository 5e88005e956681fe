"""From signatures to the results folder: the paper's statistics, the recommendations, the report.

:func:`analyse` is pure (a per-patient table in, :class:`StudyResults` out);
:func:`analyse_and_report` adds the only effect, writing the fixed output contract.
"""

from __future__ import annotations

import functools
import html
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ceusflow import recommend as rec
from ceusflow import survival
from ceusflow.pipeline.config import StudyConfig
from ceusflow.pipeline.study import (
    TREATMENTS,
    StudyResults,
    baseline_metrics,
    calibration_and_dca,
    combined_metrics,
    comparator,
    design_matrix,
    nomogram_figures,
    nomogram_predictions,
    signature_metrics,
)
from ceusflow.report.featuremaps import EXPLANATION, FeatureMaps
from ceusflow.report.write import figure_section, save_figures, table_html, write_outputs

PREDICTION_COLUMNS = ("patient_id", "treatment", "split", "signature_rfa", "signature_sr", "risk_ori", "risk_re",
                      "pfs2y_rfa", "pfs2y_sr", "recommend", "gain_2y", "gain_2y_lo", "gain_2y_hi")
#: What the signatures are, by whether the models carry the kinetic term.
SIGNATURE_MODELS = {False: "Cox-CNN (ROI cine only)",
                    True: "Cox-CNN + kinetic term (ridge Cox on the contrast curves, frozen, the CNN trained on top)"}
#: Comparators shown beside the CNN signatures: metrics key prefix -> label in the report.
COMPARATORS = {"baseline": "handcrafted TIC baseline (perfusion parameters)",
               "contrast": "handcrafted contrast curves (dB vs parenchyma)",
               "combined": "CNN signature + contrast curves"}
CATEGORICAL_CODES = ("cirrhosis", "ecog", "perivascular", "periphery", "albi_grade")
LIMITATIONS = (
    "Observational data: treatment was chosen by a team, so each nomogram extrapolates to patients who did "
    "not receive its treatment (confounding by indication). Recommendations are hypotheses for a trial, not "
    "evidence of benefit.",
    "The bootstrap CI of the 2-year PFS gain refits the nomograms but keeps the CNN signatures and the selected "
    "covariates fixed, so it is too narrow.",
    "The cut-points are maximally selected on the training cohorts (with corrected p-values) and applied "
    "unchanged to validation; validation numbers are the honest ones.",
    "The logistic Hosmer–Lemeshow test ignores censoring; it is reported because the paper did, next to the "
    "Grønnesby–Borgan test, which does not.",
)


def _nomogram_inputs(patients: pd.DataFrame,
                     selected: dict[str, list[str]]) -> tuple[dict[str, list[str]], pd.DataFrame]:
    """Selected covariates per arm (signature named per arm) and one frame with both signatures."""
    frame = design_matrix(patients).assign(signature_rfa=patients["signature_rfa"],
                                           signature_sr=patients["signature_sr"],
                                           duration=patients["duration"], event=patients["event"])
    cols = {arm: [("signature_" + arm.lower()) if c == "signature" else c for c in selected[arm]]
            for arm in TREATMENTS}
    return cols, frame


def recommendations(patients: pd.DataFrame, config: StudyConfig, preds: pd.DataFrame,
                    selected: dict[str, list[str]]) -> tuple[pd.DataFrame, dict[str, Any], Any]:
    """CI-gated recommendations from both nomograms' predictions, and the paper's cross-stratification.

    ``preds``/``selected`` come from :func:`ceusflow.pipeline.study.nomogram_predictions`; the
    bootstrap refits the same terms on resampled training cohorts.
    """
    cols, frame = _nomogram_inputs(patients, selected)
    point = preds[np.isfinite(preds).all(axis=1)]  # a diverged nomogram gives no advice, not a crash
    frame = frame.loc[point.index]
    train = {arm: frame[(patients.loc[frame.index, "treatment"] == arm)
                        & (patients.loc[frame.index, "split"] == "train")] for arm in TREATMENTS}
    horizon = config.statistics.horizon_months
    frame = frame.loc[point.index]
    boot = functools.partial(_finite_bootstrap, train["RFA"], train["SR"], frame, cols, horizon)
    table = rec.recommend(point["pfs2y_rfa"], point["pfs2y_sr"], treatment=patients.loc[frame.index, "treatment"],
                          n_boot=config.statistics.n_boot, rng=config.seed, bootstrap_predictions=boot)
    cross, benefit, metrics = {}, {}, {}
    for arm in TREATMENTS:
        own_sig, other_sig = f"signature_{arm.lower()}", f"signature_{'sr' if arm == 'RFA' else 'rfa'}"
        group = patients[patients["treatment"] == arm]
        cut_own = _cut(patients, arm, own_sig, config)
        cut_other = _cut(patients, "SR" if arm == "RFA" else "RFA", other_sig, config)
        cross[arm] = rec.cross_stratify(group[own_sig], group[other_sig], cut_own, cut_other)
        own_pfs = point.loc[point.index.intersection(group.index), f"pfs2y_{arm.lower()}"]
        other_pfs = point.loc[own_pfs.index, f"pfs2y_{'sr' if arm == 'RFA' else 'rfa'}"]
        swap = pd.Series(cross[arm].swap, index=group.index).loc[own_pfs.index]
        benefit[arm] = rec.swap_benefit(own_pfs, other_pfs, swap.to_numpy())
        metrics[arm] = _cross_metrics(cross[arm], benefit[arm], table, arm)
    return table, metrics, (cross, benefit)


def _finite_bootstrap(train_rfa: pd.DataFrame, train_sr: pd.DataFrame, frame: pd.DataFrame,
                      cols: dict[str, list[str]], horizon: float, *, n_boot: int, rng: Any) -> Any:
    """Bootstrap nomogram predictions without the diverged or event-free replicates (counted in attrs)."""
    arr = rec.bootstrap_nomogram_predictions(train_rfa, train_sr, frame, cols, horizon=horizon, n_boot=n_boot,
                                             rng=rng)
    ok = np.isfinite(arr).all(dim=[d for d in arr.dims if d != "boot"])
    return arr.isel(boot=ok.values).assign_attrs(n_dropped=int((~ok).sum()))


def _cut(patients: pd.DataFrame, arm: str, sig: str, config: StudyConfig) -> float:
    train = patients[(patients["treatment"] == arm) & (patients["split"] == "train")]
    return survival.cutpoint(train["duration"], train["event"], train[sig], min_prop=config.statistics.cut_min_prop,
                             max_prop=config.statistics.cut_max_prop, pvalue="none").threshold


def _cross_metrics(cross: Any, benefit: Any, table: pd.DataFrame, arm: str) -> dict[str, Any]:
    received = table[table["treatment"] == arm]
    return {"subgroups": cross.table.reset_index().to_dict("records"), "swap_candidates": cross.n_swap,
            "swap_share": cross.swap_share, "swap_share_of_ori_high": cross.swap_share_of_ori_high,
            "mann_whitney_re_p": cross.mwu_re.p_value, "candidates_pfs2y_gain": benefit.mean_gain,
            "candidates_paired_t_p": benefit.t_p_value,
            "recommended_swaps_ci_gated": int(received["swap"].sum()),
            "recommended_swap_share": float(received["swap"].mean()) if len(received) else float("nan")}


def predictions_table(patients: pd.DataFrame, table: pd.DataFrame, cross: dict[str, Any]) -> pd.DataFrame:
    """The fixed ``predictions.csv`` contract, one row per patient (pseudonymous ``patient_id``)."""
    out = patients[["treatment", "split", "signature_rfa", "signature_sr"]].copy()
    for c in cross.values():
        idx = pd.Index(c.patient)
        out.loc[idx, "risk_ori"] = np.where(c.ori_high, "high", "low")
        out.loc[idx, "risk_re"] = np.where(c.re_high, "high", "low")
    out = out.join(table[["pfs2y_rfa", "pfs2y_sr", "recommend", "gain_2y", "gain_2y_lo", "gain_2y_hi"]])
    out.insert(0, "patient_id", out.index)
    return out[list(PREDICTION_COLUMNS)].reset_index(drop=True)


def analyse(patients: pd.DataFrame, config: StudyConfig, features: pd.DataFrame | None = None,
            contrast: pd.DataFrame | None = None, *, kinetic: Collection[str] = ()) -> StudyResults:
    """Every number, table and figure of the paper's results section (pure).

    ``features`` (patient, feature), when given, are the perfusion parameters of the handcrafted
    comparator (``baseline_<arm>`` in the metrics). ``contrast`` (patient, feature), when given,
    are the contrast curves of the second comparator (``contrast_<arm>``,
    :func:`ceusflow.pipeline.run.contrast_features`), also combined with the CNN signature
    (``combined_<arm>``, :func:`ceusflow.pipeline.study.combined_metrics`). The recommendations
    use the signatures. ``kinetic``: the arms whose models carry the kinetic term (``[train]
    kinetic``), which already holds the contrast curves, so no combined score is formed for them
    (``metrics["signature_model"]`` says, per arm, which model the signature comes from).
    """
    res = StudyResults()
    baseline = patients.drop(columns=["signature_rfa", "signature_sr", "split", "duration", "event"], errors="ignore")
    coded = [c for c in CATEGORICAL_CODES if c in baseline and baseline[c].notna().all()]
    baseline = baseline.astype(dict.fromkeys(coded, int))  # stored as float in Zarr; levels read 0/1, not 0.0/1.0
    res.metrics["table1"] = survival.table_one(baseline, "treatment").to_dict("records")
    res.metrics["signature_model"] = {arm: SIGNATURE_MODELS[arm in kinetic] for arm in TREATMENTS}
    for arm in TREATMENTS:
        metrics, figs = signature_metrics(patients, arm, config)
        res.metrics[f"signature_{arm}"] = metrics
        res.figures.update(figs)
        res.figures.update(nomogram_figures(patients, arm, config))
        if features is not None:
            res.metrics[f"baseline_{arm}"] = baseline_metrics(patients, features, arm)
        if contrast is not None:
            res.metrics[f"contrast_{arm}"], risk = comparator(patients, contrast, arm)
            if risk is not None and arm not in kinetic:
                res.metrics[f"combined_{arm}"] = combined_metrics(patients, risk, arm)
    preds, info = nomogram_predictions(patients, config)
    selected = {arm: info[arm]["selected"] for arm in TREATMENTS}
    table, cross_metrics, (cross, benefit) = recommendations(patients, config, preds, selected)
    for arm in TREATMENTS:
        cal, figs = calibration_and_dca(patients, preds, arm, config)
        res.metrics[f"nomogram_{arm}"] = {**info[arm], **cal}
        res.figures.update(figs)
    res.metrics["cross_stratification"] = cross_metrics
    res.figures["cross_stratification"] = rec.plot_cross_stratification(cross, benefit)
    res.predictions = predictions_table(patients, table, cross)
    return res


def _metrics_table(metrics: dict[str, Any]) -> pd.DataFrame:
    rows = {}
    for arm in TREATMENTS:
        m = metrics[f"signature_{arm}"]
        for cohort in ("train", "val"):
            c = m[cohort]
            rows[f"R-{arm} {cohort}"] = {
                "C-index": c["c_index"]["estimate"], "C low": c["c_index"]["low"], "C high": c["c_index"]["high"],
                "HR high vs low": c.get("hr", {}).get("estimate", float("nan")),
                "log-rank p": c.get("logrank_p", float("nan")), "share high risk": c["share_high_risk"],
                "td-AUC 24 mo": c["td_auc_24m"].get("estimate", float("nan"))}
        for key, label in COMPARATORS.items():
            rows.update(_baseline_rows(metrics.get(f"{key}_{arm}"), f"{label}, {arm}"))
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("model, cohort")


def _baseline_rows(m: dict[str, Any] | None, label: str) -> dict[str, dict[str, float]]:
    """A comparator's C-index rows of the table (other columns empty)."""
    if not m or "note" in m:
        return {}
    return {f"{label} {cohort}": {
        "C-index": m[f"c_index_{cohort}"], "C low": m[f"ci_{cohort}"][0], "C high": m[f"ci_{cohort}"][1]}
        for cohort in ("train", "val")}


def _baseline_notes(metrics: dict[str, Any]) -> str:
    """One line per arm and comparator: the paired validation comparison, or why it is missing."""
    lines = []
    for arm in TREATMENTS:
        for key, label in COMPARATORS.items():
            m = metrics.get(f"{key}_{arm}")
            if m is None:
                continue
            v = m.get("vs_signature_val", {})
            first, second = (label, f"R-{arm} signature") if key == "combined" else (f"R-{arm} signature", label)
            if "note" in m:
                text = f"{label} not estimable: {m['note']}"
            elif "difference" in v:
                text = (f"validation C-index, {first} minus {second}: {v['difference']:+.3f} "
                        f"(95 % CI {v['low']:+.3f} to {v['high']:+.3f}; paired compareC p = {v['p_value']:.3g})")
            else:
                text = f"paired comparison of the {label} with the signature not estimable: {v.get('note', '')}"
            lines.append(f"<p>{arm}: {html.escape(text)}</p>")
    return "".join(lines)


_KINDS = {"km": "Kaplan–Meier by the {arm} signature's training cut-point", "calibration": "{arm} nomogram calibration",
          "dca": "{arm} nomogram decision curve", "nomogram": "{arm} nomogram (2-year PFS)",
          "forest": "{arm} nomogram: hazard ratios",
          "tdroc": "Time-dependent ROC at 2 years of the {arm} signature (cumulative cases, dynamic controls)"}
_COHORTS = {"train": ", training cohort", "val": ", validation cohort"}


def caption(name: str) -> str:
    """Readable caption for a figure name like ``km_RFA_val``."""
    kind, *rest = name.split("_")
    if kind not in _KINDS:
        return name.replace("_", " ")
    arm = rest[0] if rest else ""
    label = f"R-{arm}" if kind in ("km", "tdroc") else arm
    return _KINDS[kind].format(arm=label) + (_COHORTS.get(rest[1], "") if len(rest) > 1 else "")


def _sections(res: StudyResults, pngs: dict[str, bytes], maps: FeatureMaps | None = None) -> list[tuple[str, str]]:
    table1 = pd.DataFrame(res.metrics["table1"])
    table1 = table1.set_index(table1.columns[0])
    cross = pd.DataFrame({arm: pd.Series({k: v for k, v in m.items() if k != "subgroups"}, dtype=object)
                          for arm, m in res.metrics["cross_stratification"].items()})  # counts stay integers
    captions = {name: caption(name) for name in pngs} | (maps.captions if maps else {})
    return [
        ("Table 1: characteristics by treatment", table_html(table1)),
        ("Radiomics signatures: discrimination and stratification",
         table_html(_metrics_table(res.metrics)) + _baseline_notes(res.metrics)
         + figure_section(pngs, "km_", captions) + figure_section(pngs, "tdroc_", captions)),
        *([("Feature maps", f"<p class='note'>{html.escape(EXPLANATION)}</p>"
            + figure_section(pngs, "featuremap_", captions))] if maps and maps.figures else []),
        ("Nomograms", figure_section(pngs, "nomogram_", captions) + figure_section(pngs, "forest_", captions)),
        ("Calibration at 2 years", figure_section(pngs, "calibration_", captions)),
        ("Decision curves at 2 years", figure_section(pngs, "dca_", captions)),
        ("Cross-stratification and recommendations (paper Fig. 5)",
         table_html(cross.rename_axis("quantity")) + figure_section(pngs, "cross_", captions)),
        ("Limitations", "".join(f"<p class='note'>{html.escape(t)}</p>" for t in limitations(res.metrics, maps))),
    ]


def limitations(metrics: dict[str, Any], maps: FeatureMaps | None = None) -> list[str]:
    """The fixed limitations plus those of the handcrafted baseline and the feature maps, when shown."""
    out = list(LIMITATIONS)
    base = {arm: metrics[f"baseline_{arm}"] for arm in TREATMENTS if f"baseline_{arm}" in metrics}
    if base:
        imputed = ", ".join(f"{arm} {m['imputed_values']} value(s) in {m['imputed_patients']} patient(s)"
                            for arm, m in base.items())
        out.append("The handcrafted baseline is a ridge-penalised Cox model (fixed penalty, not tuned) on the "
                   "time-intensity parameters of the automatically tracked ROI parts; missing parameters were "
                   f"imputed with the training medians ({imputed}). It is one classical comparator, not the best "
                   "possible one.")
    with_term = [arm for arm, model in metrics.get("signature_model", {}).items() if model == SIGNATURE_MODELS[True]]
    if with_term:
        names = " and ".join("R-" + a for a in with_term)
        verb = "signature includes" if len(with_term) == 1 else "signatures include"
        out.append(f"The {names} {verb} the kinetic term: a ridge Cox model on the contrast curves, fitted on each "
                   "network's inner-fit patients and frozen before the network was trained on top of it. The "
                   "contrast-curve comparator is therefore part of the signature; the feature maps show the "
                   "network's part only.")
    if any(f"contrast_{arm}" in metrics for arm in TREATMENTS):
        out.append("The contrast-curve comparator is the same ridge Cox model on each ROI part's mean power relative "
                   "to the parenchyma ring 10-20 mm outside the tumour, in dB, in 15-s bins; that ring lies outside "
                   "the ROI the CNN sees.")
    if any(f"combined_{arm}" in metrics for arm in TREATMENTS):
        out.append("'CNN signature + contrast curves' adds the two log-hazards, each standardised on the training "
                   "patients; the nomograms and recommendations use the CNN signatures alone.")
    if maps and maps.figures:
        out.append("Feature maps are shown for the highest- and lowest-risk validation patient of each treatment "
                   "only; Grad-CAM of the last convolution stage is coarse (a few cells per ROI, interpolated) and "
                   "shows where the model's evidence sits, not a causal or validated finding.")
    return out


def analyse_and_report(patients: pd.DataFrame, config: StudyConfig, results: Path, *,
                       features: pd.DataFrame | None = None, contrast: pd.DataFrame | None = None,
                       featuremaps: FeatureMaps | None = None, kinetic: Collection[str] = ()) -> Path:
    """Run :func:`analyse` and write ``predictions.csv``, ``metrics.json``, ``figures/``, ``report.html``.

    ``features``, ``contrast``: handcrafted features of the comparators (see :func:`analyse`);
    ``featuremaps``: figures of :func:`ceusflow.report.featuremaps.feature_maps`, saved and shown
    in the report; ``kinetic``: see :func:`analyse`.
    """
    res = analyse(patients, config, features, contrast, kinetic=kinetic)
    if featuremaps is not None:
        res.figures.update(featuremaps.figures)
        res.metrics["featuremaps"] = featuremaps.metrics
    pngs = save_figures(res.figures, results / "figures")
    return write_outputs(results, metrics=res.metrics, predictions=res.predictions,
                         sections=_sections(res, pngs, featuremaps), title="ceusflow study report")
