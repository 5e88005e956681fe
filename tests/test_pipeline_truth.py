from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sksurv.metrics import concordance_index_censored
from typer.testing import CliRunner

from ceusflow.cli_truth import register
from ceusflow.errors import InputError
from ceusflow.pipeline.demo import summarise_demo
from ceusflow.pipeline.truth import (
    COMPACT,
    PAPER,
    compare_with_truth,
    format_table,
    mapping_path,
    to_markdown,
    truth_by_pseudonym,
    truth_table,
)
from ceusflow.simulate import simulate_patients
from ceusflow.simulate.cohort import imaging_log_hazards

N = 80
PAPER_TEXT = Path("/work/shared/seed/liu2020-ceus-dl-radiomics-hcc.txt")


@pytest.fixture(scope="module")
def cohort() -> pd.DataFrame:
    """Simulated truth keyed by original IDs ``H…``, and the pseudonym of each patient."""
    truth = simulate_patients(N, np.random.default_rng(3))
    truth.insert(0, "patient_id", [f"H{9000000 + i}" for i in range(N)])
    return truth


@pytest.fixture(scope="module")
def mapping(cohort: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"pseudonym": [f"P{i:04d}" for i in range(N)], "patient_id": cohort["patient_id"]})


def _predictions(cohort: pd.DataFrame, mapping: pd.DataFrame, recommend: np.ndarray | None = None) -> pd.DataFrame:
    """Hand-made predictions.csv: split every third patient to val; candidates = every fourth patient."""
    n = len(cohort)
    cand = np.arange(n) % 4 == 0
    pred = pd.DataFrame({
        "treatment": cohort["treatment"].to_numpy(), "split": np.where(np.arange(n) % 3 == 0, "val", "train"),
        "signature_rfa": 0.0, "signature_sr": 0.0,
        "risk_ori": np.where(cand | (np.arange(n) % 4 == 1), "high", "low"), "risk_re": np.where(cand, "low", "high"),
        "pfs2y_rfa": np.linspace(0.5, 0.9, n), "pfs2y_sr": np.linspace(0.9, 0.5, n),
        "recommend": cohort["treatment"].to_numpy() if recommend is None else recommend},
        index=pd.Index(mapping["pseudonym"].to_numpy(), name="patient_id"))
    pred["gain_2y"] = np.where(pred["treatment"] == "RFA", 1, -1) * (pred["pfs2y_sr"] - pred["pfs2y_rfa"])
    pred[["gain_2y_lo", "gain_2y_hi"]] = pred[["gain_2y", "gain_2y"]].to_numpy() + [-0.1, 0.1]
    return pred


def _metrics(nomogram_c: bool = True) -> dict:
    c = {"estimate": 0.7, "low": 0.6, "high": 0.8, "n": 10}
    sig = {"cutpoint": {"threshold": 0.25}, "train": {"c_index": c, "share_high_risk": 0.5, "hr": {
        "estimate": 3.0, "low": 2.0, "high": 4.5}}, "val": {"c_index": c, "share_high_risk": 0.4, "hr": {"note": "x"}}}
    nomo = {"c_index_train": {"estimate": 0.71, "low": 0.65, "high": 0.77}, "c_index_val": c} if nomogram_c else {}
    return {"signature_RFA": sig, "signature_SR": sig, "nomogram_RFA": nomo, "nomogram_SR": nomo}


@pytest.fixture(scope="module")
def truth(cohort: pd.DataFrame, mapping: pd.DataFrame) -> pd.DataFrame:
    return truth_by_pseudonym(cohort, mapping)


def _value(table: pd.DataFrame, quantity: str, arm: str, cohort: str, column: str) -> float:
    return float(table.loc[(quantity, arm, cohort), column])


# --- the join ------------------------------------------------------------------------------------

def test_truth_by_pseudonym_drops_original_ids(cohort, mapping, truth):
    assert list(truth.index[:2]) == ["P0000", "P0001"] and truth.index.name == "patient_id"
    assert not truth.astype(str).isin(cohort["patient_id"].tolist()).any().any()
    assert truth.loc["P0005", "pfs24_sr"] == cohort.loc[5, "pfs24_sr"]


def test_truth_by_pseudonym_reads_any_column_names_and_order(cohort, mapping):
    shuffled = mapping.sample(frac=1.0, random_state=0).set_axis(["key", "orig"], axis=1)
    out = truth_by_pseudonym(cohort, shuffled)
    assert out.loc["P0007", "pfs_months"] == cohort.loc[7, "pfs_months"]


