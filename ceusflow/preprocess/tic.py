"""Time-intensity curves (TICs) per ROI part and the classical perfusion parameters.

Parts (from the tracked tumour box; the tumour is the ellipse inscribed in it):
``core`` (the concentric ellipse of half the radii), ``tumour``, ``rim`` (0-10 mm outside the
tumour ellipse) and ``parenchyma`` (10-20 mm outside), each clipped to the image region.

Quantification is done on linearised echo power, not on log-compressed grey levels (EFSUMB
perfusion guideline, Dietrich et al., Ultraschall Med 2012; 33: 344): ``P = 10 ** (grey / 255 *
DR / 10)`` with the display dynamic range ``DR`` (42 dB here, the simulator's; set it to the
scanner's). The curve is baseline-subtracted (mean of the valid frames before ``baseline_s``) and
smoothed by a 3-sample running median before the parameters are read:

=====================  =====================================================================
peak_enhancement       maximum of the smoothed enhancement (a.u. of linear power)
time_to_peak           s after injection
rise_time              s from 10 % to 90 % of the peak on the upslope
wash_in_slope          steepest upslope between the 10 % point and the peak (a.u. / s)
auc                    area under the enhancement curve over the whole grid (a.u. * s)
mtt                    mean of a lognormal bolus fitted to the first pass, exp(mu + sigma^2 / 2), s
washout_60/120/180     (peak - mean enhancement in the 5 s ending at / around T) / peak
=====================  =====================================================================
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
from scipy import ndimage, optimize

from ceusflow.conventions import FRAME_OK, TIME

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ceusflow.preprocess.patient import PatientPlan

PARTS = ("core", "tumour", "rim", "parenchyma")
PARAMETERS = ("peak_enhancement", "time_to_peak", "rise_time", "wash_in_slope", "auc", "mtt",
              "washout_60", "washout_120", "washout_180", "fit_r2")
#: Width of the rim and outer edge of the parenchyma ring, mm outside the tumour ellipse.
RIM_MM, CONTEXT_MM = 10.0, 20.0
DYNAMIC_RANGE_DB = 42.0
BASELINE_S = 8.0


def part_masks(shape: tuple[int, int], box: np.ndarray, spacing_mm: tuple[float, float], *,
               rim_mm: float = RIM_MM, context_mm: float = CONTEXT_MM) -> np.ndarray:
    """Boolean masks (part, y, x) of the ROI parts for a tumour box in the pixels of ``shape``.

    Parameters
    ----------
    shape : (rows, cols)
    box : ndarray (4,)
        Tumour box (x0, y0, x1, y1) in the same pixels, x1/y1 exclusive.
    spacing_mm : (dy, dx)
    rim_mm, context_mm : float

    Returns
    -------
    ndarray bool (4, rows, cols)
        In the order of :data:`PARTS`.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    cy, cx, ry, rx = (y0 + y1) / 2, (x0 + x1) / 2, max((y1 - y0) / 2, 0.5), max((x1 - x0) / 2, 0.5)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]] + 0.5
    dy, dx = (float(s) for s in spacing_mm)

    def inside(grow_mm: float, scale: float = 1.0) -> np.ndarray:
        a, b = scale * ry + grow_mm / dy, scale * rx + grow_mm / dx
        return ((yy - cy) / a) ** 2 + ((xx - cx) / b) ** 2 <= 1.0

    tumour, rim_out, ctx = inside(0.0), inside(rim_mm), inside(context_mm)
    return np.stack([inside(0.0, 0.5), tumour, rim_out & ~tumour, ctx & ~rim_out])


def linearise(grey: np.ndarray, dynamic_range_db: float = DYNAMIC_RANGE_DB) -> np.ndarray:
    """8-bit log-compressed grey levels to linear echo power (a.u.; grey 0 -> 1)."""
    return np.power(10.0, np.asarray(grey, dtype=np.float64) / 255.0 * dynamic_range_db / 10.0)


