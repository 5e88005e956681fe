"""Training of the Cox-CNN on the training cohort only (writes nothing).

Protocol: the training patients are split (stratified by event, seeded) into an inner-fit and an
inner-validation part; the network is fitted with AdamW on the inner-fit part and the epoch with
the best inner-validation Harrell's C (or partial likelihood, ``monitor``) after ``warmup_epochs`` is
kept (early stopping with ``patience``). The validation cohort of the study never enters this function.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd
import torch
import xarray as xr
from torch import Tensor

from ceusflow.conventions import EVENT, PATIENT
from ceusflow.errors import InputError
from ceusflow.model import _progress
from ceusflow.model._memory import reuse_freed_memory
from ceusflow.model._metrics import inner_cindex
from ceusflow.model.batches import (
    Augment,
    CineBatches,
    cache_decision,
    check_roi,
    cohort_hash,
    describe_roi,
)
from ceusflow.model.loss import Ties, cox_nll
from ceusflow.model.network import CoxCNN, CoxEnsemble, NetworkConfig, kinetic_log_hazard, profile
from ceusflow.preprocess.tic import contrast_table
from ceusflow.survival.cox import fit_cox

Device = Literal["auto", "cpu", "cuda"]
ProfileChoice = Literal["auto", "paper", "cpu"]
Monitor = Literal["inner_loss", "inner_cindex"]

#: Ridge penalty of the kinetic term (lifelines scale; the study's handcrafted comparators use the same).
KINETIC_PENALIZER = 0.1

__all__ = ["KINETIC_PENALIZER", "TrainConfig", "Trained", "kinetic_features", "resolve_device", "train"]


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; saved as JSON next to the weights.

    Attributes
    ----------
    profile : {"auto", "paper", "cpu"}
        Network profile; "auto" = "paper" on CUDA, "cpu" otherwise. Ignored if ``network`` is set.
    network : NetworkConfig, optional
        Explicit architecture (overrides ``profile``).
    epochs, batch_size : int
        Largest number of epochs; patients per batch.
    lr, weight_decay : float
        AdamW learning rate and decoupled weight decay.
    patience : int
        Epochs without a better inner-validation ``monitor`` before stopping.
    warmup_epochs : int
        Epochs trained before early stopping starts watching (Keras's ``start_from_epoch``): the
        best epoch is chosen among the later ones (or is the last one, if ``epochs`` is not more),
        and ``patience`` counts from there. An inner split of ~25 patients is noisy: without a
        warm-up, R-SR once kept its first epoch (training C 0.53) because that scored the best
        inner C; 5 epochs avoid that, while 20 kept an over-fitted late epoch
        (``docs/model.md``, session 5).
    monitor : {"inner_cindex", "inner_loss"}
        What early stopping keeps the best epoch of: the inner Harrell's C (default), or the Cox
        partial likelihood of the whole inner split (smoother; on the simulated 419-patient
        cohort it gave the same validation C within noise, see ``docs/model.md``).
    inner_fraction : float
        Share of the training patients held out as the inner validation split.
    ties : {"efron", "breslow"}
        Tie handling of the Cox loss.
    augment : Augment, optional
        Training augmentation; None for none.
    seed : int
        Seed of the split, the initial weights, the batch order and the augmentation.
    device : {"auto", "cpu", "cuda"}
        Where to train; "auto" = CUDA when available.
    amp : bool
        bfloat16 mixed precision on CUDA (ignored on CPU).
    cache : bool, optional
        Load the cohort into memory (True), read lazily (False) or decide by size (None).
    compile : str, optional
        ``torch.compile`` backend for training and inner validation; None = eager. ``"inductor"``
        fuses the element-wise work: +45 % patients/s for the paper profile on an H200, after
        ~44 s of compilation (one per input shape and mode), which a 157-patient arm trained
        eagerly in 13 s does not win back (``docs/model.md``, session 7). Compiled and
        eager training agree to floating-point rounding, not bit for bit (``"eager"`` runs the
        graph capture alone and gives identical weights: tested).
    n_models : int
        Members of a bagged ensemble. Member ``k`` uses ``seed + k`` for its inner split, initial
        weights, batch order and augmentation and is early-stopped on its own inner split; the
        log-hazard is the mean of the members' (every training patient is fitted by most members).
    kinetic : bool
        Add the kinetic term (:class:`~ceusflow.model.network.NetworkConfig` ``kinetic_features``):
        a ridge Cox on the cohort's contrast curves (needs the ROI store's ``tic``), fitted exactly
        on each member's inner-fit patients (penalty :data:`KINETIC_PENALIZER`, lifelines scale;
        features without variation there get coefficient 0), then frozen; the network is trained
        on top of it and early-stopped on the inner C of the sum. Off by default: the paper's
        network sees the ROI cine only.
    """

    profile: ProfileChoice = "auto"
    network: NetworkConfig | None = None
    epochs: int = 60
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-2
    patience: int = 12
    warmup_epochs: int = 5
    monitor: Monitor = "inner_cindex"
    inner_fraction: float = 0.2
    ties: Ties = "efron"
    augment: Augment | None = field(default_factory=Augment)
    seed: int = 0
    device: Device = "auto"
    amp: bool = True
    cache: bool | None = None
    compile: str | None = None
    n_models: int = 1
    kinetic: bool = False

    def __post_init__(self) -> None:
        for name, options in (("profile", ProfileChoice), ("device", Device), ("ties", Ties),
                              ("monitor", Monitor)):
            if getattr(self, name) not in get_args(options):
                raise InputError(name, f"{getattr(self, name)!r} is not supported",
                                 f"use one of {get_args(options)}")
        if (self.epochs < 1 or self.batch_size < 2 or not 0.0 < self.inner_fraction < 1.0
                or self.n_models < 1 or self.warmup_epochs < 0):
            raise InputError("TrainConfig", "needs epochs >= 1, batch_size >= 2, "
                             "0 < inner_fraction < 1, n_models >= 1, warmup_epochs >= 0",
                             "fix the configuration")
        if self.compile is not None and self.compile not in torch.compiler.list_backends(exclude_tags=()):
            raise InputError("compile", f"{self.compile!r} is not a torch.compile backend",
                             "use 'inductor' (or None for eager training)")

    def resolved_network(self, device: str) -> NetworkConfig:
        """Return ``network``, or the profile's architecture for ``device``."""
        if self.network is not None:
            return self.network
        name = self.profile if self.profile != "auto" else ("paper" if device == "cuda" else "cpu")
        return profile(name)

    def to_json(self) -> str:
        """Serialise to JSON (round-trips with :meth:`from_json`)."""
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        """Rebuild a configuration written by :meth:`to_json`."""
        data: dict[str, Any] = json.loads(text)
        if data.get("network") is not None:
            data["network"] = NetworkConfig.from_dict(data["network"])
        if data.get("augment") is not None:
            data["augment"] = Augment(**data["augment"])
        return cls(**data)


