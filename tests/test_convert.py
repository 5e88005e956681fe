from __future__ import annotations

import datetime as dt
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
import xarray as xr
import zarr

from ceusflow.conventions import CLINICAL_COLUMNS
from ceusflow.convert import convert_cohort
from ceusflow.errors import InputError
from ceusflow.io.synthetic import speckle, write_cine_dicom
from ceusflow.store import finished_patients, open_store, staging_dir

T0 = dt.datetime(2019, 6, 7, 9, 30, 0)
ROW = "{pid},RFA,12.5,1,{age},M,HBV,1,0,20.5,30,10,12,40,5,150,2.1,0,1,1"


def _patient(root: Path, pid: str, name: str, *, clips=1, n=8, encoding="native", seed=0) -> None:
    for k in range(clips):
        uid = pydicom.uid.generate_uid()
        folder = root / "dicom" / "EXPORT" / pid / f"ser{k}"
        folder.mkdir(parents=True, exist_ok=True)
        write_cine_dicom(folder / uid, speckle(n, 64, 80, seed=seed + k), encoding=encoding,
                         start=T0 + dt.timedelta(seconds=60 * k), patient_id=pid, patient_name=name,
                         extra={"SOPInstanceUID": uid})


def _cohort(root: Path, *, n_good=3, messy=True) -> Path:
    encodings = ["native", "jpeg", "rle"]
    pids = [f"H{1000 + i}" for i in range(n_good)]
    for i, pid in enumerate(pids):
        _patient(root, pid, f"SURNAME{i}^GIVEN{i}", clips=2 if i == 0 else 1, encoding=encodings[i % 3], seed=i)
    rows = [",".join(CLINICAL_COLUMNS)] + [ROW.format(pid=p, age=50 + i) for i, p in enumerate(pids)]
    if messy:
        rows[2] = ROW.format(pid=pids[1], age="fifty")  # line 3: non-numeric
        rows += [rows[3], ROW.format(pid="H9999", age=70)]  # line 5: exact duplicate; a row without images
        _patient(root, "H5555", "NOCLIN^ONLY", seed=9)  # no clinical row
        bad = root / "dicom" / "EXPORT" / pids[0] / "bad"
        bad.mkdir(parents=True)
        (bad / "Thumbs.db").write_bytes(b"\x00junk" * 50)
        write_cine_dicom(bad / "snapshot.dcm", speckle(1, 64, 80), patient_id=pids[0])
        write_cine_dicom(bad / "untimed.dcm", speckle(4, 64, 80), timing="none", patient_id=pids[0])
        write_cine_dicom(bad / "mpeg.dcm", speckle(4, 64, 80), encoding="jpeg", patient_id=pids[0])
        ds = pydicom.dcmread(bad / "mpeg.dcm")
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"
        ds.save_as(bad / "mpeg.dcm")
        write_cine_dicom(bad / "short.dcm", speckle(10, 64, 80), patient_id=pids[2], start=T0 + dt.timedelta(hours=1))
        data = (bad / "short.dcm").read_bytes()
        (bad / "short.dcm").write_bytes(data[: len(data) - 64 * 80 * 3 - 10])
    (root / "clinical.csv").write_text("\n".join(rows) + "\n")
    (root / "rois.csv").write_text("patient_id,t_s,x0,y0,x1,y1\n" + f"{pids[0]},1.0,10,10,30,30\n")
    return root


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    base = tmp_path_factory.mktemp("convert")
    cohort = _cohort(base / "cohort")
    report = convert_cohort(cohort, base / "stores" / "c.zarr", progress=False, secret=base / "secret")
    return cohort, base / "stores" / "c.zarr", report


def test_converts_good_patients_and_reports_every_bad_input(converted):
    cohort, store, report = converted
    assert len(report.converted) == 4 and report.failed == [] and report.exit_code() == 0
    assert report.exit_code(strict=True) == 1
    text = "\n".join(report.lines())
    for reason in ("Thumbs.db: not a DICOM file", "snapshot.dcm: single frame", "untimed.dcm: no frame timing",
                   "mpeg.dcm: undecodable transfer syntax", "clinical.csv:3: non-numeric age",
                   "clinical.csv:5: duplicated row", "clinical row without images", "no row in clinical.csv",
                   "truncated: kept 6 of 10 frames"):
        assert reason in text, reason
    assert all("\n" not in line for line in report.lines())
    attrs = open_store(store).attrs
    assert attrs["n_patients"] == 4 and attrs["n_unassigned_files_skipped"] == 1
    assert attrs["skipped_by_reason"]["single frame"] == 1


def test_store_content_and_clinical_join(converted):
    cohort, store, report = converted
    tree = open_store(store)
    keys = sorted(tree["patients"].children)
    assert keys == sorted(report.converted)
    sizes = sorted(tree[f"patients/{k}"].sizes["time"] for k in keys)
    assert sizes == [8, 8, 8 + 6, 16]  # two clips; a clip plus a truncated one
    two = next(k for k in keys if tree[f"patients/{k}"].sizes["time"] == 16)
    cine = tree[f"patients/{two}"].intensity
    assert cine.time.values[8] == pytest.approx(60.0) and cine["clip"].values.tolist() == [0] * 8 + [1] * 8
    assert cine.attrs["n_clips"] == 2 and cine.dtype == np.uint8
    clinical = tree["clinical"].to_dataset()
    assert set(clinical.patient.values) <= set(keys) and clinical.sizes["patient"] == 3
    assert tree["rois"].patient.values.tolist() == [two]


