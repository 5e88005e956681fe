"""The Cox-CNN survival model of Liu et al. 2020 in torch.

Torch is imported only from here, never by ``import ceusflow``.

``train(roi, TrainConfig(...)) -> Trained``; ``predict_risk(model, roi) -> DataArray`` named
``risk``; ``save_model`` / ``load_model`` (safetensors + JSON); ``cox_nll`` (the loss);
``CoxCNN`` / ``profile`` (the network); ``CoxCNNSurvival`` (scikit-survival style estimator);
``evaluate_baseline`` (penalised Cox on handcrafted features). Feature maps (matplotlib) live in
``ceusflow.model.attribution``; the ROI-store side of the CLI in ``ceusflow.model.cohort``.
"""

from __future__ import annotations

from ceusflow.model.baseline import BaselineResult, evaluate_baseline, fit_baseline
from ceusflow.model.batches import Augment, CineBatches, cache_decision, check_roi, cohort_hash
from ceusflow.model.checkpoint import load_model, save_model
from ceusflow.model.estimator import CoxCNNSurvival
from ceusflow.model.loss import cox_nll
from ceusflow.model.network import CoxCNN, NetworkConfig, profile
from ceusflow.model.predict import predict_risk
from ceusflow.model.train import TrainConfig, Trained, inner_split, train

__all__ = [
    "Augment", "BaselineResult", "CineBatches", "CoxCNN", "CoxCNNSurvival", "NetworkConfig", "TrainConfig",
    "Trained", "cache_decision", "check_roi", "cohort_hash", "cox_nll", "evaluate_baseline",
    "fit_baseline", "inner_split",
    "load_model", "predict_risk", "profile", "save_model", "train",
]
