from __future__ import annotations

import stat

import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr

from ceusflow.conventions import CLINICAL_COLUMNS
from ceusflow.errors import InputError, StoreError
from ceusflow.io import pseudonyms
from ceusflow.io.clinical import read_clinical
from ceusflow.store import (
    PATIENTS,
    create_store,
    finalize,
    finished_patients,
    open_store,
    staging_dir,
    write_patient,
    write_table,
)


def _cine(n=10, rows=16, cols=20, seed=0):
    data = np.random.default_rng(seed).integers(0, 255, (n, rows, cols), dtype=np.uint8)
    return xr.DataArray(
        da.from_array(data, chunks=(4, rows, cols)), dims=("time", "y", "x"), name="intensity",
        coords={"time": ("time", np.arange(n) * 0.1, {"units": "s"}), "y": np.arange(rows) * 0.2,
                "x": np.arange(cols) * 0.2, "clip": ("time", np.zeros(n, int)), "frame": ("time", np.arange(n))},
        attrs={"spacing_mm": [0.2, 0.2], "flags": [], "timing_source": ["frame_time"]},
    ), data


def test_write_open_round_trip_with_frame_chunks_and_shards(tmp_path):
    store = create_store(tmp_path / "s.zarr")
    cine, data = _cine()
    written = write_patient(store, "Pabc", cine, shard_frames=4)
    assert written > 0 and finished_patients(store) == {"Pabc"}
    finalize(store, {"n_patients": 1})
    tree = open_store(store)
    out = tree["patients/Pabc"].intensity
    np.testing.assert_array_equal(out.values, data)
    assert out.attrs["spacing_mm"] == [0.2, 0.2] and tree.attrs["n_patients"] == 1
    array = zarr.open_array(store / PATIENTS / "Pabc" / "intensity", mode="r")
    assert array.chunks == (1, 16, 20) and array.shards == (4, 16, 20)
    assert tree["patients/Pabc"].time.attrs["units"] == "s"
    assert not staging_dir(store).exists()


def test_a_half_written_patient_is_not_finished(tmp_path):
    store = create_store(tmp_path / "s.zarr")
    partial = staging_dir(store) / "Pxyz.123"
    partial.mkdir(parents=True)
    (partial / "zarr.json").write_text("{}")
    assert finished_patients(store) == set()
    create_store(store)  # a rerun clears the staging area
    assert not partial.exists()


def test_second_writer_of_a_patient_does_not_corrupt_the_first(tmp_path):
    store = create_store(tmp_path / "s.zarr")
    cine, data = _cine()
    write_patient(store, "Pabc", cine, shard_frames=4)
    write_patient(store, "Pabc", _cine(seed=1)[0], shard_frames=4)
    np.testing.assert_array_equal(xr.open_zarr(store / PATIENTS / "Pabc", consolidated=False).intensity.values, data)


def test_tables_and_errors(tmp_path):
    store = create_store(tmp_path / "s.zarr")
    table = xr.Dataset({"age": ("patient", [50.0, 60.0])}, coords={"patient": np.array(["Pa", "Pb"], object)})
    write_table(store, "clinical", table)
    finalize(store, {})
    assert open_store(store)["clinical"].age.values.tolist() == [50.0, 60.0]
    with pytest.raises(StoreError, match="no Zarr store"):
        open_store(tmp_path / "missing.zarr")
    zarr.open_group(tmp_path / "other.zarr", mode="w").attrs["layout"] = "something else"
    with pytest.raises(StoreError, match="not a ceusflow cohort store"):
        open_store(tmp_path / "other.zarr")


def test_secret_and_mapping_are_owner_only_and_keys_are_stable(tmp_path):
    secret = pseudonyms.load_secret(tmp_path / "keys" / "secret")
    assert stat.S_IMODE((tmp_path / "keys" / "secret").stat().st_mode) == 0o600
    assert pseudonyms.load_secret(tmp_path / "keys" / "secret") == secret
    key = pseudonyms.pseudonym("H123", secret)
    assert key == pseudonyms.pseudonym(" H123 ", secret) != pseudonyms.pseudonym("H123", b"other")
    assert key.startswith("P") and len(key) == 17 and "H123" not in key
    pseudonyms.keys_for(["H123"], secret)
    mapping = pseudonyms.write_mapping(tmp_path / "map.csv", [key])
    assert stat.S_IMODE(mapping.stat().st_mode) == 0o600
    assert mapping.read_text().splitlines() == ["pseudonym,patient_id", f"{key},H123"]
    (tmp_path / "keys" / "secret").chmod(0o644)
    with pytest.raises(InputError, match="readable by others"):
        pseudonyms.load_secret(tmp_path / "keys" / "secret")


def test_clinical_problems_are_one_line_each_and_name_rows(tmp_path):
    header = ",".join(CLINICAL_COLUMNS)
    row = "{pid},RFA,12.5,1,{age},M,HBV,1,0,20,30,10,12,40,5,150,2.1,0,1,1"
    lines = [header, row.format(pid="A1", age=50), row.format(pid="A1", age=50),
             row.format(pid="B2", age="old"), row.format(pid="C3", age=60), row.format(pid="C3", age=61)]
    (tmp_path / "clinical.csv").write_text("\n".join(lines) + "\n")
    ds, problems = read_clinical(tmp_path / "clinical.csv", b"s")
    assert problems == [("clinical.csv:3", "duplicated row; the first copy is kept"),
                        ("clinical.csv:5", "conflicting rows for one patient; the patient's clinical data dropped"),
                        ("clinical.csv:6", "conflicting rows for one patient; the patient's clinical data dropped"),
                        ("clinical.csv:4", "non-numeric age; set to missing")]
    assert ds.sizes["patient"] == 2 and np.isnan(ds.age.values).sum() == 1
    assert "A1" not in repr(ds) and "B2" not in repr(ds)


