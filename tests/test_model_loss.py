from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp
from statsmodels.duration.hazard_regression import PHReg

from ceusflow.errors import InputError
from ceusflow.model.loss import cox_nll

torch.set_num_threads(1)


def _cohort(n: int, seed: int, scale: float = 1.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    lp = rng.normal(0.0, scale, n)
    duration = rng.integers(1, max(2, n // 4), n).astype(float)  # many ties
    event = rng.random(n) < 0.6
    return lp, duration, event


def _statsmodels(lp: np.ndarray, duration: np.ndarray, event: np.ndarray, ties: str) -> float:
    model = PHReg(duration, exog=lp[:, None], status=event.astype(float), ties=ties)
    return float(model.loglike(np.array([1.0])))


def _reference(lp: np.ndarray, duration: np.ndarray, event: np.ndarray, ties: str) -> float:
    """Textbook loop over distinct event times, in log space (float64)."""
    total = 0.0
    for t in np.unique(duration[event]):
        dead = event & (duration == t)
        d = dead.sum()
        log_risk = logsumexp(lp[duration >= t])
        log_dead = logsumexp(lp[dead])
        total += lp[dead].sum()
        if ties == "breslow":
            total -= d * log_risk
        else:
            ls = np.arange(d) / d
            total -= np.sum(log_risk + np.log1p(-ls * np.exp(log_dead - log_risk)))
    return total


def _ours(lp, duration, event, ties="efron", dtype=torch.float64, reduction="sum") -> float:
    return -float(cox_nll(torch.tensor(lp, dtype=dtype), torch.tensor(duration),
                          torch.tensor(event), ties=ties, reduction=reduction))


@pytest.mark.parametrize("ties", ["efron", "breslow"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_statsmodels_float64(ties, seed):
    lp, duration, event = _cohort(300, seed)
    ref = _statsmodels(lp, duration, event, ties)
    assert _ours(lp, duration, event, ties) == pytest.approx(ref, rel=1e-9)


@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_equals_statsmodels_float32(ties):
    lp, duration, event = _cohort(300, 3)
    ref = _statsmodels(lp, duration, event, ties)
    assert _ours(lp, duration, event, ties, dtype=torch.float32) == pytest.approx(ref, rel=1e-5)


def test_no_ties_efron_equals_breslow():
    rng = np.random.default_rng(4)
    lp, duration, event = rng.normal(size=50), rng.random(50), rng.random(50) < 0.5
    assert _ours(lp, duration, event, "efron") == pytest.approx(_ours(lp, duration, event, "breslow"),
                                                                 rel=1e-12)


def test_mean_divides_by_number_of_events():
    lp, duration, event = _cohort(80, 5)
    total = _ours(lp, duration, event, reduction="sum")
    assert _ours(lp, duration, event, reduction="mean") == pytest.approx(total / event.sum(), rel=1e-12)


@pytest.mark.parametrize("ties", ["efron", "breslow"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_extreme_log_hazards_finite_and_correct(ties, dtype):
    lp, duration, event = _cohort(200, 6, scale=60.0)  # |log-hazard| well beyond 90
    lp[:5] = [95.0, -95.0, 200.0, -1000.0, 1000.0]
    x = torch.tensor(lp, dtype=dtype, requires_grad=True)
    loss = cox_nll(x, torch.tensor(duration), torch.tensor(event), ties=ties, reduction="sum")
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
    ref = _reference(lp, duration, event, ties)
    assert -float(loss.detach()) == pytest.approx(ref, rel=1e-9 if dtype == torch.float64 else 1e-5)


def test_shift_by_thousand_is_invariant():
    lp, duration, event = _cohort(100, 7)
    assert _ours(lp + 1000.0, duration, event) == pytest.approx(_ours(lp, duration, event), rel=1e-9)


@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_gradcheck_float64(ties):
    lp, duration, event = _cohort(30, 8)
    x = torch.tensor(lp, requires_grad=True)
    d, e = torch.tensor(duration), torch.tensor(event)
    assert torch.autograd.gradcheck(lambda v: cox_nll(v, d, e, ties=ties), (x,))


def test_no_events_is_zero_with_zero_gradient():
    x = torch.randn(5, dtype=torch.float64, requires_grad=True)
    loss = cox_nll(x, torch.arange(5.0), torch.zeros(5, dtype=torch.bool))
    loss.backward()
    assert float(loss.detach()) == 0.0 and torch.equal(x.grad, torch.zeros(5, dtype=torch.float64))


@pytest.mark.parametrize("event", [True, False])
def test_one_sample_is_zero(event):
    x = torch.tensor([3.0], requires_grad=True)
    loss = cox_nll(x, torch.tensor([2.0]), torch.tensor([event]))
    loss.backward()
    assert float(loss.detach()) == 0.0 and float(x.grad[0]) == 0.0


def test_empty_batch_is_zero():
    assert float(cox_nll(torch.zeros(0), torch.zeros(0), torch.zeros(0, dtype=torch.bool))) == 0.0


def test_float64_durations_are_not_rounded():
    # 1 + 1e-12 and 1 tie in float32 but not in float64: the loss must see them as distinct
    lp = np.array([0.3, -0.2, 0.5, 0.1])
    duration = np.array([1.0, 1.0 + 1e-12, 2.0, 3.0])
    event = np.array([True, True, True, False])
    distinct = _statsmodels(lp, duration, event, "efron")
    tied = _statsmodels(lp, np.array([1.0, 1.0, 2.0, 3.0]), event, "efron")
    assert distinct != pytest.approx(tied, rel=1e-6)
    assert _ours(lp, duration, event) == pytest.approx(distinct, rel=1e-12)


def test_column_vector_and_half_precision_accepted():
    lp, duration, event = _cohort(40, 9)
    x = torch.tensor(lp, dtype=torch.bfloat16)[:, None]
    loss = cox_nll(x, torch.tensor(duration), torch.tensor(event))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_bad_arguments_raise_input_error():
    x, d, e = torch.zeros(3), torch.ones(3), torch.ones(3, dtype=torch.bool)
    with pytest.raises(InputError, match="ties"):
        cox_nll(x, d, e, ties="exact")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="reduction"):
        cox_nll(x, d, e, reduction="none")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="shape"):
        cox_nll(x, torch.ones(4), e)


@st.composite
def _batches(draw):
    n = draw(st.integers(1, 30))
    lp = draw(st.lists(st.floats(-20, 20), min_size=n, max_size=n))
    dur = draw(st.lists(st.integers(0, 6), min_size=n, max_size=n))  # integers: ties are likely
    ev = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    return np.array(lp), np.array(dur, dtype=float), np.array(ev)


@settings(max_examples=60, deadline=None)
@given(_batches(), st.randoms(use_true_random=False), st.sampled_from(["efron", "breslow"]))
def test_invariant_to_row_permutation(batch, rnd, ties):
    lp, duration, event = batch
    perm = np.array(rnd.sample(range(lp.size), lp.size))
    a = _ours(lp, duration, event, ties)
    assert _ours(lp[perm], duration[perm], event[perm], ties) == pytest.approx(a, rel=1e-10, abs=1e-10)


@settings(max_examples=60, deadline=None)
@given(_batches(), st.floats(-100, 100), st.sampled_from(["efron", "breslow"]))
def test_invariant_to_constant_shift(batch, shift, ties):
    lp, duration, event = batch
    a = _ours(lp, duration, event, ties)
    assert _ours(lp + shift, duration, event, ties) == pytest.approx(a, rel=1e-9, abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(_batches(), st.sampled_from(["efron", "breslow"]))
def test_matches_reference_loop(batch, ties):
    lp, duration, event = batch
    assert _ours(lp, duration, event, ties) == pytest.approx(_reference(lp, duration, event, ties),
                                                             rel=1e-9, abs=1e-9)