def test_store_holds_no_identifying_value(converted):
    cohort, store, _ = converted
    secrets = set()
    for path in (p for p in (cohort / "dicom").rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:
            continue
        secrets |= {str(ds.PatientID), *str(ds.PatientName).split("^"), ds.PatientBirthDate,
                    ds.InstitutionName, ds.AccessionNumber, ds.StudyInstanceUID, ds.SeriesInstanceUID,
                    ds.SOPInstanceUID, ds.get("AcquisitionDateTime", "")[:14], ds.StudyDate, "D:/patients"}
        secrets |= {str(ds[0x00191050].value)} | {path.name} if len(path.name) > 20 else set()
    secrets = {s for s in secrets if s and len(s) >= 5} | {"H9999"}
    blobs = [p.read_bytes() for p in store.rglob("*") if p.is_file()]
    decoded = _decoded_text(store)
    for secret in secrets:
        assert not any(secret.encode() in blob for blob in blobs), secret
        assert secret not in decoded, secret


def _decoded_text(store: Path) -> str:
    parts = []
    def visit(group):
        parts.append(json.dumps(dict(group.attrs)))
        for _, array in group.arrays():
            parts.append(json.dumps(dict(array.attrs)))
            if array.dtype.kind in "OUST":
                parts.append(repr(array[...].tolist()))
        for _, child in group.groups():
            visit(child)
    visit(zarr.open_group(store, mode="r"))
    return "\n".join(parts)


def test_mapping_and_secret_are_owner_only_outside_the_store(converted):
    _, store, report = converted
    assert report.mapping.parent == store.parent and not report.mapping.is_relative_to(store)
    assert stat.S_IMODE(report.mapping.stat().st_mode) == 0o600
    assert "H1000" in report.mapping.read_text()


def test_rerun_is_a_no_op_and_strict_raises(converted, tmp_path):
    cohort, store, _ = converted
    again = convert_cohort(cohort, store, progress=False, secret=store.parent.parent / "secret")
    assert again.converted == [] and len(again.resumed) == 4
    with pytest.raises(InputError, match="strict"):
        convert_cohort(cohort, store, progress=False, strict=True, secret=store.parent.parent / "secret")


def test_nothing_convertible_raises(tmp_path):
    (tmp_path / "c" / "dicom").mkdir(parents=True)
    (tmp_path / "c" / "dicom" / "junk").write_bytes(b"junk")
    (tmp_path / "c" / "clinical.csv").write_text(",".join(CLINICAL_COLUMNS) + "\n")
    with pytest.raises(InputError, match="no patient could be converted"):
        convert_cohort(tmp_path / "c", tmp_path / "s.zarr", progress=False, secret=tmp_path / "k")


def test_max_fps_decimates(tmp_path):
    cohort = _cohort(tmp_path / "c", n_good=1, messy=False)
    report = convert_cohort(cohort, tmp_path / "s.zarr", progress=False, max_fps=5.0, secret=tmp_path / "k")
    cine = open_store(tmp_path / "s.zarr")[f"patients/{report.converted[0]}"].intensity
    assert np.diff(cine.time.values[:4]).min() >= 0.2 - 1e-6 and cine["frame"].values[:3].tolist() == [0, 2, 4]


def test_parallel_processes_and_local_cluster_match_in_process(tmp_path):
    from distributed import Client, LocalCluster

    cohort = _cohort(tmp_path / "c", n_good=3, messy=False)
    serial = convert_cohort(cohort, tmp_path / "a.zarr", progress=False, secret=tmp_path / "k")
    pool = convert_cohort(cohort, tmp_path / "b.zarr", workers=2, progress=False, secret=tmp_path / "k")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        dist = convert_cohort(cohort, tmp_path / "d.zarr", scheduler=client, progress=False, secret=tmp_path / "k")
    assert sorted(serial.converted) == sorted(pool.converted) == sorted(dist.converted)
    for key in serial.converted:
        ref = xr.open_zarr(tmp_path / "a.zarr" / "patients" / key, consolidated=False).intensity.values
        for other in ("b.zarr", "d.zarr"):
            got = xr.open_zarr(tmp_path / other / "patients" / key, consolidated=False).intensity.values
            np.testing.assert_array_equal(got, ref)


KILLABLE = textwrap.dedent("""
    import os, sys, time
    import ceusflow.store as store
    rename = os.rename
    def slow_rename(src, dst):
        time.sleep(0.4)
        rename(src, dst)
    store.os.rename = slow_rename
    from ceusflow.convert import convert_cohort
    convert_cohort(sys.argv[1], sys.argv[2], progress=False, secret=sys.argv[3])
""")


def test_sigkill_then_resume_completes_without_redoing_finished_patients(tmp_path):
    cohort = _cohort(tmp_path / "c", n_good=5, messy=False)
    store = tmp_path / "s.zarr"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", KILLABLE, str(cohort), str(store), str(tmp_path / "k")], env=env)
    deadline = time.monotonic() + 120
    while len(finished_patients(store)) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.2)  # inside the next patient's staging-to-rename window
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = finished_patients(store)
    assert 2 <= len(before) < 5
    assert any(staging_dir(store).iterdir())  # a half-written patient, not visible as finished
    for key in before:  # every finished patient is complete
        assert xr.open_zarr(store / "patients" / key, consolidated=False).intensity.values.shape[0] in (8, 16)
    report = convert_cohort(cohort, store, progress=False, secret=tmp_path / "k")
    assert set(report.resumed) == before and len(report.converted) == 5 - len(before)
    tree = open_store(store)
    assert len(tree["patients"].children) == 5 and not staging_dir(store).exists()
    reference = convert_cohort(cohort, tmp_path / "ref.zarr", progress=False, secret=tmp_path / "k")
    for key in reference.converted:
        np.testing.assert_array_equal(tree[f"patients/{key}"].intensity.values,
                                      open_store(tmp_path / "ref.zarr")[f"patients/{key}"].intensity.values)
