from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import xarray as xr

from ceusflow.errors import InputError
from ceusflow.model import (
    Augment,
    CineBatches,
    CoxCNNSurvival,
    NetworkConfig,
    TrainConfig,
    cache_decision,
    inner_split,
    predict_risk,
    train,
)
from ceusflow.model._metrics import inner_cindex
from ceusflow.model._synthetic import synthetic_roi
from ceusflow.model.batches import Draw

torch.set_num_threads(1)

TINY = NetworkConfig(widths=(4, 8, 8, 8), flatten_grid=1, dropout=0.0)
QUICK = TrainConfig(network=TINY, epochs=2, batch_size=8, seed=0, device="cpu")


@pytest.fixture(scope="module")
def roi() -> xr.Dataset:
    return synthetic_roi(24, n_frames=8, size=16, seed=0)


def _weights(trained) -> dict[str, torch.Tensor]:
    return trained.model.state_dict()


def test_train_runs_and_records_history(roi):
    trained = train(roi, QUICK, progress=False)
    assert set(trained.history.data_vars) == {"loss", "inner_loss", "inner_cindex", "seconds"}
    assert trained.history.sizes["epoch"] == 2 and 1 <= trained.best_epoch <= 2
    assert set(trained.inner_patients) <= set(roi.patient.values.tolist())
    assert not trained.model.training and trained.config.network == TINY


def test_same_seed_identical_weights(roi):
    a, b = (train(roi, QUICK, progress=False) for _ in range(2))
    for key, value in _weights(a).items():
        assert torch.equal(value, _weights(b)[key]), key


def test_progress_does_not_change_result(roi, capsys):
    a = train(roi, QUICK, progress=True)
    b = train(roi, QUICK, progress=False)
    assert "Estimated training time" in capsys.readouterr().err
    assert all(torch.equal(v, _weights(b)[k]) for k, v in _weights(a).items())


def test_other_seed_other_weights(roi):
    a = train(roi, QUICK, progress=False)
    b = train(roi, dataclasses.replace(QUICK, seed=1), progress=False)
    assert any(not torch.equal(v, _weights(b)[k]) for k, v in _weights(a).items())


def test_bright_blob_learned():
    roi = synthetic_roi(64, n_frames=8, size=16, effect=5.0, seed=1)
    cfg = TrainConfig(network=TINY, epochs=12, batch_size=16, lr=3e-3, patience=12, seed=0,
                      device="cpu")
    trained = train(roi, cfg, progress=False)
    assert float(trained.history.inner_cindex.max()) > 0.7
    test = synthetic_roi(64, n_frames=8, size=16, effect=5.0, seed=2)
    risk = predict_risk(trained.model, test)
    assert inner_cindex(test.duration.values, test.event.values, risk.values) > 0.65


def test_event_free_batches_do_not_crash():
    roi = synthetic_roi(16, n_frames=4, size=16, seed=3)
    event = np.zeros(16, dtype=bool)
    event[[0, 5, 9]] = True
    roi = roi.assign(event=("patient", event))
    trained = train(roi, dataclasses.replace(QUICK, batch_size=2), progress=False)
    assert np.isfinite(trained.history.loss.values).all()
    all_censored = roi.assign(event=("patient", np.zeros(16, dtype=bool)))
    assert train(all_censored, QUICK, progress=False).history.sizes["epoch"] >= 1


def test_a_one_patient_batch_is_skipped(roi):
    # Its partial likelihood is 1 whatever the weights, and the feature norm has no batch statistics.
    n_fit = len(inner_split(roi.event.values, QUICK.inner_fraction, QUICK.seed)[0])
    trained = train(roi, dataclasses.replace(QUICK, batch_size=n_fit - 1), progress=False)
    assert np.isfinite(trained.history.loss.values).all()


def test_predict_risk_is_labelled(roi):
    trained = train(roi, QUICK, progress=False)
    risk = predict_risk(trained.model, roi.drop_vars(["duration", "event"]))
    assert risk.name == "risk" and risk.dims == ("patient",)
    np.testing.assert_array_equal(risk.patient.values, roi.patient.values)
    shuffled = predict_risk(trained.model, roi.isel(patient=slice(None, None, -1)))
    np.testing.assert_allclose(shuffled.sel(patient=risk.patient).values, risk.values, rtol=1e-5)


