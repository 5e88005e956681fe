"""The HTML report is self-contained and renders in a real browser."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ceusflow.report.write import figure_section, save_figures, table_html, write_outputs

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.fixture()
def report(tmp_path: Path) -> Path:
    fig, ax = plt.subplots()
    ax.plot([0, 1, 2], [1.0, 0.8, 0.5])
    pngs = save_figures({"km_RFA_val": fig}, tmp_path / "figures")
    table = pd.DataFrame({"C-index": [0.72, np.nan]}, index=pd.Index(["R-RFA", "R-SR"], name="model"))
    sections = [("Signatures", table_html(table) + figure_section(pngs, "km_", {"km_RFA_val": "KM"}))]
    return write_outputs(tmp_path, metrics={"c": 0.72, "nan": float("nan")}, predictions=pd.DataFrame({"a": [1]}),
                         sections=sections, title="test report")


def test_outputs_written(report: Path) -> None:
    folder = report.parent
    assert (folder / "figures" / "km_RFA_val.png").is_file() and (folder / "figures" / "km_RFA_val.svg").is_file()
    assert '"nan": null' in (folder / "metrics.json").read_text()
    html = report.read_text()
    assert "<table>" in html and "–" in html  # NaN shown as a dash
    assert re.findall(r'<img [^>]*src="([^"]+)"', html) and all(
        s.startswith("data:image/png;base64,") for s in re.findall(r'<img [^>]*src="([^"]+)"', html))
    assert "http://" not in html and "https://" not in html  # nothing fetched when opened offline


@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"), reason="chromium not installed")
def test_renders_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    assert CHROMIUM is not None, "CI must install chromium (see .ci/run)"
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1000,1400", f"--screenshot={shot}",
                    report.as_uri()], check=True, capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.std() > 5  # not a blank page
    plot_area = pixels[200:900, :]
    assert (plot_area < 128).mean() > 0.005  # the inlined figure drew dark lines and text


def test_feature_maps_of_the_extreme_validation_patients(tmp_path: Path) -> None:
    import torch

    from ceusflow.model import CoxCNN, NetworkConfig
    from ceusflow.model._synthetic import pattern_roi
    from ceusflow.report.featuremaps import feature_maps

    torch.manual_seed(0)
    roi = pattern_roi(8, size=16, n_frames=4, seed=2)
    keys = [str(k) for k in roi["patient"].values]
    patients = pd.DataFrame({"treatment": ["RFA"] * 4 + ["SR"] * 4, "split": ["train", "val", "val", "val"] * 2,
                             "signature_rfa": [9.0, 0.3, -1.0, 2.0, 0, 0, 0, 0],
                             "signature_sr": [0, 0, 0, 0, -9.0, 0.5, 1.5, -0.5]}, index=keys)
    patients.loc["P_GONE"] = ["SR", "val", 0.0, 5.0]  # highest SR risk but not in the ROI store
    net = NetworkConfig(widths=(4, 8, 8, 8), flatten_grid=1, dropout=0.0)
    maps = feature_maps({"RFA": CoxCNN(net), "SR": CoxCNN(net)}, roi, patients)
    assert maps.metrics["patients"]["featuremap_RFA_highest"]["patient"] == keys[3]  # keys[0]: training
    assert maps.metrics["patients"]["featuremap_RFA_lowest"]["patient"] == keys[2]
    assert maps.metrics["patients"]["featuremap_SR_lowest"]["patient"] == keys[7]
    assert [s["patient"] for s in maps.metrics["skipped"]] == ["P_GONE"]
    assert set(maps.figures) == set(maps.captions) == {"featuremap_RFA_highest", "featuremap_RFA_lowest",
                                                       "featuremap_SR_lowest"}
    pngs = save_figures(maps.figures, tmp_path / "figures")
    html = figure_section(pngs, "featuremap_", maps.captions)
    assert html.count('src="data:image/png;base64,') == 3 and keys[3] in html
    assert (tmp_path / "figures" / "featuremap_SR_lowest.svg").is_file()


def test_limitations_name_the_baseline_and_the_feature_maps() -> None:
    from ceusflow.pipeline.analysis import LIMITATIONS, limitations
    from ceusflow.report.featuremaps import FeatureMaps

    fig, _ = plt.subplots()
    base = {"imputed_values": 3, "imputed_patients": 2}
    notes = limitations({"baseline_RFA": base, "baseline_SR": base}, FeatureMaps(figures={"featuremap_RFA_x": fig}))
    assert notes[:len(LIMITATIONS)] == list(LIMITATIONS) and len(notes) == len(LIMITATIONS) + 2
    assert "RFA 3 value(s) in 2 patient(s)" in notes[-2] and "Grad-CAM" in notes[-1]
    assert limitations({}, None) == list(LIMITATIONS)


def test_limitations_say_what_the_signature_holds() -> None:
    from ceusflow.pipeline.analysis import LIMITATIONS, SIGNATURE_MODELS, limitations

    models = {"RFA": SIGNATURE_MODELS[True], "SR": SIGNATURE_MODELS[False]}
    kinetic = limitations({"signature_model": models, "contrast_RFA": {}, "combined_SR": {}}, None)
    assert len(kinetic) == len(LIMITATIONS) + 3 and "The R-RFA signature includes the kinetic term" in kinetic[-3]
    plain = limitations({"signature_model": dict.fromkeys(models, SIGNATURE_MODELS[False]), "contrast_RFA": {},
                         "combined_RFA": {}}, None)
    assert len(plain) == len(LIMITATIONS) + 2 and "CNN signature + contrast curves" in plain[-1]
    assert not any("kinetic term" in n for n in plain)
