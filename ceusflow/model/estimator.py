"""A scikit-learn / scikit-survival style shell around :func:`train` and :func:`predict_risk`."""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr
from numpy.typing import NDArray
from sklearn.base import BaseEstimator

from ceusflow.conventions import DURATION, EVENT, FRAME_OK, INTENSITY, PATIENT, PHASES, TIME, X, Y
from ceusflow.errors import InputError
from ceusflow.model.batches import Augment
from ceusflow.model.network import NetworkConfig
from ceusflow.model.predict import predict_risk
from ceusflow.model.train import TrainConfig, Trained, train

__all__ = ["CoxCNNSurvival"]


class CoxCNNSurvival(BaseEstimator):  # type: ignore[misc]
    """Cox-CNN survival estimator: ``fit(X, y)``, ``predict(X)`` -> risk, ``score`` -> Harrell's C.

    ``X`` is an ROI cohort Dataset or an array ``(n, phase=3, time, y, x)`` in [0, 1] (NaN frames
    are treated as invalid); ``y`` is a scikit-survival structured array (event, time), aligned by
    position with the patients of ``X``. Arrays work with ``sksurv`` model selection; Datasets
    are not sliced by scikit-learn's cross-validation helpers.

    Parameters
    ----------
    profile, epochs, batch_size, lr, weight_decay, patience, warmup_epochs, inner_fraction, ties, seed,
    device
        As in :class:`ceusflow.model.TrainConfig`.
    network : NetworkConfig, optional
        Explicit architecture (overrides ``profile``).
    augment : bool
        Use the default :class:`ceusflow.model.batches.Augment` (True) or none.
    progress : bool
        Show the progress bar while fitting.
    """

    def __init__(self, *, profile: str = "auto", network: NetworkConfig | None = None,
                 epochs: int = 60, batch_size: int = 32, lr: float = 3e-3,
                 weight_decay: float = 1e-2, patience: int = 12, warmup_epochs: int = 5,
                 inner_fraction: float = 0.2, ties: str = "efron", augment: bool = True, seed: int = 0,
                 device: str = "auto", progress: bool = False) -> None:
        self.profile, self.network, self.epochs, self.batch_size = profile, network, epochs, batch_size
        self.lr, self.weight_decay, self.patience = lr, weight_decay, patience
        self.warmup_epochs = warmup_epochs
        self.inner_fraction, self.ties, self.augment, self.seed = inner_fraction, ties, augment, seed
        self.device, self.progress = device, progress

    def fit(self, X: xr.Dataset | NDArray[Any], y: NDArray[Any] | None = None) -> CoxCNNSurvival:
        """Train on ``X`` with outcomes ``y`` (or the Dataset's own ``duration``/``event``)."""
        roi = _as_roi(X, y)
        config = TrainConfig(
            profile=self.profile, network=self.network, epochs=self.epochs,  # type: ignore[arg-type]
            batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay,
            patience=self.patience, warmup_epochs=self.warmup_epochs,
            inner_fraction=self.inner_fraction, ties=self.ties,  # type: ignore[arg-type]
            augment=Augment() if self.augment else None, seed=self.seed, device=self.device)  # type: ignore[arg-type]
        self.trained_: Trained = train(roi, config, progress=self.progress)
        self.model_ = self.trained_.model
        return self

    def predict(self, X: xr.Dataset | NDArray[Any]) -> NDArray[np.float64]:
        """Risk score (log-hazard) per patient, higher = earlier event."""
        if not hasattr(self, "model_"):
            raise InputError("CoxCNNSurvival", "is not fitted", "call fit(X, y) first")
        return np.asarray(predict_risk(self.model_, _as_roi(X, None)).values, dtype=np.float64)

    def score(self, X: xr.Dataset | NDArray[Any], y: NDArray[Any]) -> float:
        """Harrell's C of ``predict(X)`` against ``y`` (scikit-survival's definition)."""
        from sksurv.metrics import concordance_index_censored
        from sksurv.util import check_y_survival

        event, time = check_y_survival(y)
        return float(concordance_index_censored(event, time, self.predict(X))[0])


def _as_roi(X: xr.Dataset | NDArray[Any], y: NDArray[Any] | None) -> xr.Dataset:
    roi = X if isinstance(X, xr.Dataset) else _roi_from_array(np.asarray(X))
    if y is None:
        return roi
    from sksurv.util import check_y_survival

    event, time = check_y_survival(y, allow_all_censored=True)
    if event.size != roi.sizes[PATIENT]:
        raise InputError("y", f"has {event.size} rows for {roi.sizes[PATIENT]} patients",
                         "pass one outcome per patient, in the order of X")
    return roi.assign({DURATION: (PATIENT, time.astype(np.float64)), EVENT: (PATIENT, event)})


def _roi_from_array(arr: NDArray[Any]) -> xr.Dataset:
    if arr.ndim != 5 or arr.shape[1] != len(PHASES):
        raise InputError("X", f"has shape {arr.shape}", "expected (n, 3 phases, time, y, x)")
    ok = np.isfinite(arr).all(axis=(3, 4))
    return xr.Dataset(
        {INTENSITY: ((PATIENT, "phase", TIME, Y, X), np.nan_to_num(arr.astype(np.float32))),
         FRAME_OK: ((PATIENT, "phase", TIME), ok)},
        coords={PATIENT: [str(i) for i in range(arr.shape[0])], "phase": list(PHASES)})