def tic_curves(windows: xr.DataArray, tumour: xr.DataArray, plan: PatientPlan, *,
               dynamic_range_db: float = DYNAMIC_RANGE_DB) -> xr.DataArray:
    """Mean linear power per part and frame (lazy, one task per frame).

    Parameters
    ----------
    windows : DataArray (time, y, x)
        Grey levels of the patient's fixed window.
    tumour : DataArray (time, box)
        Tracked tumour boxes, whole-frame pixels.
    plan : PatientPlan
        Window position, bounds, spacing.
    dynamic_range_db : float

    Returns
    -------
    DataArray (part, time) float32
        NaN where ``frame_ok`` is False.
    """
    frames = da.asarray(windows.data).rechunk({1: -1, 2: -1})
    local = da.asarray(tumour.data).astype(np.float64)
    local = (local - np.array([plan.window[2], plan.window[0]] * 2, dtype=float)).rechunk({0: frames.chunks[0], 1: -1})
    inside = _region_mask(windows.shape[1:], plan)
    data = da.blockwise(_tic_block, "tp", frames, "tyx", local, "tk", new_axes={"p": len(PARTS)}, concatenate=True,
                        dtype=np.float32, meta=np.empty((0, 0), np.float32), inside=inside, spacing=plan.spacing_mm,
                        dr=dynamic_range_db)
    tic = xr.DataArray(data.T, dims=("part", TIME), coords={"part": list(PARTS), TIME: windows[TIME].values},
                       name="tic", attrs={"units": "a.u. (linear power)", "dynamic_range_db": dynamic_range_db})
    return tic.where(xr.DataArray(windows[FRAME_OK].data, dims=TIME)) if FRAME_OK in windows.coords else tic


def _region_mask(shape: tuple[int, ...], plan: PatientPlan) -> np.ndarray:
    r0, _, c0, _ = plan.window
    bx0, by0, bx1, by1 = plan.bounds
    rows, cols = np.arange(shape[0]) + r0, np.arange(shape[1]) + c0
    return ((rows >= by0) & (rows < by1))[:, None] & ((cols >= bx0) & (cols < bx1))[None, :]


def _tic_block(frames: np.ndarray, boxes: np.ndarray, *, inside: np.ndarray, spacing: tuple[float, float],
               dr: float) -> np.ndarray:
    out = np.empty((frames.shape[0], len(PARTS)), np.float32)
    for i, (frame, box) in enumerate(zip(frames, boxes, strict=True)):
        masks = part_masks(frame.shape, box, spacing) & inside
        power = linearise(frame, dr)
        out[i] = [power[m].mean() if m.any() else np.nan for m in masks]
    return out


def perfusion_parameters(t: np.ndarray, power: np.ndarray, *, baseline_s: float = BASELINE_S) -> dict[str, float]:
    """Classical perfusion parameters of one TIC (see the module docstring).

    Parameters
    ----------
    t : ndarray (time,)
        s after injection.
    power : ndarray (time,)
        Linear power, NaN where the frame is missing.
    baseline_s : float
        Frames before this time form the baseline.

    Returns
    -------
    dict
        :data:`PARAMETERS` -> float (NaN when undefined).
    """
    t, y = np.asarray(t, float), np.asarray(power, float)
    ok = np.isfinite(y)
    out = dict.fromkeys(PARAMETERS, np.nan)
    if ok.sum() < 5:
        return out
    t, y = t[ok], y[ok]
    base = y[t < baseline_s]
    e = ndimage.median_filter(y - (np.mean(base) if base.size else y.min()), size=3, mode="nearest")
    peak = int(np.argmax(e))
    pe, ttp = float(e[peak]), float(t[peak])
    if pe <= 0:
        return out
    t10, t90 = _crossing(t[:peak + 1], e[:peak + 1], 0.1 * pe), _crossing(t[:peak + 1], e[:peak + 1], 0.9 * pe)
    slope = np.gradient(e, t)[(t >= (t10 if np.isfinite(t10) else t[0])) & (t <= ttp)]
    out.update(peak_enhancement=pe, time_to_peak=ttp, rise_time=t90 - t10,
               wash_in_slope=float(slope.max()) if slope.size else np.nan,
               auc=float(np.trapezoid(e, t)), **_washout(t, e, pe))
    out.update(zip(("mtt", "fit_r2"), lognormal_mtt(t, e, ttp=ttp, t10=t10), strict=True))
    return out


def _crossing(t: np.ndarray, e: np.ndarray, level: float) -> float:
    """Last upward crossing of ``level`` before the end of ``e`` (linear interpolation)."""
    below = np.flatnonzero(e < level)
    if below.size == 0:
        return float(t[0])
    i = int(below[-1])
    if i + 1 >= e.size:
        return np.nan
    return float(t[i] + (level - e[i]) * (t[i + 1] - t[i]) / (e[i + 1] - e[i]))


def _washout(t: np.ndarray, e: np.ndarray, pe: float) -> dict[str, float]:
    out = {}
    for at in (60, 120, 180):
        near = (t > at - 5.0) & (t <= at + 2.5) if at < 180 else (t > at - 5.0)
        out[f"washout_{at}"] = float((pe - e[near].mean()) / pe) if near.any() and t[-1] >= at - 5 else np.nan
    return out


