"""Harrell's C for monitoring training, through the project's estimator."""

from __future__ import annotations

from numpy.typing import ArrayLike

from ceusflow.errors import InputError
from ceusflow.survival.concordance import concordance


def inner_cindex(duration: ArrayLike, event: ArrayLike, risk: ArrayLike) -> float:
    """Harrell's C (higher risk = earlier event); NaN when no pair is comparable."""
    try:
        return float(concordance(duration, event, risk, ci="none").estimate)
    except InputError:
        return float("nan")