@pytest.mark.filterwarnings("ignore:The data type")  # zarr v3: fixed-length string dtypes
@pytest.mark.filterwarnings("ignore:Consolidated metadata")
def test_lazy_zarr_equals_in_memory(roi, tmp_path):
    roi.chunk({"patient": 1}).to_zarr(tmp_path / "roi.zarr")
    lazy = xr.open_zarr(tmp_path / "roi.zarr")
    assert lazy.intensity.chunks is not None
    a = train(roi, dataclasses.replace(QUICK, cache=True), progress=False)
    b = train(lazy, dataclasses.replace(QUICK, cache=False), progress=False)
    assert all(torch.equal(v, _weights(b)[k]) for k, v in _weights(a).items())


def test_store_reader_reads_what_xarray_reads(roi, tmp_path):
    """Lazy items read with zarr directly equal the cached and the xarray-read ones (8-bit layout)."""
    from ceusflow.preprocess.cohort import ENCODING, STORE_SOURCE, open_rois

    # invalid frames hold a grey value in the store: every read path must zero them
    stored = roi.assign(intensity=np.rint(roi.intensity.where(roi.frame_ok, 0.5) * 255) / 255).chunk({"patient": 1})
    with pytest.warns(Warning):  # no fill value for the 8-bit encoding; zarr v3 string-dtype notes
        stored.to_zarr(tmp_path / "roi.zarr", encoding=ENCODING)
    lazy = open_rois(tmp_path / "roi.zarr")
    sub = lazy.isel(patient=[5, 1, 7]).isel(phase=[2, 0, 1])  # another order of patients and phases
    plain = sub.assign(intensity=sub.intensity.load() * 1)  # the same floats, not the store's variable
    direct, cached = CineBatches(sub, cache=False), CineBatches(plain, cache=True)
    levels = CineBatches(sub, cache=True)  # the store's 8-bit levels, cached
    assert direct._reader is not None and cached._reader is None and cached._images.dtype == torch.float32
    assert levels._images.dtype == torch.uint8 and "8-bit" in cache_decision(sub)[1]
    assert direct._reader._chunk is not None  # chunk files decoded by numcodecs, not through zarr
    for i in range(3):
        np.testing.assert_array_equal(direct[i][0].numpy(), cached[i][0].numpy())
        np.testing.assert_array_equal(levels[i][0].numpy(), cached[i][0].numpy())
    idx = torch.tensor([2, 0, 1, 2])
    batch, mask = direct.batch(idx)[:2]
    assert (~mask).any()  # some frames are invalid: they must come back as zeros
    np.testing.assert_array_equal(batch.numpy(), cached.batch(idx)[0].numpy())  # one buffer = items
    np.testing.assert_array_equal(levels.batch(idx)[0].numpy(), cached.batch(idx)[0].numpy())
    # augmented: 8-bit levels are gathered before decoding, floats after; the batches must agree
    aug = Augment(shift_px=2, gain_sd=0.2, time_jitter_frames=2)
    augmented = [CineBatches(d, cache=c, augment=aug, seed=3) for d, c in ((sub, True), (sub, False), (plain, True))]
    for ds in augmented:
        ds.set_epoch(2)
    ref_x, ref_mask = augmented[2].batch(idx)[:2]
    assert (~ref_mask).sum() > (~mask).sum()  # the time jitter made frames invalid
    for ds in augmented[:2]:
        x_aug, mask_aug = ds.batch(idx)[:2]
        np.testing.assert_array_equal(x_aug.numpy(), ref_x.numpy())
        np.testing.assert_array_equal(mask_aug.numpy(), ref_mask.numpy())
    # an axis reversed (or reordered) keeps its size but not its order: whole chunks must not be read
    for axis in ("x", "y", "time"):
        flipped = sub.isel({axis: slice(None, None, -1)})
        dim = {"x": -1, "y": -2, "time": -3}[axis]
        for cache in (False, True):
            np.testing.assert_array_equal(CineBatches(flipped, cache=cache)[0][0].numpy(),
                                          cached[0][0].flip(dim).numpy())
    (tmp_path / "roi.zarr" / "intensity" / "c" / "1").rename(tmp_path / "gone")  # an absent chunk ...
    assert direct._reader._chunk(1) is None
    np.testing.assert_array_equal(direct[1][0].numpy(), 0.0)  # ... is zarr's fill value, as xarray reads it
    changed = sub.assign(intensity=sub.intensity * 0.5)  # a computed variable: read through xarray
    assert STORE_SOURCE not in changed.intensity.encoding and CineBatches(changed, cache=False)._reader is None
    np.testing.assert_allclose(CineBatches(changed, cache=False)[0][0].numpy(), cached[0][0].numpy() * 0.5)