def test_missing_truth_is_one_input_error(cohort, mapping):
    pred = _predictions(cohort, mapping)
    with pytest.raises(InputError, match="3 of 80 patients"):
        truth_table(pred, _metrics(), truth_by_pseudonym(cohort, mapping.iloc[3:]))


# --- the core: oracles ---------------------------------------------------------------------------

def test_oracle_c_indexes_match_sksurv(cohort, mapping, truth):
    pred = _predictions(cohort, mapping)
    table = truth_table(pred, _metrics(), truth)
    img_rfa, img_sr = imaging_log_hazards(cohort)
    for arm, img in (("RFA", img_rfa), ("SR", img_sr)):
        for split in ("train", "val"):
            rows = ((pred["treatment"] == arm) & (pred["split"] == split)).to_numpy()
            t, e = cohort["pfs_months"].to_numpy()[rows], cohort["progression"].to_numpy()[rows].astype(bool)
            expected_img = concordance_index_censored(e, t, img[rows])[0]
            expected_full = concordance_index_censored(e, t, cohort[f"log_hazard_{arm.lower()}"].to_numpy()[rows])[0]
            assert _value(table, "C-index signature", arm, split, "truth") == pytest.approx(expected_img)
            assert _value(table, "C-index nomogram", arm, split, "truth") == pytest.approx(expected_full)
            assert _value(table, "patients", arm, split, "ceusflow") == rows.sum()


def test_metrics_are_carried_with_cis_and_nan_where_missing(cohort, mapping, truth):
    table = truth_table(_predictions(cohort, mapping), _metrics(), truth)
    row = table.loc[("HR high vs low risk", "SR", "train")]
    assert (row["ceusflow"], row["ceusflow_low"], row["ceusflow_high"]) == (3.0, 2.0, 4.5)
    assert np.isnan(_value(table, "HR high vs low risk", "SR", "val", "ceusflow"))  # {"note": ...} in metrics
    assert _value(table, "cut-point", "RFA", "train", "ceusflow") == 0.25
    assert _value(table, "C-index nomogram", "RFA", "train", "ceusflow_high") == 0.77


def test_nomogram_c_recomputed_from_predictions_when_not_in_metrics(cohort, mapping, truth):
    pred = _predictions(cohort, mapping)
    table = truth_table(pred, _metrics(nomogram_c=False), truth)
    rows = ((pred["treatment"] == "SR") & (pred["split"] == "val")).to_numpy()
    e, t = cohort["progression"].to_numpy()[rows].astype(bool), cohort["pfs_months"].to_numpy()[rows]
    expected = concordance_index_censored(e, t, 1 - pred["pfs2y_sr"].to_numpy()[rows])[0]
    assert _value(table, "C-index nomogram", "SR", "val", "ceusflow") == pytest.approx(expected)


def test_oracle_hr_splits_at_the_same_share(cohort, mapping, truth):
    table = truth_table(_predictions(cohort, mapping), _metrics(), truth)
    assert _value(table, "HR high vs low risk", "RFA", "train", "truth") > 1  # true hazard ranks high risk first
    metrics = _metrics()
    metrics["signature_RFA"]["train"]["share_high_risk"] = 0.0  # no high-risk group: no HR
    assert np.isnan(_value(truth_table(_predictions(cohort, mapping), metrics, truth),
                           "HR high vs low risk", "RFA", "train", "truth"))


# --- the core: swaps and policies ---------------------------------------------------------------

def test_swap_candidates_by_hand(cohort, mapping, truth):
    pred = _predictions(cohort, mapping)
    table = truth_table(pred, _metrics(), truth)
    for arm, other in (("RFA", "SR"), ("SR", "RFA")):
        own = (pred["treatment"] == arm).to_numpy()
        cand = own & (np.arange(N) % 4 == 0)
        should = own & (cohort["better_treatment"] != arm).to_numpy()
        true_gain = (cohort[f"pfs24_{other.lower()}"] - cohort[f"pfs24_{arm.lower()}"]).to_numpy()
        assert _value(table, "swap candidates", arm, "all", "ceusflow") == cand.sum()
        assert _value(table, "swap candidates", arm, "all", "truth") == should.sum()
        assert _value(table, "swap share", arm, "all", "ceusflow") == pytest.approx(cand.sum() / own.sum())
        ori_high = own & (np.arange(N) % 4 <= 1)
        assert _value(table, "swap share of original high-risk", arm, "all", "ceusflow") == pytest.approx(
            cand.sum() / ori_high.sum())
        assert _value(table, "candidates truly better off", arm, "all", "truth") == pytest.approx(should[cand].mean())
        gain = _value(table, "candidates' 2-year PFS gain", arm, "all", "truth")
        assert gain == pytest.approx(true_gain[cand].mean())
        assert _value(table, "candidates' 2-year PFS gain", arm, "all", "ceusflow") == pytest.approx(
            pred["gain_2y"].to_numpy()[cand].mean())