@pytest.mark.parametrize("codec", ["zstd", "lz4", "none"])
@pytest.mark.parametrize(("channels", "frame"), [(False, (12, 10)), (True, (12, 10)), (False, (300, 280))])
def test_direct_shard_writer_writes_the_bytes_zarr_writes(tmp_path, monkeypatch, codec, channels, frame):
    from ceusflow.store import compressor, write_shards

    rng = np.random.default_rng(3)
    shape = (23, *frame, 3) if channels else (23, *frame)  # 300 x 280: zero frames found by their size
    data = rng.integers(0, 40, shape, dtype=np.uint8)
    data[5] = 0  # a chunk equal to the fill value: zarr leaves it absent from the shard
    data[-1] = 0  # ... also in the partial last shard
    paths = []
    for name in ("zarr", "direct"):
        path = tmp_path / f"{name}.zarr"
        blosc = compressor(codec, int(np.prod(shape[1:])))
        array = zarr.create_array(path, shape=shape, dtype="uint8", chunks=(1, *shape[1:]),
                                  shards=(8, *shape[1:]), compressors=() if blosc is None else (blosc,),
                                  zarr_format=3)
        if name == "zarr":
            array[...] = data
        else:
            with monkeypatch.context() as m:  # the direct path must not fall back to zarr's writer
                m.setattr(zarr.Array, "__setitem__", lambda *a: pytest.fail("fell back to zarr"))
                write_shards(path, da.from_array(data, chunks=(8, *shape[1:])))
        paths.append(path)
    np.testing.assert_array_equal(zarr.open_array(paths[1])[...], data)
    shards = sorted(p.relative_to(paths[0]) for p in (paths[0] / "c").rglob("*") if p.is_file())
    assert len(shards) == 3
    for rel in shards:
        assert (paths[0] / rel).read_bytes() == (paths[1] / rel).read_bytes()


def test_shard_writer_falls_back_to_zarr_for_other_layouts(tmp_path):
    from ceusflow.store import write_shards

    data = np.random.default_rng(4).integers(0, 255, (9, 6, 5), dtype=np.uint8)
    zarr.create_array(tmp_path / "a.zarr", shape=data.shape, dtype="uint8", chunks=(3, 6, 5), zarr_format=3)
    write_shards(tmp_path / "a.zarr", da.from_array(data, chunks=(3, 6, 5)))  # no shards: zarr writes it
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "a.zarr")[...], data)


def test_every_codec_stores_the_same_pixels(tmp_path):
    cine, data = _cine(n=12)
    for codec in ("zstd", "lz4", "none"):
        store = create_store(tmp_path / f"{codec}.zarr")
        write_patient(store, "Pabc", cine, shard_frames=5, codec=codec)
        tree = open_store(store)
        np.testing.assert_array_equal(tree["patients/Pabc"].intensity.values, data)
        inner = zarr.open_array(store / PATIENTS / "Pabc" / "intensity").metadata.codecs[0].codecs
        assert [getattr(getattr(c, "cname", None), "value", None) for c in inner[1:]] == ([] if codec == "none"
                                                                                          else [codec])
    with pytest.raises(InputError, match="codec"):
        write_patient(create_store(tmp_path / "x.zarr"), "Pabc", cine, codec="gzip")


def test_shard_writer_decodes_each_source_block_once_whatever_its_chunking(tmp_path):
    from ceusflow.store import compressor, write_shards

    data = np.random.default_rng(5).integers(0, 40, (23, 6, 5), dtype=np.uint8)
    calls: list[int] = []

    def decode(block, block_info=None):  # stands for the DICOM decoder of one clip's frames
        calls.append(block_info[0]["chunk-location"][0])
        return block

    source = da.from_array(data, chunks=((5, 7, 3, 8), 6, 5)).map_blocks(decode, dtype=np.uint8)
    array = zarr.create_array(tmp_path / "a.zarr", shape=data.shape, dtype="uint8", chunks=(1, 6, 5),
                              shards=(8, 6, 5), compressors=(compressor(),), zarr_format=3)
    write_shards(tmp_path / "a.zarr", source)
    np.testing.assert_array_equal(array[...], data)
    assert sorted(calls) == [0, 1, 2, 3]  # shards straddle blocks, yet no block is decoded twice


def test_one_default_codec_for_library_cli_and_run_config(tmp_path):
    import inspect

    from ceusflow import cli
    from ceusflow.convert import convert_cohort
    from ceusflow.pipeline.config import ConvertSection
    from ceusflow.store import DEFAULT_CODEC

    assert DEFAULT_CODEC == "lz4"  # conversion speed first; --codec zstd for a smaller store (store.md)
    assert inspect.signature(convert_cohort).parameters["codec"].default == DEFAULT_CODEC
    assert inspect.signature(cli.convert).parameters["codec"].default == DEFAULT_CODEC
    assert ConvertSection().codec == DEFAULT_CODEC
    cine, _ = _cine(n=4)
    store = create_store(tmp_path / "d.zarr")
    write_patient(store, "Pabc", cine, shard_frames=4)
    meta = zarr.open_array(store / PATIENTS / "Pabc" / "intensity").metadata.codecs[0].codecs[1]
    assert meta.cname.value == DEFAULT_CODEC
