"""Cross-stratification, swap benefit, CI-gated recommendation and policy value.

Oracles: hand-counted subgroups (and the paper's Fig. 5 counts), scipy's Mann–Whitney, paired t
and Wilcoxon called directly, symmetry laws under swapping the two models, and the simulator's
ground truth.
"""

from __future__ import annotations

import functools
import io

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from matplotlib.figure import Figure
from scipy import stats

from ceusflow.errors import InputError
from ceusflow.recommend import (
    SUBGROUPS,
    bootstrap_nomogram_predictions,
    cross_stratify,
    nomogram_predictions,
    plot_cross_stratification,
    policy_value,
    recommend,
    swap_benefit,
)
from ceusflow.simulate import simulate_patients
from ceusflow.survival import cutpoint

# ---------------------------------------------------------------- cross-stratification


def test_four_subgroups_by_hand() -> None:
    own = [0.1, 0.2, 0.8, 0.9, 0.7, 0.5]  # cut 0.5: HR = patients 2, 3, 4 (0.5 itself is LR)
    other = [0.1, 0.9, 0.2, 0.8, 0.3, 0.2]  # cut 0.5: HR = patients 1, 3
    c = cross_stratify(own, other, 0.5, 0.5)
    assert c.ori_high.tolist() == [False, False, True, True, True, False]
    assert c.re_high.tolist() == [False, True, False, True, False, False]
    assert c.subgroup.tolist() == ["oriLR-reLR", "oriLR-reHR", "oriHR-reLR", "oriHR-reHR", "oriHR-reLR",
                                   "oriLR-reLR"]
    assert c.table["n"].tolist() == [2, 1, 2, 1]
    np.testing.assert_allclose(c.table["share"], [2 / 6, 1 / 6, 2 / 6, 1 / 6])
    np.testing.assert_allclose(c.table["share_of_ori"], [2 / 3, 1 / 3, 2 / 3, 1 / 3])
    assert c.swap.tolist() == [False, False, True, False, True, False]
    assert (c.n_swap, c.swap_share, c.swap_share_of_ori_high) == (2, 2 / 6, 2 / 3)


def test_paper_fig5_rfa_shares() -> None:
    # Fig. 5a: RFA-oriLR 130 reLR + 26 reHR, RFA-oriHR 37 reLR + 21 reHR
    counts = {(0, 0): 130, (0, 1): 26, (1, 0): 37, (1, 1): 21}
    own = np.concatenate([np.full(n, o, float) for (o, _), n in counts.items()])
    other = np.concatenate([np.full(n, r, float) for (_, r), n in counts.items()])
    c = cross_stratify(own, other, 0.5, 0.5)
    assert c.table["n"].tolist() == [130, 26, 37, 21]
    np.testing.assert_allclose(c.table["share_of_ori"].round(3), [0.833, 0.167, 0.638, 0.362])
    assert round(c.swap_share, 3) == 0.173 and round(c.swap_share_of_ori_high, 3) == 0.638


def test_labelled_inputs_align_on_patient() -> None:
    ids = [f"P{i}" for i in range(6)]
    own = pd.Series([0.1, 0.2, 0.8, 0.9, 0.7, 0.5], index=ids)
    other = pd.Series([0.1, 0.9, 0.2, 0.8, 0.3, 0.2], index=ids)
    c = cross_stratify(own, other.iloc[::-1], 0.5, 0.5)
    assert c.patient.tolist() == ids
    assert c.swap.tolist() == [False, False, True, False, True, False]
    c_xr = cross_stratify(own, xr.DataArray(other.to_numpy()[::-1], dims="patient", coords={"patient": ids[::-1]}),
                          0.5, 0.5)
    assert c_xr.swap.tolist() == c.swap.tolist()
    with pytest.raises(InputError, match="signature_other"):
        cross_stratify(own, other.rename(index={"P5": "P9"}), 0.5, 0.5)


@pytest.mark.parametrize("bad", [[0.1, np.nan], [0.1]])
def test_cross_stratify_rejects_bad_input(bad: list[float]) -> None:
    with pytest.raises(InputError):
        cross_stratify([0.1, 0.2], bad, 0.0, 0.0)