@pytest.mark.parametrize("monitor", ["inner_cindex", "inner_loss"])
def test_best_epoch_follows_the_monitor(roi, monitor):
    t = train(roi, dataclasses.replace(QUICK, epochs=4, patience=10, warmup_epochs=0, monitor=monitor),
              progress=False)
    values = t.history[monitor].values
    best = np.argmax(values) if monitor == "inner_cindex" else np.argmin(values)
    assert t.best_epoch == best + 1


@pytest.mark.parametrize("monitor", ["inner_cindex", "inner_loss"])
def test_early_stopping_watches_after_the_warmup(roi, monitor):
    # lr 0: every epoch scores the same, so the first watched epoch is the best and patience
    # counts from it. Without a warm-up that is epoch 1.
    frozen = dataclasses.replace(QUICK, lr=0.0, epochs=20, patience=2, monitor=monitor)
    assert train(roi, dataclasses.replace(frozen, warmup_epochs=0), progress=False).best_epoch == 1
    t = train(roi, dataclasses.replace(frozen, warmup_epochs=3), progress=False)
    assert t.best_epoch == 4 and t.history.sizes["epoch"] == 6


def test_warmup_longer_than_training_keeps_the_last_epoch(roi):
    t = train(roi, dataclasses.replace(QUICK, epochs=3, warmup_epochs=20), progress=False)
    assert t.best_epoch == 3 and t.history.sizes["epoch"] == 3


def test_phase_order_by_name(roi):
    ds = CineBatches(roi.isel(phase=[2, 0, 1]), cache=True)
    x, mask, _, _ = ds[0]
    expected = roi.intensity.isel(patient=0) * roi.frame_ok.isel(patient=0)
    np.testing.assert_array_equal(x.numpy(), expected.values)


def test_augmentation_seeded_and_physical(roi):
    ds = CineBatches(roi, augment=Augment(), seed=5, cache=True)
    ds.set_epoch(3)
    a, b = ds[4], ds[4]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].shape == (3, 8, 16, 16) and 0.0 <= float(a[0].min()) and float(a[0].max()) <= 1.0
    ds.set_epoch(4)
    assert not torch.equal(ds[4][0], a[0])
    assert torch.all(a[0][~a[1]] == 0)  # frames made invalid by the jitter carry no signal


def _augment_reference(x: np.ndarray, mask: np.ndarray, d: Draw) -> tuple[np.ndarray, np.ndarray]:
    """One item, by plain NumPy indexing: the augmentation as documented on ``Augment``."""
    p, t, h, w = x.shape
    iy, ix = np.clip(np.arange(h) + d.dy, 0, h - 1), np.clip(np.arange(w) + d.dx, 0, w - 1)
    ix = ix[::-1] if d.flip else ix
    out, ok = np.zeros_like(x), np.zeros_like(mask)
    for k in range(p):
        for j in range(t):
            src = j - d.shift[k]
            if 0 <= src < t and mask[k, src]:
                out[k, j] = np.clip(x[k, src][np.ix_(iy, ix)] * np.float32(d.gain), 0, 1)
                ok[k, j] = True
    return out, ok


