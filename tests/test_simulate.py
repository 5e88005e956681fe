"""The simulator writes the input layout, decodable DICOM, and ground truth that the pixels carry."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from scipy import stats
from typer.testing import CliRunner

from ceusflow.cli import app
from ceusflow.conventions import CLINICAL_COLUMNS, ROI_COLUMNS
from ceusflow.simulate import SimulationConfig, simulate_patients, write_synthetic_export
from ceusflow.simulate.render import render_clip, tissue_maps
from ceusflow.simulate.scene import displacement_mm, frame_times, make_scene

TINY = SimulationConfig(n_patients=12, fps=2.0, duration_s=120.0, image_size=(64, 80), seed=7)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory):
    return write_synthetic_export(tmp_path_factory.mktemp("sim") / "cohort", TINY)


def _dicom_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "dicom").rglob("*") if p.is_file())


def test_layout_and_truth_outside(cohort) -> None:
    root, truth = cohort.cohort_dir, cohort.truth_dir
    assert sorted(p.name for p in root.iterdir()) == ["clinical.csv", "dicom", "rois.csv"]
    assert truth.parent == root.parent and not truth.is_relative_to(root)
    assert {"patients.csv", "frames.csv.gz", "issues.csv", "summary.json"} <= {p.name for p in truth.iterdir()}
    clinical = pd.read_csv(root / "clinical.csv")
    assert tuple(clinical.columns) == CLINICAL_COLUMNS
    assert tuple(pd.read_csv(root / "rois.csv").columns) == ROI_COLUMNS
    secret = set(pd.read_csv(truth / "patients.csv").columns) - set(CLINICAL_COLUMNS)
    assert {"log_hazard_rfa", "log_hazard_sr", "pfs24_rfa", "better_treatment", "rim"} <= secret
    assert not secret & set(clinical.columns)


def test_every_clip_decodes(cohort) -> None:
    seen = {"formats": set(), "timing": set(), "regions": set()}
    issues = pd.read_csv(cohort.truth_dir / "issues.csv")
    truncated_pid = issues.loc[issues["issue"] == "truncated", "patient_id"].item()
    for path in _dicom_files(cohort.cohort_dir):
        if path.name == "Thumbs.db":
            with pytest.raises(pydicom.errors.InvalidDicomError):
                pydicom.dcmread(path)
            continue
        ds = pydicom.dcmread(path)
        assert ds.SOPClassUID == pydicom.uid.UltrasoundMultiFrameImageStorage
        if ds.PatientID == truncated_pid and ("PixelData" not in ds or ds.InstanceNumber == 1):
            continue  # its first clip is truncated on purpose: covered by the reader's tests
        pixels = ds.pixel_array
        n = int(ds.NumberOfFrames)
        assert pixels.shape[: 3 if n > 1 else 2] == ((n,) if n > 1 else ()) + (ds.Rows, ds.Columns)[: 3 if n > 1 else 2]
        seen["formats"].add((str(ds.PhotometricInterpretation), ds.file_meta.TransferSyntaxUID.name))
        seen["timing"].add(next(k for k in ("FrameTimeVector", "FrameTime", "CineRate") if k in ds))
        seen["regions"].add(len(ds.SequenceOfUltrasoundRegions))
        assert all(r.PhysicalUnitsXDirection == 3 for r in ds.SequenceOfUltrasoundRegions)
    assert {f for f, _ in seen["formats"]} == {"MONOCHROME2", "RGB", "YBR_FULL_422"}
    assert {t for _, t in seen["formats"]} >= {"RLE Lossless", "JPEG Baseline (Process 1)", "Explicit VR Little Endian"}
    assert seen["timing"] == {"FrameTimeVector", "FrameTime", "CineRate"}
    assert seen["regions"] == {1, 2}  # single and dual displays


def test_split_clips_ordered_by_acquisition_time(cohort) -> None:
    frames = pd.read_csv(cohort.truth_dir / "frames.csv.gz")
    per_patient: dict[str, list[tuple[str, int]]] = {}
    for path in _dicom_files(cohort.cohort_dir):
        if path.name == "Thumbs.db":
            continue
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if int(ds.NumberOfFrames) > 1:
            per_patient.setdefault(ds.PatientID, []).append((ds.AcquisitionDateTime, int(ds.NumberOfFrames)))
    split = {pid: clips for pid, clips in per_patient.items() if len(clips) > 1}
    assert split, "the cohort must hold split exams"
    for pid, clips in split.items():
        truth = frames[frames["patient_id"] == pid].groupby("clip").size().to_list()
        assert [n for _, n in sorted(clips)] == truth[: len(clips)]


def test_rois_contain_true_tumour_centre(cohort) -> None:
    rois = pd.read_csv(cohort.cohort_dir / "rois.csv")
    frames = pd.read_csv(cohort.truth_dir / "frames.csv.gz")
    for _, roi in rois.iterrows():
        f = frames[frames["patient_id"] == roi["patient_id"]]
        at = f.iloc[(f["t_s"] - roi["t_s"]).abs().argmin()]
        assert roi["x0"] <= at["tumour_col"] < roi["x1"] and roi["y0"] <= at["tumour_row"] < roi["y1"]


def test_same_seed_identical_bytes(tmp_path: Path) -> None:
    small = SimulationConfig(n_patients=3, fps=2.0, duration_s=20.0, image_size=(48, 64), seed=3)

    def digest(folder: Path) -> dict[str, str]:
        return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(folder.rglob("*")) if p.is_file()}

    a = write_synthetic_export(tmp_path / "a", small)
    b = write_synthetic_export(tmp_path / "b", small, workers=2)  # worker processes: same bytes
    c = write_synthetic_export(tmp_path / "c", SimulationConfig(**{**small.__dict__, "seed": 4}))
    assert digest(a.cohort_dir) == digest(b.cohort_dir)
    assert digest(a.truth_dir) == digest(b.truth_dir)
    assert digest(a.cohort_dir) != digest(c.cohort_dir)


def test_refuses_to_overwrite(cohort) -> None:
    result = CliRunner().invoke(app, ["simulate", str(cohort.cohort_dir), "-n", "2"])
    assert result.exit_code == 2
    assert "exists and is not empty" in result.output and "Traceback" not in result.output


def test_cohort_marginals_close_to_table1() -> None:
    p = simulate_patients(4000, np.random.default_rng(0))
    assert 0.38 < p["progression"].mean() < 0.48
    assert 0.40 < (p["tumor_size_cm"] > 2).mean() < 0.62
    assert 0.80 < (p["sex"] == "M").mean() < 0.93
    assert 0.10 < (p["alb"] < 35).mean() < 0.22
    assert 50 < p["age"].mean() < 60
    assert p["pfs_months"].between(0, 130).all()
    sr_big = (p.loc[p["treatment"] == "SR", "tumor_size_cm"] > 2).mean()
    rfa_big = (p.loc[p["treatment"] == "RFA", "tumor_size_cm"] > 2).mean()
    assert sr_big > rfa_big  # larger tumours more often resected
    swap = (p["better_treatment"] != p["treatment"]).mean()
    assert 0.1 < swap < 0.35


def _tic_features(row: pd.Series, index: int, rng: np.random.Generator) -> tuple[float, float]:
    """Handcrafted TIC features from the pixels inside the true tumour and in far parenchyma."""
    # index 15k: a continuous exam on a single panel
    scene = make_scene(row, rng, image_size=(96, 120), fps=1.0, duration_s=180.0, index=15 * index)
    frames = np.concatenate(list(render_clip(scene, 0, rng))).astype(float)
    t = frame_times(scene, 0)
    maps = tissue_maps(scene, displacement_mm(scene, t, 0))
    from ceusflow.simulate.render import _window

    wy, wx = _window(scene)
    win = frames[:, wy, wx]
    tumour, paren = maps["tumour"] > 0.9, sum(maps.values()) < 0.05
    tic_t = np.array([w[m].mean() for w, m in zip(win, tumour, strict=True)])
    tic_p = np.array([w[m].mean() for w, m in zip(win, paren, strict=True)])
    ap, late = (t > 15) & (t < 40), t >= 150
    # arterial hyperenhancement (dB-like grey difference), and washout: the tumour's fall from
    # its arterial peak to the late phase, relative to the parenchyma's
    return (float(tic_t[ap].max() - tic_p[ap].max()),
            float((tic_t[ap].max() - tic_t[late].mean()) - (tic_p[ap].max() - tic_p[late].mean())))


def test_latent_traits_are_visible_in_pixels() -> None:
    rng = np.random.default_rng(11)
    patients = simulate_patients(24, rng).assign(heterogeneity=0.0, satellites=0)
    feats = np.array([_tic_features(row, i, rng) for i, (_, row) in enumerate(patients.iterrows())])
    from ceusflow.simulate.cohort import washout_score

    assert stats.spearmanr(feats[:, 0], patients["peak_ratio"]).statistic > 0.5
    assert stats.spearmanr(feats[:, 1], washout_score(patients)).statistic > 0.5


def test_summary_reports_oracle(cohort) -> None:
    summary = json.loads((cohort.truth_dir / "summary.json").read_text())["oracle"]
    assert {"oracle_c_RFA", "oracle_c_SR", "event_rate", "swap_share", "median_follow_up_months"} <= set(summary)


def _cycles(breath: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Periods (s) and peak amplitudes of a breathing trace, cycle by cycle (upward zero crossings)."""
    up = np.flatnonzero((breath[:-1] < 0) & (breath[1:] >= 0))
    return np.diff(t[up]), np.array([breath[a:b].max() for a, b in zip(up[:-1], up[1:], strict=True)])


