"""Benchmark `convert_cohort`: throughput vs decode-only, scaling, peak RSS, stored/DICOM bytes, chunking.

Usage: .venv/bin/python benchmarks/convert.py [--seconds 10] [--patients 4] [--codecs zstd,lz4]
       [--frames speckle,ceus] [--formats jpeg,native,rle] [--repeats 3] [--tmpdir DIR] [--rss] [--chunks]

``--frames``: ``speckle`` is full-frame Rayleigh noise (the worst case for every codec: nothing but
entropy); ``ceus`` are frames rendered by the simulator (sector, dark background, contrast
speckle), which compress like the issue's real speckle (zstd ~2.2x, lz4 ~1.8x); ``real`` are the
vendor's own JPEG Baseline bitstreams of a real ultrasound cine (``color3d_jpeg_baseline.dcm`` of
pydicom's test data, SonoSite, YBR_FULL_422, 480x640 at 30 fps, 120 frames; ``--real-file``),
repeated to the cine length and written without re-encoding (only ``--formats jpeg`` applies).

Prints ratios (ours vs the reference path on the same files, same machine); never asserted in tests.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ceusflow.conventions import CLINICAL_COLUMNS
from ceusflow.convert import convert_cohort
from ceusflow.io.header import open_clip
from ceusflow.io.pixels import decode_block
from ceusflow.io.synthetic import speckle, write_cine_dicom

ROWS, COLS, FPS = 480, 640, 25.0


@functools.lru_cache(maxsize=1)
def ceus_frames(n: int) -> np.ndarray:
    """``n`` frames of one simulated single-display exam at ROWS x COLS, 25 fps."""
    from ceusflow.simulate.cohort import simulate_patients
    from ceusflow.simulate.render import render_clip
    from ceusflow.simulate.scene import make_scene

    rng = np.random.default_rng(0)
    row = simulate_patients(1, rng).iloc[0]
    scene = make_scene(row, rng, image_size=(ROWS, COLS), fps=FPS, duration_s=n / FPS + 1, index=0)
    frames = np.concatenate(list(render_clip(scene, 0, rng)))
    return frames[:n]


REAL_FILE = Path(__file__).resolve().parents[2] / "shared" / "data" / "dicom-public" / "color3d_jpeg_baseline.dcm"


def write_real_cine(path: Path, source: Path, n: int, patient_id: str) -> None:
    """A cine of ``n`` frames made of ``source``'s encapsulated JPEG frames, cycled, bytes unchanged."""
    import pydicom
    from pydicom.encaps import encapsulate, generate_frames

    ds = pydicom.dcmread(source)
    bitstreams = list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))
    ds.PixelData = encapsulate([bitstreams[k % len(bitstreams)] for k in range(n)])
    ds["PixelData"].VR = "OB"
    ds.NumberOfFrames = n
    ds.PatientID = patient_id
    ds.save_as(path, enforce_file_format=True)


def make_cohort(root: Path, *, patients: int, seconds: float, encoding: str, frames: str = "speckle") -> Path:
    if frames == "real":
        import pydicom

        fps = 1000.0 / float(pydicom.dcmread(REAL_FILE, stop_before_pixels=True).FrameTime)
        for i in range(patients):
            folder = root / "dicom" / f"p{i}"
            folder.mkdir(parents=True)
            write_real_cine(folder / "clip.dcm", REAL_FILE, int(seconds * fps), f"B{i:04d}")
        _clinical(root, patients)
        return root
    n = int(seconds * FPS)
    frames = ceus_frames(n) if frames == "ceus" else speckle(n, ROWS, COLS, seed=1)
    for i in range(patients):
        folder = root / "dicom" / f"p{i}"
        folder.mkdir(parents=True)
        write_cine_dicom(folder / "clip.dcm", frames, encoding=encoding, fps=FPS, patient_id=f"B{i:04d}")
    _clinical(root, patients)
    return root


def _clinical(root: Path, patients: int) -> None:
    row = ",RFA,10,1,50,M,HBV,1,0,1,1,1,1,1,1,1,1,0,0,1"
    (root / "clinical.csv").write_text(",".join(CLINICAL_COLUMNS) + "\n"
                                       + "\n".join(f"B{i:04d}{row}" for i in range(patients)) + "\n")


def decode_only(cohort: Path) -> tuple[float, int, int]:
    start, frames, size = time.perf_counter(), 0, 0
    for path in sorted((cohort / "dicom").rglob("*.dcm")):
        clip = open_clip(path)
        for block in range(0, len(clip.ranges), 128):
            frames += len(decode_block(clip.ranges[block:block + 128], spec=clip.spec))
        size += path.stat().st_size
    return time.perf_counter() - start, frames, size


