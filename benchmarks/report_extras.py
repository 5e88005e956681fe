"""Cost of the handcrafted baseline and the feature maps inside the statistics stage.

On a finished ``ceusflow run`` (its results folder and ROI store), times, best of ``--repeats``:
the TIC feature table (read from the store), both baselines, and the four Grad-CAM feature maps
saved as PNG + SVG; then the rest of the statistics stage once (``analyse``), as the reference.
Prints seconds and each part's share of the reference. Load average before and after.

Run: ``.venv/bin/python benchmarks/report_extras.py RESULTS ROI_STORE [--repeats 2]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import xarray as xr

from ceusflow.conventions import PATIENT, TREATMENTS


def _best(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def main() -> None:
    from ceusflow.model import load_model
    from ceusflow.pipeline.analysis import analyse
    from ceusflow.pipeline.config import StudyConfig
    from ceusflow.pipeline.run import patient_table, tic_features
    from ceusflow.pipeline.study import baseline_metrics
    from ceusflow.report.featuremaps import feature_maps
    from ceusflow.report.write import save_figures

    parser = argparse.ArgumentParser()
    parser.add_argument("results", type=Path)
    parser.add_argument("roi_store", type=Path)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    print(f"load average before {os.getloadavg()}")
    roi = xr.open_zarr(args.roi_store)
    split = pd.read_csv(args.results / "split.csv", index_col=PATIENT)["split"]
    sig = pd.read_csv(args.results / "signatures.csv", index_col=PATIENT)
    patients = patient_table(roi).join(split).join(sig)
    models = {arm: load_model(args.results / "models" / f"R-{arm}").model for arm in TREATMENTS}
    t_feat, feats = _best(lambda: tic_features(xr.open_zarr(args.roi_store, chunks=None)), args.repeats)
    t_base, _ = _best(lambda: [baseline_metrics(patients, feats, arm) for arm in TREATMENTS], args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        t_maps, _ = _best(lambda: save_figures(feature_maps(models, roi, patients).figures, Path(tmp)), args.repeats)
    t_ref, _ = _best(lambda: analyse(patients, StudyConfig()), 1)
    print(f"{len(patients)} patients; statistics without the extras (analyse): {t_ref:.1f} s")
    for name, t in (("TIC feature table", t_feat), ("baselines, both arms", t_base),
                    ("feature maps, 4 patients, PNG + SVG", t_maps)):
        print(f"| {name} | {t:.2f} s | {t / t_ref:.2f} x analyse |")
    print(f"load average after {os.getloadavg()}")


if __name__ == "__main__":
    main()
