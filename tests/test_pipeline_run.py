"""`ceusflow run` end to end on a tiny simulated cohort: output contract, caching, no identifiers."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest

from ceusflow.pipeline.analysis import PREDICTION_COLUMNS
from ceusflow.pipeline.config import StudyConfig
from ceusflow.pipeline.run import run_study
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
    summary = run_study(sim.cohort_dir, root / "results", config, store=root / "stores" / "c.zarr", workers=2,
                        progress=False, log=lambda line: None)
    return sim, summary, config, root


def test_outputs_contract(study) -> None:
    sim, summary, _, root = study
    results = summary.results
    assert {"predictions.csv", "metrics.json", "report.html", "figures", "models"} <= {p.name for p in results.iterdir()}
    pred = pd.read_csv(results / "predictions.csv")
    assert tuple(pred.columns) == PREDICTION_COLUMNS
    assert set(pred["split"]) == {"train", "val"} and set(pred["treatment"]) <= {"RFA", "SR"}
    assert pred[["signature_rfa", "signature_sr"]].notna().all().all()
    assert (results / "models" / "R-RFA" / "model.safetensors").is_file()


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
