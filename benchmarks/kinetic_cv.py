"""What the contrast curves add to the Cox-CNN, by cross-validation inside the training patients.

Reads the CV predictions of ``benchmarks/sweep.py`` (``kind = cv``; the CNN ensemble of a fold is
the mean log-hazard of its seeds) and, on **the same folds**, fits the two handcrafted comparators
of the study on the fold's training patients (ridge Cox, ``BASELINE_PENALIZER``, the code path of
``ceusflow.pipeline.study.comparator``): the perfusion parameters (``tic_features``) and the
contrast curves (``contrast_features``: each ROI part's power relative to the parenchyma ring, dB,
15-s bins). ``combined`` = z(CNN) + z(contrast curves), each standardised over the fold's training
patients (the CNN's over the held-out fold: the sweep keeps no training predictions).

With ``--truth patients.csv --pseudonyms store.pseudonyms.csv`` (a simulated cohort) it also prints
how well a linear readout of the contrast curves recovers each latent trait (5-fold ridge on all
patients, Spearman of the held-out predictions) and each model's Spearman correlation with the
traits inside the held-out folds.

Run: ``python benchmarks/kinetic_cv.py ROI_STORE SPLIT_CSV SWEEP_CSV [--variant cpu]
[--truth T --pseudonyms P]``. One run, prints tables; no timing.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd


def _fold_scores(own: pd.DataFrame, cv: pd.DataFrame, feats: dict[str, pd.DataFrame]) -> pd.DataFrame:
    from ceusflow.model.baseline import evaluate_baseline
    from ceusflow.pipeline.study import BASELINE_PENALIZER
    from ceusflow.survival import concordance

    train = own.index[own["split"] == "train"]
    rows, risks = [], []
    for fold, g in cv.groupby("fold"):
        held = list(g.index)
        fit = [p for p in train if p not in set(held)]
        scores = {"cnn": g["risk"]}
        for name, table in feats.items():
            res = evaluate_baseline(table.loc[fit + held], own["duration"], own["event"], fit,
                                    penalizer=BASELINE_PENALIZER)
            scores[name] = res.risk.loc[held]
            if name == "contrast":
                mean, sd = res.risk.loc[fit].mean(), res.risk.loc[fit].std()
        cnn = scores["cnn"]
        scores["combined"] = (cnn - cnn.mean()) / cnn.std() + (scores["contrast"] - mean) / sd
        d, e = own.loc[held, "duration"].to_numpy(), own.loc[held, "event"].to_numpy(bool)
        rows.append({"fold": fold, "n": len(held), **{k: concordance(d, e, v.to_numpy()).estimate
                                                     for k, v in scores.items()}})
        risks.append(pd.DataFrame(scores).assign(fold=fold))
    return pd.DataFrame(rows).set_index("fold"), pd.concat(risks)


def _traits(truth: str, pseudonyms: str, keys: pd.Index) -> pd.DataFrame:
    from ceusflow.simulate.cohort import imaging_log_hazards, washout_score

    names = pd.read_csv(pseudonyms).rename(columns={"pseudonym": "patient"})
    t = pd.read_csv(truth).merge(names, on="patient_id").set_index("patient").reindex(keys)
    rfa, sr = imaging_log_hazards(t)
    return pd.DataFrame({"imaging_rfa": rfa, "imaging_sr": sr, "heterogeneity": t["heterogeneity"],
                         "washout": washout_score(t), "log_peak_ratio": np.log(t["peak_ratio"]), "rim": t["rim"],
                         "satellites": t["satellites"]}, index=keys)


def _recovery(contrast: pd.DataFrame, traits: pd.DataFrame) -> pd.Series:
    from scipy.stats import spearmanr
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import KFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = contrast.fillna(contrast.median())
    model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 4, 25)))
    out = {}
    for name in ("heterogeneity", "washout", "log_peak_ratio", "rim", "satellites"):
        folds = KFold(5, shuffle=True, random_state=0)
        pred = cross_val_predict(model, x.to_numpy(), traits[name].to_numpy(), cv=folds)
        out[name] = spearmanr(pred, traits[name])[0]
    return pd.Series(out).round(2)


def main() -> None:
    from scipy.stats import spearmanr

    from ceusflow.pipeline.run import contrast_features, patient_table, tic_features
    from ceusflow.preprocess.cohort import open_rois

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("roi_store")
    parser.add_argument("split_csv")
    parser.add_argument("sweep_csv")
    parser.add_argument("--variant", default="cpu")
    parser.add_argument("--truth")
    parser.add_argument("--pseudonyms")
    args = parser.parse_args()

    roi = open_rois(args.roi_store, chunks=None)
    table = patient_table(roi).join(pd.read_csv(args.split_csv, index_col="patient")["split"])
    feats = {"perfusion": tic_features(roi), "contrast": contrast_features(roi)}
    sweep = pd.read_csv(args.sweep_csv)
    sweep = sweep[(sweep["kind"] == "cv") & (sweep["variant"] == args.variant)]
    traits = _traits(args.truth, args.pseudonyms, table.index) if args.truth else None
    if traits is not None:
        print("contrast curves -> trait, 5-fold ridge on all patients, Spearman of held-out predictions:")
        print(_recovery(feats["contrast"], traits).to_string(), "\n")
    for arm, cv in sweep.groupby("arm"):
        seeds = sorted(int(s) for s in cv["seed"].unique())
        ens = cv.groupby(["fold", "patient"])["risk"].mean().reset_index(level=0).rename_axis(None)
        folds, risks = _fold_scores(table[table["treatment"] == arm], ens, feats)
        gain = folds["combined"] - folds["cnn"]
        print(f"{arm}: fold C-index, CNN = mean log-hazard of seeds {seeds} ({args.variant})")
        print(folds.round(3).to_string())
        print(f"mean {folds.mean().drop('n').round(3).to_dict()}; combined - cnn {gain.mean():+.3f} "
              f"(SD {gain.std():.3f}), higher in {(gain > 0).sum()} of {len(gain)} folds")
        if traits is not None:
            per_fold = {k: pd.concat([pd.Series({f: spearmanr(g[k], traits.loc[g.index, f])[0] for f in traits})
                                      for _, g in risks.groupby("fold")], axis=1).mean(axis=1).round(2)
                        for k in ("cnn", "contrast", "combined")}
            print("Spearman with the traits inside the held-out folds (mean over folds):")
            print(pd.DataFrame(per_fold).T.to_string())
        print()


if __name__ == "__main__":
    main()
