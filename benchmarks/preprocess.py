"""Benchmark of `ceusflow preprocess`: read amplification, peak RSS vs cohort size, workers, tracking, time.

    .venv/bin/python benchmarks/preprocess.py [--patients 6] [--large 419] [--small 40] [--rows 128 --cols 160]
    .venv/bin/python benchmarks/preprocess.py --only tracking [--track-patients 6 --track-seconds 185]
        [--track-seed 3] [--irregularity 0.15]

Simulates a small cohort (180 s cines, `--fps` frames/s, `--rows x --cols` pixels), converts it, then
* read amplification: bytes fetched from the store (counted in zarr's LocalStore.get) / bytes of the
  windows of the frames the pipeline needs, vs the naive path (load the whole cine, then crop);
* peak RSS (child process, ru_maxrss) of preprocessing a cohort of `--small` vs `--large` patients,
  built by linking the simulated patient groups under new keys (pixel reads are real);
* 1 process vs 2 processes vs LocalCluster(n_workers=2);
* tracking accuracy on a second simulated cohort with known motion (ground truth per frame), for
  the default tracker and, in the same run, the earlier ones (``before``: phase correlation and
  Savitzky-Golay smoothing; ``model``: plus the breathing model; ``unrefined``: plus the template
  channel, the tracker of session 10, without refinement passes), with regular breathing or, with
  ``--irregularity``, a breathing rate and amplitude that wander;
* total time, extrapolated to 419 patients.
The machine is shared: the load average is printed with the numbers.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dask
import numpy as np
import pandas as pd
import xarray as xr

from ceusflow import SimulationConfig, write_synthetic_export
from ceusflow.convert import convert_cohort
from ceusflow.preprocess.cohort import preprocess_cohort
from ceusflow.preprocess.patient import patient_rois, plan_patient
from ceusflow.store import create_store, finalize, open_store, write_table


def load() -> str:
    return os.popen("uptime").read().strip()


def simulate(root: Path, n: int, rows: int, cols: int, fps: float, duration: float, seed: int,
             irregularity: float = 0.0) -> Path:
    write_synthetic_export(root / "C", SimulationConfig(n_patients=n, fps=fps, duration_s=duration,
                                                        image_size=(rows, cols), seed=seed, messy=False,
                                                        breathing_irregularity=irregularity))
    convert_cohort(root / "C", root / "C.zarr", workers=0, progress=False)
    return root / "C.zarr"


class Counter:
    """Count the bytes zarr's LocalStore hands out."""

    def __enter__(self) -> Counter:
        from zarr.storage import LocalStore

        self.cls, self.orig, self.bytes = LocalStore, LocalStore.get, 0
        counter = self

        async def get(self, key, prototype, byte_range=None):  # noqa: ANN001, ANN202
            buf = await counter.orig(self, key, prototype, byte_range)
            counter.bytes += 0 if buf is None else len(buf.to_bytes())
            return buf

        LocalStore.get = get
        return self

    def __exit__(self, *exc: object) -> None:
        self.cls.get = self.orig


def amplification(store: Path) -> list[dict[str, float]]:
    tree = open_store(store)
    rois = tree["rois"].to_dataset().compute().to_dataframe()
    rows = []
    for key in sorted(tree["patients"].children):
        cine = tree["patients"][key].to_dataset()["intensity"]
        plan = plan_patient(cine, rois[rois.patient == key], key=key)
        r0, r1, c0, c1 = plan.window
        from ceusflow.preprocess.resample import nearest_frames

        n_needed = int(nearest_frames(cine.time.values, plan.grid)[1].sum())
        needed = n_needed * (r1 - r0) * (c1 - c0)
        with Counter() as ours, dask.config.set(scheduler="synchronous"):
            fresh = xr.open_zarr(store, group=f"patients/{key}", zarr_format=3, consolidated=False)["intensity"]
            patient_rois(fresh, plan, size=64).compute()
        with Counter() as naive:
            fresh = xr.open_zarr(store, group=f"patients/{key}", zarr_format=3, consolidated=False)["intensity"]
            whole = fresh.values  # load the cine, then crop
            _ = whole[:, r0:r1, c0:c1]
        rows.append({"patient": key, "frames_stored": cine.sizes["time"], "frames_needed": n_needed,
                     "window_px": (r1 - r0) * (c1 - c0), "frame_px": cine.sizes["y"] * cine.sizes["x"],
                     "ours": ours.bytes / needed, "naive": naive.bytes / needed})
    return rows