def test_perfect_recommendation_reaches_the_oracle(cohort, mapping, truth):
    pred = _predictions(cohort, mapping, recommend=cohort["better_treatment"].to_numpy())
    table = truth_table(pred, _metrics(), truth)
    for split in ("all", "val"):
        assert _value(table, "mean 2-year PFS, recommended", "all", split, "truth") == pytest.approx(
            _value(table, "mean 2-year PFS, oracle-best", "all", split, "truth"))
        assert _value(table, "recommended swaps truly better off", "all", split, "truth") == 1.0
        assert _value(table, "truly better-off recommended to swap", "all", split, "truth") == 1.0
        assert _value(table, "share of attainable gain captured", "all", split, "truth") == pytest.approx(1.0)
    for arm in ("RFA", "SR"):
        assert _value(table, "recommended swaps truly better off", arm, "all", "truth") == 1.0
        assert _value(table, "recommended swaps", arm, "all", "ceusflow") == _value(
            table, "recommended swaps", arm, "all", "truth")
    oracle = np.maximum(cohort["pfs24_rfa"], cohort["pfs24_sr"]).mean()
    assert _value(table, "mean 2-year PFS, oracle-best", "all", "all", "truth") == pytest.approx(oracle)


def test_no_swap_keeps_the_observed_value(cohort, mapping, truth):
    table = truth_table(_predictions(cohort, mapping), _metrics(), truth)
    observed = np.where(cohort["treatment"] == "RFA", cohort["pfs24_rfa"], cohort["pfs24_sr"]).mean()
    assert _value(table, "mean 2-year PFS, as treated", "all", "all", "truth") == pytest.approx(observed)
    assert _value(table, "mean 2-year PFS, recommended", "all", "all", "truth") == pytest.approx(observed)
    assert _value(table, "truly better-off recommended to swap", "all", "all", "truth") == 0.0
    assert np.isnan(_value(table, "recommended swaps truly better off", "all", "all", "truth"))
    assert _value(table, "mean 2-year PFS, all RFA", "all", "all", "ceusflow") == pytest.approx(0.7)  # linspace mean


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(["RFA", "SR"]), min_size=N, max_size=N))
def test_no_policy_beats_the_oracle(cohort, mapping, truth, choice):
    table = truth_table(_predictions(cohort, mapping, recommend=np.array(choice)), _metrics(), truth)
    oracle = _value(table, "mean 2-year PFS, oracle-best", "all", "all", "truth")
    assert _value(table, "mean 2-year PFS, recommended", "all", "all", "truth") <= oracle + 1e-12
    assert _value(table, "mean 2-year PFS, as treated", "all", "all", "truth") <= oracle + 1e-12


# --- the paper's numbers -------------------------------------------------------------------------

def test_paper_column_and_sources(cohort, mapping, truth):
    table = truth_table(_predictions(cohort, mapping), _metrics(), truth)
    assert _value(table, "C-index signature", "RFA", "val", "paper") == 0.726
    assert _value(table, "C-index signature", "SR", "val", "paper") == 0.741
    assert _value(table, "swap share", "SR", "all", "paper") == 0.273
    assert _value(table, "candidates' 2-year PFS gain", "RFA", "all", "paper") == 0.12
    assert set(PAPER) <= set(table.index)  # every paper number has its row
    assert table.loc[list(PAPER), "source"].str.startswith("Results").all()


@pytest.mark.skipif(not PAPER_TEXT.is_file(), reason="paper text not available")
def test_paper_numbers_are_in_the_paper():
    text = " ".join(PAPER_TEXT.read_text().split())
    for (_, _, _), (value, low, high, _) in PAPER.items():
        if np.isfinite(low):
            assert f"{value:.3f} (95% CI {low:.3f}–{high:.3f})" in text
    for share in ("23.49 and 35.38%", "48.61 and 37.10%", "63.8% patients", "17.3% patients", "60.2%", "27.3%"):
        assert share in text
    assert "0.62 ± 0.10 to 0.74 ± 0.01" in text and "0.76 ± 0.12 to 0.91 ± 0.05" in text


# --- presentation --------------------------------------------------------------------------------

