"""The paper's analysis on a per-patient table (signatures from the simulator's true hazards)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ceusflow.pipeline import study
from ceusflow.pipeline.config import StudyConfig
from ceusflow.simulate import simulate_patients


@pytest.fixture(scope="module")
def patients() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    p = simulate_patients(300, rng)
    p.index = pd.Index([f"P{i:03d}" for i in range(len(p))], name="patient")
    p = p.rename(columns={"pfs_months": "duration", "progression": "event"}).astype({"event": bool})
    p["signature_rfa"] = p["log_hazard_rfa"] + rng.normal(0, 0.5, len(p))
    p["signature_sr"] = p["log_hazard_sr"] + rng.normal(0, 0.5, len(p))
    p["split"] = np.where(rng.random(len(p)) < 2 / 3, "train", "val")
    return p


def test_signature_metrics_cut_on_training_only(patients: pd.DataFrame) -> None:
    config = StudyConfig()
    metrics, figures = study.signature_metrics(patients, "RFA", config)
    assert metrics["val"]["c_index"]["estimate"] > 0.6
    c = metrics["train"]["c_index"]
    assert c["low"] < c["estimate"] < c["high"]
    shuffled = patients.copy()
    val = shuffled["split"] == "val"
    shuffled.loc[val, "signature_rfa"] = shuffled.loc[val, "signature_rfa"].sample(frac=1, random_state=1).to_numpy()
    again, _ = study.signature_metrics(shuffled, "RFA", config)
    assert again["cutpoint"]["threshold"] == metrics["cutpoint"]["threshold"]
    assert {"km_RFA_train", "km_RFA_val", "tdroc_RFA"} <= set(figures)
    # the td-ROC legend's AUC (trapezoid of the drawn curve) is the reported td-AUC
    legend = [t.get_text() for t in figures["tdroc_RFA"].axes[0].get_legend().get_texts()]
    val_auc = metrics["val"]["td_auc_24m"]["estimate"]
    assert any(t.startswith("validation") and f"{val_auc:.3f}" in t for t in legend), legend


def test_nomograms_predict_both_treatments(patients: pd.DataFrame) -> None:
    preds, info = study.nomogram_predictions(patients, StudyConfig())
    assert set(preds.columns) == {"pfs2y_rfa", "pfs2y_sr"}
    assert preds.notna().all().all() and ((preds > 0) & (preds < 1)).all().all()
    assert "signature" in info["RFA"]["selected"] and "signature" in info["SR"]["selected"]
    truth = patients[["pfs24_rfa", "pfs24_sr"]].to_numpy()
    assert np.corrcoef(preds["pfs2y_rfa"], truth[:, 0])[0, 1] > 0.5


def test_calibration_and_decision_curves(patients: pd.DataFrame) -> None:
    preds, _ = study.nomogram_predictions(patients, StudyConfig())
    metrics, figures = study.calibration_and_dca(patients, preds, "SR", StudyConfig())
    assert 0 <= metrics["val"]["gronnesby_borgan_p"] <= 1
    assert {"calibration_SR_val", "dca_SR_val"} <= set(figures)


def _tic_like(patients: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Two informative "TIC" features (true log-hazards + noise), one nuisance, one constant."""
    own = np.where(patients["treatment"] == "RFA", patients["log_hazard_rfa"], patients["log_hazard_sr"])
    return pd.DataFrame({"washout_60_tumour": own + rng.normal(0, 0.7, len(patients)),
                         "peak_enhancement_rim": -own + rng.normal(0, 1.0, len(patients)),
                         "mtt_core": rng.normal(20, 5, len(patients)), "constant": 1.0}, index=patients.index)