def test_mann_whitney_equals_scipy() -> None:
    rng = np.random.default_rng(3)
    own, other = rng.normal(size=40), rng.normal(size=40)
    c = cross_stratify(own, other, 0.2, -0.1)
    for res, score, high in ((c.mwu_ori, own, own > 0.2), (c.mwu_re, other, other > -0.1),
                             (c.mwu_re_own, own, other > -0.1)):
        ref = stats.mannwhitneyu(score[high], score[~high], alternative="two-sided")
        assert (res.statistic, res.p_value) == (ref.statistic, ref.pvalue)
        assert (res.n_high, res.n_low) == (high.sum(), (~high).sum())
        assert res.median_high == np.median(score[high])
    assert (c.mwu_re.signature, c.mwu_re.strata, c.mwu_re_own.signature) == ("other", "re", "own")


def test_mann_whitney_nan_for_empty_stratum() -> None:
    c = cross_stratify([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], 10.0, 0.0)
    assert np.isnan(c.mwu_ori.p_value) and c.mwu_ori.n_high == 0
    assert np.isnan(c.swap_share_of_ori_high)


signatures = st.integers(2, 30).flatmap(lambda n: st.tuples(
    arrays(float, n, elements=st.integers(-5, 5).map(float)),
    arrays(float, n, elements=st.integers(-5, 5).map(float)),
    st.integers(-5, 5).map(lambda c: c + 0.5), st.integers(-5, 5).map(float)))


@settings(max_examples=60, deadline=None)
@given(signatures)
def test_swapping_model_roles_mirrors_subgroups(data: tuple) -> None:
    own, other, cut_own, cut_other = data
    a, b = cross_stratify(own, other, cut_own, cut_other), cross_stratify(other, own, cut_other, cut_own)
    np.testing.assert_array_equal(a.ori_high, b.re_high)
    np.testing.assert_array_equal(a.re_high, b.ori_high)
    mirror = {s: f"ori{s[8:10]}-re{s[3:5]}" for s in SUBGROUPS}
    for s in SUBGROUPS:
        assert a.table.loc[s, "n"] == b.table.loc[mirror[s], "n"]
    np.testing.assert_array_equal(b.swap, ~a.ori_high & a.re_high)
    assert (a.mwu_ori.statistic, a.mwu_ori.p_value) == pytest.approx((b.mwu_re.statistic, b.mwu_re.p_value),
                                                                     nan_ok=True)
    assert a.table["n"].sum() == a.n and a.table["share"].sum() == pytest.approx(1.0)


# ---------------------------------------------------------------- swap benefit


def test_swap_benefit_equals_scipy_paired_tests() -> None:
    rng = np.random.default_rng(5)
    own, other = rng.uniform(0.4, 0.8, 30), rng.uniform(0.5, 0.9, 30)
    mask = rng.random(30) < 0.6
    b = swap_benefit(own, other, mask)
    t = stats.ttest_rel(other[mask], own[mask])
    w = stats.wilcoxon(other[mask], own[mask])
    ci = t.confidence_interval(0.95)
    assert b.n == mask.sum()
    assert (b.t_statistic, b.t_p_value) == pytest.approx((t.statistic, t.pvalue), rel=1e-12)
    assert (b.wilcoxon_statistic, b.wilcoxon_p_value) == pytest.approx((w.statistic, w.pvalue), rel=1e-12)
    assert (b.gain_low, b.gain_high) == pytest.approx((ci.low, ci.high), rel=1e-10)
    assert b.mean_gain == pytest.approx(np.mean(other[mask] - own[mask]))
    assert (b.mean_own, b.sd_own) == pytest.approx((own[mask].mean(), own[mask].std(ddof=1)))


def test_swap_benefit_takes_a_cross_stratification_and_labels() -> None:
    ids = [f"P{i}" for i in range(6)]
    c = cross_stratify(pd.Series([0.1, 0.2, 0.8, 0.9, 0.7, 0.5], index=ids),
                       pd.Series([0.1, 0.9, 0.2, 0.8, 0.3, 0.2], index=ids), 0.5, 0.5)
    own = pd.Series([0.9, 0.9, 0.5, 0.6, 0.6, 0.9], index=ids).iloc[::-1]
    other = pd.Series([0.8, 0.5, 0.7, 0.4, 0.9, 0.8], index=ids)
    b = swap_benefit(own, other, c)
    assert b.patient.tolist() == ["P4", "P2"]  # the order of the first labelled input
    assert b.pfs2y_own.tolist() == [0.6, 0.5] and b.pfs2y_other.tolist() == [0.9, 0.7]
    assert b.mean_gain == pytest.approx(0.25)