def lognormal(t: np.ndarray, area: float, t0: float, mu: float, sigma: float) -> np.ndarray:
    """Lognormal bolus ``area * pdf(t - t0)`` (0 before ``t0``)."""
    s = np.clip(np.asarray(t, float) - t0, 1e-9, None)
    pdf = np.exp(-((np.log(s) - mu) ** 2) / (2 * sigma**2)) / (s * sigma * np.sqrt(2 * np.pi))
    return np.where(np.asarray(t) > t0, area * pdf, 0.0)


def lognormal_mtt(t: np.ndarray, e: np.ndarray, *, ttp: float, t10: float) -> tuple[float, float]:
    """Fit a lognormal bolus to the first pass; return (MTT = exp(mu + sigma^2/2) in s, R^2)."""
    start = t10 if np.isfinite(t10) else t[0]
    use = t <= ttp + 1.5 * max(ttp - start, 2.0)
    guess = _guess(ttp, start, float(e.max()))
    lower, upper = [0.0, 0.0, -3.0, 0.05], [np.inf, max(start, 1e-3), 7.0, 3.0]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p, _ = optimize.curve_fit(lognormal, t[use], e[use], p0=np.clip(guess, lower, upper), bounds=(lower, upper),
                                      maxfev=4000)
    except (RuntimeError, ValueError):
        return np.nan, np.nan
    resid = e[use] - lognormal(t[use], *p)
    r2 = 1 - float(np.sum(resid**2) / max(np.sum((e[use] - e[use].mean()) ** 2), 1e-12))
    return float(np.exp(p[2] + p[3] ** 2 / 2)), r2


def _guess(ttp: float, start: float, pe: float) -> list[float]:
    t0 = max(start - 3.0, 0.0)
    mode, sigma = max(ttp - t0, 1.0), 0.5
    mu = np.log(mode) + sigma**2
    return [pe * mode * sigma * np.sqrt(2 * np.pi) * np.exp(sigma**2 / 2), t0, mu, sigma]


def tic_parameters(tic: xr.DataArray, *, baseline_s: float = BASELINE_S) -> xr.Dataset:
    """Perfusion parameters of every curve of ``tic`` (part, time) -> Dataset(part) of PARAMETERS."""
    tdim = [d for d in tic.dims if d != "part"][0]
    rows = [perfusion_parameters(tic[tdim].values, tic.sel(part=p).values, baseline_s=baseline_s)
            for p in tic["part"].values]
    units = {"peak_enhancement": "a.u.", "time_to_peak": "s", "rise_time": "s", "wash_in_slope": "a.u./s",
             "auc": "a.u. s", "mtt": "s"}
    return xr.Dataset({k: ("part", np.array([r[k] for r in rows]), {"units": units.get(k, "1")}) for k in PARAMETERS},
                      coords={"part": tic["part"].values})


#: Width (s) of the time bins of :func:`contrast_curves`.
CONTRAST_BIN_S = 15.0


def contrast_curves(tic: xr.DataArray, *, bin_s: float = CONTRAST_BIN_S, reference: str = "parenchyma",
                    dim: str | None = None) -> xr.DataArray:
    """Enhancement of each ROI part relative to the liver around it, in dB, per time bin (pure).

    ``10 log10(mean power of the part / mean power of the reference part)`` over the valid
    frames of each bin of ``bin_s`` seconds from t = 0: the tumour's hyper-, iso- or
    hypo-enhancement relative to the liver, which is how CEUS is read (CEUS LI-RADS: arterial
    phase hyperenhancement, wash-out = hypoenhancement relative to the liver). Machine gain and
    the patient's overall enhancement cancel; the kinetic traits that a CNN fed with the paper's
    ROI alone does not read (wash-out onset and degree, arterial peak ratio) stay (``docs/model.md``,
    "Session 9").

    Parameters
    ----------
    tic : DataArray (..., part, time)
        Mean linear power per part and frame (:func:`tic_curves`; the ROI store's ``tic``), NaN
        on invalid frames.
    bin_s : float
        Bin width in seconds (bins ``[k * bin_s, (k + 1) * bin_s)``).
    reference : str
        The part the others are referred to (default the 10-20 mm parenchyma ring).
    dim : str, optional
        The time dimension; default the one dimension of ``tic`` named ``time`` or ``exam_time``.

    Returns
    -------
    DataArray (..., part, bin_start) float64
        In dB (``units``); ``part`` without the reference; ``bin_start`` in s. NaN where a bin
        holds no valid frame of the part or the reference.
    """
    if dim is None:
        found = [d for d in tic.dims if d in (TIME, "exam_time")]
        if len(found) != 1:
            raise ValueError(f"contrast_curves: cannot tell the time dimension among {tic.dims}; pass dim=")
        dim = found[0]
    if reference not in tic["part"].values:
        raise ValueError(f"contrast_curves: no part {reference!r} in {list(tic['part'].values)}")
    if not bin_s > 0:
        raise ValueError(f"contrast_curves: bin_s={bin_s} must be positive")
    t = np.asarray(tic[dim].values, dtype=float)
    starts = xr.DataArray(np.floor(t / bin_s + 1e-9) * bin_s, dims=dim, name="bin_start")
    power = tic.astype(np.float64).where(tic > 0).groupby(starts).mean(dim, skipna=True)
    ratio = power.drop_sel(part=reference) / power.sel(part=reference, drop=True)
    out = 10.0 * np.log10(ratio)
    out["bin_start"].attrs = {"units": "s", "long_name": "start of the time bin"}
    return out.rename("contrast").assign_attrs(
        units="dB", reference=reference, bin_s=float(bin_s),
        long_name=f"mean power relative to the {reference}")


