"""Feature maps for the report (issue #7, the paper's Fig. S2): where each Cox-CNN looked.

For each treatment, Grad-CAM of its own model (R-RFA, R-SR) on the highest- and the lowest-risk
validation patient of that treatment (by the model's signature), drawn with
:func:`ceusflow.model.attribution.plot_attribution`. A handful of patients keeps this to seconds
on a CPU. Patients are named by their pseudonymous key only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd
import xarray as xr
from matplotlib.figure import Figure

from ceusflow.conventions import TREATMENTS
from ceusflow.errors import InputError

if TYPE_CHECKING:
    from ceusflow.model.network import CoxCNN, CoxEnsemble

    Model = CoxCNN | CoxEnsemble

#: Grad-CAM on the last convolution stage (the method's usual layer; coarse, but class-specific).
METHOD, STAGE, N_FRAMES = "gradcam", 4, 4
RANKS = ("highest", "lowest")
EXPLANATION = (
    "Grad-CAM (Selvaraju et al. 2017) of each model's log-hazard, overlaid in pseudo-colour on the "
    "grey-scale ROI frames: one row per phase (arterial, portal, late), four frames evenly spaced over "
    "the phase and the phase's mean. Red marks the regions whose activations raised the predicted hazard "
    "most, blue those that contributed little (colours scaled per patient, so compare regions within "
    "one panel, not colours between patients). Grad-CAM shows where the model looked, not why: a "
    "highlighted region is not a validated imaging biomarker.")


@dataclass
class FeatureMaps:
    """Figures (by name), their captions, and what was drawn (for ``metrics.json``)."""

    figures: dict[str, Figure] = field(default_factory=dict)
    captions: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)


def pick_patients(patients: pd.DataFrame) -> dict[str, dict[str, str]]:
    """Highest- and lowest-risk validation patient of each treatment by its own signature.

    Parameters
    ----------
    patients : DataFrame
        Per-patient table (``treatment``, ``split``, ``signature_rfa``/``signature_sr``),
        indexed by pseudonymous key.

    Returns
    -------
    dict
        ``{arm: {"highest": key, "lowest": key}}``; an arm without a scored validation patient
        is left out.
    """
    out = {}
    for arm in TREATMENTS:
        val = patients[(patients["treatment"] == arm) & (patients["split"] == "val")]
        sig = val[f"signature_{arm.lower()}"].dropna()
        if len(sig):
            out[arm] = {"highest": str(sig.idxmax()), "lowest": str(sig.idxmin())}
    return out


def feature_maps(models: Mapping[str, Model], roi: xr.Dataset, patients: pd.DataFrame) -> FeatureMaps:
    """Grad-CAM figures of each model on its treatment's extreme validation patients.

    Parameters
    ----------
    models : mapping
        Trained network (or ensemble) per treatment (``{"RFA": ..., "SR": ...}``).
    roi : Dataset
        ROI cohort holding the patients.
    patients : DataFrame
        Per-patient table with both signatures (see :func:`pick_patients`).

    Returns
    -------
    FeatureMaps
        Figures named ``featuremap_<arm>_<highest|lowest>``. A patient whose map cannot be
        computed is skipped and named in ``metrics["skipped"]``; the run goes on.
    """
    out = FeatureMaps(metrics={"method": METHOD, "stage": STAGE, "patients": {}, "skipped": []})
    for arm, picks in pick_patients(patients).items():
        for rank, key in picks.items():
            name = f"featuremap_{arm}_{rank}"
            try:
                out.figures[name] = _figure(models[arm], roi, key)
            except InputError as err:
                out.metrics["skipped"].append({"figure": name, "patient": key, "reason": str(err)})
                continue
            score = float(patients.loc[key, f"signature_{arm.lower()}"])
            out.captions[name] = (f"R-{arm} Grad-CAM, {rank}-risk {arm} validation patient {key} "
                                  f"(signature {score:.2f})")
            out.metrics["patients"][name] = {"model": f"R-{arm}", "patient": key, "signature": score}
    return out


def _figure(model: Model, roi: xr.Dataset, key: str) -> Figure:
    """One patient's overlays, laid out once (saving PNG and SVG then skips the layout solver)."""
    from ceusflow.model.attribution import attribution, plot_attribution

    fig = plot_attribution(attribution(model, roi, key, method=METHOD, stage=STAGE), roi, n_frames=N_FRAMES)
    engine = fig.get_layout_engine()
    if engine is not None:
        engine.execute(fig)
        fig.set_layout_engine("none")
    return fig


__all__ = ["EXPLANATION", "FeatureMaps", "feature_maps", "pick_patients"]
