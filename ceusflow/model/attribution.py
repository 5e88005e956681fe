"""Feature maps (the paper's supplementary Fig. S2): where in the ROI cine a Cox-CNN looks.

Two methods, both returning one map per input frame, ``(phase, time, y, x)`` aligned with the
ROI frames (same coordinates), NaN on invalid frames:

- ``"gradcam"`` (Selvaraju et al. 2017) on the convolution output of stage ``stage`` (default the
  last, 4): channel weights = mean gradient of the log-hazard over the stage's (time, y, x),
  map = ReLU(weighted channel sum), trilinearly resized to the input frames. Coarse (the last
  stage of the ``cpu`` profile is 4 x 4 on a 64 x 64 ROI); ``stage=2`` or 3 is finer.
- ``"integrated_gradients"`` (Sundararajan et al. 2017): ``x * mean_k grad f(k/m x)`` along the
  straight path from a zero cine (no contrast, which is also what invalid frames hold); signed,
  pixel-level, and its sum over all pixels equals ``f(x) - f(0)`` up to the Riemann error.
  With group norm (the default) the network is nearly invariant to a global intensity scale,
  so most of ``f(x) - f(0)`` is gained close to the zero baseline and the midpoint rule
  under-counts it: read the maps as relative (where), not as an exact decomposition.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
import torch
import xarray as xr
from matplotlib.figure import Figure
from torch import Tensor
from torch.nn import functional as F

from ceusflow.conventions import FRAME_OK, INTENSITY, PATIENT, PHASE, PHASES, TIME, X, Y
from ceusflow.errors import InputError
from ceusflow.model.batches import CineBatches
from ceusflow.model.network import CoxCNN, CoxEnsemble

Method = Literal["gradcam", "integrated_gradients"]

__all__ = ["attribution", "plot_attribution"]


def attribution(model: CoxCNN | CoxEnsemble, roi: xr.Dataset, patient: str, *, method: Method = "gradcam",
                stage: int = 4, steps: int = 32, batch_size: int = 8) -> xr.DataArray:
    """Attribution map of one patient's log-hazard over its ROI frames.

    Parameters
    ----------
    model : CoxCNN or CoxEnsemble
        Trained network (moved to nothing; runs where its weights are).
    roi : Dataset
        ROI cohort holding ``patient`` (outcomes not needed).
    patient : str
        Pseudonymous key.
    method : {"gradcam", "integrated_gradients"}
        See the module docstring.
    stage : int
        Grad-CAM layer: the convolution output of stage 1-4.
    steps : int
        Integrated-gradients path points (midpoint rule).
    batch_size : int
        Path points per forward pass (integrated gradients).

    Returns
    -------
    DataArray (phase, time, y, x)
        Name ``attribution``; coordinates of the ROI frames; NaN where ``frame_ok`` is False.
        Grad-CAM is >= 0; integrated gradients are signed (positive = raises the hazard).
    """
    if method not in get_args(Method):
        raise InputError("method", f"{method!r} is not supported", f"use one of {get_args(Method)}")
    if not 1 <= stage <= 4 or steps < 1:
        raise InputError("stage/steps", f"stage {stage}, steps {steps}", "use stage 1-4, steps >= 1")
    one = _patient(roi, patient)
    x, mask, _, _ = CineBatches(one, cache=True, outcomes=False)[0]
    dev = next(model.parameters()).device
    x, mask = x[None].to(dev), mask[None].to(dev)
    was_training = model.training
    model.eval()
    try:
        if method == "integrated_gradients":
            maps = _integrated(model, x, mask, steps, batch_size)
        else:  # an ensemble's Grad-CAM: the mean of its members' maps
            members = list(getattr(model, "members", [model]))
            maps = torch.stack([_gradcam(m, x, mask, stage) for m in members]).mean(0)
    finally:
        model.train(was_training)
    maps = maps.detach().cpu().double().numpy()
    maps[~mask[0].cpu().numpy()] = np.nan
    ref = one[INTENSITY].isel({PATIENT: 0}).sel({PHASE: list(PHASES)}).transpose(PHASE, TIME, Y, X)
    return xr.DataArray(maps, dims=(PHASE, TIME, Y, X), coords=ref.coords, name="attribution",
                        attrs={"method": method, "stage": stage if method == "gradcam" else "",
                               "patient": str(patient), "units": "1"})


def _patient(roi: xr.Dataset, patient: str) -> xr.Dataset:
    keys = [str(p) for p in roi[PATIENT].values]
    if str(patient) not in keys:
        raise InputError("patient", f"{patient!r} is not in the ROI store",
                         "use a pseudonymous key of the store")
    return roi[[INTENSITY, FRAME_OK]].isel({PATIENT: [keys.index(str(patient))]})


def _gradcam(model: CoxCNN, x: Tensor, mask: Tensor, stage: int) -> Tensor:
    """Grad-CAM maps ``(phase, T, H, W)`` from the conv output of ``stage`` of every encoder."""
    acts: list[Tensor] = []
    hooks = [enc.stages[stage - 1].body.register_forward_hook(lambda _m, _i, out: acts.append(out))
             for enc in model.encoders]
    try:
        log_hz = model(x, mask)
    finally:
        for h in hooks:
            h.remove()
    grads = torch.autograd.grad(log_hz.sum(), acts)
    # shared encoder: one (3, C, t, h, w) tensor; per-phase encoders: three (1, C, t, h, w)
    a, g = torch.cat(acts), torch.cat(grads)
    weights = g.mean(dim=(2, 3, 4), keepdim=True)
    cam = F.relu((weights * a).sum(1, keepdim=True))  # (3, 1, t, h, w)
    size = tuple(x.shape[2:])
    return F.interpolate(cam, size=size, mode="trilinear", align_corners=False)[:, 0]


def _integrated(model: CoxCNN, x: Tensor, mask: Tensor, steps: int, batch_size: int) -> Tensor:
    """Integrated gradients ``(phase, T, H, W)`` from a zero baseline (midpoint rule)."""
    alphas = (torch.arange(steps, dtype=x.dtype, device=x.device) + 0.5) / steps
    total = torch.zeros_like(x[0])
    for chunk in alphas.split(max(1, batch_size)):
        path = (chunk[:, None, None, None, None] * x).requires_grad_(True)
        out = model(path, mask.expand(len(chunk), -1, -1))
        total += torch.autograd.grad(out.sum(), path)[0].sum(0)
    return x[0] * total / steps


def plot_attribution(maps: xr.DataArray, roi: xr.Dataset, *, n_frames: int = 4,
                     alpha: float = 0.5, cmap: str = "jet") -> Figure:
    """Pseudo-colour overlays of an attribution map on the patient's ROI frames.

    Parameters
    ----------
    maps : DataArray (phase, time, y, x)
        Output of :func:`attribution` (its ``patient`` attr selects the frames).
    roi : Dataset
        ROI cohort holding that patient.
    n_frames : int
        Frames shown per phase, evenly spaced over its valid frames; a last column shows the
        phase's time-averaged map over its mean frame.
    alpha : float
        Opacity of the overlay.
    cmap : str
        Matplotlib colour map (``"jet"``: the pseudo-colour of the paper's Fig. S2).

    Returns
    -------
    Figure
        One row per phase; colours scaled to the patient's largest absolute attribution.
    """
    one = _patient(roi, str(maps.attrs.get("patient", "")))
    frames = one[INTENSITY].isel({PATIENT: 0}).sel({PHASE: list(PHASES)}).transpose(PHASE, TIME, Y, X)
    img = np.nan_to_num(np.asarray(frames.values, dtype=float))
    att = np.asarray(maps.transpose(PHASE, TIME, Y, X).values, dtype=float)
    vmax = float(np.nanmax(np.abs(att))) if np.isfinite(att).any() else 1.0
    vmin = 0.0 if np.nanmin(att) >= 0 else -vmax
    fig = Figure(figsize=(2.0 * (n_frames + 1), 2.0 * len(PHASES)), layout="constrained")
    axes = fig.subplots(len(PHASES), n_frames + 1, squeeze=False)
    shown = None
    for p, phase in enumerate(PHASES):
        valid = np.flatnonzero(np.isfinite(att[p]).all(axis=(1, 2)))
        picks = valid[np.linspace(0, valid.size - 1, n_frames).round().astype(int)] if valid.size else []
        for k, ax in enumerate(axes[p]):
            ax.set_xticks([]), ax.set_yticks([])
            if k < len(picks):
                t = int(picks[k])
                base, over, title = img[p, t], att[p, t], f"{phase} t={float(maps[TIME][t]):.1f} s"
            elif k == n_frames and valid.size:
                base, over, title = img[p, valid].mean(0), np.nanmean(att[p, valid], 0), f"{phase} mean"
            else:
                continue
            ax.imshow(base, cmap="gray", vmin=0.0, vmax=1.0)
            shown = ax.imshow(over, cmap=cmap, vmin=vmin, vmax=vmax or 1.0, alpha=alpha)
            ax.set_title(title, fontsize=8)
    if shown is not None:
        fig.colorbar(shown, ax=axes, shrink=0.6,
                     label=f"{maps.attrs.get('method', '')} attribution")
    fig.suptitle(f"Feature maps, patient {maps.attrs.get('patient', '')}")
    return fig
