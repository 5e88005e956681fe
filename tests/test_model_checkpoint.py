from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ceusflow.errors import InputError
from ceusflow.model import NetworkConfig, TrainConfig, load_model, predict_risk, save_model, train
from ceusflow.model._synthetic import synthetic_roi
from ceusflow.model.attribution import attribution

torch.set_num_threads(1)

TINY = NetworkConfig(conv="2plus1d", widths=(4, 8, 8, 8), flatten_grid=2, dropout=0.1,
                     shared_weights=False, ring_bins=2)  # the radial branch's weights round-trip too


@pytest.fixture(scope="module")
def trained():
    roi = synthetic_roi(20, n_frames=6, size=16, seed=0)
    cfg = TrainConfig(network=TINY, epochs=2, batch_size=8, seed=7, device="cpu")
    return roi, train(roi, cfg, progress=False)


def test_round_trip_identical_predictions(trained, tmp_path):
    roi, result = trained
    folder = save_model(result, tmp_path / "model")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    loaded = load_model(folder)
    a = predict_risk(result.model, roi)
    b = predict_risk(loaded.model, roi)
    np.testing.assert_array_equal(a.values, b.values)
    assert loaded.config == result.config and loaded.cohort_hash == result.cohort_hash
    assert loaded.best_epoch == result.best_epoch and loaded.inner_patients == result.inner_patients
    np.testing.assert_array_equal(loaded.history.loss.values, result.history.loss.values)
    maps = attribution(loaded.model, roi, str(roi.patient.values[0]))  # Grad-CAM averaged over members
    assert np.nanmin(maps.values) >= 0 and np.isfinite(maps.values).any()


def test_config_json_contents(trained, tmp_path):
    _, result = trained
    meta = json.loads((save_model(result, tmp_path) / "config.json").read_text())
    assert meta["format"] == "ceusflow-coxcnn" and meta["seed"] == 7
    assert meta["network"]["conv"] == "2plus1d" and meta["network"]["widths"] == [4, 8, 8, 8]
    assert meta["preprocessing"]["grid"] == [16, 16] and meta["preprocessing"]["time_step_s"] == 0.5
    assert len(meta["cohort_hash"]) == 64 and "ceusflow_version" in meta


def test_load_never_calls_torch_load(trained, tmp_path, monkeypatch):
    _, result = trained
    folder = save_model(result, tmp_path)

    def forbidden(*args, **kwargs):
        raise AssertionError("torch.load must not be used")

    monkeypatch.setattr(torch, "load", forbidden)
    load_model(folder)


def test_cohort_hash_changes_with_outcomes(trained):
    from ceusflow.model import cohort_hash

    roi, result = trained
    assert cohort_hash(roi) == result.cohort_hash
    changed = roi.assign(duration=roi.duration + 1.0)
    assert cohort_hash(changed) != result.cohort_hash


def test_not_a_checkpoint_raises(tmp_path):
    with pytest.raises(InputError, match="config.json"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"format": "other"}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(InputError, match="checkpoint"):
        load_model(tmp_path)


def test_info_round_trips(trained, tmp_path):
    import dataclasses

    _, result = trained
    tagged = dataclasses.replace(result, info={"treatment": "SR", "n_train": 20})
    assert load_model(save_model(tagged, tmp_path / "m")).info == {"treatment": "SR", "n_train": 20}


def test_ensemble_is_the_mean_of_its_members_and_round_trips(tmp_path):
    roi = synthetic_roi(20, n_frames=6, size=16, seed=1)
    cfg = TrainConfig(network=TINY, epochs=2, batch_size=8, seed=3, device="cpu", n_models=2)
    result = train(roi, cfg, progress=False)
    members = [predict_risk(m, roi).values for m in result.model.members]
    assert not np.allclose(members[0], members[1])  # different inner splits and initial weights
    np.testing.assert_allclose(predict_risk(result.model, roi).values, np.mean(members, 0), rtol=1e-5, atol=1e-6)
    single = train(roi, TrainConfig(network=TINY, epochs=2, batch_size=8, seed=3, device="cpu"), progress=False)
    np.testing.assert_array_equal(members[0], predict_risk(single.model, roi).values)  # member 0 = seed 3
    assert result.history.sizes["member"] == 2 and len(result.info["best_epochs"]) == 2
    loaded = load_model(save_model(result, tmp_path / "ens"))
    np.testing.assert_array_equal(predict_risk(loaded.model, roi).values, predict_risk(result.model, roi).values)
    np.testing.assert_array_equal(loaded.history.loss.values, result.history.loss.values)
    maps = attribution(loaded.model, roi, str(roi.patient.values[0]))  # Grad-CAM averaged over members
    assert np.nanmin(maps.values) >= 0 and np.isfinite(maps.values).any()