def test_baseline_fits_on_training_only_and_matches_an_independent_fit(patients: pd.DataFrame) -> None:
    from sksurv.metrics import concordance_index_censored

    from ceusflow import survival

    feats = _tic_like(patients, np.random.default_rng(3))
    feats.iloc[:12, 0] = np.nan  # imputed with the training median, counted
    m = study.baseline_metrics(patients, feats, "RFA")
    assert m["dropped_features"] == ["constant"] and m["converged"]
    own = patients[patients["treatment"] == "RFA"]
    assert m["imputed_values"] == m["imputed_patients"] == int(feats.loc[own.index].iloc[:, 0].isna().sum())
    train, val = own[own["split"] == "train"], own[own["split"] == "val"]
    assert (m["n_train"], m["n_val"]) == (len(train), len(val))
    x = feats.loc[own.index, m["features"]]
    x = x.fillna(x.loc[train.index].median())
    fit = survival.fit_cox(train["duration"], train["event"], x.loc[train.index], penalizer=study.BASELINE_PENALIZER)
    lp = survival.linear_predictor(fit, x.loc[val.index])
    ref = concordance_index_censored(val["event"].to_numpy(), val["duration"].to_numpy(), lp)[0]
    assert m["c_index_val"] == pytest.approx(ref, abs=1e-12) and m["c_index_val"] > 0.6
    assert m["ci_val"][0] < m["c_index_val"] < m["ci_val"][1]
    c_sig = concordance_index_censored(val["event"].to_numpy(), val["duration"].to_numpy(),
                                       val["signature_rfa"].to_numpy())[0]
    assert m["vs_signature_val"]["difference"] == pytest.approx(c_sig - ref, abs=1e-12)
    assert 0 <= m["vs_signature_val"]["p_value"] <= 1
    changed = feats.copy()
    changed.loc[val.index, "washout_60_tumour"] = np.random.default_rng(4).normal(0, 1, len(val))
    again = study.baseline_metrics(patients, changed, "RFA")
    assert again["c_index_train"] == m["c_index_train"] and again["c_index_val"] != m["c_index_val"]


def test_baseline_without_features_is_a_note_not_a_crash(patients: pd.DataFrame) -> None:
    m = study.baseline_metrics(patients, pd.DataFrame(index=patients.index[:5]), "SR")
    assert "note" in m and m["features"] == [] and "c_index_val" not in m


def test_combined_is_the_sum_of_training_standardised_scores(patients: pd.DataFrame) -> None:
    from sksurv.metrics import concordance_index_censored

    feats = _tic_like(patients, np.random.default_rng(3))
    m_base, risk = study.comparator(patients, feats, "RFA")
    assert risk is not None and m_base["c_index_val"] == study.baseline_metrics(patients, feats, "RFA")["c_index_val"]
    m = study.combined_metrics(patients, risk, "RFA")
    own = patients[patients["treatment"] == "RFA"]
    train, val = own[own["split"] == "train"], own[own["split"] == "val"]
    sig, other = own["signature_rfa"], risk.loc[own.index]
    z = ((sig - sig.loc[train.index].mean()) / sig.loc[train.index].std()
         + (other - other.loc[train.index].mean()) / other.loc[train.index].std())
    for name, rows in (("train", train), ("val", val)):
        ref = concordance_index_censored(rows["event"].to_numpy(), rows["duration"].to_numpy(), z.loc[rows.index])[0]
        assert m[f"c_index_{name}"] == pytest.approx(ref, abs=1e-12)
        assert m[f"ci_{name}"][0] < m[f"c_index_{name}"] < m[f"ci_{name}"][1]
    c_sig = concordance_index_censored(val["event"].to_numpy(), val["duration"].to_numpy(), sig.loc[val.index])[0]
    assert m["vs_signature_val"]["difference"] == pytest.approx(m["c_index_val"] - c_sig, abs=1e-12)
    # a scale change of either score changes nothing (each is standardised); a constant one is a note
    assert study.combined_metrics(patients, 7.0 * risk - 3.0, "RFA")["c_index_val"] == pytest.approx(m["c_index_val"])
    assert "note" in study.combined_metrics(patients, risk * 0.0, "RFA")