def test_breathing_irregularity_wanders_rate_and_amplitude_and_changes_nothing_else():
    from dataclasses import asdict

    from ceusflow.simulate.scene import breathing_mm

    row = simulate_patients(1, np.random.default_rng(5)).iloc[0]
    regular = make_scene(row, np.random.default_rng(6), image_size=(96, 120), fps=2.0, duration_s=180.0)
    wandering = make_scene(row, np.random.default_rng(6), image_size=(96, 120), fps=2.0, duration_s=180.0,
                           breathing_irregularity=0.15)
    assert {k: v for k, v in asdict(wandering).items() if k != "breathing_irregularity"} == {
        k: v for k, v in asdict(regular).items() if k != "breathing_irregularity"}  # same draws
    t = np.arange(0.0, 180.0, 0.02)
    amp, period, phase = regular.breathing
    np.testing.assert_allclose(breathing_mm(regular, t), amp * np.sin(2 * np.pi * t / period + phase))
    periods, peaks = _cycles(breathing_mm(wandering, t), t)
    assert periods.mean() == pytest.approx(period, rel=0.05)
    assert 0.04 < periods.std() / periods.mean() < 0.25  # breath-to-breath variability of adults at rest
    assert 0.05 < peaks.std() / peaks.mean() < 0.3
    np.testing.assert_array_equal(breathing_mm(wandering, t), breathing_mm(wandering, t.copy()))
    np.testing.assert_allclose(displacement_mm(wandering, t[:50], 0)[:, 0] - displacement_mm(wandering, t[:50], 0,
                                                                                            breathing=False)[:, 0],
                               breathing_mm(wandering, t[:50]))