@dataclass(frozen=True)
class Trained:
    """A trained Cox-CNN and how it was obtained.

    Attributes
    ----------
    model : CoxCNN or CoxEnsemble
        The network with the weights of the best inner-validation epoch, in eval mode, on CPU
        (a :class:`CoxEnsemble` of such networks when ``config.n_models > 1``).
    config : TrainConfig
        The training configuration, with ``network`` resolved.
    history : Dataset (epoch) or (member, epoch)
        ``loss`` (mean training loss), ``inner_loss``, ``inner_cindex``, ``seconds``; ensembles
        have one row per member (NaN after a member stopped).
    best_epoch : int
        Epoch (1-based) whose weights were kept (ensembles: the median over members; each
        member's is in ``info["best_epochs"]``).
    inner_patients : tuple of str
        Patients of the inner validation split (ensembles: of member 0).
    cohort_hash : str
        :func:`ceusflow.model.batches.cohort_hash` of the training cohort.
    preprocessing : dict
        :func:`ceusflow.model.batches.describe_roi` of the training cohort.
    info : dict
        Free JSON-ready facts saved with the checkpoint (e.g. ``treatment``, set by the CLI).
    """

    model: CoxCNN | CoxEnsemble
    config: TrainConfig
    history: xr.Dataset
    best_epoch: int
    inner_patients: tuple[str, ...]
    cohort_hash: str
    preprocessing: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)


