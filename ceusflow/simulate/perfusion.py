"""Indicator-dilution model of liver CEUS time–intensity curves with the dual blood supply.

Concentrations are in arbitrary linear units (proportional to microbubble concentration, hence
to backscattered power); times in seconds after injection. Every function is pure and vectorised
over time. Sources for every timing are in ``docs/simulator.md``.

Model
-----
* arterial input ``a(t)``: a lognormal first pass arriving at ``t0`` (~12 s), a delayed and
  dispersed lognormal recirculation, and a slowly mixing, slowly cleared blood-pool plateau;
* portal input ``p(t) = a ⊛ g`` with ``g`` a gamma transit kernel (splanchnic transit, ~14 s);
* a tissue curve ``c(t) = BV · [(f_a·a + (1−f_a)·p) ⊛ h](t) · w(t)`` with ``h`` an exponential
  transit-time kernel (mean transit time MTT), ``BV`` the relative blood volume, ``f_a`` the
  arterial fraction of the supply and ``w(t)`` a washout factor (1 for parenchyma).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]

#: Fine grid (s) on which inputs are convolved before sampling at frame times.
_DT = 0.1
_T_MAX = 400.0


@dataclass(frozen=True)
class ArterialInput:
    """Parameters of the arterial input function (seconds; amplitudes relative).

    Attributes
    ----------
    arrival_s : float
        Bolus arrival in the hepatic artery after injection (~10–15 s).
    first_pass_median_s : float
        Median of the lognormal first pass after arrival.
    first_pass_sigma : float
        Log-scale width of the first pass.
    recirculation_delay_s, recirculation_fraction : float
        Delay and relative area of the second pass.
    plateau_fraction : float
        Blood-pool plateau level relative to the first-pass peak concentration.
    clearance_s : float
        Time constant of bubble clearance (destruction + exhalation), several minutes.
    """

    arrival_s: float = 12.0
    first_pass_median_s: float = 7.0
    first_pass_sigma: float = 0.55
    recirculation_delay_s: float = 14.0
    recirculation_fraction: float = 0.35
    plateau_fraction: float = 0.4
    clearance_s: float = 400.0


@dataclass(frozen=True)
class Tissue:
    """Perfusion parameters of one tissue class.

    Attributes
    ----------
    blood_volume : float
        Relative blood volume (parenchyma = 1).
    arterial_fraction : float
        Share of the supply from the hepatic artery (parenchyma ~0.25, HCC ~1).
    mtt_s : float
        Mean transit time of the tissue compartment (s).
    washout_onset_s : float
        Time after which the washout factor starts to fall (``inf`` = no washout).
    washout_degree : float
        Asymptotic fractional loss of enhancement (0 = none, 1 = complete).
    washout_tau_s : float
        Time constant of the washout (s); smaller = faster washout.
    """

    blood_volume: float = 1.0
    arterial_fraction: float = 0.25
    mtt_s: float = 18.0
    washout_onset_s: float = np.inf
    washout_degree: float = 0.0
    washout_tau_s: float = 40.0


def _fine_grid() -> Array:
    return np.arange(0.0, _T_MAX, _DT)


def _lognormal(t: Array, median: float, sigma: float) -> Array:
    out = np.zeros_like(t)
    pos = t > 0
    x = t[pos]
    out[pos] = np.exp(-((np.log(x / median)) ** 2) / (2 * sigma**2)) / (x * sigma * np.sqrt(2 * np.pi))
    return out


def _convolve(signal: Array, kernel: Array) -> Array:
    return np.convolve(signal, kernel)[: signal.size] * _DT


def arterial_input(t: Array, aif: ArterialInput) -> Array:
    """Arterial input concentration at times ``t`` (s after injection).

    Parameters
    ----------
    t : ndarray
        Times in s.
    aif : ArterialInput
        Parameters.

    Returns
    -------
    ndarray
        Concentration, normalised so that the first pass has unit area.
    """
    s = np.asarray(t, dtype=float) - aif.arrival_s
    first = _lognormal(s, aif.first_pass_median_s, aif.first_pass_sigma)
    second = aif.recirculation_fraction * _lognormal(
        s - aif.recirculation_delay_s, 1.6 * aif.first_pass_median_s, 1.3 * aif.first_pass_sigma
    )
    peak = 1.0 / (aif.first_pass_median_s * aif.first_pass_sigma * np.sqrt(2 * np.pi))
    mixing = np.clip(1 - np.exp(-np.maximum(s, 0) / 15.0), 0, None)
    plateau = aif.plateau_fraction * peak * mixing * np.exp(-np.maximum(s, 0) / aif.clearance_s)
    return first + second + plateau


def _gamma_kernel(mean_s: float, shape: float) -> Array:
    t = _fine_grid()
    scale = mean_s / shape
    k = t ** (shape - 1) * np.exp(-t / scale)
    return k / (k.sum() * _DT)


def _exp_kernel(mtt_s: float) -> Array:
    t = _fine_grid()
    k = np.exp(-t / max(mtt_s, _DT))
    return k / (k.sum() * _DT)


def supply(aif: ArterialInput, portal_transit_s: float = 14.0) -> tuple[Array, Array]:
    """Arterial and portal input on the internal fine grid.

    Parameters
    ----------
    aif : ArterialInput
        Arterial input parameters.
    portal_transit_s : float
        Mean transit time through the splanchnic bed to the portal vein (s).

    Returns
    -------
    (arterial, portal) : tuple of ndarray
        Concentrations on a 0.1 s grid from 0 to 400 s.
    """
    a = arterial_input(_fine_grid(), aif)
    return a, _convolve(a, _gamma_kernel(portal_transit_s, 3.0))


def washout_factor(t: Array, tissue: Tissue) -> Array:
    """Multiplicative washout ``w(t)``: 1 before the onset, then ``1 - d(1 - e^{-(t-t_on)/tau})``."""
    late = np.maximum(np.asarray(t, dtype=float) - tissue.washout_onset_s, 0.0)
    return 1.0 - tissue.washout_degree * (1.0 - np.exp(-late / tissue.washout_tau_s))


def tissue_curve(t: Array, tissue: Tissue, inputs: tuple[Array, Array]) -> Array:
    """Time–intensity curve (linear concentration units) of a tissue at times ``t``.

    Parameters
    ----------
    t : ndarray
        Sample times in s after injection (within 0–400 s).
    tissue : Tissue
        Tissue perfusion parameters.
    inputs : tuple of ndarray
        ``supply(...)`` output.

    Returns
    -------
    ndarray
        Concentration at ``t``.
    """
    arterial, portal = inputs
    mix = tissue.arterial_fraction * arterial + (1 - tissue.arterial_fraction) * portal
    fine = tissue.blood_volume * _convolve(mix, _exp_kernel(tissue.mtt_s))
    grid = _fine_grid()
    t = np.asarray(t, dtype=float)
    return np.interp(t, grid, fine) * washout_factor(t, tissue)
