from __future__ import annotations

import dataclasses

import pytest
import torch

from ceusflow.errors import InputError
from ceusflow.model.network import CoxCNN, NetworkConfig, profile

torch.set_num_threads(1)

TINY = NetworkConfig(widths=(4, 4, 8, 8), flatten_grid=1, dropout=0.0)


def _inputs(b=2, t=8, s=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, t, s, s, generator=g), torch.ones(b, 3, t, dtype=torch.bool)


@pytest.mark.parametrize("conv", ["3d", "2plus1d"])
@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("norm", ["group", "batch", "none"])
def test_one_log_hazard_per_patient(conv, shared, norm):
    model = CoxCNN(dataclasses.replace(TINY, conv=conv, shared_weights=shared, norm=norm))
    x, mask = _inputs()
    out = model(x, mask)
    assert out.shape == (2,) and torch.isfinite(out).all()


def test_head_has_no_bias():
    model = CoxCNN(TINY)
    assert model.head.bias is None


def test_shared_weights_has_one_encoder():
    assert len(CoxCNN(TINY).encoders) == 1
    assert len(CoxCNN(dataclasses.replace(TINY, shared_weights=False)).encoders) == 3


@pytest.mark.parametrize("cfg", [TINY, dataclasses.replace(TINY, time_pool=2, space_pool=2)])
def test_masked_frames_are_ignored(cfg):
    torch.manual_seed(0)
    model = CoxCNN(cfg).eval()
    x, mask = _inputs()
    mask[:, 1, 5:] = False
    noisy = x.clone()
    noisy[:, 1, 5:] = torch.rand_like(noisy[:, 1, 5:]) * 100  # garbage where frame_ok is False
    assert torch.allclose(model(x, mask), model(noisy, mask))


def test_all_frames_masked_gives_finite_output():
    model = CoxCNN(TINY).eval()
    x, mask = _inputs()
    assert torch.isfinite(model(x, torch.zeros_like(mask))).all()


def test_single_frame_and_odd_sizes():
    model = CoxCNN(TINY).eval()
    for t, s in [(1, 16), (5, 17), (13, 24)]:
        x, mask = _inputs(t=t, s=s)
        assert model(x, mask).shape == (2,)


def test_profiles():
    cpu, paper = profile("cpu"), profile("paper")
    assert paper.widths == (16, 32, 64, 128) and paper.space_pool == 1 and paper.time_pool == 1
    assert cpu.space_pool == 2 and cpu.time_pool > 1 and max(cpu.widths) < max(paper.widths)
    model = CoxCNN.from_profile("cpu").eval()
    x, mask = _inputs(b=1, t=12, s=64)
    assert model(x, mask).shape == (1,)


def test_config_round_trip():
    cfg = dataclasses.replace(TINY, conv="2plus1d")
    assert NetworkConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("kwargs", [{"conv": "2d"}, {"norm": "layer"}, {"widths": (4, 4)},
                                    {"dropout": 1.0}, {"time_pool": 0}])
def test_bad_config_raises(kwargs):
    with pytest.raises(InputError):
        NetworkConfig(**kwargs)


def test_bad_input_shape_raises():
    model = CoxCNN(TINY)
    with pytest.raises(InputError, match="intensity"):
        model(torch.rand(2, 2, 8, 16, 16), torch.ones(2, 2, 8, dtype=torch.bool))
    with pytest.raises(InputError, match="frame_ok"):
        model(torch.rand(2, 3, 8, 16, 16), torch.ones(2, 3, 7, dtype=torch.bool))
    with pytest.raises(InputError, match="profile"):
        profile("gpu")  # type: ignore[arg-type]


def test_gradients_reach_first_layer():
    model = CoxCNN(TINY)
    x, mask = _inputs()
    model(x, mask).sum().backward()
    first = model.encoders[0].stages[0].body[0].weight
    assert first.grad is not None and first.grad.abs().sum() > 0


