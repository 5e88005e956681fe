"""preprocess_cohort end to end on a tiny simulated cohort: contract, laziness, bad input, LocalCluster, CLI."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import typer
import xarray as xr
from _lazy import raise_if_dask_computes
from typer.testing import CliRunner

from ceusflow import SimulationConfig, write_synthetic_export
from ceusflow.convert import convert_cohort
from ceusflow.model.batches import CineBatches, check_roi
from ceusflow.preprocess.cohort import open_rois, preprocess_cohort
from ceusflow.preprocess.patient import patient_rois, plan_patient
from ceusflow.store import open_store

PHASES = {"AP": (0.0, 15.0), "PP": (15.0, 30.0), "VP": (30.0, 40.0)}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("pp")
    write_synthetic_export(root / "C", SimulationConfig(n_patients=3, fps=3.0, duration_s=45.0,
                                                        image_size=(64, 80), seed=5, messy=False))
    convert_cohort(root / "C", root / "C.zarr", workers=0, progress=False)
    return root / "C.zarr"


@pytest.fixture(scope="module")
def roi_store(store):
    out = store.parent / "C-roi.zarr"
    report = preprocess_cohort(store, out=out, phases=PHASES, size=16, progress=False)
    assert not report.problems
    return out


def test_output_follows_the_model_contract(store, roi_store):
    roi = open_rois(roi_store)
    check_roi(roi)
    assert roi.intensity.dims == ("patient", "phase", "time", "y", "x")
    assert roi.intensity.dtype == np.float32 and roi.sizes["time"] == 30 and roi.sizes["y"] == 16
    assert roi.intensity.chunks[0] == (1,) * roi.sizes["patient"]  # one patient per chunk
    x = roi.intensity.values
    assert 0 <= x.min() and x.max() <= 1 and x.max() > 0.2
    clinical = open_store(store)["clinical"].to_dataset().compute()
    np.testing.assert_array_equal(roi.duration.values, clinical.pfs_months.sel(patient=roi.patient.values).values)
    assert roi.event.dtype == bool and set(roi.treatment.values) <= {"RFA", "SR"}
    np.testing.assert_allclose(roi.t_exam.sel(phase="PP").values[:, 0], 15.0)
    real = np.isfinite(roi.t_exam.values)
    assert real.sum() == 3 * (30 + 30 + 20) and not roi.frame_ok.values[~real].any()  # padding is never ok
    assert roi.frame_ok.values[real].mean() > 0.9 and np.isfinite(roi.tic_time_to_peak.values).any()
    assert len(CineBatches(roi, cache=False)) == roi.sizes["patient"]


def test_intensities_are_stored_as_8_bit_and_decoded_to_float32(store, roi_store):
    import zarr

    array = zarr.open_array(roi_store / "intensity")
    assert array.dtype == np.uint8  # 4x smaller than float32 on disk
    blosc = array.metadata.codecs[-1]  # lz4: a training read decodes ~6x faster than zarr's default zstd
    assert type(blosc).__name__ == "BloscCodec" and blosc.cname.value == "lz4"
    roi = open_rois(roi_store)
    key = str(roi.patient.values[1])
    tree = open_store(store)
    rois = tree["rois"].to_dataset().compute().to_dataframe()
    cine = tree["patients"][key].to_dataset()["intensity"]
    plan = plan_patient(cine, rois[rois.patient == key], key=key, phases=PHASES)
    exact = patient_rois(cine, plan, size=16, phases=PHASES).intensity.values
    stored = roi.intensity.sel(patient=key).values
    assert stored.dtype == np.float32 and "scale_factor" not in roi.intensity.attrs
    assert np.abs(stored - exact).max() <= 0.5 / 255 + 1e-6  # rounding to the source's 8 bits, no more
    assert np.abs(stored - exact).max() > 0  # resampling made fractional greys: the rounding is real
    np.testing.assert_array_equal(np.rint(stored * 255) / 255, stored)
    plain = xr.open_zarr(roi_store).intensity.sel(patient=key).values  # plain xarray: CF-decoded float64
    np.testing.assert_allclose(plain, stored, atol=1e-6)


def test_patient_pipeline_is_lazy(store):
    tree = open_store(store)
    rois = tree["rois"].to_dataset().compute().to_dataframe()
    key = sorted(tree["patients"].children)[0]
    cine = tree["patients"][key].to_dataset()["intensity"]
    with raise_if_dask_computes():
        plan = plan_patient(cine, rois[rois.patient == key], key=key, phases=PHASES)
        ds = patient_rois(cine, plan, size=16, phases=PHASES)
    assert ds.intensity.chunks is not None and ds.tic.chunks is not None


def test_bad_inputs_give_one_line_each_and_the_rest_go_on(store, tmp_path):
    tree = open_store(store)
    rois = tree["rois"].to_dataset().compute().to_dataframe().reset_index(drop=True)
    keys = sorted(tree["patients"].children)
    bad = rois[rois.patient != keys[1]].copy()  # keys[1]: no box
    bad.loc[bad.patient == keys[2], ["x0", "x1"]] = [500, 520]  # keys[2]: box outside the image
    report = preprocess_cohort(store, out=tmp_path / "bad.zarr", rois=bad, phases=PHASES, size=16, progress=False)
    assert report.written == [keys[0]]
    lines = report.lines()
    assert len(lines) == 2 and all("\n" not in line for line in lines)
    assert any(keys[1] in s and "no ROI box" in s for s in lines)
    assert any(keys[2] in s and "outside the image" in s for s in lines)
    with pytest.raises(Exception, match="no patient could be preprocessed"):
        preprocess_cohort(store, out=tmp_path / "short.zarr", phases={"AP": (0, 45), "VP": (120, 180)},
                          progress=False)


def test_cine_shorter_than_last_phase_is_reported(store, tmp_path):
    report = preprocess_cohort(store, out=tmp_path / "s.zarr", phases={"AP": (0.0, 10.0)}, size=8, progress=False)
    assert not report.problems  # 45 s cines cover a 10 s phase
    with pytest.raises(Exception) as err:
        preprocess_cohort(store, out=tmp_path / "s2.zarr", phases={"AP": (0.0, 60.0)}, progress=False)
    assert "before the end of the last phase" in str(err.value) or "no patient" in str(err.value)


def test_local_cluster_gives_the_same_bytes(store, roi_store, tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cl, \
            distributed.Client(cl) as client:
        preprocess_cohort(store, out=tmp_path / "dist.zarr", phases=PHASES, size=16, scheduler=client,
                          progress=False)
    local, dist = open_rois(roi_store).load(), open_rois(tmp_path / "dist.zarr").load()
    xr.testing.assert_identical(local, dist)
    for name in ("intensity", "roi_box", "displacement", "tic"):
        assert local[name].values.tobytes() == dist[name].values.tobytes()


def test_cli_preprocess_and_tic(store, roi_store, tmp_path):
    from ceusflow.cli_preprocess import register

    app = typer.Typer()
    register(app)
    runner = CliRunner()
    out = tmp_path / "cli.zarr"
    res = runner.invoke(app, ["preprocess", str(store), "--out", str(out), "--phases", "AP=0:15,PP=15:30,VP=30:40",
                              "--size", "8", "--no-track"])
    assert res.exit_code == 0, res.output
    assert open_rois(out).sizes["y"] == 8
    key = str(open_rois(out).patient.values[0])
    png = tmp_path / "tic.png"
    res = runner.invoke(app, ["tic", str(roi_store), key, "--out", str(png)])
    assert res.exit_code == 0, res.output
    assert png.read_bytes()[:4] == b"\x89PNG"
    res = runner.invoke(app, ["tic", str(roi_store), "NOPE", "--out", str(png)])
    assert res.exit_code == 2 and "not in this ROI store" in res.output
    res = runner.invoke(app, ["preprocess", str(store), "--out", str(out), "--phases", "AP=0-20"])
    assert res.exit_code == 2 and "NAME=START:END" in res.output


def test_rois_csv_with_export_patient_ids_is_mapped(store, tmp_path):
    mapping = pd.read_csv(store.parent / f"{store.name}.pseudonyms.csv", dtype=str)
    rois = open_store(store)["rois"].to_dataset().compute().to_dataframe().reset_index(drop=True)
    rois["patient_id"] = rois.pop("patient").map(dict(zip(mapping.pseudonym, mapping.patient_id, strict=True)))
    rois.to_csv(tmp_path / "rois.csv", index=False)
    report = preprocess_cohort(store, out=tmp_path / "m.zarr", rois=tmp_path / "rois.csv",
                               phases={"AP": (0.0, 5.0)}, size=8, progress=False)
    assert len(report.written) == 3 and not report.problems
    shutil.rmtree(tmp_path / "m.zarr")
