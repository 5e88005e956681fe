"""Risk scores of a trained Cox-CNN for every patient of an ROI cohort."""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr

from ceusflow.conventions import PATIENT, RISK
from ceusflow.model.batches import CineBatches
from ceusflow.model.network import CoxCNN, CoxEnsemble
from ceusflow.model.train import Device, TrainConfig, _risks, kinetic_features, resolve_device

__all__ = ["predict_risk"]


def predict_risk(model: CoxCNN | CoxEnsemble, roi: xr.Dataset, *, batch_size: int = 32,
                 device: Device = "cpu", cache: bool | None = False) -> xr.DataArray:
    """Predict the log-hazard (Radiomics signature) of each patient.

    Parameters
    ----------
    model : CoxCNN or CoxEnsemble
        A trained network (e.g. ``Trained.model`` or ``load_model(path).model``).
    roi : Dataset
        ROI cohort with ``intensity (patient, phase, time, y, x)`` and ``frame_ok`` (and ``tic``
        for a model with a kinetic term); outcomes are not needed.
    batch_size : int
        Patients per forward pass.
    device : {"auto", "cpu", "cuda"}
        Where to compute (fp32; the model is moved there and back to its original device).
    cache : bool, optional
        Load the cohort into memory first (None: decide by size); default lazy, one patient
        at a time.

    Returns
    -------
    DataArray (patient)
        Name ``risk``; the log relative hazard, higher = earlier event.
    """
    dev = resolve_device(device)
    ds = CineBatches(roi, cache=cache, outcomes=False)
    home = next(model.parameters()).device
    names = list(model.config.kinetic_features)
    if names:  # the frozen kinetic term: from the cohort's contrast curves, missing ones imputed
        feats = kinetic_features(roi).reindex(columns=names).to_numpy(np.float64)
        ds.offset = model.kinetic_offset(torch.as_tensor(feats, device=home)).cpu()
    config = TrainConfig(batch_size=max(2, batch_size), amp=False)
    risk = _risks(model.to(dev), ds, config, dev).double().numpy()
    model.to(home)
    return xr.DataArray(np.asarray(risk, dtype=np.float64), dims=(PATIENT,),
                        coords={PATIENT: roi[PATIENT].values}, name=RISK,
                        attrs={"model": "CoxCNN" + (" + kinetic term" if names else ""), "units": "1",
                               "description": "log relative hazard; higher = earlier event"})
