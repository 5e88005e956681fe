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
    assert metrics["train"]["c_index"]["low"] < metrics["train"]["c_index"]["estimate"] < metrics["train"]["c_index"]["high"]
    shuffled = patients.copy()
    val = shuffled["split"] == "val"
    shuffled.loc[val, "signature_rfa"] = shuffled.loc[val, "signature_rfa"].sample(frac=1, random_state=1).to_numpy()
    again, _ = study.signature_metrics(shuffled, "RFA", config)
    assert again["cutpoint"]["threshold"] == metrics["cutpoint"]["threshold"]
    assert {"km_RFA_train", "km_RFA_val"} <= set(figures)


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
