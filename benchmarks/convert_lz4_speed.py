"""Would a faster lz4 setting reach convert >= 0.8x decode-only? (timing only).

Real JPEG Baseline bitstreams (``benchmarks/convert.py --frames real``: the vendor's frames of
``color3d_jpeg_baseline.dcm``, 480 x 640, cycled to the cine length), one in-process worker,
interleaved (decode-only, convert) pairs, median ratio per codec. The shard writer's codec is
swapped for numcodecs' raw ``LZ4(acceleration=k)``: those stores keep the Blosc metadata, so
they are timed and sized, then deleted, never read. Raw LZ4 is not in the Zarr v3 specification
(other readers may lack it), which is why it is measured here rather than offered.

Run: ``python benchmarks/convert_lz4_speed.py [--seconds 180] [--patients 2] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from numcodecs import LZ4

sys.path.insert(0, str(Path(__file__).parent))
import convert as bench  # noqa: E402

import ceusflow.store as store  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=180.0, help="cine length (a real exam: ~3 min)")
    parser.add_argument("--patients", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tmpdir", default="/dev/shm")
    args = parser.parse_args()
    blosc = store.numcodecs_blosc
    variants = {"blosc-lz4 (default)": None, "lz4 acceleration 16": 16, "lz4 acceleration 32": 32,
                "lz4 acceleration 64": 64}
    tmp = Path(tempfile.mkdtemp(dir=args.tmpdir))
    try:
        cohort = bench.make_cohort(tmp / "c", patients=args.patients, seconds=args.seconds, encoding="jpeg",
                                   frames="real")
        bench.timed_convert(cohort, tmp / "warm.zarr", codec="lz4")  # imports, forkserver
        results: dict[str, list[tuple[float, int]]] = {k: [] for k in variants}
        for r in range(args.repeats):
            for name, acc in variants.items():
                store.numcodecs_blosc = blosc if acc is None else (lambda _b, acc=acc: LZ4(acceleration=acc))
                t_dec, frames, _ = bench.decode_only(cohort)
                t_conv, report = bench.timed_convert(cohort, tmp / f"s{r}.zarr", codec="lz4")
                results[name].append((t_dec / t_conv, report.bytes_out))
                shutil.rmtree(tmp / f"s{r}.zarr")
        store.numcodecs_blosc = blosc
        for name, rows in results.items():
            ratios = [round(a, 3) for a, _ in rows]
            print(json.dumps({"codec": name, "frames": frames, "convert_vs_decode_only": float(np.median(ratios)),
                              "each_repeat": ratios, "stored_MB": round(rows[0][1] / 1e6, 1)}), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
