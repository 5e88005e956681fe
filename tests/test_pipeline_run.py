"""`ceusflow run` end to end on a tiny simulated cohort: output contract, caching, no identifiers."""

from __future__ import annotations

import dataclasses
import json
import math
import re

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from ceusflow.pipeline.analysis import PREDICTION_COLUMNS, SIGNATURE_MODELS
from ceusflow.pipeline.config import StudyConfig
from ceusflow.pipeline.run import contrast_features, run_study, tic_features
from ceusflow.simulate import SimulationConfig, write_synthetic_export

# 40 patients and 2 epochs: Cox fits on a dozen training patients may diverge or separate; that is reported
# in metrics.json, not fatal. Numerical warnings are checked strictly by the statistics unit tests instead.
pytestmark = [pytest.mark.filterwarnings("ignore::ceusflow.errors.ConvergenceWarning"),
              pytest.mark.filterwarnings("ignore::RuntimeWarning")]


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("run")
    sim = write_synthetic_export(root / "cohort", SimulationConfig(n_patients=40, fps=2.0, image_size=(64, 80),
                                                                   seed=5, messy=False))
    config = StudyConfig()
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=2),
                                 statistics=dataclasses.replace(config.statistics, n_boot=20))
    # a fixed project secret: the pseudonyms, hence the split and every number, are the same in every
    # run (with a random one, the tiny arms' statistics changed from run to run)
    (root / "stores").mkdir()
    secret = root / "stores" / ".ceusflow-secret"
    secret.write_text("5e" * 32 + "\n")
    secret.chmod(0o600)
    summary = run_study(sim.cohort_dir, root / "results", config, store=root / "stores" / "c.zarr", workers=2,
                        progress=False, log=lambda line: None)
    return sim, summary, config, root


def test_outputs_contract(study) -> None:
    sim, summary, _, root = study
    results = summary.results
    expected = {"predictions.csv", "metrics.json", "report.html", "figures", "models"}
    assert expected <= {p.name for p in results.iterdir()}
    pred = pd.read_csv(results / "predictions.csv")
    assert tuple(pred.columns) == PREDICTION_COLUMNS
    assert set(pred["split"]) == {"train", "val"} and set(pred["treatment"]) <= {"RFA", "SR"}
    assert pred[["signature_rfa", "signature_sr"]].notna().all().all()
    assert (results / "models" / "R-RFA" / "model.safetensors").is_file()


def test_tic_features_one_column_per_parameter_and_part() -> None:
    peak = np.arange(6.0).reshape(2, 3)
    peak[1, 2] = np.nan
    roi = xr.Dataset({"tic_peak_enhancement": (("patient", "part"), peak),
                      "tic_mtt": (("patient", "part"), peak + 10), "tic_fit_r2": (("patient", "part"), peak)},
                     coords={"patient": ["Pa", "Pb"], "part": ["core", "tumour", "rim"]})
    feats = tic_features(roi, ("peak_enhancement", "mtt", "auc"))  # auc: not in the store, skipped
    assert list(feats.columns) == ["peak_enhancement_core", "peak_enhancement_tumour", "peak_enhancement_rim",
                                   "mtt_core", "mtt_tumour", "mtt_rim"]
    assert feats.loc["Pb", "mtt_tumour"] == 14.0 and np.isnan(feats.loc["Pb", "peak_enhancement_rim"])
    assert tic_features(roi, ("auc",)).shape == (2, 0)


def test_contrast_features_one_column_per_part_and_bin() -> None:
    t = np.arange(0.0, 40.0, 0.5)
    power = np.ones((2, 4, t.size))
    power[0, 1] = 10.0  # patient Pa: tumour 10 dB above the parenchyma throughout
    power[1, 0, t >= 30] = 0.1  # patient Pb: core 10 dB below it from 30 s on
    roi = xr.Dataset({"tic": (("patient", "part", "exam_time"), power)},
                     coords={"patient": ["Pa", "Pb"], "part": ["core", "tumour", "rim", "parenchyma"], "exam_time": t})
    feats = contrast_features(roi, bin_s=15.0)
    assert list(feats.columns) == [f"contrast_{p}_{s}s" for p in ("core", "tumour", "rim") for s in (0, 15, 30)]
    np.testing.assert_allclose(feats.loc["Pa"].to_numpy(), [0, 0, 0, 10, 10, 10, 0, 0, 0], atol=1e-12)
    np.testing.assert_allclose(feats.loc["Pb", ["contrast_core_15s", "contrast_core_30s"]], [0, -10], atol=1e-12)
    assert contrast_features(roi.drop_vars("tic")).shape == (2, 0)


