"""The demo's closing summary: the study's numbers next to the simulator's ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ceusflow import survival
from ceusflow.conventions import TREATMENTS


def _truth_by_pseudonym(truth_dir: Path, store: Path) -> pd.DataFrame:
    """Ground truth re-keyed by pseudonym through the store's mapping file (never copied anywhere)."""
    mapping = pd.read_csv(store.parent / f"{store.name}.pseudonyms.csv")
    key_col, id_col = mapping.columns[:2]
    truth = pd.read_csv(truth_dir / "patients.csv").merge(mapping, left_on="patient_id", right_on=id_col)
    return truth.set_index(key_col)


def summarise_demo(results: Path, truth_dir: Path, store: Path) -> str:
    """Summarise the demo against the ground truth.

    Validation C-index of each signature vs the oracle (true log-hazard) on the same patients, and
    the recommendation's swaps vs the truly better treatment.
    """
    pred = pd.read_csv(results / "predictions.csv").set_index("patient_id")
    truth = _truth_by_pseudonym(truth_dir, store).reindex(pred.index)
    metrics = json.loads((results / "metrics.json").read_text())
    lines = ["", "validation cohort   signature C-index   oracle C-index (true hazard)"]
    for arm in TREATMENTS:
        rows = (pred["treatment"] == arm) & (pred["split"] == "val")
        t = truth[rows]
        oracle = survival.concordance(t["pfs_months"], t["progression"], t[f"log_hazard_{arm.lower()}"], ci="none")
        c = metrics[f"signature_{arm}"]["val"]["c_index"]
        lines.append(f"R-{arm:<4} (n={int(rows.sum()):>3})      {c['estimate']:.3f} [{c['low']:.2f}, {c['high']:.2f}]"
                     f"        {oracle.estimate:.3f}")
    swap = pred["recommend"].notna() & (pred["recommend"] != pred["treatment"])
    agree = truth.loc[swap, "better_treatment"] == pred.loc[swap, "recommend"]
    correct = agree.mean() if swap.any() else float("nan")
    lines.append(f"recommended swaps: {int(swap.sum())} of {len(pred)} patients "
                 f"({correct:.0%} truly better off); truly better off under the other treatment: "
                 f"{(truth['better_treatment'] != pred['treatment']).mean():.0%}")
    return "\n".join(lines)
