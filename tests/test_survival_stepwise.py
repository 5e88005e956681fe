"""Backward stepwise AIC: the trace is made of real fits, R step() rules, bootstrap stability."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from lifelines.datasets import load_rossi

from ceusflow.errors import InputError
from ceusflow.survival.cox import fit_cox
from ceusflow.survival.stepwise import selection_frequency, stepwise_aic


@pytest.fixture(scope="module")
def rossi() -> pd.DataFrame:
    return load_rossi()


@pytest.fixture(scope="module")
def rossi_step(rossi):
    return stepwise_aic(rossi["week"], rossi["arrest"], rossi.drop(columns=["week", "arrest"]))


def _planted(seed: int = 1, n: int = 300) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    x = pd.DataFrame({"signal1": rng.normal(size=n), "noise": rng.normal(size=n),
                      "signal2": rng.binomial(1, 0.5, n).astype(float)})
    t = rng.exponential(np.exp(-(1.0 * x["signal1"] + 0.8 * x["signal2"])))
    c = rng.exponential(2.0, n)
    return np.minimum(t, c), t <= c, x


def test_every_trace_aic_is_the_aic_of_that_subset(rossi, rossi_step):
    x = rossi.drop(columns=["week", "arrest"])
    current = list(x.columns)
    for step, rows in rossi_step.trace.groupby("step"):
        for _, r in rows.iterrows():
            keep = [c for c in current if f"- {c}" != r["term"]]
            if keep:
                ref = CoxPHFitter().fit(rossi[[*keep, "week", "arrest"]], "week", "arrest")
                expected = -2 * ref.log_likelihood_ + 2 * len(keep)
                assert r["aic"] == pytest.approx(fit_cox(rossi["week"], rossi["arrest"],
                                                         x[keep]).aic, rel=1e-10)
            else:
                expected = -2 * fit_cox(rossi["week"], rossi["arrest"], x).loglik_null
            assert r["aic"] == pytest.approx(expected, rel=1e-6), (step, r["term"])
        chosen = rows[rows["chosen"]].iloc[0]
        assert chosen["aic"] == rows["aic"].min()
        if chosen["term"] != "<none>":
            current.remove(chosen["term"][2:])
    assert tuple(current) == rossi_step.selected


def test_r_step_semantics(rossi_step):
    trace = rossi_step.trace
    last = trace[trace["step"] == trace["step"].max()]
    # stop rule: no drop lowers the AIC of the final model
    none_aic = last.loc[last["term"] == "<none>", "aic"].iloc[0]
    assert (last.loc[last["term"] != "<none>", "aic"] > none_aic).all()
    # each earlier step removed exactly the term with the lowest AIC, and AIC fell each step
    start = trace.loc[(trace["step"] == 0) & (trace["term"] == "<none>"), "aic"].iloc[0]
    per_step = trace[trace["chosen"]].sort_values("step")["aic"].to_numpy()
    assert np.all(np.diff(np.r_[start, per_step[:-1]]) < 0)
    assert trace[trace["chosen"]]["term"].iloc[-1] == "<none>"
    assert rossi_step.fit.aic == pytest.approx(none_aic, rel=1e-12)
    assert set(rossi_step.selected) < set(trace["term"].str[2:])


def test_planted_noise_variable_is_dropped():
    t, e, x = _planted()
    signals = x[["signal1", "signal2"]]
    lr_noise = 2 * (fit_cox(t, e, x).loglik - fit_cox(t, e, signals).loglik)
    assert lr_noise < 2.0  # precondition: with this seed the noise is pure noise to AIC
    res = stepwise_aic(t, e, x)
    assert res.selected == ("signal1", "signal2")
    first = res.trace[res.trace["chosen"] & (res.trace["step"] == 0)]
    assert first["term"].iloc[0] == "- noise"


def test_p_filter_refits_on_significant_terms():
    t, e, x = _planted()
    rng = np.random.default_rng(1)
    x = x.assign(weak=0.03 * x["signal1"] + rng.normal(size=len(t)))
    loose = stepwise_aic(t, e, x, k=0.0)  # k = 0 keeps every term (no drop lowers -2 loglik)
    assert loose.selected == tuple(x.columns)
    strict = stepwise_aic(t, e, x, k=0.0, p_filter=0.05)
    expected = [c for c in x.columns if loose.fit.params.loc[c, "p"] < 0.05]
    assert strict.selected == tuple(expected)
    assert strict.aic_selected == loose.selected
    assert strict.fit.loglik == pytest.approx(fit_cox(t, e, x[expected]).loglik, rel=1e-12)


def test_selection_frequency_is_deterministic_and_stable_for_strong_signal():
    t, e, x = _planted(n=150)
    freq = selection_frequency(t, e, x, n_boot=20, rng=7)
    again = selection_frequency(t, e, x, n_boot=20, rng=7)
    pd.testing.assert_series_equal(freq, again)
    assert list(freq.index) == list(x.columns)
    assert freq["signal1"] == 1.0 and freq["signal2"] >= 0.8
    assert freq["noise"] < 0.5
    assert freq.attrs["n_boot"] == 20


def test_inputs_validated(rossi):
    x = rossi.drop(columns=["week", "arrest"])
    with pytest.raises(InputError, match="direction"):
        stepwise_aic(rossi["week"], rossi["arrest"], x, direction="forward")
    with pytest.raises(InputError, match="p_filter"):
        stepwise_aic(rossi["week"], rossi["arrest"], x, p_filter=1.5)
    with pytest.raises(InputError, match="n_boot"):
        selection_frequency(rossi["week"], rossi["arrest"], x, n_boot=0)
