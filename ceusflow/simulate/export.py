"""Write a synthetic cohort in the hospital-export input layout, with its ground truth beside it.

Layout written (the contract of ``docs/data-formats.md``)::

    OUT/                      the cohort, as a hospital export would give it
      dicom/**                one file per clip, vendor-specific nesting, extension optional
      clinical.csv            one row per patient
      rois.csv                rough tumour boxes (patient_id, t_s, x0, y0, x1, y1)
    OUT-truth/                ground truth, never inside the cohort folder
      patients.csv            latent traits, true log-hazards, true 2-year PFS, better treatment,
                              acquisition settings
      frames.csv.gz           per frame: time, true tumour centre (px), dropped flag
      issues.csv              the messy inputs injected on purpose
      summary.json            configuration, seed and oracle summary
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from ceusflow.conventions import CLINICAL_COLUMNS, ROI_COLUMNS
from ceusflow.simulate.cohort import oracle_summary, simulate_patients
from ceusflow.simulate.dicom_writer import ClipSpec, Identity, write_clip
from ceusflow.simulate.render import render_clip, tumour_centre_px
from ceusflow.simulate.scene import VENDORS, Scene, frame_times, make_scene

_FIRST = ("Wei", "Li", "Min", "Jun", "Hua", "Ying", "Lei", "Fang", "Tao", "Mei", "Qiang", "Lan")
_LAST = ("Chen", "Wang", "Zhang", "Liu", "Huang", "Zhao", "Wu", "Zhou", "Xu", "Sun", "Ma", "Zhu")


@dataclass(frozen=True)
class SimulationConfig:
    """Size and acquisition of a synthetic cohort.

    Attributes
    ----------
    n_patients : int
        Number of patients (paper: 419).
    fps : float
        Nominal frame rate (real scanners: 20-25; the demo uses fewer to stay small).
    duration_s : float
        Exam length after injection (paper: 180 s).
    image_size : (rows, cols)
        Whole-frame size in pixels (real: ~600 x 800).
    seed : int
        Seed of everything; same seed and config -> identical bytes.
    messy : bool
        Inject the problems real exports have (junk files, snapshots, a truncated clip,
        duplicated/missing clinical rows, a non-numeric value), listed in ``issues.csv``.
    breathing_irregularity : float
        Standard deviation of the breathing rate and amplitude relative to their means; 0 (the
        default) breathes like a metronome. ``benchmarks/preprocess.py --only tracking`` measures
        the tracker with both.
    """

    n_patients: int = 32
    fps: float = 3.0
    duration_s: float = 180.0
    image_size: tuple[int, int] = (128, 160)
    seed: int = 0
    messy: bool = True
    breathing_irregularity: float = 0.0


@dataclass
class SimulationResult:
    """What ``write_synthetic_export`` wrote and measured."""

    cohort_dir: Path
    truth_dir: Path
    summary: dict[str, float]
    bytes_written: int = 0
    seconds: float = 0.0
    issues: list[dict[str, str]] = field(default_factory=list)


def truth_dir_for(cohort_dir: Path) -> Path:
    """Folder of the ground truth of ``cohort_dir``: its sibling ``<name>-truth``."""
    cohort_dir = Path(cohort_dir)
    return cohort_dir.parent / f"{cohort_dir.name}-truth"


def _identity(i: int, rng: np.random.Generator, exam_day: datetime, sex: str) -> Identity:
    age_days = int(rng.integers(30, 80) * 365.25)
    start = exam_day + timedelta(hours=int(rng.integers(8, 17)), minutes=int(rng.integers(0, 60)))
    return Identity(
        patient_id=f"H{int(rng.integers(10**6, 10**7))}{i:03d}",
        name=f"{_LAST[rng.integers(len(_LAST))]}^{_FIRST[rng.integers(len(_FIRST))]}",
        birth_date=(exam_day - timedelta(days=age_days)).strftime("%Y%m%d"),
        sex=sex, institution="Simulated University Hospital",
        accession=f"US{int(rng.integers(10**7, 10**8))}",
        study_uid=f"1.2.826.0.1.3680043.10.1000.{i}.{int(rng.integers(10**8))}",
        exam_start=start)


def _clip_path(root: Path, ident: Identity, scene: Scene, clip: int, order: np.ndarray) -> Path:
    """Vendor-specific nesting; file names do not follow acquisition order."""
    k = int(order[clip]) + 1
    if scene.vendor == 0:
        return root / "dicom" / "PHILIPS" / ident.exam_start.strftime("%Y%m%d") / ident.patient_id / f"IM_{k:04d}.dcm"
    return root / "dicom" / "TOSHIBA" / ident.accession / f"S{k:07d}" / f"I{(k * 7919) % 10**6:07d}"


def _regions(scene: Scene) -> tuple[tuple[int, int, int, int], ...]:
    rows, cols = scene.panel_shape
    if scene.dual:
        return ((0, 0, cols, rows), (cols, 0, 2 * cols, rows))
    return ((0, 0, cols, rows),)


def _spec(scene: Scene, clip: int, truncate: bool) -> ClipSpec:
    rows, cols = scene.panel_shape
    n = frame_times(scene, clip).size
    return ClipSpec(rows=rows, cols=cols * (2 if scene.dual else 1), n_frames=n, fps=scene.fps,
                    start_s=scene.clip_starts_s[clip], clip_index=clip, pixel_format=scene.pixel_format,
                    timing_mode=scene.timing_mode, manufacturer=VENDORS[scene.vendor],
                    regions=_regions(scene), spacing_mm=scene.spacing_mm,
                    truncate_to=int(n * 0.8) if truncate else None)


def _roi_rows(pid: str, scene: Scene, rng: np.random.Generator) -> list[dict[str, float]]:
    """A quick manual box at the arterial peak, plus corrections where the tumour drifted."""
    rows: list[dict[str, float]] = []
    radius_px = np.array(scene.radius_mm) / scene.spacing_mm
    last = None
    for clip in range(len(scene.clip_starts_s)):
        t = frame_times(scene, clip)
        centres = tumour_centre_px(scene, clip)
        slow = tumour_centre_px(scene, clip, breathing=False)  # what the annotator corrects for
        first = int(np.searchsorted(t, 25.0)) if clip == 0 else 0
        step = max(int(20 * scene.fps), 1)
        for f in [first, *range(first + step, t.size, step)]:
            if f >= t.size:
                continue
            c = centres[f]
            if last is not None and np.hypot(*(slow[f] - last)) < max(3.0 / scene.spacing_mm, 0.3 * radius_px.max()):
                continue
            last = slow[f]
            half = radius_px[::-1] * rng.uniform(1.0, 1.3, 4).reshape(2, 2)  # (x, y) x (low, high)
            jit = rng.normal(0, 0.1, 2) * radius_px[::-1]
            x0, x1 = c[1] + jit[0] - half[0, 0], c[1] + jit[0] + half[0, 1]
            y0, y1 = c[0] + jit[1] - half[1, 0], c[0] + jit[1] + half[1, 1]
            rows.append({"patient_id": pid, "t_s": round(float(t[f]), 3), "x0": int(np.floor(x0)),
                         "y0": int(np.floor(y0)), "x1": int(np.ceil(x1)) + 1, "y1": int(np.ceil(y1)) + 1})
    return rows


def _frames_truth(pid: str, scene: Scene) -> pd.DataFrame:
    parts = []
    for clip in range(len(scene.clip_starts_s)):
        c = tumour_centre_px(scene, clip)
        n = c.shape[0]
        parts.append(pd.DataFrame({
            "patient_id": pid, "clip": clip, "frame": np.arange(n), "t_s": frame_times(scene, clip).round(4),
            "tumour_row": c[:, 0].round(2), "tumour_col": c[:, 1].round(2),
            "dropped": [(clip, f) in scene.dropped for f in range(n)]}))
    return pd.concat(parts, ignore_index=True)


def _write_patient(root: Path, ident: Identity, scene: Scene, rng: np.random.Generator,
                   truncate_clip: int | None) -> int:
    order = rng.permutation(len(scene.clip_starts_s))
    total = 0
    for clip in range(len(scene.clip_starts_s)):
        spec = _spec(scene, clip, truncate=clip == truncate_clip)
        frames = render_clip(scene, clip, rng)
        total += write_clip(_clip_path(root, ident, scene, clip, order), ident, spec, frames,
                            seed_key=f"{ident.study_uid}.{clip}")
    return total


def _scene_record(scene: Scene) -> dict[str, object]:
    return {"pixel_format": scene.pixel_format, "timing_mode": scene.timing_mode, "dual": scene.dual,
            "n_clips": len(scene.clip_starts_s), "fps": round(scene.fps, 4), "spacing_mm": scene.spacing_mm,
            "manufacturer": VENDORS[scene.vendor][0], "panel_rows": scene.panel_shape[0],
            "panel_cols": scene.panel_shape[1], "radius_mm": scene.radius_mm[1]}


def _messy_plan(n: int, rng: np.random.Generator, messy: bool) -> dict[str, int]:
    """Which patient gets which injected problem (indices), when the cohort is large enough."""
    if not messy or n < 8:
        return {}
    picks = rng.choice(n, 6, replace=False)
    return dict(zip(("truncated", "snapshot", "duplicate_row", "text_value", "no_images", "no_clinical"),
                    (int(p) for p in picks), strict=True))


def _write_snapshot(root: Path, ident: Identity, scene: Scene, rng: np.random.Generator) -> None:
    spec = _spec(scene, 0, truncate=False)
    spec = ClipSpec(**{**asdict(spec), "n_frames": 1, "regions": spec.regions})
    frame = next(render_clip(scene, 0, rng))[:1]
    write_clip(root / "dicom" / "SNAPSHOTS" / f"{ident.patient_id}_still.dcm", ident, spec, [frame],
               seed_key=f"{ident.study_uid}.still")


def _simulate_one(job: tuple) -> tuple[Identity, Scene, list[dict[str, float]], pd.DataFrame | None, int]:
    """Render and write one patient from its own seed (runs in a worker process when asked)."""
    root, config, row, i, seed, day, plan = job
    rng = np.random.default_rng(seed)
    ident = _identity(i, rng, day, str(row["sex"]))
    scene = make_scene(row, rng, image_size=config.image_size, fps=config.fps,
                       duration_s=config.duration_s, index=i,
                       breathing_irregularity=config.breathing_irregularity)
    rows, frame_truth, written = [], None, 0
    if plan.get("no_images") != i:
        written = _write_patient(root, ident, scene, rng, 0 if plan.get("truncated") == i else None)
        rows = _roi_rows(ident.patient_id, scene, rng)
        frame_truth = _frames_truth(ident.patient_id, scene)
    if plan.get("snapshot") == i:
        _write_snapshot(root, ident, scene, rng)
    return ident, scene, rows, frame_truth, written


def _map_ordered(fn: Callable, jobs: list, workers: int) -> Iterator:
    """``map(fn, jobs)`` in order, in-process (``workers=0``) or over ``workers`` processes."""
    if workers <= 0:
        yield from map(fn, jobs)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield from pool.map(fn, jobs)


def write_synthetic_export(out_dir: str | Path, config: SimulationConfig = SimulationConfig(), *,
                           workers: int = 0,
                           progress: Callable[[int, int], None] | None = None) -> SimulationResult:
    """Simulate a cohort and write it in the input layout, with the ground truth beside it.

    Parameters
    ----------
    out_dir : str or Path
        Cohort folder to create (must not exist or be empty). The truth goes to
        ``<out_dir>-truth`` next to it.
    config : SimulationConfig
        Cohort size, acquisition and seed.
    workers : int
        0: in-process; N: N local processes. Each patient draws from its own seed, so the bytes
        written do not depend on ``workers``.
    progress : callable, optional
        Called as ``progress(done, total)`` after each patient (the CLI draws a bar with it).

    Returns
    -------
    SimulationResult
        Paths, oracle summary (C-index of the true hazard per treatment, event rate,
        median follow-up, swap share), bytes written and seconds taken.
    """
    start = time.perf_counter()
    root, truth = Path(out_dir), truth_dir_for(Path(out_dir))
    for folder in (root, truth):
        if folder.exists() and any(folder.iterdir()):
            from ceusflow.errors import InputError

            raise InputError(str(folder), "exists and is not empty", "choose a new folder or delete it")
        folder.mkdir(parents=True, exist_ok=True)
    seeds = np.random.SeedSequence(config.seed).spawn(config.n_patients + 1)
    cohort_rng = np.random.default_rng(seeds[0])
    patients = simulate_patients(config.n_patients, cohort_rng)
    plan = _messy_plan(config.n_patients, cohort_rng, config.messy)
    exam_day = datetime(2012, 3, 5)
    days = [exam_day + timedelta(days=3 * i) for i in range(config.n_patients)]
    jobs = [(root, config, patients.iloc[i], i, seeds[i + 1], days[i], plan) for i in range(config.n_patients)]
    idents, scenes, roi_rows, frames, total = [], [], [], [], 0
    for i, (ident, scene, rows, frame_truth, written) in enumerate(_map_ordered(_simulate_one, jobs, workers)):
        total += written
        roi_rows += rows
        if frame_truth is not None:
            frames.append(frame_truth)
        idents.append(ident)
        scenes.append(scene)
        if progress is not None:
            progress(i + 1, config.n_patients)
    issues = _write_tables(root, truth, patients, idents, scenes, plan, roi_rows, frames)
    summary = {k: float(v) for k, v in oracle_summary(patients).items()}
    seconds = time.perf_counter() - start
    (truth / "summary.json").write_text(json.dumps(
        {"config": asdict(config), "oracle": summary, "bytes_dicom": total}, indent=2, default=str))
    return SimulationResult(root, truth, summary, total, seconds, issues)


def _write_tables(root: Path, truth: Path, patients: pd.DataFrame, idents: list[Identity],
                  scenes: list[Scene], plan: dict[str, int], roi_rows: list[dict[str, float]],
                  frames: list[pd.DataFrame]) -> list[dict[str, str]]:
    ids = [p.patient_id for p in idents]
    clinical = patients.assign(patient_id=ids)[list(CLINICAL_COLUMNS)].astype({"afp": object})
    issues = []
    if plan:
        clinical.loc[plan["text_value"], "afp"] = ">60000"
        (root / "dicom" / "Thumbs.db").write_bytes(b"\x00\x01junk-not-dicom" * 8)
        issues = [{"patient_id": ids[plan[k]], "issue": k} for k in plan] + [
            {"patient_id": "", "issue": "junk file dicom/Thumbs.db"}]
        dup = clinical.iloc[[plan["duplicate_row"]]]
        clinical = pd.concat([clinical.drop(index=plan["no_clinical"]), dup], ignore_index=True)
    clinical.to_csv(root / "clinical.csv", index=False)
    pd.DataFrame(roi_rows, columns=list(ROI_COLUMNS)).to_csv(root / "rois.csv", index=False)
    acq = pd.DataFrame([_scene_record(s) for s in scenes])
    table = patients.join(acq)
    table.insert(0, "patient_id", ids)
    table.to_csv(truth / "patients.csv", index=False)
    if frames:
        pd.concat(frames, ignore_index=True).to_csv(
            truth / "frames.csv.gz", index=False, compression={"method": "gzip", "mtime": 0})
    pd.DataFrame(issues, columns=["patient_id", "issue"]).to_csv(truth / "issues.csv", index=False)
    return issues