def test_swap_benefit_degenerate_cases_are_nan() -> None:
    one = swap_benefit([0.5, 0.6], [0.7, 0.8], np.array([True, False]))
    assert one.n == 1 and np.isnan(one.t_p_value) and np.isnan(one.gain_low) and one.mean_gain == pytest.approx(0.2)
    same = swap_benefit([0.5, 0.6], [0.5, 0.6], np.array([True, True]))
    assert np.isnan(same.wilcoxon_p_value) and same.mean_gain == 0.0
    with pytest.raises(InputError, match="candidates"):
        swap_benefit([0.5, 0.6], [0.5, 0.6], np.array([1, 0]))


# ---------------------------------------------------------------- recommendation


def _boot_from_gains(gains: np.ndarray, treatment: list[str], base: float = 0.5) -> np.ndarray:
    """(n_boot, n, 2) predictions whose other-minus-received gain equals ``gains``."""
    boot = np.full(gains.shape + (2,), base)
    on_rfa = np.asarray(treatment) == "RFA"
    boot[..., 1] = np.where(on_rfa, base + gains, base - gains)  # SR column
    return boot


def test_recommend_swaps_only_when_ci_excludes_zero() -> None:
    treatment = ["RFA", "SR", "RFA", "SR"]
    gains = np.stack([np.linspace(0.05, 0.15, 101),  # clearly positive: swap RFA -> SR
                      np.linspace(-0.05, 0.15, 101),  # spans zero: keep SR
                      np.linspace(-0.3, -0.1, 101),  # clearly negative: keep RFA
                      np.linspace(0.02, 0.2, 101)], axis=1)  # positive: swap SR -> RFA
    r = recommend([0.6, 0.7, 0.8, 0.5], [0.7, 0.75, 0.6, 0.4], treatment=treatment,
                  bootstrap_predictions=_boot_from_gains(gains, treatment))
    assert r["recommend"].tolist() == ["SR", "SR", "RFA", "RFA"]
    assert r["swap"].tolist() == [True, False, False, True]
    np.testing.assert_allclose(r["gain_2y"], [0.1, -0.05, -0.2, 0.1])  # point estimates, not the CI
    np.testing.assert_allclose(r["gain_2y_lo"], np.quantile(gains, 0.025, axis=0))
    np.testing.assert_allclose(r["gain_2y_hi"], np.quantile(gains, 0.975, axis=0))
    assert r.attrs["n_boot"] == 101 and r.attrs["level"] == 0.95


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 8).flatmap(lambda n: st.tuples(
    arrays(float, (20, n), elements=st.floats(-0.3, 0.3)),
    st.lists(st.sampled_from(["RFA", "SR"]), min_size=n, max_size=n),
    arrays(float, n, elements=st.floats(0.0, 1.0)), arrays(float, n, elements=st.floats(0.0, 1.0)))))
def test_recommend_swap_iff_lower_bound_above_zero(data: tuple) -> None:
    gains, treatment, rfa, sr = data
    r = recommend(rfa, sr, treatment=treatment, bootstrap_predictions=_boot_from_gains(gains, treatment))
    np.testing.assert_array_equal(r["swap"], r["gain_2y_lo"] > 0)
    np.testing.assert_array_equal(r["recommend"] != r["treatment"], r["swap"])
    assert (r["gain_2y_lo"] <= r["gain_2y_hi"]).all()
    np.testing.assert_allclose(r["gain_2y"], np.where(np.array(treatment) == "RFA", sr - rfa, rfa - sr))


def test_recommend_accepts_labelled_dataarray_and_callable() -> None:
    ids = ["a", "b", "c"]
    treatment = pd.Series(["RFA", "SR", "RFA"], index=ids)
    gains = np.stack([np.full(10, 0.1), np.full(10, -0.1), np.linspace(-0.1, 0.1, 10)], axis=1)
    boot = _boot_from_gains(gains, treatment.tolist())
    arr = xr.DataArray(boot[:, ::-1, ::-1], dims=("boot", "patient", "treatment"),
                       coords={"patient": ids[::-1], "treatment": ["SR", "RFA"]})
    rfa, sr = pd.Series([0.5, 0.6, 0.7], index=ids), pd.Series([0.6, 0.5, 0.7], index=ids)
    r = recommend(rfa, sr, treatment=treatment, bootstrap_predictions=arr)
    assert r.index.tolist() == ids and r["swap"].tolist() == [True, False, False]

    def source(*, n_boot: int, rng: np.random.Generator) -> np.ndarray:
        assert isinstance(rng, np.random.Generator)
        return boot[:n_boot]

    r2 = recommend(rfa, sr, treatment=treatment, bootstrap_predictions=source, n_boot=10, rng=7)
    pd.testing.assert_frame_equal(r, r2)
    assert r2.attrs["seed"] == 7