def resolve_device(device: str) -> torch.device:
    """Map "auto" / "cpu" / "cuda" to a torch device (InputError if CUDA is missing)."""
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("device", "CUDA was requested but is not available", "use 'cpu' or 'auto'")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def train(roi: xr.Dataset, config: TrainConfig | None = None, *, progress: bool = True) -> Trained:
    """Train a Cox-CNN on the (training) patients of an ROI cohort.

    Parameters
    ----------
    roi : Dataset
        ROI cohort: ``intensity (patient, phase, time, y, x)`` in [0, 1], ``frame_ok``,
        ``duration`` (months) and ``event``; training patients only.
    config : TrainConfig, optional
        Training configuration; default ``TrainConfig()``.
    progress : bool
        Show the data-path decision, an ETA and a progress bar (rich) on the terminal.

    Returns
    -------
    Trained
        The best-epoch model and the training history.
    """
    config = config if config is not None else TrainConfig()
    check_roi(roi)
    device = resolve_device(config.device)
    config = dataclasses.replace(config, network=config.resolved_network(device.type))
    kinetic = kinetic_features(roi) if config.kinetic else None
    if kinetic is not None:
        assert config.network is not None
        config = dataclasses.replace(config, network=dataclasses.replace(
            config.network, kinetic_features=tuple(kinetic.columns)))
    cached, message = cache_decision(roi) if config.cache is None else (config.cache, "")
    if cached and config.n_models > 1:  # load once for every member
        roi = roi.load()
    members = [_train_one(roi, dataclasses.replace(config, seed=config.seed + k), device, cached,
                          progress, message if k == 0 else f"ensemble member {k + 1} of {config.n_models}",
                          kinetic)
               for k in range(config.n_models)]
    model, history, best, inner = members[0]
    info: dict[str, Any] = {}
    if config.n_models > 1:
        model = CoxEnsemble([m[0] for m in members])
        history = xr.concat([m[1] for m in members], dim="member", join="outer")
        info["best_epochs"] = [m[2] for m in members]
        best = int(np.median(info["best_epochs"]))
    return Trained(model.cpu().eval(), config, history, best, inner, cohort_hash(roi), describe_roi(roi), info)


def _train_one(roi: xr.Dataset, config: TrainConfig, device: torch.device, cached: bool, progress: bool,
               message: str, kinetic: pd.DataFrame | None = None) -> tuple[CoxCNN, xr.Dataset, int, tuple[str, ...]]:
    """Fit one network on an inner split drawn with ``config.seed``; return it, its history, best epoch."""
    fit_idx, val_idx = inner_split(roi[EVENT].values, config.inner_fraction, config.seed)
    fit = CineBatches(roi.isel({PATIENT: fit_idx}), augment=config.augment, seed=config.seed,
                      cache=cached)
    val = CineBatches(roi.isel({PATIENT: val_idx}), cache=cached)
    term = None
    if kinetic is not None:
        term = _fit_kinetic(kinetic.iloc[fit_idx], fit._duration.numpy(), fit._event.numpy())
        fit.offset, val.offset = (kinetic_log_hazard(torch.as_tensor(kinetic.iloc[i].to_numpy()), *term)
                                  for i in (fit_idx, val_idx))
    with _deterministic(device), reuse_freed_memory(), _progress.reporter(progress, message) as report:
        model, history, best = _fit(fit, val, config, device, report)
    if term is not None:
        model.set_kinetic(*term)
    return model.cpu().eval(), history, best, tuple(str(p) for p in roi[PATIENT].values[val_idx])


def kinetic_features(roi: xr.Dataset) -> pd.DataFrame:
    """Contrast-curve features of the cohort's patients, in their order (the kinetic term's input).

    Parameters
    ----------
    roi : Dataset
        ROI cohort with ``tic (patient, part, exam_time)``, as :func:`ceusflow.preprocess.cohort.preprocess_cohort`
        writes it.

    Returns
    -------
    DataFrame (patient, ``contrast_<part>_<start>s``)
        :func:`ceusflow.preprocess.tic.contrast_table`.
    """
    if "tic" not in roi.data_vars:
        raise InputError("roi", "has no 'tic' variable (time-intensity curves), which the kinetic term needs",
                         "preprocess with `ceusflow preprocess` (it writes them), or train with kinetic=False")
    return contrast_table(roi["tic"].load())