def test_format_table_compact_and_counts(cohort, mapping, truth):
    table = truth_table(_predictions(cohort, mapping), _metrics(), truth)
    full, short = format_table(table), format_table(table, compact=True)
    assert list(full.columns) == ["quantity", "treatment", "cohort", "paper", "ceusflow", "truth", "source"]
    assert set(short["quantity"]) == set(COMPACT) and "[" not in "".join(short["ceusflow"])
    row = full[(full["quantity"] == "C-index signature") & (full["treatment"] == "RFA") & (full["cohort"] == "val")]
    assert row["paper"].item() == "0.726 [0.65, 0.80]"
    assert full[full["quantity"] == "patients"]["paper"].tolist() == ["149", "65", "144", "61"]
    md = to_markdown(short)
    assert md.splitlines()[1] == "|---|---|---|---|---|---|" and len(md.splitlines()) == len(short) + 2


# --- files, CLI and demo -------------------------------------------------------------------------

@pytest.fixture
def files(tmp_path: Path, cohort, mapping) -> dict[str, Path]:
    results, truth_dir, stores = tmp_path / "results", tmp_path / "cohort-truth", tmp_path / "stores"
    for folder in (results, truth_dir, stores):
        folder.mkdir()
    _predictions(cohort, mapping).reset_index().to_csv(results / "predictions.csv", index=False)
    (results / "metrics.json").write_text(json.dumps(_metrics()))
    cohort.to_csv(truth_dir / "patients.csv", index=False)
    mapping.to_csv(mapping_path(stores / "c.zarr"), index=False)
    return {"results": results, "truth": truth_dir, "pseudonyms": mapping_path(stores / "c.zarr"),
            "store": stores / "c.zarr"}


def test_compare_with_truth_reads_files(files, cohort, mapping, truth):
    table = compare_with_truth(files["results"], files["truth"], files["pseudonyms"])
    expected = truth_table(_predictions(cohort, mapping), _metrics(), truth)
    pd.testing.assert_frame_equal(table, expected)


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    app.callback()(lambda: None)  # keep `truth` a named subcommand
    register(app)
    return app


def test_cli_prints_and_writes_without_identifiers(app, files, cohort, tmp_path):
    args = ["truth", str(files["results"]), "--truth", str(files["truth"]), "--pseudonyms", str(files["pseudonyms"])]
    for name in ("t.csv", "t.md"):
        res = CliRunner().invoke(app, [*args, "--out", str(tmp_path / name)])
        assert res.exit_code == 0, res.output
        assert "C-index signature" in res.output and "0.726" in res.output
        written = (tmp_path / name).read_text()
        assert not any(pid in res.output + written for pid in cohort["patient_id"])
    back = pd.read_csv(tmp_path / "t.csv")
    assert list(back.columns[:4]) == ["quantity", "treatment", "cohort", "paper"]
    assert "| C-index signature | RFA | val | 0.726 [0.65, 0.80] |" in (tmp_path / "t.md").read_text()


@pytest.mark.parametrize("broken", ["results", "truth", "pseudonyms", "suffix"])
def test_cli_one_line_errors(app, files, tmp_path, broken):
    paths = {k: str(v) for k, v in files.items()}
    out = str(tmp_path / "t.xlsx") if broken == "suffix" else str(tmp_path / "t.csv")
    if broken != "suffix":
        paths[broken] = str(tmp_path / "nowhere")
    res = CliRunner().invoke(app, ["truth", paths["results"], "--truth", paths["truth"],
                                   "--pseudonyms", paths["pseudonyms"], "--out", out])
    assert res.exit_code == 2
    assert res.output.count("\n") == 1 and res.output.startswith("ceusflow: ")
    assert ("not found" in res.output) or ("unknown table format" in res.output)


def test_demo_summary_is_compact_and_identifier_free(files, cohort):
    text = summarise_demo(files["results"], files["truth"], files["store"])
    assert "C-index signature" in text and "mean 2-year PFS, oracle-best" in text
    assert "HR high vs low risk" not in text
    assert not any(pid in text for pid in cohort["patient_id"])


def test_json_nulls_in_metrics_read_as_nan(cohort, mapping, truth):
    # metrics.json stores non-finite numbers (e.g. an infinite HR bound with an empty stratum) as null
    metrics = _metrics()
    metrics["signature_SR"]["train"]["hr"]["high"] = None
    metrics["signature_RFA"]["cutpoint"]["threshold"] = None
    table = truth_table(_predictions(cohort, mapping), json.loads(json.dumps(metrics)), truth)
    assert np.isnan(_value(table, "HR high vs low risk", "SR", "train", "ceusflow_high"))
    assert _value(table, "HR high vs low risk", "SR", "train", "ceusflow") == 3.0
    assert np.isnan(_value(table, "cut-point", "RFA", "train", "ceusflow"))
