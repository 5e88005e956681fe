"""Risk scores of a trained Cox-CNN for every patient of an ROI cohort."""

from __future__ import annotations

import numpy as np
import xarray as xr

from ceusflow.conventions import PATIENT, RISK
from ceusflow.model.batches import CineBatches
from ceusflow.model.network import CoxCNN, CoxEnsemble
from ceusflow.model.train import Device, TrainConfig, _risks, resolve_device

__all__ = ["predict_risk"]


def predict_risk(model: CoxCNN | CoxEnsemble, roi: xr.Dataset, *, batch_size: int = 32,
                 device: Device = "cpu", cache: bool | None = False) -> xr.DataArray:
    """Predict the log-hazard (Radiomics signature) of each patient.

    Parameters
    ----------
    model : CoxCNN or CoxEnsemble
        A trained network (e.g. ``Trained.model`` or ``load_model(path).model``).
    roi : Dataset
        ROI cohort with ``intensity (patient, phase, time, y, x)`` and ``frame_ok``; outcomes
        are not needed.
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
    config = TrainConfig(batch_size=max(2, batch_size), amp=False)
    risk = _risks(model.to(dev), ds, config, dev).double().numpy()
    model.to(home)
    return xr.DataArray(np.asarray(risk, dtype=np.float64), dims=(PATIENT,),
                        coords={PATIENT: roi[PATIENT].values}, name=RISK,
                        attrs={"model": "CoxCNN", "units": "1",
                               "description": "log relative hazard; higher = earlier event"})
