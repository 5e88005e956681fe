from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
import typer
import xarray as xr
from typer.testing import CliRunner

from ceusflow.cli_model import register
from ceusflow.errors import InputError
from ceusflow.model._synthetic import synthetic_roi
from ceusflow.model.cohort import read_patient_list, training_cohort

torch.set_num_threads(1)
warnings.filterwarnings("ignore", category=UserWarning)
warnings.filterwarnings("ignore", category=RuntimeWarning)

N = 36
VAL = np.arange(N) % 3 == 0  # every third patient is validation


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def _roi(split: bool = True) -> xr.Dataset:
    roi = synthetic_roi(N, n_frames=8, size=16, seed=0)
    return roi.assign(split=("patient", np.where(VAL, "val", "train"))) if split else roi


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    # Labels as the preprocessing's store returns them: NumPy's variable-width StringDType (a bare
    # astype(str) of those fails on NumPy 2.4).
    path = tmp_path_factory.mktemp("roi") / "roi.zarr"
    roi = _roi()
    text = np.dtypes.StringDType()
    roi.assign(treatment=roi.treatment.astype(text), split=roi.split.astype(text)).to_zarr(path)
    return path


@pytest.fixture(scope="module")
def model(app, store, tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "R-RFA"
    res = CliRunner().invoke(app, ["train", str(store), "--treatment", "RFA", "--out", str(out),
                                   "--profile", "cpu", "--device", "cpu", "--epochs", "2"])
    assert res.exit_code == 0, res.output
    return out, res.output


def test_train_uses_only_training_patients_of_the_arm(model):
    out, output = model
    roi = _roi()
    expected = (~VAL) & (roi.treatment.values == "RFA")
    meta = json.loads((out / "config.json").read_text())
    assert meta["info"]["treatment"] == "RFA" and meta["info"]["n_train"] == expected.sum()
    keys = set(roi.patient.values[expected])
    assert set(meta["inner_patients"]) <= keys  # inner validation drawn from training patients
    assert "Estimated training time" in output and "Best epoch" in output
    assert meta["cohort_hash"] == __import__("ceusflow.model", fromlist=["x"]).cohort_hash(
        roi.isel(patient=np.flatnonzero(expected)))


def test_train_n_models_writes_an_ensemble(app, store, tmp_path):
    res = CliRunner().invoke(app, ["train", str(store), "--treatment", "SR", "--out", str(tmp_path / "m"),
                                   "--profile", "cpu", "--device", "cpu", "--epochs", "1", "--n-models", "2"])
    assert res.exit_code == 0, res.output
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["train_config"]["n_models"] == 2 and len(meta["info"]["best_epochs"]) == 2


def test_train_compile_flag_reaches_the_training(app, store, tmp_path, monkeypatch):
    import ceusflow.model

    real, seen = ceusflow.model.train, []

    def spy(cohort, config, progress):  # compile with dynamo's "eager" backend: inductor takes minutes on a CPU
        seen.append(config.compile)
        return real(cohort, dataclasses.replace(config, compile="eager"), progress=progress)

    monkeypatch.setattr(ceusflow.model, "train", spy)
    res = CliRunner().invoke(app, ["train", str(store), "--treatment", "SR", "--out", str(tmp_path / "m"),
                                   "--profile", "cpu", "--device", "cpu", "--epochs", "1", "--compile"])
    assert res.exit_code == 0, res.output
    assert seen == ["inductor"]
    assert json.loads((tmp_path / "m" / "config.json").read_text())["train_config"]["compile"] == "eager"


def test_predict_writes_zarr_and_csv(app, model, store, tmp_path):
    out = tmp_path / "signatures.zarr"
    res = CliRunner().invoke(app, ["predict", str(model[0]), str(store), "--out", str(out)])
    assert res.exit_code == 0, res.output
    sig = xr.open_zarr(out)
    assert sig["signature_rfa"].dims == ("patient",) and sig.sizes["patient"] == N
    table = pd.read_csv(out.with_suffix(".csv"), index_col="patient")
    np.testing.assert_allclose(table["signature_rfa"].values, sig["signature_rfa"].values)
    res = CliRunner().invoke(app, ["predict", str(model[0]), str(store), "--out", str(out),
                                   "--name", "other"])
    assert res.exit_code == 0
    assert {"signature_rfa", "other"} <= set(pd.read_csv(out.with_suffix(".csv")).columns)


def test_featuremaps_writes_png_and_arrays(app, model, store, tmp_path):
    out = tmp_path / "maps.png"
    res = CliRunner().invoke(app, ["featuremaps", str(model[0]), str(store), "P0001",
                                   "--out", str(out), "--stage", "1"])
    assert res.exit_code == 0, res.output
    assert out.read_bytes()[:4] == b"\x89PNG"
    maps = xr.open_zarr(out.with_suffix(".zarr"))["attribution"]
    assert maps.dims == ("phase", "time", "y", "x")


def test_train_without_split_or_list_fails_in_one_line(app, tmp_path):
    path = tmp_path / "nosplit.zarr"
    _roi(split=False).to_zarr(path)
    res = CliRunner().invoke(app, ["train", str(path), "--treatment", "SR", "--out",
                                   str(tmp_path / "m")])
    assert res.exit_code == 2
    assert "no 'split'" in res.output and len(res.output.strip().splitlines()) == 1


def test_bad_inputs_exit_2(app, store, tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["train", str(store), "--treatment", "TACE", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "TACE" in res.output
    res = runner.invoke(app, ["predict", str(tmp_path / "nomodel"), str(store)])
    assert res.exit_code == 2
    res = runner.invoke(app, ["train", str(tmp_path / "missing.zarr"), "--treatment", "SR",
                              "--out", str(tmp_path / "m")])
    assert res.exit_code == 2 and "does not exist" in res.output


def test_patient_list_formats(tmp_path):
    text = tmp_path / "train.txt"
    text.write_text("# training\nP0001\nP0002\n\n")
    assert read_patient_list(text) == ["P0001", "P0002"]
    csv = tmp_path / "split.csv"
    csv.write_text("patient,split\nP0001,train\nP0002,val\nP0003,train\n")
    assert read_patient_list(csv) == ["P0001", "P0003"]


def test_training_cohort_from_list_excludes_others():
    roi = _roi(split=False)
    keys = [str(k) for k in roi.patient.values[:20]]
    cohort, text = training_cohort(roi, "SR", train_patients=keys)
    assert set(cohort.patient.values) <= set(keys)
    assert (cohort.treatment.values == "SR").all() and "SR" in text
    with pytest.raises(InputError, match="not in the ROI store"):
        training_cohort(roi, "SR", train_patients=["nobody"])


def test_train_kinetic_without_tic_fails_in_one_line(app, store, tmp_path):
    res = CliRunner().invoke(app, ["train", str(store), "--treatment", "SR", "--out", str(tmp_path / "m"),
                                   "--profile", "cpu", "--device", "cpu", "--epochs", "1", "--kinetic"])
    assert res.exit_code == 2 and "no 'tic' variable" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "m").exists()