def _fit_kinetic(features: pd.DataFrame, duration: np.ndarray, event: np.ndarray) -> tuple[Tensor, Tensor, Tensor]:
    """Ridge Cox on the inner-fit patients -> (impute, center, coef) over every feature column."""
    impute = features.median().fillna(0.0)
    usable = [c for c in features.columns if features[c].nunique() > 1]
    if not usable or not np.asarray(event, bool).any():
        raise InputError("kinetic term", f"has {len(usable)} varying contrast feature(s) and "
                         f"{int(np.asarray(event, bool).sum())} event(s) among the inner-fit patients",
                         "train with kinetic=False, or on more patients")
    fit = fit_cox(duration, np.asarray(event, bool), features[usable].fillna(impute[usable]),
                  penalizer=KINETIC_PENALIZER)
    center = pd.Series(0.0, index=features.columns)
    coef = pd.Series(0.0, index=features.columns)
    center[usable], coef[usable] = fit.means, fit.coef
    return tuple(torch.as_tensor(v.to_numpy(np.float64)) for v in (impute, center, coef))  # type: ignore[return-value]


def inner_split(event: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split patient positions into inner-fit and inner-validation, stratified by event.

    Parameters
    ----------
    event : ndarray (n,)
        Event indicators of the training patients.
    fraction : float
        Share held out for inner validation (at least 2 patients, at most n - 2).
    seed : int
        Seed of the permutation.

    Returns
    -------
    tuple of ndarray
        Sorted positions of the inner-fit and inner-validation patients.
    """
    e = np.asarray(event).astype(bool)
    if e.size < 4:
        raise InputError("roi", f"has {e.size} patients", "train on at least 4 patients")
    rng = np.random.default_rng(seed)
    val: list[int] = []
    for stratum in (np.flatnonzero(e), np.flatnonzero(~e)):
        k = int(round(fraction * stratum.size))
        val.extend(rng.permutation(stratum)[:k].tolist())
    val_arr = np.sort(np.asarray(val[: e.size - 2] if len(val) >= 2 else
                                 rng.permutation(e.size)[:2], dtype=int))
    return np.setdiff1d(np.arange(e.size), val_arr), val_arr


@contextlib.contextmanager
def _deterministic(device: torch.device) -> Iterator[None]:
    """Use deterministic algorithms on CPU for the duration of training."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(device.type == "cpu" or before, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


def _fit(fit: CineBatches, val: CineBatches, config: TrainConfig, device: torch.device,
         report: _progress.Reporter) -> tuple[CoxCNN, xr.Dataset, int]:
    torch.manual_seed(config.seed)
    assert config.network is not None
    model = CoxCNN(config.network).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    order_rng = torch.Generator().manual_seed(config.seed)
    report.eta(_estimate_seconds(model, fit, val, config, device), config.epochs)
    # The compiled module shares the parameters; checkpoints and states come from ``model``.
    net = model if config.compile is None else torch.compile(model, backend=config.compile)
    rows: list[dict[str, float]] = []
    best = (-np.inf, 0, _state(model))
    for epoch in range(1, config.epochs + 1):
        start = time.perf_counter()
        fit.set_epoch(epoch)
        loss = _train_epoch(net, opt, fit, torch.randperm(len(fit), generator=order_rng),
                            config, device)
        inner_loss, c = _evaluate(net, val, config, device)
        rows.append({"loss": loss, "inner_loss": inner_loss, "inner_cindex": c,
                     "seconds": time.perf_counter() - start})
        report.epoch(epoch, config.epochs, rows[-1])
        if epoch <= config.warmup_epochs and epoch < config.epochs:
            continue  # not watched yet
        score = -inner_loss if config.monitor == "inner_loss" else c
        score = float(np.nan_to_num(score, nan=-np.inf if config.monitor == "inner_loss" else 0.5))
        if score > best[0]:
            best = (score, epoch, _state(model))
        elif epoch - best[1] >= config.patience:
            break
    model.load_state_dict(best[2])
    return model, _history(rows), best[1]


def _state(model: torch.nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _history(rows: list[dict[str, float]]) -> xr.Dataset:
    epochs = np.arange(1, len(rows) + 1)
    data = {k: ("epoch", np.array([r[k] for r in rows], dtype=float)) for k in rows[0]}
    ds = xr.Dataset(data, coords={"epoch": epochs})
    ds["seconds"].attrs["units"] = "s"
    return ds


def _batches(ds: CineBatches, order: Tensor, size: int, device: torch.device,
             depth: int = 2) -> Iterator[tuple[Tensor, ...]]:
    """Yield batches in ``order``; on a GPU, prepared ``depth`` batches ahead in a thread.

    On a GPU, reading (Zarr decompression releases the GIL), the gather, the copy and the
    augmentation of the next batches overlap the forward/backward pass. On a CPU every batch is
    prepared in line: both cores are busy with the model, and the same work in a second thread
    ran 1.5-6x slower (its large tensors come from another malloc arena and another OpenMP team):
    store/memory 0.65 with the thread, 0.85-1.04 in line (``docs/model.md``, session 7). Items
    depend only on (seed, epoch, index), so where a batch is prepared does not change any result.
    """
    chunks = list(order.split(size))
    if device.type == "cpu" or not chunks:
        yield from (ds.batch(idx, device) for idx in chunks)
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = deque(pool.submit(ds.batch, idx, device) for idx in chunks[:depth])
        for nxt in chunks[depth:]:
            batch = pending.popleft().result()
            pending.append(pool.submit(ds.batch, nxt, device))
            yield batch
        while pending:
            yield pending.popleft().result()


def _autocast(config: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if device.type == "cuda" and config.amp:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _train_epoch(model: torch.nn.Module, opt: torch.optim.Optimizer, fit: CineBatches, order: Tensor,
                 config: TrainConfig, device: torch.device) -> float:
    model.train()
    total, n_events = 0.0, 0
    chunks = order.split(config.batch_size)
    for idx, (x, mask, duration, event) in zip(chunks, _batches(fit, order, config.batch_size, device), strict=True):
        if not bool(event.any()) or len(event) < 2:
            # No event: no partial likelihood. One patient: it is its own risk set, so its partial
            # likelihood is 1 whatever the weights (and batch statistics are undefined).
            continue  # nothing to learn, and no weight-decay step
        with _autocast(config, device):
            log_hz = model(x, mask)
        if fit.offset is not None:  # the frozen kinetic term (TrainConfig.kinetic)
            log_hz = log_hz.float() + fit.offset[idx].to(device=device, dtype=torch.float32)
        loss = cox_nll(log_hz.float(), duration, event, ties=config.ties, reduction="sum")
        opt.zero_grad(set_to_none=True)
        (loss / event.sum()).backward()
        opt.step()
        total, n_events = total + float(loss.detach()), n_events + int(event.sum())
    return total / n_events if n_events else float("nan")


@torch.no_grad()
def _risks(model: torch.nn.Module, ds: CineBatches, config: TrainConfig, device: torch.device) -> Tensor:
    model.eval()
    out = []
    for x, mask, _, _ in _batches(ds, torch.arange(len(ds)), config.batch_size, device):
        with _autocast(config, device):
            out.append(model(x, mask).float().cpu())
    risk = torch.cat(out) if out else torch.zeros(0)
    return risk if ds.offset is None else risk + ds.offset.to(torch.float32)


def _evaluate(model: torch.nn.Module, val: CineBatches, config: TrainConfig,
              device: torch.device) -> tuple[float, float]:
    risk = _risks(model, val, config, device).double()
    loss = float(cox_nll(risk, val._duration, val._event, ties=config.ties))
    return loss, inner_cindex(val._duration.numpy(), val._event.numpy(), risk.numpy())


def _estimate_seconds(model: CoxCNN, fit: CineBatches, val: CineBatches, config: TrainConfig,
                      device: torch.device) -> float:
    """Time one forward+backward batch (RNG state untouched) and extrapolate to all epochs."""
    idx = torch.arange(min(config.batch_size, len(fit)))
    saved = _state(model)
    with torch.random.fork_rng(devices=[]):
        start = time.perf_counter()
        x, mask, _, _ = fit.batch(idx, device)
        with _autocast(config, device):
            model(x, mask).float().sum().backward()
        per_patient = (time.perf_counter() - start) / len(idx)
    model.zero_grad(set_to_none=True)
    model.load_state_dict(saved)  # undo batch-norm statistics of the timing batch
    return per_patient * (len(fit) + len(val) / 3) * config.epochs
