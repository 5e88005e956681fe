from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ceusflow.errors import InputError
from ceusflow.model.baseline import evaluate_baseline, fit_baseline
from ceusflow.survival import fit_cox


def _cohort(n: int = 200, seed: int = 0):
    rng = np.random.default_rng(seed)
    keys = [f"P{i:04d}" for i in range(n)]
    lp = rng.normal(0.0, 1.0, n)
    feats = pd.DataFrame({"washout_slope": lp + rng.normal(0, 0.5, n),
                          "peak": rng.normal(0.5, 0.1, n),
                          "ttp_s": rng.normal(20, 5, n)}, index=keys)
    t_event = rng.exponential(12 * np.exp(-lp))
    t_cens = rng.uniform(6, 48, n)
    duration = pd.Series(np.minimum(t_event, t_cens), index=keys)
    event = pd.Series(t_event <= t_cens, index=keys)
    return feats, duration, event, keys


def test_baseline_learns_the_informative_feature():
    feats, duration, event, keys = _cohort()
    result = evaluate_baseline(feats, duration, event, keys[:134], penalizer=0.01)
    assert result.valid_cindex.estimate > 0.65
    assert result.valid_cindex.low < result.valid_cindex.estimate < result.valid_cindex.high
    coef = result.fit.params["coef"]
    assert coef.abs().idxmax() == "washout_slope" and coef["washout_slope"] > 0
    assert result.risk.index.tolist() == keys


def test_same_as_fit_cox_on_training_rows_and_imputes_with_training_medians():
    feats, duration, event, keys = _cohort(80)
    feats.iloc[3, 1] = np.nan
    fit, medians = fit_baseline(feats.iloc[:60], duration.iloc[:60], event.iloc[:60], penalizer=0.1)
    ref = fit_cox(duration.iloc[:60], event.iloc[:60], feats.iloc[:60].fillna(medians), penalizer=0.1)
    np.testing.assert_allclose(fit.coef, ref.coef)
    assert medians["peak"] == pytest.approx(feats["peak"].iloc[:60].median())


def test_penalty_shrinks():
    feats, duration, event, keys = _cohort()
    weak = evaluate_baseline(feats, duration, event, keys[:134], penalizer=0.0)
    strong = evaluate_baseline(feats, duration, event, keys[:134], penalizer=1.0)
    assert np.abs(strong.fit.coef).sum() < np.abs(weak.fit.coef).sum()


def test_errors():
    feats, duration, event, keys = _cohort(20)
    with pytest.raises(InputError, match="non-numeric"):
        fit_baseline(feats.assign(site=["a"] * 20), duration, event)
    with pytest.raises(InputError, match="validation"):
        evaluate_baseline(feats, duration, event, keys)
