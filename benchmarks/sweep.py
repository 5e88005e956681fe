"""Training variants of the Cox-CNN, compared by cross-validation inside the training patients.

For each treatment arm, variant and task, train ``ceusflow.train`` and write one CSV row per
predicted patient (``kind, variant, arm, seed, fold, patient, risk, risk_flip, duration, event,
best_epoch, inner_c, train_c, seconds``; ``risk_flip`` = the same model on the laterally mirrored
ROI, for test-time augmentation):

* ``kind = cv``: K-fold cross-validation **inside the arm's training patients** (folds stratified by
  event, fold seed 0; ``--cv-seeds`` training seeds per fold): train on K-1 folds (with their own
  inner early-stopping split), predict the held-out fold. This is the criterion a variant may be
  chosen by: it never sees a validation patient.
* ``kind = val``: train on all the arm's training patients with seeds 0..S-1 and predict the
  validation patients, to report what the chosen variant (and, for contrast, the others) does.

Tasks run ``--jobs`` at a time in separate processes (one GPU holds several small models) and are
ordered CV first, then validation seed by seed, so a deadline cuts the least needed ones.

Run: ``python benchmarks/sweep.py ROI_STORE SPLIT_CSV OUT_CSV [--variants cpu,cpu-wd0.1]
[--folds 5] [--seeds 4] [--device cuda] [--jobs 4] [--deadline-s 300]``. Summarise with
``python benchmarks/sweep.py --summary OUT_CSV``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from typing import Any

import numpy as np
import pandas as pd

#: Variant name -> TrainConfig overrides (``network.*`` keys replace fields of the profile's network).
VARIANTS: dict[str, dict[str, Any]] = {
    "cpu": {},
    "cpu-wd0.1": {"weight_decay": 0.1},
    "cpu-wd1": {"weight_decay": 1.0},
    "cpu-narrow": {"network.widths": (4, 8, 16, 32)},
    "cpu-aug": {"augment": {"shift_px": 4, "gain_sd": 0.2, "time_jitter_frames": 2}},
    "cpu-bs16": {"batch_size": 16},
    "cpu-ens4": {"n_models": 4},
    "cpu-bn": {"network.norm": "batch"},
    "cpu-kinetic": {"kinetic": True},
    "paper": {"profile": "paper"},
}


def config_for(variant: str, seed: int, device: str) -> Any:
    from ceusflow.model import Augment, TrainConfig, profile

    over = dict(VARIANTS[variant])
    name = over.pop("profile", "cpu")
    net = profile(name)
    net_over = {k.split(".", 1)[1]: over.pop(k) for k in list(over) if k.startswith("network.")}
    if "augment" in over:
        over["augment"] = Augment(**over["augment"])
    return TrainConfig(network=dataclasses.replace(net, **net_over), device=device, seed=seed,  # type: ignore[arg-type]
                       **over)


def folds_of(event: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Fold number per patient, stratified by event."""
    rng = np.random.default_rng(seed)
    fold = np.empty(event.size, dtype=int)
    for stratum in (np.flatnonzero(event), np.flatnonzero(~event)):
        fold[rng.permutation(stratum)] = np.arange(stratum.size) % k
    return fold


_ROI: dict[str, Any] = {}


def run_task(task: dict[str, Any], roi_store: str, split_csv: str, device: str, threads: int) -> pd.DataFrame:
    import torch

    from ceusflow.conventions import PATIENT
    from ceusflow.model import predict_risk, train
    from ceusflow.model._metrics import inner_cindex
    from ceusflow.pipeline.run import patient_table
    from ceusflow.preprocess.cohort import open_rois

    torch.set_num_threads(threads)
    if "roi" not in _ROI:
        roi = open_rois(roi_store)
        table = patient_table(roi).join(pd.read_csv(split_csv, index_col=PATIENT)["split"])
        _ROI.update(roi=roi, table=table)
    roi, table = _ROI["roi"], _ROI["table"]
    arm_train = table[(table["treatment"] == task["arm"]) & (table["split"] == "train")]
    if task["kind"] == "cv":
        fold = folds_of(arm_train["event"].to_numpy(bool), task["folds"])
        fit, test = arm_train[fold != task["fold"]], arm_train[fold == task["fold"]]
    else:
        fit = arm_train
        test = table[(table["treatment"] == task["arm"]) & (table["split"] == "val")]
    t0 = time.perf_counter()
    trained = train(roi.sel({PATIENT: list(fit.index)}), config_for(task["variant"], task["seed"], device),
                    progress=False)
    seconds = time.perf_counter() - t0
    risk = predict_risk(trained.model, roi.sel({PATIENT: list(test.index)}), device=device).values
    # test-time augmentation: the same patients mirrored laterally (the training flip)
    risk_flip = predict_risk(trained.model, roi.sel({PATIENT: list(test.index)}).isel(x=slice(None, None, -1)),
                             device=device).values
    fit_risk = predict_risk(trained.model, roi.sel({PATIENT: list(fit.index)}), device=device).values
    hist = trained.history
    inner = float(hist.inner_cindex.sel(epoch=trained.best_epoch).mean()) if "member" not in hist.dims else float(
        hist.inner_cindex.max("epoch").mean())
    return pd.DataFrame({
        **{k: task[k] for k in ("kind", "variant", "arm", "seed", "fold")},
        "patient": test.index, "risk": risk, "risk_flip": risk_flip,
        "duration": test["duration"].values, "event": test["event"].values,
        "best_epoch": trained.best_epoch, "inner_c": inner,
        "train_c": inner_cindex(fit["duration"].to_numpy(float), fit["event"].to_numpy(bool), fit_risk),
        "seconds": seconds})