def test_handcrafted_baseline_next_to_the_signatures(study) -> None:
    _, summary, _, _ = study
    metrics = json.loads((summary.results / "metrics.json").read_text())
    pred = pd.read_csv(summary.results / "predictions.csv")
    for arm in ("RFA", "SR"):
        base = metrics[f"baseline_{arm}"]
        for cohort in ("train", "val"):
            c, (lo, hi) = base[f"c_index_{cohort}"], base[f"ci_{cohort}"]
            assert math.isfinite(c) and 0 <= c <= 1 and lo <= c <= hi
        assert base["n_train"] == ((pred["treatment"] == arm) & (pred["split"] == "train")).sum()
        assert len(base["features"]) >= 9 and all(re.fullmatch(r"[a-z_0-9]+_(core|tumour|rim|parenchyma)", f)
                                                  for f in base["features"])
        contrast = metrics[f"contrast_{arm}"]
        assert all(re.fullmatch(r"contrast_(core|tumour|rim)_\d+s", f) for f in contrast["features"])
        assert contrast["n_train"] == base["n_train"]
    # the default [train] kinetic = ["RFA"]: R-RFA carries the term, so only R-SR gets a combined score
    assert metrics["signature_model"] == {"RFA": SIGNATURE_MODELS[True], "SR": SIGNATURE_MODELS[False]}
    assert "combined_RFA" not in metrics and metrics["combined_SR"]["n_val"] == metrics["baseline_SR"]["n_val"]
    for cohort in ("train", "val"):
        c, (lo, hi) = metrics["combined_SR"][f"c_index_{cohort}"], metrics["combined_SR"][f"ci_{cohort}"]
        assert math.isfinite(c) and 0 <= c <= 1 and lo <= c <= hi
    kinetic = json.loads((summary.results / "models" / "R-RFA" / "config.json").read_text())["network"]
    assert len(kinetic["kinetic_features"]) >= 9
    html = (summary.results / "report.html").read_text()
    for label in ("handcrafted TIC baseline (perfusion parameters)", "handcrafted contrast curves (dB vs parenchyma)"):
        assert f"{label}, RFA val" in html and f"{label}, SR val" in html
    assert "CNN signature + contrast curves, SR val" in html and "R-RFA signature includes the kinetic term" in html
    assert re.search(r"<td>swap_candidates</td><td>\d+</td><td>\d+</td>", html)  # counts as integers
    assert 'alt="tdroc_RFA"' in html and 'alt="tdroc_SR"' in html


def test_feature_maps_in_report_and_figures(study) -> None:
    _, summary, _, _ = study
    results = summary.results
    drawn = json.loads((results / "metrics.json").read_text())["featuremaps"]["patients"]
    assert {f"featuremap_{arm}_{rank}" for arm in ("RFA", "SR") for rank in ("highest", "lowest")} == set(drawn)
    pred = pd.read_csv(results / "predictions.csv").set_index("patient_id")
    html = (results / "report.html").read_text()
    for name, info in drawn.items():
        arm = name.split("_")[1]
        val = pred[(pred["treatment"] == arm) & (pred["split"] == "val")][f"signature_{arm.lower()}"]
        assert info["patient"] == (val.idxmax() if name.endswith("highest") else val.idxmin())
        assert (results / "figures" / f"{name}.png").is_file() and (results / "figures" / f"{name}.svg").is_file()
        assert re.search(rf'<img alt="{name}" src="data:image/png;base64,[A-Za-z0-9+/=]{{1000,}}"', html)
    assert "<h2>Feature maps</h2>" in html and "where the model looked, not why" in html


def test_no_identifier_in_results(study) -> None:
    sim, summary, _, _ = study
    ids = pd.read_csv(sim.cohort_dir / "clinical.csv")["patient_id"].astype(str)
    blob = b"".join(p.read_bytes() for p in summary.results.rglob("*") if p.is_file())
    assert not [i for i in ids if i.encode() in blob]


def test_rerun_is_cached_and_a_change_reruns_downstream_only(study) -> None:
    sim, summary, config, root = study
    lines: list[str] = []
    again = run_study(sim.cohort_dir, summary.results, config, store=root / "stores" / "c.zarr",
                      progress=False, log=lines.append)
    assert {state for state, _ in again.stages.values()} == {"cached"}
    changed = dataclasses.replace(config, statistics=dataclasses.replace(config.statistics, horizon_months=18.0))
    third = run_study(sim.cohort_dir, summary.results, changed, store=root / "stores" / "c.zarr",
                      progress=False, log=lines.append)
    ran = [name for name, (state, _) in third.stages.items() if state == "ran"]
    assert ran == ["statistics and report"]