@pytest.mark.parametrize("gain_sd", [0.0, 0.3])
def test_batched_augmentation_matches_the_reference_per_item(roi, gain_sd):
    aug = Augment(shift_px=3, gain_sd=gain_sd, time_jitter_frames=2)
    ds = CineBatches(roi.assign(frame_ok=roi.frame_ok.where(roi.time != roi.time[3], False)),
                     augment=aug, seed=1, cache=True)
    ds.set_epoch(2)
    idx = torch.tensor([3, 0, 7, 3, 11])
    x, mask, _, _ = ds.batch(idx)
    plain = CineBatches(ds.roi, cache=True)
    draws = [ds._draw(int(i)) for i in idx]
    assert len({(d.dy, d.dx, d.flip, d.shift) for d in draws[1:]}) > 1  # the draws differ
    for k, (i, d) in enumerate(zip(idx.tolist(), draws, strict=True)):
        ref_x, ref_mask = _augment_reference(plain[i][0].numpy(), plain[i][1].numpy(), d)
        np.testing.assert_array_equal(mask[k].numpy(), ref_mask)
        np.testing.assert_allclose(x[k].numpy(), ref_x, rtol=0, atol=1e-7)
        assert torch.equal(ds[i][0], x[k])  # an item does not depend on the batch it is drawn in


def test_cache_decision_by_size(roi):
    assert cache_decision(roi)[0]
    cached, message = cache_decision(roi, limit_bytes=10)
    assert not cached and "lazily" in message


def test_inner_split_stratified_and_disjoint():
    event = np.array([True] * 10 + [False] * 20)
    fit, val = inner_split(event, 0.2, seed=0)
    assert np.intersect1d(fit, val).size == 0 and fit.size + val.size == 30
    assert event[val].sum() == 2 and (~event[val]).sum() == 4
    with pytest.raises(InputError):
        inner_split(event[:3], 0.2, seed=0)


def test_train_config_json_round_trip():
    cfg = dataclasses.replace(QUICK, augment=Augment(shift_px=1), cache=False)
    assert TrainConfig.from_json(cfg.to_json()) == cfg
    assert TrainConfig.from_json(TrainConfig().to_json()) == TrainConfig()


def test_compiled_training_uses_the_same_weights(roi):
    # The "eager" backend captures the graph with dynamo and runs it uncompiled: any mix-up of the
    # compiled module and the model whose state is kept (best epoch, checkpoint) shows here.
    # Inductor itself is exercised by the GPU benchmark (compiling on 2 CPU cores takes minutes).
    cfg = dataclasses.replace(QUICK, epochs=3, warmup_epochs=1)
    eager, compiled = (train(roi, dataclasses.replace(cfg, compile=c), progress=False) for c in (None, "eager"))
    assert compiled.best_epoch == eager.best_epoch
    assert compiled.history.inner_cindex.equals(eager.history.inner_cindex)
    for key, value in _weights(eager).items():
        assert torch.equal(value, _weights(compiled)[key]), key
    assert type(compiled.model).__name__ == "CoxCNN"  # the plain module is kept, not the compiled wrapper


@pytest.mark.parametrize("kwargs", [{"device": "tpu"}, {"ties": "exact"}, {"epochs": 0}, {"warmup_epochs": -1},
                                    {"profile": "big"}, {"compile": "fastest"}])
def test_bad_train_config(kwargs):
    with pytest.raises(InputError):
        TrainConfig(**kwargs)


def test_missing_variables_raise(roi):
    with pytest.raises(InputError, match="event"):
        train(roi.drop_vars("event"), QUICK, progress=False)


def test_estimator_with_arrays_and_sksurv_y(roi):
    from sksurv.util import Surv

    X = np.where(roi.frame_ok.values[..., None, None], roi.intensity.values, np.nan)
    y = Surv.from_arrays(event=roi.event.values, time=roi.duration.values)
    est = CoxCNNSurvival(network=TINY, epochs=2, batch_size=8, device="cpu").fit(X, y)
    risk = est.predict(X)
    assert risk.shape == (24,) and np.isfinite(risk).all()
    assert 0.0 <= est.score(X, y) <= 1.0
    assert est.get_params()["epochs"] == 2




