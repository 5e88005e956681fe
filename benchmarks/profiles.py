"""Validation C-index of a training profile over several seeds, on a study's ROI store and split.

For each treatment arm and seed: train a Cox-CNN (``ceusflow.train``) on the arm's training
patients of ``split.csv``, predict the arm's validation patients, and write one CSV row per
validation patient (``arm, seed, profile, patient, risk, duration, event, best_epoch, seconds``).
Harrell's C with its CI is computed from that file afterwards (e.g. ``ceusflow.survival``), so runs
on different machines (a GPU for ``paper``, this CPU for ``cpu``) are compared on the same patients.

Run: ``python benchmarks/profiles.py ROI_STORE SPLIT_CSV OUT_CSV [--profile paper] [--device cuda]
[--seeds 0,1,2] [--deadline-s 300]``. Seeds that would start after ``--deadline-s`` are skipped.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from ceusflow.conventions import PATIENT
from ceusflow.model import TrainConfig, predict_risk, train
from ceusflow.model.cohort import training_cohort
from ceusflow.pipeline.run import patient_table
from ceusflow.preprocess.cohort import open_rois


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("roi_store")
    parser.add_argument("split_csv")
    parser.add_argument("out_csv")
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--arms", default="RFA,SR")
    parser.add_argument("--deadline-s", type=float, default=float("inf"))
    args = parser.parse_args()
    start = time.perf_counter()
    roi = open_rois(args.roi_store)
    table = patient_table(roi).join(pd.read_csv(args.split_csv, index_col=PATIENT)["split"])
    rows: list[pd.DataFrame] = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for arm in args.arms.split(","):
            if time.perf_counter() - start > args.deadline_s:
                print(f"deadline: skipping seed {seed} {arm}", flush=True)
                continue
            fit, _ = training_cohort(roi, arm, train_patients=list(table.index[table["split"] == "train"]))
            val = table[(table["treatment"] == arm) & (table["split"] == "val")]
            t0 = time.perf_counter()
            trained = train(fit, TrainConfig(profile=args.profile, device=args.device, seed=seed),  # type: ignore[arg-type]
                            progress=False)
            seconds = time.perf_counter() - t0
            risk = predict_risk(trained.model, roi.sel({PATIENT: list(val.index)}), device=args.device)
            out = pd.DataFrame({"arm": arm, "seed": seed, "profile": args.profile, "patient": val.index,
                                "risk": risk.values, "duration": val["duration"].values,
                                "event": val["event"].values, "best_epoch": trained.best_epoch,
                                "seconds": seconds})
            rows.append(out)
            pd.concat(rows).to_csv(args.out_csv, index=False)  # after each model: a deadline keeps the rest
            print(f"seed {seed} {arm}: {fit.sizes[PATIENT]} training patients, best epoch {trained.best_epoch}, "
                  f"{seconds:.1f} s", flush=True)
    print(f"wrote {Path(args.out_csv)} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
