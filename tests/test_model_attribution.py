from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from ceusflow.errors import InputError
from ceusflow.model import NetworkConfig, TrainConfig, train
from ceusflow.model._synthetic import pattern_roi
from ceusflow.model.attribution import attribution, plot_attribution

torch.set_num_threads(1)

CENTER, RADIUS = (9.0, 22.0), 7.0  # off-centre tumour on a 32 x 32 ROI


@pytest.fixture(scope="module")
def fitted():
    # signal (wash-out kinetics) only in the tumour core; the rest is liver + noise
    roi = pattern_roi(48, region="core", center=CENTER, radius=RADIUS, nuisance=False, size=32,
                      n_frames=8, seed=1)
    net = NetworkConfig(widths=(4, 8, 8, 8), flatten_grid=1, dropout=0.0)
    # lr pinned: the maps of a 3-epoch model depend on it, and the training defaults are not under test
    cfg = TrainConfig(network=net, epochs=3, batch_size=16, lr=1e-3, device="cpu", augment=None)
    return roi, train(roi, cfg, progress=False).model


def _peak(maps) -> tuple[int, int]:
    mean = np.abs(maps).mean(("phase", "time")).values
    return tuple(int(v) for v in np.unravel_index(int(np.nanargmax(mean)), mean.shape))


def _inside(yx: tuple[int, int], radius: float) -> bool:
    return float(np.hypot(yx[0] - CENTER[0], yx[1] - CENTER[1])) <= radius


def test_integrated_gradients_peak_inside_the_blob(fitted):
    roi, model = fitted
    for patient in ("P0003", "P0010", "P0021"):
        maps = attribution(model, roi, patient, method="integrated_gradients", steps=16)
        assert maps.dims == ("phase", "time", "y", "x")
        assert _inside(_peak(maps), RADIUS / 3 * 2), patient  # within 2 SD of the core


def test_integrated_gradients_completeness():
    # sum of the map = f(x) - f(0); without normalisation layers (group norm makes the net
    # almost scale-invariant, so the path integral concentrates near the zero baseline)
    from ceusflow.model import CoxCNN, predict_risk

    roi = pattern_roi(2, size=16, n_frames=4, seed=0)
    torch.manual_seed(0)
    model = CoxCNN(NetworkConfig(widths=(4, 4, 4, 4), flatten_grid=1, norm="none", dropout=0.0))
    maps = attribution(model, roi, "P0001", method="integrated_gradients", steps=128)
    zero = roi.copy(deep=True)
    zero["intensity"][:] = 0.0
    diff = float(predict_risk(model, roi).values[1] - predict_risk(model, zero).values[1])
    assert float(maps.sum()) == pytest.approx(diff, rel=0.15)


def test_gradcam_aligned_nonnegative_nan_on_invalid_frames(fitted):
    roi, model = fitted
    for stage in (2, 4):
        maps = attribution(model, roi, "P0003", method="gradcam", stage=stage)
        assert maps.shape == roi.intensity.shape[1:]
        np.testing.assert_array_equal(maps.time.values, roi.time.values)
        ok = roi.frame_ok.isel(patient=3).sel(phase=["AP", "PP", "VP"]).values
        assert np.isnan(maps.values[~ok]).all() and np.isfinite(maps.values[ok]).all()
        assert float(maps.min()) >= 0.0


def test_gradcam_per_phase_encoders():
    roi = pattern_roi(8, size=16, n_frames=4, seed=0)
    from ceusflow.model import CoxCNN

    torch.manual_seed(0)
    model = CoxCNN(NetworkConfig(widths=(4, 4, 4, 4), flatten_grid=1, shared_weights=False,
                                 conv="2plus1d"))
    maps = attribution(model, roi, "P0001", stage=3)
    assert maps.shape == (3, 4, 16, 16)


def test_plot_attribution_returns_figure(fitted):
    roi, model = fitted
    maps = attribution(model, roi, "P0003", method="gradcam", stage=2)
    fig = plot_attribution(maps, roi, n_frames=3)
    assert isinstance(fig, Figure) and len(fig.axes) == 3 * 4 + 1  # + colour bar


def test_unknown_patient_and_method(fitted):
    roi, model = fitted
    with pytest.raises(InputError, match="not in the ROI store"):
        attribution(model, roi, "nobody")
    with pytest.raises(InputError, match="not supported"):
        attribution(model, roi, "P0001", method="saliency")  # type: ignore[arg-type]
