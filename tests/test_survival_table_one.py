"""Table 1 p-values against direct scipy calls; the balanced split; the private log-rank."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines.statistics import logrank_test
from scipy import stats

from ceusflow.errors import InputError
from ceusflow.survival.table_one import balanced_split, logrank_p, table_one


@pytest.fixture(scope="module")
def cohort() -> pd.DataFrame:
    rng = np.random.default_rng(5)
    n = 120
    arm = np.where(np.arange(n) < 70, "RFA", "SR")
    return pd.DataFrame({
        "arm": arm,
        "age": rng.normal(55, 10, n) + 4 * (arm == "SR"),
        "afp": rng.lognormal(3, 1.2, n),
        "sex": rng.choice(["M", "F"], n, p=[0.8, 0.2]),
        "child_pugh": rng.choice(["A", "B", "C"], n, p=[0.6, 0.3, 0.1]),
        "rare": np.where(np.arange(n) % 31 == 0, "yes", "no"),
    })


def _groups(df, col):
    return (df.loc[df["arm"] == g, col].to_numpy() for g in ("RFA", "SR"))


def _p(tab: pd.DataFrame, var: str) -> pd.Series:
    return tab[(tab["variable"] == var) & (tab["test"] != "")].iloc[0]


def test_continuous_tests_match_scipy(cohort):
    tab = table_one(cohort, "arm")
    a, b = _groups(cohort, "age")
    row = _p(tab, "age")
    assert row["test"] == "Welch t"
    assert row["p"] == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue, rel=1e-12)
    assert row["RFA"] == f"{a.mean():.2f} ± {a.std(ddof=1):.2f}"
    a, b = _groups(cohort, "afp")
    row = _p(tab, "afp")
    assert row["test"] == "Mann-Whitney U"  # lognormal: Shapiro–Wilk rejects normality
    assert row["p"] == pytest.approx(stats.mannwhitneyu(a, b).pvalue, rel=1e-12)
    assert row["SR"].startswith(f"{np.median(b):.2f} [")


def test_nonnormal_override(cohort):
    tab = table_one(cohort, "arm", continuous=["age"], nonnormal=["age"])
    a, b = _groups(cohort, "age")
    assert _p(tab, "age")["p"] == pytest.approx(stats.mannwhitneyu(a, b).pvalue, rel=1e-12)
    assert set(tab["variable"]) == {"age"}


def test_categorical_tests_match_scipy(cohort):
    tab = table_one(cohort, "arm")
    ct = pd.crosstab(cohort["child_pugh"], cohort["arm"]).to_numpy()
    row = _p(tab, "child_pugh")
    assert row["test"] == "chi-squared"
    assert row["p"] == pytest.approx(stats.chi2_contingency(ct).pvalue, rel=1e-12)
    ct = pd.crosstab(cohort["sex"], cohort["arm"]).to_numpy()
    assert stats.contingency.expected_freq(ct).min() >= 5
    # 2 × 2 with large expected counts: Yates-corrected chi-squared (R chisq.test default)
    assert _p(tab, "sex")["p"] == pytest.approx(
        stats.chi2_contingency(ct, correction=True).pvalue, rel=1e-12)
    ct = pd.crosstab(cohort["rare"], cohort["arm"]).to_numpy()
    assert stats.contingency.expected_freq(ct).min() < 5
    row = _p(tab, "rare")
    assert row["test"] == "Fisher exact"
    assert row["p"] == pytest.approx(stats.fisher_exact(ct).pvalue, rel=1e-12)
    levels = tab[(tab["variable"] == "child_pugh") & (tab["level"] != "")]
    assert list(levels["level"]) == ["A", "B", "C"]
    n_a = int(((cohort["arm"] == "RFA") & (cohort["child_pugh"] == "A")).sum())
    assert levels.iloc[0]["RFA"].startswith(f"{n_a} (")


def test_table_one_validates(cohort):
    with pytest.raises(InputError, match="exactly 2"):
        table_one(cohort.assign(arm=np.arange(len(cohort)) % 3), "arm")
    with pytest.raises(InputError, match="not found"):
        table_one(cohort, "treatment")


def test_logrank_matches_lifelines():
    rng = np.random.default_rng(2)
    t = np.round(rng.exponential(10, 150), 0) + 1  # ties
    e = rng.random(150) < 0.7
    g = rng.random(150) < 0.4
    ref = logrank_test(t[g], t[~g], e[g], e[~g]).p_value
    assert logrank_p(t, e, g) == pytest.approx(ref, rel=1e-10)


def _survival(df: pd.DataFrame, seed: int = 9) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.exponential(20, len(df)), rng.random(len(df)) < 0.6


def test_balanced_split_is_balanced_and_deterministic(cohort):
    t, e = _survival(cohort)
    chars = cohort.drop(columns="arm")
    split = balanced_split(chars, rng=42, time=t, event=e)
    assert len(split.train) == 80 and len(split.validation) == 40
    assert np.intersect1d(split.train, split.validation).size == 0
    assert split.n_draws >= 1 and split.min_p >= 0.05 and split.seed == 42
    is_train = np.isin(np.arange(len(chars)), split.train)
    tab = table_one(chars.assign(s=np.where(is_train, "t", "v")), "s")
    assert tab["p"].min() >= 0.05
    assert logrank_p(t, e, is_train) >= 0.05
    again = balanced_split(chars, rng=42, time=t, event=e)
    np.testing.assert_array_equal(split.train, again.train)
    assert again.n_draws == split.n_draws


def test_balanced_split_redraws_until_balanced(cohort):
    """A strict alpha forces re-draws; every rejected draw had some p below alpha."""
    chars = cohort.drop(columns="arm")
    split = balanced_split(chars, rng=1, alpha=0.5, max_draws=500)
    assert split.n_draws > 1 and split.min_p >= 0.5
    gen = np.random.default_rng(1)
    first = np.isin(np.arange(len(chars)), gen.permutation(len(chars))[:80])
    tab = table_one(chars.assign(s=np.where(first, "t", "v")), "s")
    assert tab["p"].min() < 0.5  # the first draw was rejected


def test_balanced_split_accepts_column_names_and_gives_up(cohort):
    t, e = _survival(cohort)
    df = cohort.drop(columns="arm").assign(pfs=t, progressed=e)
    by_name = balanced_split(df, rng=3, time="pfs", event="progressed")
    by_array = balanced_split(df.drop(columns=["pfs", "progressed"]), rng=3, time=t, event=e)
    np.testing.assert_array_equal(by_name.train, by_array.train)
    with pytest.raises(InputError, match="no split"):
        balanced_split(df, rng=0, alpha=0.999, max_draws=3)
