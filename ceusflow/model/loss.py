"""Negative Cox partial log-likelihood with Efron or Breslow ties, vectorised.

The loss sorts the batch once by follow-up time (descending), so that the risk set of every
distinct time is a prefix of the sorted batch; its log-sum is one ``torch.logcumsumexp``. Tied
times are handled per tie group with segment (scatter) operations, never a Python loop over events.

Conventions
-----------
- ``log_hazard`` is the linear predictor (higher = earlier event), any float dtype; half
  precision is promoted to float32. ``duration`` keeps its own dtype (float64 stays float64:
  ties are found on the exact values).
- Everything is done in log space: log-hazards of +-1000 give a finite, correct loss.
- A batch without events has no partial likelihood: the loss is ``0`` with zero gradient (and it
  stays connected to the graph, so ``backward`` works). A one-sample batch with an event also
  gives 0 (the patient is alone in its risk set).
- ``reduction="mean"`` divides the summed negative log-likelihood by the number of events;
  ``"sum"`` returns the sum, which equals ``-loglike`` of statsmodels' ``PHReg`` / lifelines.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor

from ceusflow.errors import InputError

Ties = Literal["efron", "breslow"]
Reduction = Literal["mean", "sum"]

__all__ = ["Reduction", "Ties", "cox_nll"]


def cox_nll(
    log_hazard: Tensor,
    duration: Tensor,
    event: Tensor,
    *,
    ties: Ties = "efron",
    reduction: Reduction = "mean",
) -> Tensor:
    """Negative Cox partial log-likelihood of a batch.

    Parameters
    ----------
    log_hazard : Tensor (n,) or (n, 1)
        Log relative hazard (linear predictor); higher = earlier event.
    duration : Tensor (n,)
        Follow-up time (e.g. months); any real dtype, used as given (never cast down).
    event : Tensor (n,)
        True / 1 where the event was observed, False / 0 when censored.
    ties : {"efron", "breslow"}
        Approximation for tied event times.
    reduction : {"mean", "sum"}
        ``"mean"`` divides by the number of events; ``"sum"`` does not.

    Returns
    -------
    Tensor ()
        The loss, in the dtype of ``log_hazard`` (float32 at least). 0 with zero gradient
        when the batch has no event.

    Raises
    ------
    InputError
        On an unknown ``ties`` / ``reduction`` or mismatched shapes.
    """
    lh = _check(log_hazard, duration, event, ties, reduction)
    order = torch.sort(duration.reshape(-1), descending=True, stable=True).indices
    lh, ev = lh[order], event.reshape(-1)[order].to(torch.bool)
    n_events = ev.sum()
    if lh.numel() == 0 or not bool(n_events):
        return lh.sum() * 0.0
    nll = -_partial_loglik(lh, duration.reshape(-1)[order], ev, ties)
    return nll / n_events.to(lh.dtype) if reduction == "mean" else nll


def _check(log_hazard: Tensor, duration: Tensor, event: Tensor, ties: str, reduction: str) -> Tensor:
    if ties not in get_args(Ties):
        raise InputError("ties", f"{ties!r} is not supported", f"use one of {get_args(Ties)}")
    if reduction not in get_args(Reduction):
        raise InputError("reduction", f"{reduction!r} is not supported",
                         f"use one of {get_args(Reduction)}")
    lh = log_hazard.reshape(-1) if log_hazard.dim() == 2 and log_hazard.shape[-1] == 1 else log_hazard
    if lh.dim() != 1 or duration.reshape(-1).shape != lh.shape or event.reshape(-1).shape != lh.shape:
        raise InputError("log_hazard", f"shape {tuple(log_hazard.shape)} does not match duration "
                         f"{tuple(duration.shape)} and event {tuple(event.shape)}",
                         "pass one value per sample")
    return lh if lh.dtype in (torch.float32, torch.float64) else lh.float()


def _partial_loglik(lh: Tensor, duration: Tensor, ev: Tensor, ties: str) -> Tensor:
    """Sum of the log partial likelihood; inputs sorted by descending duration."""
    _, group, counts = torch.unique_consecutive(duration, return_inverse=True, return_counts=True)
    last = torch.cumsum(counts, 0) - 1
    log_risk = torch.logcumsumexp(lh, 0)[last]  # log sum exp over {j: T_j >= t_g}, per group
    ev_idx = torch.nonzero(ev).squeeze(1)
    g_ev, lh_ev = group[ev_idx], lh[ev_idx]
    log_risk_ev = log_risk[g_ev]  # per event row
    if ties == "breslow":
        return lh_ev.sum() - log_risk_ev.sum()
    return lh_ev.sum() - (log_risk_ev + _efron_correction(lh_ev, g_ev, log_risk_ev, len(counts))).sum()


def _efron_correction(lh_ev: Tensor, g_ev: Tensor, log_risk_ev: Tensor, n_groups: int) -> Tensor:
    """``log(1 - l/d * E/R)`` for the l-th (0-based) of the d events of each tie group."""
    zeros = lh_ev.new_zeros(n_groups)
    peak = zeros.scatter_reduce(0, g_ev, lh_ev.detach(), "amax", include_self=False)[g_ev]
    tied_sum = zeros.scatter_add(0, g_ev, torch.exp(lh_ev - peak))[g_ev]  # > 0 for event rows
    log_tied = torch.log(tied_sum) + peak  # log sum exp of the tied events' log-hazards
    d = torch.zeros(n_groups, dtype=torch.long, device=g_ev.device).scatter_add(
        0, g_ev, torch.ones_like(g_ev))[g_ev]
    first = torch.searchsorted(g_ev, g_ev)  # event rows are sorted by group
    rank = torch.arange(g_ev.numel(), device=g_ev.device) - first
    frac = (rank.to(lh_ev.dtype) / d.to(lh_ev.dtype))
    ratio = torch.exp(log_tied - log_risk_ev).clamp(max=1.0)
    return torch.log1p(-frac * ratio)