def _with_tic(roi: xr.Dataset, seed: int = 1) -> xr.Dataset:
    """Add a ``tic`` whose tumour contrast (dB vs the parenchyma) follows the outcome, plus noise."""
    from ceusflow.conventions import PATIENT as P

    rng = np.random.default_rng(seed)
    n, t = roi.sizes[P], np.arange(0.0, 60.0, 0.5)
    db = -np.log(roi["duration"].values) + rng.normal(0, 0.5, n)  # earlier events: brighter tumour
    power = np.ones((n, 4, t.size)) * rng.uniform(0.5, 2.0, (n, 1, 1))
    power[:, 1] *= 10 ** (db[:, None] / 10)
    power[:, 0] *= 10 ** (rng.normal(0, 1, (n, 1)) / 10)  # core: noise only
    power[:, :, rng.random(t.size) < 0.05] = np.nan  # invalid frames
    tic = xr.DataArray(power, dims=(P, "part", "exam_time"),
                       coords={"part": ["core", "tumour", "rim", "parenchyma"], "exam_time": t})
    return roi.assign(tic=tic)


def test_kinetic_term_is_the_ridge_cox_of_the_inner_fit_patients(roi, tmp_path):
    from ceusflow.model import load_model, save_model
    from ceusflow.model.train import KINETIC_PENALIZER, kinetic_features
    from ceusflow.preprocess.tic import contrast_table
    from ceusflow.survival import fit_cox, linear_predictor

    cohort = _with_tic(roi)
    trained = train(cohort, dataclasses.replace(QUICK, kinetic=True), progress=False)
    names = trained.model.config.kinetic_features
    feats = contrast_table(cohort["tic"])
    assert list(names) == list(feats.columns) == list(kinetic_features(cohort).columns)
    # reference: the same ridge Cox fitted independently on the inner-fit patients
    fit_rows = ~cohort["patient"].isin(list(trained.inner_patients)).values
    x = feats[fit_rows]
    usable = [c for c in x.columns if x[c].nunique() > 1]
    ref = fit_cox(cohort["duration"].values[fit_rows], cohort["event"].values[fit_rows],
                  x[usable].fillna(x.median()[usable]), penalizer=KINETIC_PENALIZER)
    coef = dict(zip(names, trained.model.kinetic_coef.numpy(), strict=True))
    np.testing.assert_allclose([coef[c] for c in usable], ref.coef, rtol=1e-9)
    assert all(coef[c] == 0.0 for c in names if c not in usable)
    # prediction = the network's log-hazard + the kinetic log-hazard (missing values imputed)
    offset = linear_predictor(ref, feats[usable].fillna(x.median()[usable]))
    cnn_only = dataclasses.replace(trained.model.config, kinetic_features=())
    plain = type(trained.model)(cnn_only)
    plain.load_state_dict({k: v for k, v in trained.model.state_dict().items() if not k.startswith("kinetic_")})
    risk = predict_risk(trained.model, cohort).values
    np.testing.assert_allclose(risk - predict_risk(plain, cohort).values, offset, rtol=1e-5, atol=1e-5)
    # the checkpoint keeps it (safetensors buffers + names in the JSON); no tic -> a clear error
    again = load_model(save_model(trained, tmp_path / "kin"))
    np.testing.assert_array_equal(predict_risk(again.model, cohort).values, risk)
    assert again.model.config.kinetic_features == names and again.config.kinetic
    with pytest.raises(InputError, match="no 'tic' variable"):
        predict_risk(trained.model, roi)
    with pytest.raises(InputError, match="kinetic=False"):
        train(roi, dataclasses.replace(QUICK, kinetic=True), progress=False)


def test_kinetic_training_is_deterministic_and_uses_the_offset(roi):
    cohort = _with_tic(roi)
    config = dataclasses.replace(QUICK, kinetic=True, n_models=2)
    a, b = (train(cohort, config, progress=False) for _ in range(2))
    assert all(torch.equal(v, b.model.state_dict()[k]) for k, v in a.model.state_dict().items())
    # the network is trained on top of the frozen term: its weights differ from a plain run's
    plain = train(cohort, dataclasses.replace(QUICK, n_models=2), progress=False)
    head = "members.0.head.weight"
    assert not torch.equal(a.model.state_dict()[head], plain.model.state_dict()[head])
    # the tic carries the outcome: after 2 epochs the term lifts the training C (0.91 vs 0.73 here)
    d, e = cohort["duration"].values, cohort["event"].values
    c_kin, c_plain = (inner_cindex(d, e, predict_risk(m.model, cohort).values) for m in (a, plain))
    assert c_kin > 0.85 and c_kin > c_plain + 0.1