@pytest.mark.parametrize("boot", [None, np.zeros((10, 2, 2)), np.full((10, 3, 2), np.nan)])
def test_recommend_rejects_missing_or_bad_bootstrap(boot: np.ndarray | None) -> None:
    with pytest.raises(InputError, match="bootstrap_predictions"):
        recommend([0.5, 0.6, 0.7], [0.6, 0.5, 0.7], treatment=["RFA", "SR", "RFA"], bootstrap_predictions=boot)


def test_recommend_rejects_unknown_treatment() -> None:
    with pytest.raises(InputError, match="treatment"):
        recommend([0.5], [0.6], treatment=["TACE"], bootstrap_predictions=np.zeros((5, 1, 2)))


# ---------------------------------------------------------------- bootstrap nomograms


@pytest.fixture(scope="module")
def cohort() -> pd.DataFrame:
    p = simulate_patients(400, np.random.default_rng(0))
    p.index = pd.Index([f"P{i:03d}" for i in range(len(p))], name="patient")
    return p.rename(columns={"pfs_months": "duration", "progression": "event"})


COVS = {"RFA": ["log_hazard_rfa", "age"], "SR": ["log_hazard_sr", "alt"]}


def test_bootstrap_nomogram_predictions_refit_on_resamples(cohort: pd.DataFrame) -> None:
    from ceusflow.survival import fit_cox, predict_survival

    train_rfa, train_sr = cohort[cohort.treatment == "RFA"].iloc[:80], cohort[cohort.treatment == "SR"].iloc[:80]
    patients = cohort.iloc[:25]
    boot = bootstrap_nomogram_predictions(train_rfa, train_sr, patients, COVS, n_boot=3, rng=11)
    assert boot.dims == ("boot", "patient", "treatment") and boot.shape == (3, 25, 2)
    assert boot.patient.values.tolist() == patients.index.tolist() and boot.attrs["seed"] == 11
    assert ((boot >= 0) & (boot <= 1)).all()
    gen = np.random.default_rng(11)
    for j, (arm, train) in enumerate((("RFA", train_rfa), ("SR", train_sr))):
        rows = train.iloc[gen.integers(0, len(train), len(train))]
        fit = fit_cox(rows.duration, rows.event, rows[COVS[arm]])
        np.testing.assert_allclose(boot[0, :, j], predict_survival(fit, patients[COVS[arm]], 24.0))
    again = bootstrap_nomogram_predictions(train_rfa, train_sr, patients, COVS, n_boot=3, rng=11)
    xr.testing.assert_identical(boot, again)
    point = nomogram_predictions(train_rfa, train_sr, patients, COVS)
    assert point.columns.tolist() == ["pfs2y_rfa", "pfs2y_sr"] and point.index.equals(patients.index)


def test_bootstrap_resample_without_events_is_nan_not_fatal(cohort: pd.DataFrame) -> None:
    # an arm of 6 patients with one event: about a third of the resamples miss it
    rfa = cohort[cohort.treatment == "RFA"]
    small = pd.concat([rfa[rfa.event == 1].iloc[:1], rfa[rfa.event == 0].iloc[:5]])
    train_sr = cohort[cohort.treatment == "SR"].iloc[:80]
    boot = bootstrap_nomogram_predictions(small, train_sr, cohort.iloc[:5], {"RFA": ["age"], "SR": ["alt"]},
                                          n_boot=12, rng=3)
    empty = np.isnan(boot.sel(treatment="RFA")).all("patient")
    gen, expected = np.random.default_rng(3), 0
    for _ in range(12):  # the same draws, in the documented order
        expected += not small.event.to_numpy()[gen.integers(0, 6, 6)].any()
        gen.integers(0, 80, 80)
    assert 0 < expected < 12 and int(empty.sum()) == boot.attrs["n_without_events"] == expected
    assert np.isfinite(boot.sel(treatment="SR")).all()


def test_bootstrap_needs_covariate_columns(cohort: pd.DataFrame) -> None:
    with pytest.raises(InputError, match="missing columns"):
        bootstrap_nomogram_predictions(cohort, cohort, cohort, ["nope"], n_boot=2)


# ---------------------------------------------------------------- policy value