def timed_convert(cohort: Path, store: Path, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    report = convert_cohort(cohort, store, progress=False, secret=store.parent / "secret", **kwargs)
    return time.perf_counter() - start, report


def startup(tmp: Path) -> None:
    """Fixed cost of worker processes, paid once per run: a 2-frame cohort in-process vs on 1 worker.

    The worker processes fork from a server that imports ceusflow once (``ceusflow.parallel``);
    this also starts that server, so the throughput runs below compare steady-state workers.
    """
    cohort = make_cohort(tmp / "c-startup", patients=1, seconds=2 / FPS, encoding="native")
    t0, _ = timed_convert(cohort, tmp / "startup-0.zarr")
    t1, _ = timed_convert(cohort, tmp / "startup-1.zarr", workers=1)
    t1b, _ = timed_convert(cohort, tmp / "startup-1b.zarr", workers=1)
    print(json.dumps({"tiny_convert_s": {"in_process": round(t0, 2), "first_worker_run": round(t1, 2),
                                         "later_worker_runs": round(t1b, 2)}}), flush=True)


def throughput(tmp: Path, patients: int, seconds: float, codecs: tuple[str, ...], source: str,
               formats: tuple[str, ...], repeats: int = 3) -> None:
    """Per format and codec: ``repeats`` interleaved (decode-only, in-process convert) pairs, whose
    median ratio is reported (this shared machine's speed drifts by 10-20 % between runs), then
    one 1-worker and one 2-worker conversion."""
    for encoding in formats:
        cohort = make_cohort(tmp / f"c-{source}-{encoding}", patients=patients, seconds=seconds, encoding=encoding,
                             frames=source)
        for codec in codecs:
            name = f"{source}-{encoding}-{codec}"
            pairs = []
            for r in range(repeats):
                t_dec, frames, size = decode_only(cohort)
                t1, rep1 = timed_convert(cohort, tmp / f"s1-{name}-{r}.zarr", codec=codec)
                pairs.append((t_dec, t1))
                if r < repeats - 1:
                    shutil.rmtree(tmp / f"s1-{name}-{r}.zarr")
            ratios = [d / c for d, c in pairs]
            t_dec, t1 = pairs[int(np.argsort(ratios)[len(ratios) // 2])]
            t2, _ = timed_convert(cohort, tmp / f"s2-{name}.zarr", workers=2, codec=codec)
            t1p, _ = timed_convert(cohort, tmp / f"s1p-{name}.zarr", workers=1, codec=codec)
            print(json.dumps({
                "frames_from": source, "format": encoding, "codec": codec, "frames": frames,
                "dicom_MB": round(size / 1e6, 1),
                "decode_only_fps": round(frames / t_dec), "convert_fps": round(frames / t1),
                "convert_vs_decode_only": round(t_dec / t1, 2),
                "convert_vs_decode_only_each_repeat": [round(r, 2) for r in ratios],
                "convert_MB_s_per_core_dicom": round(size / t1 / 1e6, 1),
                "convert_MB_s_per_core_pixels": round(frames * ROWS * COLS / t1 / 1e6, 1),
                "workers2_vs_workers1": round(t1p / t2, 2),
                "stored_vs_dicom_bytes": round(rep1.bytes_out / size, 3),
                "stored_vs_raw_pixels": round(rep1.bytes_out / (frames * ROWS * COLS), 3),
            }), flush=True)
            for store in tmp.glob(f"s*-{name}.zarr"):
                shutil.rmtree(store)
        shutil.rmtree(cohort)  # tmpfs holds one format's cohort and stores at a time


# ru_maxrss survives fork+exec on Linux (the child would report the parent's peak, which holds the
# whole synthetic cine), so the child samples its own RSS with psutil and reports the peak in KiB.
RSS_CHILD = """
import os, sys, threading, time
import psutil
proc, peak = psutil.Process(os.getpid()), [0]
def watch():
    while True:
        peak[0] = max(peak[0], proc.memory_info().rss)
        time.sleep(0.02)
threading.Thread(target=watch, daemon=True).start()
from ceusflow.convert import convert_cohort
convert_cohort(sys.argv[1], sys.argv[2], progress=False, secret=sys.argv[3])
time.sleep(0.1)
print(peak[0] // 1024)
"""


def peak_rss(tmp: Path) -> None:
    for seconds in (30.0, 180.0):
        cohort = make_cohort(tmp / f"rss-{seconds:.0f}", patients=1, seconds=seconds, encoding="jpeg")
        out = subprocess.run([sys.executable, "-c", RSS_CHILD, str(cohort), str(tmp / f"rss-{seconds:.0f}.zarr"),
                              str(tmp / "secret")], capture_output=True, text=True, check=True)
        print(json.dumps({"cine_s": seconds, "frames": int(seconds * FPS),
                          "peak_rss_MiB": round(int(out.stdout.split()[-1]) / 1024)}))


def chunking(tmp: Path) -> None:
    """Every 10th frame, a 256x256 ROI: bytes fetched and time, for a few chunk layouts."""
    import zarr
    from zarr.codecs import BloscCodec

    data = speckle(500, ROWS, COLS, seed=2)
    codec = BloscCodec(cname="zstd", clevel=1, shuffle="noshuffle")
    layouts = {"1 frame/chunk, 128-frame shards": ((1, ROWS, COLS), (128, ROWS, COLS)),
               "1x256x256 chunks, 128x480x640 shards": ((1, 256, 256), (128, 512, 768)),
               "10 frames/chunk, no shards": ((10, ROWS, COLS), None),
               "1 frame/chunk, no shards": ((1, ROWS, COLS), None)}
    for name, (chunks, shards) in layouts.items():
        path = tmp / f"chunk-{len(list(tmp.glob('chunk-*')))}.zarr"
        start = time.perf_counter()
        array = zarr.create_array(path, shape=data.shape, dtype="uint8", chunks=chunks, shards=shards,
                                  compressors=[codec])
        array[...] = data
        t_write = time.perf_counter() - start
        start = time.perf_counter()
        roi = array[::10, 100:356, 200:456]
        t_read = time.perf_counter() - start
        files = [p for p in path.rglob("*") if p.is_file()]
        stored = sum(p.stat().st_size for p in files)
        touched = _bytes_touched(chunks, data.shape, stored)
        print(json.dumps({"layout": name, "write_MB_s": round(data.nbytes / t_write / 1e6),
                          "files": len(files), "ratio": round(data.nbytes / stored, 2),
                          "roi_read_ms": round(t_read * 1e3, 1),
                          "read_amplification": round(touched / roi.nbytes, 1)}))


def _bytes_touched(chunks: tuple[int, ...], shape: tuple[int, ...], stored: int) -> float:
    per_chunk = stored / np.prod([-(-s // c) for s, c in zip(shape, chunks, strict=True)])
    t = len({f // chunks[0] for f in range(0, shape[0], 10)})
    y = len({r // chunks[1] for r in range(100, 356)})
    x = len({c // chunks[2] for c in range(200, 456)})
    return per_chunk * t * y * x


def main() -> None:
    global REAL_FILE
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--patients", type=int, default=4)
    parser.add_argument("--rss", action="store_true", help="also the 30 s vs 180 s peak-RSS run")
    parser.add_argument("--chunks", action="store_true", help="also the chunk-layout measurement")
    parser.add_argument("--codecs", default="zstd,lz4", help="comma-separated codecs to convert with")
    parser.add_argument("--frames", default="speckle,ceus",
                        help="comma-separated frame sources: speckle, ceus, real (JPEG only)")
    parser.add_argument("--real-file", default=str(REAL_FILE), help="the real JPEG cine of --frames real")
    parser.add_argument("--formats", default="jpeg,native,rle", help="comma-separated DICOM pixel formats")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved decode-only/convert pairs")
    parser.add_argument("--tmpdir", default=None, help="where the cohorts and stores go (default: the system's)")
    args = parser.parse_args()
    REAL_FILE = Path(args.real_file)
    with tempfile.TemporaryDirectory(dir=args.tmpdir) as tmp:
        print(json.dumps({"load_before": os.getloadavg()[0], "tmpdir": str(Path(tmp).parent)}))
        startup(Path(tmp))
        for source in args.frames.split(","):
            formats = ("jpeg",) if source == "real" else tuple(args.formats.split(","))
            throughput(Path(tmp), args.patients, args.seconds, tuple(args.codecs.split(",")), source,
                       formats, args.repeats)
        if args.rss:
            peak_rss(Path(tmp))
        if args.chunks:
            chunking(Path(tmp))
    print(json.dumps({"load_after": os.getloadavg()[0]}))
    print(json.dumps({"self_peak_rss_MiB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))


if __name__ == "__main__":
    main()
