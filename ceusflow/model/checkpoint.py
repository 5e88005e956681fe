"""Checkpoints: ``model.safetensors`` (weights) + ``config.json`` (everything else). No pickle.

``config.json`` holds the architecture, the training configuration (seed included), the
preprocessing parameters and hash of the training cohort, the ceusflow version, the best epoch
and the history. Loading reads JSON and safetensors only, so it executes no code from the files.
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from safetensors.torch import load_file, save_file

from ceusflow.errors import InputError
from ceusflow.model.network import CoxCNN, CoxEnsemble, NetworkConfig
from ceusflow.model.train import TrainConfig, Trained

FORMAT = "ceusflow-coxcnn"
FORMAT_VERSION = 1
WEIGHTS, CONFIG = "model.safetensors", "config.json"

__all__ = ["load_model", "save_model"]


def save_model(trained: Trained, path: str | Path) -> Path:
    """Write ``trained`` to the folder ``path`` (created if needed).

    Parameters
    ----------
    trained : Trained
        Result of :func:`ceusflow.model.train`.
    path : str or Path
        Output folder; ``model.safetensors`` and ``config.json`` are (over)written.

    Returns
    -------
    Path
        The folder.
    """
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in trained.model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS), metadata={"format": FORMAT})
    (folder / CONFIG).write_text(json.dumps(_config_json(trained), indent=2, default=_plain))
    return folder


def load_model(path: str | Path) -> Trained:
    """Read a checkpoint folder written by :func:`save_model` (safetensors + JSON only).

    Parameters
    ----------
    path : str or Path
        Checkpoint folder.

    Returns
    -------
    Trained
        Model in eval mode on CPU, with its configuration and history.

    Raises
    ------
    InputError
        If the folder is not a ceusflow Cox-CNN checkpoint.
    """
    folder = Path(path)
    meta = _read_config(folder)
    net = NetworkConfig.from_dict(meta["network"])
    n_models = int(meta["train_config"].get("n_models", 1))
    model = CoxCNN(net) if n_models == 1 else CoxEnsemble([CoxCNN(net) for _ in range(n_models)])
    model.load_state_dict(load_file(str(folder / WEIGHTS)))
    hist = {k: np.asarray(v, dtype=float) for k, v in meta["history"].items()}
    dims = ("epoch",) if n_models == 1 else ("member", "epoch")
    history = xr.Dataset({k: (dims, v) for k, v in hist.items()},
                         coords={"epoch": np.arange(1, hist["loss"].shape[-1] + 1)})
    return Trained(model.eval(), TrainConfig.from_json(json.dumps(meta["train_config"])), history,
                   int(meta["best_epoch"]), tuple(meta["inner_patients"]), meta["cohort_hash"],
                   meta["preprocessing"], meta.get("info", {}))


def _config_json(trained: Trained) -> dict[str, Any]:
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "ceusflow_version": _version(),
        "seed": trained.config.seed, "network": trained.model.config.to_dict(),
        "train_config": json.loads(trained.config.to_json()),
        "preprocessing": trained.preprocessing, "cohort_hash": trained.cohort_hash,
        "best_epoch": trained.best_epoch, "inner_patients": list(trained.inner_patients),
        "history": {k: trained.history[k].values.tolist() for k in trained.history.data_vars},
        "info": trained.info,
    }


def _read_config(folder: Path) -> dict[str, Any]:
    if not (folder / CONFIG).is_file() or not (folder / WEIGHTS).is_file():
        raise InputError(str(folder), f"has no {CONFIG} and {WEIGHTS}",
                         "pass a folder written by ceusflow.model.save_model")
    meta: dict[str, Any] = json.loads((folder / CONFIG).read_text())
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise InputError(str(folder / CONFIG), f"is not a {FORMAT} v{FORMAT_VERSION} checkpoint",
                         "re-save the model with this ceusflow version")
    return meta


def _version() -> str:
    try:
        return metadata.version("ceusflow")
    except metadata.PackageNotFoundError:
        return "unknown"


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)