def replicate(store: Path, out: Path, n: int) -> Path:
    """A cohort of ``n`` patients made by linking the simulated groups under new keys."""
    tree = open_store(store)
    keys = sorted(tree["patients"].children)
    create_store(out)
    clinical = tree["clinical"].to_dataset().compute()
    rois = tree["rois"].to_dataset().compute().to_dataframe().reset_index(drop=True)
    new_keys = [f"P{i:016x}" for i in range(n)]
    for i, key in enumerate(new_keys):
        os.symlink((store / "patients" / keys[i % len(keys)]).resolve(), out / "patients" / key)
    source = [keys[i % len(keys)] for i in range(n)]
    clin = clinical.sel(patient=source).assign_coords(patient=np.array(new_keys, dtype=object))
    write_table(out, "clinical", clin)
    parts = [rois[rois.patient == s].assign(patient=k) for s, k in zip(source, new_keys, strict=True)]
    table = pd.concat(parts).reset_index(drop=True)
    table["patient"] = table["patient"].astype(object)
    write_table(out, "rois", xr.Dataset.from_dataframe(table.rename_axis("roi")))
    finalize(out, {"n_patients": n})
    return out


def child_rss(store: Path, out: Path, workers: int) -> dict[str, float]:
    code = ("import resource,sys,time,json;from ceusflow.preprocess.cohort import preprocess_cohort;"
            "t=time.perf_counter();"
            f"preprocess_cohort({str(store)!r}, out={str(out)!r}, workers={workers}, progress=False);"
            "print(json.dumps({'s': time.perf_counter()-t,"
            "'rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024,"
            "'children_mb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss/1024}))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def cluster_time(store: Path, out: Path) -> float:
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, Client(cluster) as c:
        start = time.perf_counter()
        preprocess_cohort(store, out=out, scheduler=c, progress=False)
        return time.perf_counter() - start


#: Trackers compared in one run: ``track_roi`` options (None: the static manual box).
TRACKERS = {"default": {}, "unrefined": {"refine": 0}, "model": {"template": False, "refine": 0},
            "before": {"model": False, "template": False, "refine": 0}}


def tracking(root: Path, n: int, seed: int, duration: float = 185.0, irregularity: float = 0.0) -> pd.DataFrame:
    """Per patient: share of valid frames within 2 px of the truth, per tracker vs static, and timings."""
    import ceusflow.preprocess.patient as pp

    store = simulate(root, n, 160, 200, 4.0, duration, seed, irregularity)
    phases = None if duration >= 180 else {"AP": (0.0, 20.0), "PP": (20.0, 40.0), "VP": (40.0, duration - 2)}
    tree = open_store(store)
    rois = tree["rois"].to_dataset().compute().to_dataframe()
    ids = pd.read_csv(f"{store}.pseudonyms.csv").set_index("pseudonym")["patient_id"]
    truth = pd.read_csv(root / "C-truth" / "frames.csv.gz")
    dual = pd.read_csv(root / "C-truth" / "patients.csv").set_index("patient_id")["dual"]
    rows, track_roi = [], pp.track_roi
    try:
        for key in sorted(tree["patients"].children):
            cine = tree["patients"][key].to_dataset()["intensity"]
            plan = plan_patient(cine, rois[rois.patient == key], key=key, phases=phases)
            _, off = _timed(cine, plan, phases, False)
            row: dict[str, object] = {}
            for name, options in TRACKERS.items():
                pp.track_roi = functools.partial(track_roi, **options)
                ds, on = _timed(cine, plan, phases, True)
                metrics = _track_row(key, ds, plan, truth[truth.patient_id == ids[key]])
                if name == "default":
                    row |= metrics
                else:
                    row |= {f"{name}_all": metrics["tracked_all"]}
                row[f"{name}_track_s"] = on - off
            rows.append({**row, "display": "dual" if dual[ids[key]] else "single", "track_s": row["default_track_s"],
                         "total_s": off + row["default_track_s"]})
    finally:
        pp.track_roi = track_roi
    return pd.DataFrame(rows)


def _timed(cine: xr.DataArray, plan, phases, track: bool, repeats: int = 2) -> tuple[xr.Dataset, float]:  # noqa: ANN001
    best, ds = np.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        with dask.config.set(scheduler="synchronous"):
            ds = patient_rois(cine, plan, size=16, phases=phases, track=track).compute()
        best = min(best, time.perf_counter() - start)
    return ds, best


def _track_row(key: str, ds: xr.Dataset, plan, truth: pd.DataFrame) -> dict[str, float]:  # noqa: ANN001
    flat = ds.stack(k=("phase", "time"))
    keep = np.isfinite(flat.t_exam.values) & flat.frame_ok.values
    t, ts = flat.t_exam.values[keep], flat.t_source.values[keep]
    grid = np.rint(t * plan.fps).astype(int)
    pos = truth[["tumour_row", "tumour_col"]].values
    true = pos[np.abs(truth.t_s.values[:, None] - ts).argmin(axis=0)]  # the frame shown
    at_anchor = pos[np.abs(truth.t_s.values[:, None] - plan.grid[plan.anchor[grid]]).argmin(axis=0)]
    motion, disp = true - at_anchor, flat.displacement.values.T[keep]
    b = plan.boxes[grid]
    centre = np.c_[(b[:, 1] + b[:, 3]) / 2 - 0.5, (b[:, 0] + b[:, 2]) / 2 - 0.5]
    after = t >= t[flat.tracked.values[keep]].min()
    err, static = np.hypot(*(motion - disp).T), np.hypot(*motion.T)
    return {"patient": key, "clips": int(truth["clip"].max()) + 1, "spacing_mm": plan.spacing_mm[0],
            "max_motion_px": static.max(), "frames": int(keep.sum()), "pre_arrival": int((~after).sum()),
            "tracked_all": (err <= 2).mean(), "static_all": (static <= 2).mean(),
            "tracked_after_arrival": (err[after] <= 2).mean(), "static_after_arrival": (static[after] <= 2).mean(),
            "tracked_pre_arrival": (err[~after] <= 2).mean() if (~after).any() else np.nan,
            "confident": flat.tracked.values[keep].mean(),
            "abs_tracked": (np.hypot(*(true - centre - disp).T) <= 2).mean(),
            "abs_static": (np.hypot(*(true - centre).T) <= 2).mean()}


def tracking_summary(tr: pd.DataFrame) -> pd.DataFrame:
    """Frame-weighted shares per display type and overall."""
    w = tr.assign(pre_ok=tr.tracked_pre_arrival.fillna(0) * tr.pre_arrival, post=tr.frames - tr.pre_arrival)
    cols = ["tracked_all", "unrefined_all", "model_all", "before_all", "static_all"]
    def agg(g: pd.DataFrame) -> pd.Series:
        out = {c: np.average(g[c], weights=g.frames) for c in cols}
        out |= {c: np.average(g[c], weights=g.post) for c in ("tracked_after_arrival", "static_after_arrival")}
        pre = g.pre_ok.sum() / g.pre_arrival.sum() if g.pre_arrival.sum() else np.nan
        out |= {"tracked_pre_arrival": pre, "frames": g.frames.sum(),
                **{f"{k}_s_per_patient": g[f"{k}_track_s"].mean() for k in TRACKERS}}
        return pd.Series(out)
    return pd.concat({**{d: agg(g) for d, g in w.groupby("display")}, "all": agg(w)}, axis=1).T


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=6)
    ap.add_argument("--small", type=int, default=40)
    ap.add_argument("--large", type=int, default=419)
    ap.add_argument("--rows", type=int, default=128)
    ap.add_argument("--cols", type=int, default=160)
    ap.add_argument("--fps", type=float, default=5.0)
    ap.add_argument("--skip-rss", action="store_true")
    ap.add_argument("--only", choices=["tracking", "workers", "rss"], help="run one section only")
    ap.add_argument("--track-patients", type=int, default=6)
    ap.add_argument("--track-seconds", type=float, default=185.0)
    ap.add_argument("--track-seed", type=int, default=3)
    ap.add_argument("--irregularity", type=float, default=0.0, help="breathing rate/amplitude SD (relative)")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ceusflow-bench-pp-"))
    try:
        print("load before:", load())
        if args.only == "tracking":
            return _print_tracking(root, args)
        store = simulate(root / "a", args.patients, args.rows, args.cols, args.fps, 185.0, 11)
        if args.only in (None, "workers"):
            amp = pd.DataFrame(amplification(store))
            print("\n## read amplification (bytes read / bytes needed)\n", amp.round(2).to_string(index=False))
            print(f"median ours {amp.ours.median():.2f}, naive {amp.naive.median():.2f}")
            one = child_rss(store, root / "w1.zarr", 1)
            two = child_rss(store, root / "w2.zarr", 2)
            dist = cluster_time(store, root / "d.zarr")
            print(f"\n## workers ({args.patients} patients)\n1 process {one['s']:.1f} s, 2 processes {two['s']:.1f} s "
                  f"(x{one['s'] / two['s']:.2f}), LocalCluster(2) {dist:.1f} s (x{one['s'] / dist:.2f}); load {load()}")
            per_patient = one["s"] / args.patients
            print(f"per patient (1 process): {per_patient:.2f} s -> 419 patients ~ {419 * per_patient / 60:.1f} min "
                  f"on 1 core, at {args.rows}x{args.cols} px, {args.fps} fps stored")
        if args.only in (None, "rss") and not args.skip_rss:
            for n in (args.small, args.large):
                big = replicate(store, root / f"r{n}.zarr", n)
                r = child_rss(big, root / f"r{n}-roi.zarr", 0)
                print(f"\n## cohort of {n}: {r['s']:.1f} s, peak RSS {r['rss_mb']:.0f} MB "
                      f"({r['s'] / n:.2f} s/patient); load {load()}", flush=True)
        if args.only is not None:
            return None
        _print_tracking(root, args)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _print_tracking(root: Path, args: argparse.Namespace) -> None:
    tr = tracking(root / "t", args.track_patients, args.track_seed, args.track_seconds, args.irregularity)
    print(f"\n## tracking, {args.track_patients} patients x {args.track_seconds:g} s, seed {args.track_seed}, "
          f"breathing irregularity {args.irregularity:g} "
          "(share of valid frames with |error| <= 2 px; track_s = time with - without tracking)\n",
          tr.round(3).to_string(index=False))
    print("\n", tracking_summary(tr).round(3).to_string())
    print("load after:", load())


if __name__ == "__main__":
    main()