def test_import_ceusflow_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, ceusflow; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_ring_branch_is_masked_ring_means_in_time_bins():
    import numpy as np

    from ceusflow.model.network import RING_EDGES, _RingProfile

    g = torch.Generator().manual_seed(1)
    x, mask = torch.rand(2, 10, 12, 12, generator=g), torch.ones(2, 10)
    mask[1, 7:] = 0
    got = _RingProfile(3)(x * mask[:, :, None, None], mask).numpy()
    n = 12
    yy, xx = np.mgrid[:n, :n]
    r = np.hypot(yy - (n - 1) / 2, xx - (n - 1) / 2) / (n / 2)
    bins = [(0, 3), (3, 7), (7, 10)]  # round(linspace(0, 10, 4))
    for p in range(2):
        for k, (a, b) in enumerate(zip(RING_EDGES[:-1], RING_EDGES[1:], strict=True)):
            ring = (r >= a) & (r < b)
            for j, (t0, t1) in enumerate(bins):
                frames = [t for t in range(t0, t1) if mask[p, t]]
                want = np.mean([x[p, t].numpy()[ring].mean() for t in frames]) if frames else 0.0
                np.testing.assert_allclose(got[p, k * 3 + j], want, rtol=1e-5, atol=1e-7)


def test_ring_branch_is_off_in_the_papers_network_and_old_configs():
    assert CoxCNN(TINY).ring_head is None and profile("paper").ring_bins == 0
    old = {k: v for k, v in TINY.to_dict().items() if k != "ring_bins"}  # a checkpoint before the option
    assert NetworkConfig.from_dict(old).ring_bins == 0
    model = CoxCNN(dataclasses.replace(TINY, ring_bins=4))
    x, mask = _inputs()
    out = model(x, mask)
    assert out.shape == (2,) and model.ring_head.weight.shape == (1, 3 * 6 * 4)
    out.sum().backward()
    assert model.ring_head.weight.grad.abs().sum() > 0


def test_features_are_standardised_across_patients_before_the_head():
    model = CoxCNN(TINY).train()
    raw, seen = [], []
    model.feature_norm.register_forward_hook(lambda _m, inp, _out: raw.append(inp[0].detach()))
    model.head.register_forward_hook(lambda _m, inp, _out: seen.append(inp[0].detach()))
    x, mask = _inputs(b=6)
    model(x * torch.linspace(0.2, 1.0, 6)[:, None, None, None, None], mask)
    f = raw[0]
    assert (f.std(0) > 1e-3).any()  # the patients differ
    want = (f - f.mean(0)) / torch.sqrt(f.var(0, unbiased=False) + 1e-5)  # BatchNorm1d, eps 1e-5
    torch.testing.assert_close(seen[0], want, atol=1e-4, rtol=1e-4)  # dropout 0: what the head reads


@pytest.mark.parametrize("norm", ["group", "batch"])
def test_evaluation_uses_running_statistics_so_a_patient_scores_alone(norm):
    model = CoxCNN(dataclasses.replace(TINY, norm=norm)).train()
    x, mask = _inputs(b=6)
    for _ in range(3):
        model(x, mask)
    model.eval()
    together = model(x, mask)
    alone = torch.cat([model(x[i:i + 1], mask[i:i + 1]) for i in range(6)])
    torch.testing.assert_close(alone, together, atol=1e-5, rtol=1e-5)


def test_checkpoints_before_feature_norm_load_without_it():
    old = {k: v for k, v in TINY.to_dict().items() if k != "feature_norm"}
    cfg = NetworkConfig.from_dict(old)
    assert cfg.feature_norm is False and isinstance(CoxCNN(cfg).feature_norm, torch.nn.Identity)
    assert NetworkConfig.from_dict(TINY.to_dict()).feature_norm is True
    assert profile("cpu").feature_norm and profile("paper").feature_norm
