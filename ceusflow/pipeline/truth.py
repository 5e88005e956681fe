"""The study's results next to the paper's numbers and the simulator's ground truth.

``compare_with_truth(results, truth_dir, pseudonyms)`` reads a results folder (``predictions.csv``,
``metrics.json``), the simulator's ``patients.csv`` and the store's pseudonym mapping, and returns
one table: rows = quantities (index ``quantity, treatment, cohort``), columns ``paper``,
``ceusflow`` and ``truth`` (plus CIs and the paper's source). The core, :func:`truth_table`, is
pure. The original patient IDs are dropped right after the join: the table holds aggregates only.

Column meaning, row by row, and the paper's sources: ``docs/simulator.md`` ("Checking against the
ground truth").
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ceusflow import recommend as rec
from ceusflow import survival
from ceusflow.conventions import TREATMENTS
from ceusflow.errors import InputError
from ceusflow.simulate.cohort import imaging_log_hazards

__all__ = ["COLUMNS", "COMPACT", "PAPER", "compare_with_truth", "format_table", "mapping_path", "to_markdown",
           "truth_by_pseudonym", "truth_table"]

COLUMNS = ("paper", "paper_low", "paper_high", "ceusflow", "ceusflow_low", "ceusflow_high", "truth", "source")
INDEX = ("quantity", "treatment", "cohort")
NAN = float("nan")

_S1, _S2 = "Results, 'Clinical characteristics'; Table 2", "Results, 'DL-based Radiomics models'; Fig. 3"
_S3, _S4 = "Results, 'Nomograms'", "Results, 'Optimization of treatment selection'; Fig. 5"
#: The paper's numbers (Liu et al. 2020): (quantity, treatment, cohort) -> (value, low, high, source).
PAPER: dict[tuple[str, str, str], tuple[float, float, float, str]] = {
    ("patients", "RFA", "train"): (149, NAN, NAN, _S1), ("patients", "RFA", "val"): (65, NAN, NAN, _S1),
    ("patients", "SR", "train"): (144, NAN, NAN, _S1), ("patients", "SR", "val"): (61, NAN, NAN, _S1),
    ("C-index signature", "RFA", "train"): (0.754, 0.701, 0.808, _S2),
    ("C-index signature", "RFA", "val"): (0.726, 0.650, 0.802, _S2 + "; Abstract"),
    ("C-index signature", "SR", "train"): (0.787, 0.735, 0.838, _S2),
    ("C-index signature", "SR", "val"): (0.741, 0.640, 0.852, _S2 + "; Abstract"),
    ("HR high vs low risk", "RFA", "train"): (5.543, 3.381, 7.086, _S2),
    ("HR high vs low risk", "RFA", "val"): (5.384, 3.018, 7.821, _S2),
    ("HR high vs low risk", "SR", "train"): (2.903, 2.223, 3.792, _S2),
    ("HR high vs low risk", "SR", "val"): (3.477, 2.512, 4.250, _S2),
    ("cut-point", "RFA", "train"): (-0.1, NAN, NAN, _S2 + " (X-tile)"),
    ("cut-point", "SR", "train"): (0.7, NAN, NAN, _S2 + " (X-tile)"),
    ("share high-risk", "RFA", "train"): (0.2349, NAN, NAN, _S2),
    ("share high-risk", "RFA", "val"): (0.3538, NAN, NAN, _S2),
    ("share high-risk", "SR", "train"): (0.4861, NAN, NAN, _S2),
    ("share high-risk", "SR", "val"): (0.3710, NAN, NAN, _S2),
    ("C-index nomogram", "RFA", "train"): (0.741, 0.690, 0.799, _S3),
    ("C-index nomogram", "RFA", "val"): (0.727, 0.676, 0.841, _S3),
    ("C-index nomogram", "SR", "train"): (0.789, 0.744, 0.845, _S3),
    ("C-index nomogram", "SR", "val"): (0.719, 0.642, 0.820, _S3),
    ("swap candidates", "RFA", "all"): (37, NAN, NAN, _S4 + "a"),
    ("swap candidates", "SR", "all"): (56, NAN, NAN, _S4 + "c"),
    ("swap share", "RFA", "all"): (0.173, NAN, NAN, _S4 + "a; Abstract"),
    ("swap share", "SR", "all"): (0.273, NAN, NAN, _S4 + "c; Abstract"),
    ("swap share of original high-risk", "RFA", "all"): (0.638, NAN, NAN, _S4 + "a"),
    ("swap share of original high-risk", "SR", "all"): (0.602, NAN, NAN, _S4 + "c"),
    ("candidates' 2-year PFS, received", "RFA", "all"): (0.62, NAN, NAN, _S4 + "b"),
    ("candidates' 2-year PFS, received", "SR", "all"): (0.76, NAN, NAN, _S4 + "d"),
    ("candidates' 2-year PFS, other", "RFA", "all"): (0.74, NAN, NAN, _S4 + "b"),
    ("candidates' 2-year PFS, other", "SR", "all"): (0.91, NAN, NAN, _S4 + "d"),
    ("candidates' 2-year PFS gain", "RFA", "all"): (0.12, NAN, NAN, _S4 + "b; Abstract"),
    ("candidates' 2-year PFS gain", "SR", "all"): (0.15, NAN, NAN, _S4 + "d; Abstract"),
}

#: Rows of the short summary (``ceusflow demo``).
COMPACT = ("C-index signature", "C-index nomogram", "swap share", "candidates' 2-year PFS gain",
           "candidates truly better off", "recommended swaps truly better off", "truly better-off recommended to swap",
           "mean 2-year PFS, as treated", "mean 2-year PFS, recommended", "mean 2-year PFS, oracle-best")
_COUNTS = ("patients", "swap candidates", "recommended swaps")


# --- edges: files in ---------------------------------------------------------------------------

def mapping_path(store: Path) -> Path:
    """The pseudonym mapping written beside a store: ``<folder>/<store name>.pseudonyms.csv``."""
    return store.parent / f"{store.name}.pseudonyms.csv"


def _read_csv(path: Path, hint: str) -> pd.DataFrame:
    if not path.is_file():
        raise InputError(str(path), "not found", hint)
    return pd.read_csv(path)


def _read_results(results: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    hint = "give the results folder written by `ceusflow run`"
    pred = _read_csv(results / "predictions.csv", hint)
    if not (results / "metrics.json").is_file():
        raise InputError(str(results / "metrics.json"), "not found", hint)
    return pred.set_index("patient_id"), json.loads((results / "metrics.json").read_text())


def compare_with_truth(results: Path, truth_dir: Path, pseudonyms: Path) -> pd.DataFrame:
    """Paper vs ceusflow vs ground truth for a study run on a simulated cohort.

    Parameters
    ----------
    results : Path
        Results folder of ``ceusflow run`` (``predictions.csv``, ``metrics.json``).
    truth_dir : Path
        The simulator's ``COHORT-truth`` folder (``patients.csv``, keyed by original patient ID).
    pseudonyms : Path
        The store's mapping ``<store>.pseudonyms.csv`` (``pseudonym,patient_id``).

    Returns
    -------
    DataFrame
        See :func:`truth_table`.
    """
    pred, metrics = _read_results(Path(results))
    truth = _read_csv(Path(truth_dir) / "patients.csv", "give the simulator's COHORT-truth folder")
    mapping = _read_csv(Path(pseudonyms), "give <store>.pseudonyms.csv written by `ceusflow convert`")
    return truth_table(pred, metrics, truth_by_pseudonym(truth, mapping))


# --- pure core ---------------------------------------------------------------------------------

def truth_by_pseudonym(truth: pd.DataFrame, mapping: pd.DataFrame) -> pd.DataFrame:
    """Ground truth re-keyed by pseudonym; the original ID column is dropped.

    Parameters
    ----------
    truth : DataFrame
        The simulator's ``patients.csv`` (column ``patient_id`` = original ID).
    mapping : DataFrame
        ``pseudonym, patient_id`` (first two columns, whatever their names).

    Returns
    -------
    DataFrame
        Indexed by pseudonym (name ``patient_id``, as in ``predictions.csv``), without original IDs.
    """
    key_col, id_col = mapping.columns[:2]
    ids = mapping[[key_col, id_col]].astype(str).rename(columns={key_col: "_pseudonym", id_col: "_original"})
    joined = truth.assign(_original=truth["patient_id"].astype(str)).merge(ids, on="_original")
    out = joined.drop(columns=["patient_id", "_original"]).set_index("_pseudonym")
    return out.rename_axis("patient_id")


def _aligned(pred: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    missing = ~pred.index.isin(truth.index)
    if missing.any():
        raise InputError("pseudonyms", f"{int(missing.sum())} of {len(pred)} patients of predictions.csv have no "
                         "ground truth", "give the mapping of the store the results were computed from")
    out = truth.loc[pred.index]
    rfa, sr = imaging_log_hazards(out)
    return out.assign(imaging_log_hazard_rfa=rfa, imaging_log_hazard_sr=sr)


def truth_table(predictions: pd.DataFrame, metrics: dict[str, Any], truth: pd.DataFrame) -> pd.DataFrame:
    """Paper vs ceusflow vs ground truth (pure).

    Parameters
    ----------
    predictions : DataFrame
        ``predictions.csv`` indexed by pseudonym: ``treatment, split, risk_ori, risk_re, pfs2y_rfa,
        pfs2y_sr, recommend, gain_2y`` (2-year PFS as probabilities).
    metrics : dict
        ``metrics.json``: ``signature_<arm>``, ``nomogram_<arm>`` (missing entries give NaN).
    truth : DataFrame
        :func:`truth_by_pseudonym` output: ``pfs_months, progression, log_hazard_<arm>, pfs24_<arm>,
        better_treatment`` and the trait columns.

    Returns
    -------
    DataFrame
        Index ``(quantity, treatment, cohort)``; columns :data:`COLUMNS`. ``ceusflow`` = what the
        pipeline estimates from the observed data, ``truth`` = the same quantity from the simulator's
        truth on the same patients; probabilities and shares in [0, 1], times in months.
    """
    truth = _aligned(predictions, truth)
    rows = [r for arm in TREATMENTS for block in (_signature_rows, _nomogram_rows, _swap_rows, _recommend_rows)
            for r in block(predictions, metrics, truth, arm)]
    rows += [r for cohort in ("all", "val") for r in _policy_rows(predictions, truth, cohort)]
    table = pd.DataFrame(rows)
    first = {q: i for i, q in enumerate(dict.fromkeys(table["quantity"]))}  # group rows by quantity, stably
    table = table.sort_values("quantity", key=lambda q: q.map(first), kind="stable")
    return _with_paper(table.set_index(list(INDEX)))


def _row(quantity: str, treatment: str, cohort: str, ceusflow: float = NAN, truth: float = NAN,
         ci: tuple[float, float] = (NAN, NAN)) -> dict[str, Any]:
    return {"quantity": quantity, "treatment": treatment, "cohort": cohort, "ceusflow": _num(ceusflow),
            "ceusflow_low": _num(ci[0]), "ceusflow_high": _num(ci[1]), "truth": _num(truth)}


def _with_paper(table: pd.DataFrame) -> pd.DataFrame:
    paper = pd.DataFrame.from_dict(PAPER, orient="index", columns=["paper", "paper_low", "paper_high", "source"])
    paper.index = pd.MultiIndex.from_tuples(paper.index, names=list(INDEX))
    out = table.join(paper, how="left")
    out["source"] = out["source"].fillna("")
    return out[list(COLUMNS)]


def _get(tree: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(tree, dict) or key not in tree:
            return NAN
        tree = tree[key]
    return tree


def _num(value: Any) -> float:
    """A metrics.json number; JSON null (a non-finite value, e.g. an infinite CI bound) -> NaN."""
    return NAN if value is None else float(value)


def _estimate(entry: Any) -> tuple[float, tuple[float, float]]:
    if not isinstance(entry, dict):
        return NAN, (NAN, NAN)
    return _num(entry.get("estimate")), (_num(entry.get("low")), _num(entry.get("high")))


def _oracle_c(truth: pd.DataFrame, rows: pd.Series, score: str) -> float:
    t = truth[rows]
    if len(t) < 2 or not t["progression"].any():
        return NAN
    return survival.concordance(t["pfs_months"], t["progression"], t[score], ci="none").estimate


def _oracle_hr(truth: pd.DataFrame, rows: pd.Series, score: str, share_high: float) -> float:
    """HR of an oracle split: the same share high-risk, ranked by the true (imaging) log-hazard."""
    t = truth[rows]
    k = int(round(share_high * len(t))) if np.isfinite(share_high) else 0
    if not 0 < k < len(t):
        return NAN
    high = t[score].rank(method="first").to_numpy() > len(t) - k
    try:
        return survival.hazard_ratio(t["pfs_months"], t["progression"], high).estimate
    except ValueError:  # InputError: not estimable (no events in a group)
        return NAN


def _signature_rows(pred: pd.DataFrame, metrics: dict[str, Any], truth: pd.DataFrame, arm: str) -> list[dict[str, Any]]:
    sig, img = metrics.get(f"signature_{arm}", {}), f"imaging_log_hazard_{arm.lower()}"
    out = []
    for cohort in ("train", "val"):
        rows, m = (pred["treatment"] == arm) & (pred["split"] == cohort), _get(sig, cohort)
        c, c_ci = _estimate(_get(m, "c_index"))
        hr, hr_ci = _estimate(_get(m, "hr"))
        share = _num(_get(m, "share_high_risk"))
        out += [_row("patients", arm, cohort, rows.sum()),
                _row("C-index signature", arm, cohort, c, _oracle_c(truth, rows, img), c_ci),
                _row("HR high vs low risk", arm, cohort, hr, _oracle_hr(truth, rows, img, share), hr_ci),
                _row("share high-risk", arm, cohort, share)]
    return [*out, _row("cut-point", arm, "train", _get(sig, "cutpoint", "threshold"))]


def _nomogram_c(pred: pd.DataFrame, metrics: dict[str, Any], truth: pd.DataFrame, arm: str,
                cohort: str) -> tuple[float, tuple[float, float]]:
    """From metrics.json when recorded there, else recomputed from predictions.csv (1 - 2-year PFS)."""
    stored = _get(metrics, f"nomogram_{arm}", f"c_index_{cohort}")
    if isinstance(stored, dict):
        return _estimate(stored)
    pfs = pred[f"pfs2y_{arm.lower()}"]
    ok = (pred["treatment"] == arm) & (pred["split"] == cohort) & pfs.notna()
    if ok.sum() < 2 or not truth.loc[ok, "progression"].any():
        return NAN, (NAN, NAN)
    c = survival.concordance(truth.loc[ok, "pfs_months"], truth.loc[ok, "progression"], 1 - pfs[ok], ci="ij")
    return c.estimate, (c.low, c.high)


def _nomogram_rows(pred: pd.DataFrame, metrics: dict[str, Any], truth: pd.DataFrame, arm: str) -> list[dict[str, Any]]:
    out = []
    for cohort in ("train", "val"):
        rows = (pred["treatment"] == arm) & (pred["split"] == cohort)
        c, ci = _nomogram_c(pred, metrics, truth, arm, cohort)
        out.append(_row("C-index nomogram", arm, cohort, c, _oracle_c(truth, rows, f"log_hazard_{arm.lower()}"), ci))
    return out


def _share(num: pd.Series, den: pd.Series) -> float:
    return float(num[den].mean()) if den.any() else NAN


def _mean(values: pd.Series, rows: pd.Series) -> float:
    return float(values[rows].mean()) if rows.any() else NAN


def _pfs(frame: pd.DataFrame, prefix: str, arm: str) -> tuple[pd.Series, pd.Series]:
    """2-year PFS under the received arm and under the other one."""
    other = next(t for t in TREATMENTS if t != arm)
    return frame[f"{prefix}_{arm.lower()}"], frame[f"{prefix}_{other.lower()}"]


def _swap_rows(pred: pd.DataFrame, metrics: dict[str, Any], truth: pd.DataFrame, arm: str) -> list[dict[str, Any]]:
    own = pred["treatment"] == arm
    ori_high = own & (pred["risk_ori"] == "high")
    cand, should = ori_high & (pred["risk_re"] == "low"), own & (truth["better_treatment"] != arm)
    (p_own, p_other), (t_own, t_other) = _pfs(pred, "pfs2y", arm), _pfs(truth, "pfs24", arm)
    return [_row("swap candidates", arm, "all", cand.sum(), should.sum()),
            _row("swap share", arm, "all", _share(cand, own), _share(should, own)),
            _row("swap share of original high-risk", arm, "all", _share(cand, ori_high)),
            _row("candidates truly better off", arm, "all", truth=_share(should, cand)),
            _row("truly better-off flagged as candidates", arm, "all", truth=_share(cand, should)),
            _row("candidates' 2-year PFS, received", arm, "all", _mean(p_own, cand), _mean(t_own, cand)),
            _row("candidates' 2-year PFS, other", arm, "all", _mean(p_other, cand), _mean(t_other, cand)),
            _row("candidates' 2-year PFS gain", arm, "all", _mean(pred["gain_2y"], cand),
                 _mean(t_other - t_own, cand))]


def _recommend_rows(pred: pd.DataFrame, metrics: dict[str, Any], truth: pd.DataFrame, arm: str) -> list[dict[str, Any]]:
    own = pred["treatment"] == arm
    swap, should = own & (pred["recommend"] != arm), own & (truth["better_treatment"] != arm)
    t_own, t_other = _pfs(truth, "pfs24", arm)
    return [_row("recommended swaps", arm, "all", swap.sum(), should.sum()),
            _row("recommended swap share", arm, "all", _share(swap, own), _share(should, own)),
            _row("recommended swaps truly better off", arm, "all", truth=_share(should, swap)),
            _row("truly better-off recommended to swap", arm, "all", truth=_share(swap, should)),
            _row("recommended swaps' 2-year PFS gain", arm, "all", _mean(pred["gain_2y"], swap),
                 _mean(t_other - t_own, swap))]


def _predicted_value(pred: pd.DataFrame, policy: pd.Series | str) -> float:
    """Mean 2-year PFS the nomograms predict if every patient follows ``policy`` (arm per patient)."""
    return float(np.where(np.asarray(policy) == "RFA", pred["pfs2y_rfa"], pred["pfs2y_sr"]).mean())


def _policy_rows(pred: pd.DataFrame, truth: pd.DataFrame, cohort: str) -> list[dict[str, Any]]:
    keep = pred["split"] == cohort if cohort != "all" else pd.Series(True, index=pred.index)
    p, t = pred[keep], truth[keep]
    if p.empty:
        return []
    pv = rec.policy_value(p[["treatment", "recommend"]], t["pfs24_rfa"], t["pfs24_sr"])
    value = partial(_predicted_value, p)
    pairs = {"mean 2-year PFS, as treated": (value(p["treatment"]), pv.observed),
             "mean 2-year PFS, recommended": (value(p["recommend"]), pv.recommended),
             "mean 2-year PFS, oracle-best": (NAN, pv.oracle),
             "mean 2-year PFS, all RFA": (value("RFA"), pv.all_rfa),
             "mean 2-year PFS, all SR": (value("SR"), pv.all_sr),
             "2-year PFS gain, recommended vs as treated": (value(p["recommend"]) - value(p["treatment"]), pv.gain),
             "share of attainable gain captured": (NAN, pv.captured),
             "recommended swaps": (pv.n_swap, pv.n_should_swap),
             "recommended swaps truly better off": (NAN, pv.swap_precision),
             "truly better-off recommended to swap": (NAN, pv.swap_recall)}
    return [_row(q, "all", cohort, ours, true) for q, (ours, true) in pairs.items()]


# --- presentation (pure) -----------------------------------------------------------------------

def _number(value: float, quantity: str) -> str:
    if not np.isfinite(value):
        return ""
    return f"{value:.0f}" if quantity in _COUNTS else f"{value:.3f}"


def _with_ci(value: float, low: float, high: float, quantity: str) -> str:
    text = _number(value, quantity)
    return f"{text} [{low:.2f}, {high:.2f}]" if text and np.isfinite(low) and np.isfinite(high) else text


def format_table(table: pd.DataFrame, *, compact: bool = False) -> pd.DataFrame:
    """Strings for display: ``quantity, treatment, cohort, paper, ceusflow, truth[, source]``.

    Parameters
    ----------
    table : DataFrame
        Output of :func:`truth_table`.
    compact : bool
        Only the :data:`COMPACT` rows, without CIs and sources.

    Returns
    -------
    DataFrame
        All cells as strings (empty where not applicable); counts as integers, the rest to 3 decimals.
    """
    if compact:
        table = table[table.index.get_level_values("quantity").isin(COMPACT)]
    out = table.index.to_frame(index=False)
    for who in ("paper", "ceusflow"):
        cols = [table[c].to_numpy() for c in (who, f"{who}_low", f"{who}_high")]
        cis = [(v, NAN, NAN) if compact else (v, lo, hi) for v, lo, hi in zip(*cols, strict=True)]
        out[who] = [_with_ci(*vals, q) for vals, q in zip(cis, out["quantity"], strict=True)]
    out["truth"] = [_number(v, q) for v, q in zip(table["truth"], out["quantity"], strict=True)]
    if not compact:
        out["source"] = table["source"].to_numpy()
    return out


def to_markdown(formatted: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of :func:`format_table` output."""
    lines = ["| " + " | ".join(formatted.columns) + " |", "|" + "---|" * formatted.shape[1]]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in formatted.itertuples(index=False)]
    return "\n".join(lines) + "\n"