def test_policy_value_on_toy_truth() -> None:
    rec = pd.DataFrame({"treatment": ["RFA", "RFA", "SR", "SR"], "recommend": ["SR", "RFA", "SR", "RFA"]},
                       index=pd.Index(list("abcd"), name="patient"))
    true_rfa = pd.Series([0.5, 0.9, 0.6, 0.4], index=list("abcd"))  # oracle: SR, RFA, SR, SR
    true_sr = pd.Series([0.8, 0.7, 0.7, 0.6], index=list("abcd"))
    v = policy_value(rec, true_rfa.iloc[::-1], true_sr)
    assert v.observed == pytest.approx((0.5 + 0.9 + 0.7 + 0.6) / 4)
    assert v.recommended == pytest.approx((0.8 + 0.9 + 0.7 + 0.4) / 4)
    assert v.oracle == pytest.approx((0.8 + 0.9 + 0.7 + 0.6) / 4)
    assert (v.all_rfa, v.all_sr) == pytest.approx((0.6, 0.7))
    assert v.gain == pytest.approx(0.025) and v.regret == pytest.approx(0.05)
    assert v.captured == pytest.approx(0.025 / 0.075)
    assert (v.n_swap, v.swap_precision, v.n_should_swap, v.swap_recall) == (2, 0.5, 1, 1.0)


def test_policy_value_of_the_oracle_is_the_oracle() -> None:
    rng = np.random.default_rng(2)
    t_rfa, t_sr = rng.random(50), rng.random(50)
    rec = pd.DataFrame({"treatment": rng.choice(["RFA", "SR"], 50),
                        "recommend": np.where(t_rfa >= t_sr, "RFA", "SR")})
    v = policy_value(rec, t_rfa, t_sr)
    assert v.recommended == pytest.approx(v.oracle) and v.regret == pytest.approx(0.0)
    assert v.swap_precision == 1.0 and v.swap_recall == 1.0


# ---------------------------------------------------------------- end to end on the simulator


def test_swap_candidates_enriched_for_patients_better_off_swapped(cohort: pd.DataFrame) -> None:
    train = np.random.default_rng(1).random(len(cohort)) < 0.5
    cuts = {}
    for arm in ("RFA", "SR"):
        g = cohort[(cohort.treatment == arm) & train]
        cuts[arm] = cutpoint(g.duration, g.event, g[f"log_hazard_{arm.lower()}"], pvalue="none").threshold
    should, in_swap, crosses, benefits = [], [], {}, {}
    for arm, other in (("RFA", "SR"), ("SR", "RFA")):
        g = cohort[cohort.treatment == arm]
        crosses[arm] = c = cross_stratify(g[f"log_hazard_{arm.lower()}"], g[f"log_hazard_{other.lower()}"],
                                          cuts[arm], cuts[other])
        benefits[arm] = swap_benefit(g[f"pfs24_{arm.lower()}"], g[f"pfs24_{other.lower()}"], c)
        should.append((g.better_treatment != arm).to_numpy())
        in_swap.append(c.swap)
    should_all, swap_all = np.concatenate(should), np.concatenate(in_swap)
    base, among_swaps = should_all.mean(), should_all[swap_all].mean()
    assert swap_all.sum() >= 10
    assert among_swaps >= 2 * base and among_swaps > should_all[~swap_all].mean() + 0.3
    assert benefits["RFA"].mean_gain > 0 and benefits["RFA"].gain_low > 0  # true PFS gain of the swap
    fig = plot_cross_stratification(crosses, benefits)
    assert isinstance(fig, Figure) and len(fig.axes) == 6
    fig.savefig(io.BytesIO(), format="png", dpi=40)


def test_recommendation_end_to_end_beats_observed(cohort: pd.DataFrame) -> None:
    train = np.random.default_rng(4).random(len(cohort)) < 0.6
    train_rfa, train_sr = cohort[train & (cohort.treatment == "RFA")], cohort[train & (cohort.treatment == "SR")]
    point = nomogram_predictions(train_rfa, train_sr, cohort, COVS)
    source = functools.partial(bootstrap_nomogram_predictions, train_rfa, train_sr, cohort, COVS)
    r = recommend(point.pfs2y_rfa, point.pfs2y_sr, treatment=cohort.treatment, bootstrap_predictions=source,
                  n_boot=20, rng=0)
    v = policy_value(r, cohort.pfs24_rfa, cohort.pfs24_sr)
    assert v.n_swap > 0 and v.gain > 0 and v.regret >= 0 and v.swap_precision > 0.8


def test_plot_without_candidates() -> None:
    c = cross_stratify([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], 10.0, 0.0)
    fig = plot_cross_stratification({"SR": c})
    assert len(fig.axes) == 3
    fig.savefig(io.BytesIO(), format="png", dpi=40)