def tasks(variants: list[str], arms: list[str], folds: int, seeds: int, cv_variants: list[str],
          cv_seeds: int = 1, cv_seed_start: int = 0) -> list[dict[str, Any]]:
    out = [{"kind": "cv", "variant": v, "arm": a, "seed": s, "fold": f, "folds": folds}
           for s in range(cv_seed_start, cv_seed_start + cv_seeds) for f in range(folds)
           for v in cv_variants for a in arms] if folds > 1 else []
    out += [{"kind": "val", "variant": v, "arm": a, "seed": s, "fold": -1, "folds": folds}
            for s in range(seeds) for v in variants for a in arms]
    return out


def summary(path: str) -> pd.DataFrame:
    """Per kind, variant and arm: mean Harrell's C over folds (cv) or seeds (val), and its spread."""
    from ceusflow.model._metrics import inner_cindex

    rows = pd.read_csv(path)
    per = (rows.groupby(["kind", "variant", "arm", "seed", "fold"])
           .apply(lambda g: pd.Series({
               "c": inner_cindex(g["duration"].to_numpy(float), g["event"].to_numpy(bool), g["risk"].to_numpy()),
               "train_c": g["train_c"].iloc[0], "inner_c": g["inner_c"].iloc[0],
               "best_epoch": g["best_epoch"].iloc[0], "seconds": g["seconds"].iloc[0]}), include_groups=False)
           .reset_index())
    out = per.groupby(["kind", "arm", "variant"]).agg(
        n=("c", "size"), c=("c", "mean"), c_sd=("c", "std"), train_c=("train_c", "mean"),
        inner_c=("inner_c", "mean"), best_epoch=("best_epoch", "mean"), seconds=("seconds", "mean"))
    def ens(g: pd.DataFrame) -> float:  # the seeds' mean log-hazard, as CoxEnsemble predicts
        r = g.groupby("patient").agg(risk=("risk", "mean"), duration=("duration", "first"), event=("event", "first"))
        return inner_cindex(r["duration"].to_numpy(float), r["event"].to_numpy(bool), r["risk"].to_numpy())

    # seed ensembles: over the validation patients, and per CV fold (then the mean over folds)
    e = rows.groupby(["kind", "arm", "variant", "fold"]).apply(ens, include_groups=False)
    e = e.groupby(["kind", "arm", "variant"]).mean()
    n_seeds = rows.groupby(["kind", "arm", "variant"])["seed"].nunique()
    out["seeds"] = n_seeds.reindex(out.index).to_numpy()
    out["seed_ensemble_c"] = e.reindex(out.index).to_numpy()
    return out.round(3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("roi_store", nargs="?")
    parser.add_argument("split_csv", nargs="?")
    parser.add_argument("out_csv", nargs="?")
    parser.add_argument("--summary")
    parser.add_argument("--variants", default="cpu,cpu-wd0.1,cpu-wd1,cpu-narrow,cpu-aug,cpu-bs16")
    parser.add_argument("--cv-variants", default=None, help="default: --variants without ensembles")
    parser.add_argument("--arms", default="RFA,SR")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--cv-seeds", type=int, default=1, help="seeds per CV fold (their mean = an ensemble)")
    parser.add_argument("--cv-seed-start", type=int, default=0, help="first training seed of the CV folds")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--deadline-s", type=float, default=float("inf"))
    args = parser.parse_args()
    if args.summary:
        with pd.option_context("display.width", 250, "display.max_rows", 200, "display.max_columns", 20):
            print(summary(args.summary))
        return
    variants = args.variants.split(",")
    cv_variants = (args.cv_variants.split(",") if args.cv_variants
                   else [v for v in variants if "n_models" not in VARIANTS[v]])
    todo = tasks(variants, args.arms.split(","), args.folds, args.seeds, cv_variants, args.cv_seeds,
                 args.cv_seed_start)
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    start, done, rows = time.perf_counter(), 0, []
    print(f"{len(todo)} tasks, {args.jobs} at a time, {threads} threads each", flush=True)
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
        pending: set[Any] = set()
        while todo or pending:
            while todo and len(pending) < args.jobs and time.perf_counter() - start < args.deadline_s:
                task = todo.pop(0)
                fut = pool.submit(run_task, task, args.roi_store, args.split_csv, args.device, threads)
                fut.task = task  # type: ignore[attr-defined]
                pending.add(fut)
            if not pending:
                break
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                t = fut.task  # type: ignore[attr-defined]
                try:
                    rows.append(fut.result())
                except Exception as err:  # noqa: BLE001 - a failed task is reported, the sweep goes on
                    print(f"task {t} failed: {err!r}", flush=True)
                    continue
                done += 1
                r = rows[-1]
                print(f"[{time.perf_counter() - start:5.0f} s] {t['kind']} {t['variant']} {t['arm']} seed {t['seed']} "
                      f"fold {t['fold']}: {r['seconds'].iloc[0]:.1f} s, best epoch {r['best_epoch'].iloc[0]}",
                      flush=True)
                pd.concat(rows).to_csv(args.out_csv, index=False)
    print(f"{done} tasks done, {len(todo)} left at the deadline; {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