def contrast_table(tic: xr.DataArray, *, bin_s: float = CONTRAST_BIN_S) -> pd.DataFrame:
    """:func:`contrast_curves` of a cohort as one feature table (patient, ``contrast_<part>_<start>s``).

    Parameters
    ----------
    tic : DataArray (patient, part, time)
        The ROI store's ``tic`` (loaded: it is small, ~6 kB per patient).
    bin_s : float
        Bin width (s).

    Returns
    -------
    DataFrame
        dB relative to the parenchyma ring, indexed by patient key; NaN where a bin held no valid
        frame.
    """
    curves = contrast_curves(tic, bin_s=bin_s)
    index = pd.Index([str(k) for k in curves["patient"].values], name="patient")
    cols = {f"contrast_{part}_{start:g}s": curves.sel(part=part, bin_start=start).values
            for part in [str(p) for p in curves["part"].values] for start in curves["bin_start"].values}
    return pd.DataFrame(cols, index=index).astype(float)


def plot_tic(tic: xr.DataArray, *, phases: dict[str, tuple[float, float]] | None = None,
             baseline_s: float = BASELINE_S, title: str = "") -> Figure:
    """QA figure: enhancement curves per part with their parameters in the legend, peaks, phases, gaps.

    Parameters
    ----------
    tic : DataArray (part, time)
        Linear power; ``time`` in s after injection; NaN for missing frames.
    phases : mapping, optional
        Phase windows shaded in the background.
    baseline_s : float
    title : str

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    tdim = [d for d in tic.dims if d != "part"][0]
    t = tic[tdim].values
    fig = Figure(figsize=(9, 5), layout="constrained")
    ax = fig.add_subplot()
    params = tic_parameters(tic, baseline_s=baseline_s)
    for i, part in enumerate(tic["part"].values):
        _plot_part(ax, t, tic.sel(part=part).values, params.sel(part=part), f"C{i}", str(part), baseline_s)
    _decorate(ax, t, np.isfinite(tic.values).all(axis=0), phases)
    ax.set(xlabel="time after injection (s)", ylabel="enhancement (linear power, a.u.)", title=title)
    ax.legend(loc="upper right", fontsize=8)
    return fig


def _plot_part(ax: Any, t: np.ndarray, y: np.ndarray, p: xr.Dataset, colour: str, name: str, baseline_s: float) -> None:
    base = np.nanmean(y[t < baseline_s]) if np.isfinite(y[t < baseline_s]).any() else np.nanmin(y)
    e = y - base
    label = (f"{name}: PE {float(p.peak_enhancement):.3g}, TTP {float(p.time_to_peak):.1f} s, "
             f"MTT {float(p.mtt):.1f} s, WR120 {float(p.washout_120):.2f}")
    ax.plot(t, e, color=colour, lw=1, label=label)
    if np.isfinite(float(p.time_to_peak)):
        ax.plot([float(p.time_to_peak)], [float(p.peak_enhancement)], "v", color=colour)


def _decorate(ax: Any, t: np.ndarray, ok: np.ndarray, phases: dict[str, tuple[float, float]] | None) -> None:
    for i, (name, (start, end)) in enumerate((phases or {}).items()):
        ax.axvspan(start, end, color="0.9" if i % 2 else "0.95", zorder=0)
        ax.text((start + end) / 2, 1.0, name, transform=ax.get_xaxis_transform(), ha="center", va="bottom")
    missing = t[~ok]
    if missing.size:
        ax.plot(missing, np.zeros_like(missing), "|", color="k", ms=6, label=f"missing/dark frames ({missing.size})")
