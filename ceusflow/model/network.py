"""The Cox-CNN of Liu et al. 2020, Fig. 2b: three phase cines -> one log-hazard.

Per phase (AP, PP, VP) a spatio-temporal input ``(time, y, x)`` goes through four
convolution + pooling stages; the time axis that remains is averaged over the valid frames only
(masked temporal pooling), the ``(channel, y, x)`` map is flattened, the three phase vectors are
concatenated (global aggregation), standardised across patients (batch statistics in training,
running statistics in evaluation) and a bias-free linear Cox head gives the log-hazard. Masked
frames (``frame_ok`` False) are zeroed at the input and after every stage. ``docs/model.md`` has
the layer table of both profiles.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ceusflow.conventions import PHASES
from ceusflow.errors import InputError

Conv = Literal["3d", "2plus1d"]
Norm = Literal["group", "batch", "none"]
Profile = Literal["paper", "cpu"]

__all__ = ["CoxCNN", "CoxEnsemble", "NetworkConfig", "profile"]


@dataclass(frozen=True)
class NetworkConfig:
    """Architecture of a :class:`CoxCNN` (saved in the checkpoint's JSON config).

    Attributes
    ----------
    conv : {"3d", "2plus1d"}
        3x3x3 convolutions, or (2+1)-D: 1x3x3 spatial then 3x1x1 temporal.
    shared_weights : bool
        One encoder for the three phases (True) or one per phase.
    widths : tuple of int
        Channels of the four stages.
    dropout : float
        Dropout before the Cox head.
    norm : {"group", "batch", "none"}
        Normalisation after each convolution. Group norm standardises each patient's own
        channels (batch-size independent), which also removes between-patient differences of
        contrast amplitude; batch norm standardises across the patients of a batch in training
        and by running statistics in evaluation (a patient scores the same alone or in a batch).
    space_pool : int
        Average-pooling factor of the ROI grid at the input (2: 64x64 -> 32x32).
    time_pool : int
        Early temporal pooling at the input: mean over groups of valid frames (2 fps / 4 = 0.5 fps).
    flatten_grid : int
        Spatial size of the last feature map that is flattened (adaptive average pooling).
    feature_norm : bool
        Standardise the concatenated features across patients before the Cox head
        (``BatchNorm1d`` without affine parameters: batch statistics in training, running
        statistics in evaluation). Without it the head must learn weights of the order of
        1 / (the features' spread between patients), which AdamW reaches only after hundreds of
        steps: on the simulated 419-patient cohort R-SR did not learn at all (``docs/model.md``).
        Checkpoints written before this option load with False.
    ring_bins : int
        0 (the paper's network): none. ``k > 0``: a radial branch beside the CNN, the masked mean
        intensity of six concentric rings about the ROI centre (core, tumour, margin, 1 cm rim,
        corners excluded) in ``k`` time bins per phase, fed to the Cox head by its own linear
        term (a "wide" part: the peritumoral ring the paper's R-SR looks at, without asking the
        convolutions to find it).
    kinetic_features : tuple of str
        Empty (the paper's network): none. Otherwise the names of the contrast-curve features
        (``ceusflow.preprocess.tic.contrast_table``: each ROI part's power relative to the
        parenchyma ring, dB, 15-s bins) of a **kinetic term**: a ridge Cox log-hazard on them,
        fitted exactly on the inner-fit patients before the network is trained, then frozen; the
        network learns on top of it (an offset) and the log-hazard is their sum. Set by
        :func:`ceusflow.model.train` with ``TrainConfig(kinetic=True)``; the coefficients are
        buffers of the checkpoint (``docs/model.md``, "Session 9").
    """

    conv: Conv = "3d"
    shared_weights: bool = True
    widths: tuple[int, int, int, int] = (16, 32, 64, 128)
    dropout: float = 0.2
    norm: Norm = "group"
    space_pool: int = 1
    time_pool: int = 1
    flatten_grid: int = 4
    feature_norm: bool = True
    ring_bins: int = 0
    kinetic_features: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_choice("conv", self.conv, Conv)
        _check_choice("norm", self.norm, Norm)
        if len(self.widths) != 4 or min(self.widths) < 1:
            raise InputError("widths", f"{self.widths} is not four positive channel counts",
                             "pass e.g. (16, 32, 64, 128)")
        if self.space_pool < 1 or self.time_pool < 1 or self.flatten_grid < 1 or self.ring_bins < 0:
            raise InputError("NetworkConfig", "pooling factors must be >= 1", "use 1 for none")
        if not 0.0 <= self.dropout < 1.0:
            raise InputError("dropout", f"{self.dropout} is outside [0, 1)", "use e.g. 0.2")

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-serialisable fields."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetworkConfig:
        """Rebuild from :meth:`to_dict` output (lists become tuples)."""
        # Checkpoints written before ``feature_norm`` existed have no normalisation layer.
        return cls(**{"feature_norm": False, **data, "widths": tuple(data["widths"]),
                      "kinetic_features": tuple(data.get("kinetic_features", ()))})


def profile(name: Profile) -> NetworkConfig:
    """Return the architecture of a named profile.

    Parameters
    ----------
    name : {"paper", "cpu"}
        ``"paper"``: full scale (64x64 ROI, 2 fps, widths 16-128), for GPUs. ``"cpu"``: ROI
        averaged to 32x32, frames averaged 4:1 (0.5 fps), widths 4-32 (chosen over 8-64 by
        5-fold cross-validation inside the training patients of a simulated 419-patient cohort,
        ``docs/model.md``), 3-D convolutions; trains both treatment models on 419 patients within
        15 min on 2 cores.

    Returns
    -------
    NetworkConfig
    """
    _check_choice("profile", name, Profile)
    if name == "paper":
        return NetworkConfig()
    return NetworkConfig(widths=(4, 8, 16, 32), space_pool=2, time_pool=4, flatten_grid=2)


def _check_choice(source: str, value: object, options: Any) -> None:
    if value not in get_args(options):
        raise InputError(source, f"{value!r} is not supported", f"use one of {get_args(options)}")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm3d(channels)
    if kind == "group":
        return nn.GroupNorm(min(4, channels), channels)
    return nn.Identity()


class _Stage(nn.Module):
    """Convolution(s) + norm + ReLU, re-masking, then 2x2x2 max pooling (time kept if length 1)."""

    def __init__(self, c_in: int, c_out: int, conv: str, norm: str) -> None:
        super().__init__()
        bias = norm == "none"
        if conv == "3d":
            layers = [nn.Conv3d(c_in, c_out, 3, padding=1, bias=bias), _norm(norm, c_out), nn.ReLU()]
        else:
            layers = [nn.Conv3d(c_in, c_out, (1, 3, 3), padding=(0, 1, 1), bias=bias),
                      _norm(norm, c_out), nn.ReLU(),
                      nn.Conv3d(c_out, c_out, (3, 1, 1), padding=(1, 0, 0), bias=bias),
                      _norm(norm, c_out), nn.ReLU()]
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Map ``x (N, C, T, H, W)`` and ``mask (N, T)`` to their pooled versions."""
        x = self.body(x) * mask[:, None, :, None, None]
        kt = 2 if x.shape[2] > 1 else 1
        x = F.max_pool3d(x, (kt, 2, 2), ceil_mode=True)
        mask = F.max_pool1d(mask[:, None], kt, ceil_mode=True)[:, 0]
        return x, mask


class _Encoder(nn.Module):
    """Four stages, masked mean over time, adaptive spatial pooling, flatten."""

    def __init__(self, cfg: NetworkConfig) -> None:
        super().__init__()
        chans = (1, *cfg.widths)
        self.stages = nn.ModuleList(
            _Stage(chans[i], chans[i + 1], cfg.conv, cfg.norm) for i in range(4))
        self.grid = cfg.flatten_grid

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """Map ``x (N, 1, T, H, W)``, ``mask (N, T)`` to features ``(N, C * grid * grid)``."""
        for stage in self.stages:
            x, mask = stage(x, mask)
        w = mask[:, None, :, None, None]
        x = (x * w).sum(2) / w.sum(2).clamp(min=1.0)
        return F.adaptive_avg_pool2d(x, self.grid).flatten(1)


#: Ring edges of the radial branch, as a fraction of the ROI half-size (0 = centre, 1 = edge
#: midpoints); the ROI is the tumour box expanded by 1 cm, so the outer rings hold the margin.
RING_EDGES = (0.0, 0.15, 0.3, 0.45, 0.6, 0.8, 1.01)


class _RingProfile(nn.Module):
    """Masked mean intensity of concentric rings, in ``bins`` equal time bins: ``(N, rings * bins)``."""

    def __init__(self, bins: int) -> None:
        super().__init__()
        self.bins = bins

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """Map ``x (N, T, H, W)`` and ``mask (N, T)`` (0/1) to ring-mean features."""
        n, t, h, w = x.shape
        yy = (torch.arange(h, device=x.device, dtype=x.dtype) - (h - 1) / 2) / (h / 2)
        xx = (torch.arange(w, device=x.device, dtype=x.dtype) - (w - 1) / 2) / (w / 2)
        r = torch.sqrt(yy[:, None] ** 2 + xx[None, :] ** 2)
        rings = torch.stack([((r >= a) & (r < b)).to(x.dtype) for a, b in zip(RING_EDGES[:-1], RING_EDGES[1:],
                                                                             strict=True)])
        rings = rings / rings.sum((1, 2), keepdim=True).clamp(min=1.0)
        z = torch.einsum("ntyx,ryx->ntr", x, rings)  # ring means per frame
        edges = torch.linspace(0, t, self.bins + 1, device=x.device).round().long()
        out = []
        for a, b in zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True):
            wgt = mask[:, a:max(b, a + 1), None]
            out.append((z[:, a:max(b, a + 1)] * wgt).sum(1) / wgt.sum(1).clamp(min=1.0))
        return torch.stack(out, 2).flatten(1)  # (N, rings * bins)


class CoxCNN(nn.Module):
    """Cox-CNN: ``(intensity, frame_ok)`` of the three phases -> one log-hazard per patient.

    Parameters
    ----------
    config : NetworkConfig, optional
        Architecture; default the ``"paper"`` profile.
    """

    def __init__(self, config: NetworkConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else profile("paper")
        n_enc = 1 if self.config.shared_weights else len(PHASES)
        self.encoders = nn.ModuleList(_Encoder(self.config) for _ in range(n_enc))
        n_feat = len(PHASES) * self.config.widths[-1] * self.config.flatten_grid ** 2
        self.feature_norm = (nn.BatchNorm1d(n_feat, affine=False) if self.config.feature_norm
                             else nn.Identity())
        self.dropout = nn.Dropout(self.config.dropout)
        self.head = nn.Linear(n_feat, 1, bias=False)
        k = self.config.ring_bins
        self.rings = _RingProfile(k) if k else None
        self.ring_head = nn.Linear(len(PHASES) * len(RING_EDGES[:-1]) * k, 1, bias=False) if k else None
        n_kin = len(self.config.kinetic_features)
        for name in ("kinetic_impute", "kinetic_center", "kinetic_coef"):
            self.register_buffer(name, torch.zeros(n_kin, dtype=torch.float64) if n_kin else None)

    def set_kinetic(self, impute: Tensor, center: Tensor, coef: Tensor) -> None:
        """Set the frozen kinetic term: ``((features, NaN -> impute) - center) @ coef``."""
        n = len(self.config.kinetic_features)
        for name, value in (("kinetic_impute", impute), ("kinetic_center", center), ("kinetic_coef", coef)):
            if tuple(value.shape) != (n,):
                raise InputError(name, f"has shape {tuple(value.shape)}", f"pass {n} values, one per kinetic feature")
            setattr(self, name, value.detach().to(torch.float64).clone())

    def kinetic_offset(self, features: Tensor) -> Tensor:
        """Log-hazard of the kinetic term, ``(batch,)`` float64 (zeros without one).

        Parameters
        ----------
        features : Tensor (batch, len(config.kinetic_features))
            Contrast-curve features in the order of ``config.kinetic_features``; NaN = missing
            (imputed with the inner-fit medians).
        """
        if self.kinetic_coef is None:
            return torch.zeros(features.shape[0], dtype=torch.float64, device=features.device)
        return kinetic_log_hazard(features, self.kinetic_impute, self.kinetic_center, self.kinetic_coef)

    @classmethod
    def from_profile(cls, name: Profile) -> CoxCNN:
        """Build the network of a named :func:`profile`."""
        return cls(profile(name))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """Compute log-hazards.

        Parameters
        ----------
        x : Tensor (batch, phase=3, time, y, x)
            ROI intensities in [0, 1], phases in the order AP, PP, VP.
        mask : Tensor (batch, phase, time), bool
            ``frame_ok``: False frames are ignored.

        Returns
        -------
        Tensor (batch,)
            Log-hazard (higher = earlier event).
        """
        _check_input(x, mask)
        b, p, t, h, w = x.shape
        m = mask.to(x.dtype).reshape(b * p, t)
        xs, m = self._early_pool(x.reshape(b * p, 1, t, h, w) * m[:, None, :, None, None], m)
        feats = self._encode(xs, m, b)  # (b, p, F)
        out = self.head(self.dropout(self.feature_norm(feats.flatten(1))))[:, 0]
        if self.rings is not None and self.ring_head is not None:
            out = out + self.ring_head(self.rings(xs[:, 0], m).reshape(b, -1))[:, 0]
        return out

    def _early_pool(self, x: Tensor, m: Tensor) -> tuple[Tensor, Tensor]:
        """Spatial average pooling and masked temporal mean over ``time_pool`` frames."""
        s, k = self.config.space_pool, self.config.time_pool
        if s > 1:
            x = F.avg_pool3d(x, (1, s, s), ceil_mode=True)
        if k > 1:
            x = F.avg_pool3d(x, (k, 1, 1), ceil_mode=True)
            frac = F.avg_pool1d(m[:, None], k, ceil_mode=True)[:, 0]
            x = x / frac.clamp(min=1e-6)[:, None, :, None, None]
            m = (frac > 0).to(x.dtype)
        return x, m

    def _encode(self, x: Tensor, m: Tensor, b: int) -> Tensor:
        if len(self.encoders) == 1:
            return self.encoders[0](x, m).reshape(b, len(PHASES), -1)
        x5, m5 = x.reshape(b, len(PHASES), *x.shape[1:]), m.reshape(b, len(PHASES), -1)
        return torch.stack([enc(x5[:, i], m5[:, i]) for i, enc in enumerate(self.encoders)], 1)


def kinetic_log_hazard(features: Tensor, impute: Tensor, center: Tensor, coef: Tensor) -> Tensor:
    """Linear Cox log-hazard ``((features, NaN -> impute) - center) @ coef`` in float64, ``(batch,)``."""
    f = features.to(torch.float64)
    return (torch.where(torch.isnan(f), impute, f) - center) @ coef


class CoxEnsemble(nn.Module):
    """Bagged Cox-CNNs: the log-hazard is the mean of the members' log-hazards.

    Parameters
    ----------
    members : sequence of CoxCNN
        Networks of the same architecture (one per inner split).
    """

    def __init__(self, members: list[CoxCNN]) -> None:
        super().__init__()
        if not members:
            raise InputError("CoxEnsemble", "has no members", "pass at least one trained CoxCNN")
        self.members = nn.ModuleList(members)
        self.config = members[0].config

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """Mean log-hazard of the members, ``(batch,)``; inputs as :meth:`CoxCNN.forward`."""
        return torch.stack([m(x, mask) for m in self.members]).mean(0)

    def kinetic_offset(self, features: Tensor) -> Tensor:
        """Mean of the members' kinetic terms (:meth:`CoxCNN.kinetic_offset`)."""
        return torch.stack([m.kinetic_offset(features) for m in self.members]).mean(0)


def _check_input(x: Tensor, mask: Tensor) -> None:
    if x.dim() != 5 or x.shape[1] != len(PHASES):
        raise InputError("intensity", f"shape {tuple(x.shape)} is not (batch, 3, time, y, x)",
                         "order the dims as (patient, phase, time, y, x)")
    if tuple(mask.shape) != tuple(x.shape[:3]):
        raise InputError("frame_ok", f"shape {tuple(mask.shape)} does not match {tuple(x.shape[:3])}",
                         "pass one flag per (patient, phase, time)")
