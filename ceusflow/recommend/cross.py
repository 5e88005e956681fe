"""Cross-stratification of one treatment group by its own and by the other treatment's model.

Liu et al. 2020 ("Cross Stratification Using R-RFA and R-SR in Swapped Groups"): the RFA group
is stratified into low/high risk by R-RFA (``oriLR``/``oriHR``) and again by R-SR
(``reLR``/``reHR``), each model with the cut-point chosen on *its own* training set; likewise
the SR group by R-SR (ori) and R-RFA (re). The two stratifications give four subgroups; the
patients in ``oriHR ∩ reLR`` (high risk under the treatment received, low risk under the other)
are the swap candidates, whose 2-year PFS under both nomograms is compared by a paired t-test.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy import stats

from ceusflow.errors import InputError
from ceusflow.recommend._inputs import aligned, vector
from ceusflow.survival.cutpoint import stratify

#: The four subgroups, in the order of the paper's Fig. 5 (ori stratum first).
SUBGROUPS = ("oriLR-reLR", "oriLR-reHR", "oriHR-reLR", "oriHR-reHR")


@dataclass(frozen=True)
class MannWhitney:
    """Two-sided Mann–Whitney U test of a signature between the high- and low-risk strata.

    Attributes
    ----------
    statistic : float
        ``U`` of the high-risk stratum (``scipy.stats.mannwhitneyu(high, low)``); NaN when a
        stratum is empty.
    p_value : float
        Two-sided p-value (scipy's ``method="auto"``: exact for small strata without ties).
    n_high, n_low : int
        Patients in the high- and low-risk strata.
    median_high, median_low : float
        Median signature in each stratum (signature units).
    signature : {"own", "other"}
        Which model's signature is compared.
    strata : {"ori", "re"}
        Which stratification defines the two strata.
    """

    statistic: float
    p_value: float
    n_high: int
    n_low: int
    median_high: float
    median_low: float
    signature: str
    strata: str


@dataclass(frozen=True)
class CrossStratification:
    """Two stratifications of one treatment group and their four subgroups.

    Attributes
    ----------
    patient : ndarray (n,)
        Patient labels (Series index / ``patient`` coord of the inputs, else ``0..n-1``).
    signature_own, signature_other : ndarray (n,)
        The group's own model's and the other treatment's model's signatures (higher = higher
        risk), signature units.
    cut_own, cut_other : float
        Training-set cut-points of each model (high risk = signature > cut).
    ori_high, re_high : ndarray (n,) of bool
        High risk by the own model (ori) and by the other model (re).
    table : DataFrame
        Indexed by subgroup (``SUBGROUPS`` order) with columns ``ori`` and ``re`` (``"LR"``/``"HR"``),
        ``n``, ``share`` (of the group) and ``share_of_ori`` (of the ori stratum; the
        percentages printed in the paper's Fig. 5a/c).
    mwu_ori : MannWhitney
        Own signature, oriHR vs oriLR.
    mwu_re : MannWhitney
        Other model's signature, reHR vs reLR: the paper's test of the re-stratification
        ("the second stratifications ... achieved significant differences in hazards").
    mwu_re_own : MannWhitney
        Own signature, reHR vs reLR: whether the other model's strata also differ in the
        hazard of the treatment actually received (not in the paper; not separated by
        construction, unlike ``mwu_re``).
    """

    patient: NDArray[Any]
    signature_own: NDArray[np.float64]
    signature_other: NDArray[np.float64]
    cut_own: float
    cut_other: float
    ori_high: NDArray[np.bool_]
    re_high: NDArray[np.bool_]
    table: pd.DataFrame
    mwu_ori: MannWhitney
    mwu_re: MannWhitney
    mwu_re_own: MannWhitney

    @property
    def swap(self) -> NDArray[np.bool_]:
        """Swap candidates: high risk by the own model and low risk by the other (oriHR ∩ reLR)."""
        return self.ori_high & ~self.re_high

    @property
    def subgroup(self) -> pd.Series:
        """Subgroup label of every patient (values of ``SUBGROUPS``), indexed by patient."""
        code = 2 * self.ori_high.astype(int) + self.re_high.astype(int)
        return pd.Series(np.asarray(SUBGROUPS)[code], index=pd.Index(self.patient, name="patient"),
                         name="subgroup")

    @property
    def n(self) -> int:
        """Patients in the group."""
        return int(self.patient.size)

    @property
    def n_swap(self) -> int:
        """Number of swap candidates."""
        return int(self.swap.sum())

    @property
    def swap_share(self) -> float:
        """Swap candidates as a share of the whole group (paper: 17.3 % RFA, 27.3 % SR)."""
        return self.n_swap / self.n

    @property
    def swap_share_of_ori_high(self) -> float:
        """Swap candidates as a share of the ori high-risk stratum (paper: 63.8 % RFA, 60.2 % SR)."""
        n_high = int(self.ori_high.sum())
        return self.n_swap / n_high if n_high else float("nan")


def mann_whitney(score: NDArray[np.float64], high: NDArray[np.bool_], *, signature: str,
                 strata: str) -> MannWhitney:
    """Two-sided Mann–Whitney U of ``score[high]`` vs ``score[~high]`` (scipy), NaN if one is empty.

    Parameters
    ----------
    score : ndarray (n,)
        Signature values, signature units.
    high : ndarray (n,) of bool
        High-risk stratum indicator.
    signature, strata : str
        Labels recorded in the result (``"own"``/``"other"``, ``"ori"``/``"re"``).

    Returns
    -------
    MannWhitney
        ``U`` of the high stratum, the two-sided p-value, stratum sizes and medians.
    """
    hi, lo = score[high], score[~high]
    if hi.size == 0 or lo.size == 0:
        stat, p = float("nan"), float("nan")
    else:
        res = stats.mannwhitneyu(hi, lo, alternative="two-sided")
        stat, p = float(res.statistic), float(res.pvalue)
    med = [float(np.median(x)) if x.size else float("nan") for x in (hi, lo)]
    return MannWhitney(stat, p, int(hi.size), int(lo.size), med[0], med[1], signature, strata)


def _table(ori_high: NDArray[np.bool_], re_high: NDArray[np.bool_]) -> pd.DataFrame:
    counts = np.array([np.sum((ori_high == o) & (re_high == r)) for o in (False, True) for r in (False, True)])
    ori_n = np.repeat([np.sum(~ori_high), np.sum(ori_high)], 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        share_of_ori = np.where(ori_n > 0, counts / np.maximum(ori_n, 1), np.nan)
    return pd.DataFrame({"ori": ["LR", "LR", "HR", "HR"], "re": ["LR", "HR", "LR", "HR"], "n": counts,
                         "share": counts / ori_high.size, "share_of_ori": share_of_ori},
                        index=pd.Index(SUBGROUPS, name="subgroup"))


def cross_stratify(signature_own: Any, signature_other: Any, cut_own: float,
                   cut_other: float) -> CrossStratification:
    """Stratify one treatment group by its own model (ori) and by the other treatment's model (re).

    Parameters
    ----------
    signature_own : array-like, Series or DataArray (patient)
        Signature of the model trained on this group's treatment (e.g. R-RFA for the RFA group),
        higher = higher risk.
    signature_other : array-like, Series or DataArray (patient)
        Signature of the other treatment's model for the same patients (R-SR for the RFA group).
        Labelled inputs are aligned on patient labels.
    cut_own, cut_other : float
        Each model's cut-point chosen on *that model's* training set (``Cutpoint.threshold``);
        high risk = signature > cut (:func:`ceusflow.survival.stratify`).

    Returns
    -------
    CrossStratification
        Both stratifications, the four-subgroup table, the Mann–Whitney tests and the swap
        candidates (``.swap``: oriHR ∩ reLR).

    Raises
    ------
    InputError
        On empty, misaligned or non-finite inputs or non-finite cut-points.
    """
    labels, (own, other) = aligned({"signature_own": signature_own, "signature_other": signature_other})
    own, other = vector(own, "signature_own"), vector(other, "signature_other")
    if own.size == 0:
        raise InputError("signature_own", "no patients", "pass at least one patient")
    ori_high, re_high = stratify(own, cut_own), stratify(other, cut_other)
    return CrossStratification(
        np.asarray(labels), own, other, float(cut_own), float(cut_other), ori_high, re_high,
        _table(ori_high, re_high),
        mann_whitney(own, ori_high, signature="own", strata="ori"),
        mann_whitney(other, re_high, signature="other", strata="re"),
        mann_whitney(own, re_high, signature="own", strata="re"),
    )


@dataclass(frozen=True)
class SwapBenefit:
    """Both nomograms' 2-year PFS for the swap candidates of one group, compared pairwise.

    Attributes
    ----------
    patient : ndarray (m,)
        Labels of the candidates.
    pfs2y_own, pfs2y_other : ndarray (m,)
        Predicted 2-year PFS under the treatment received (own nomogram) and under the other
        treatment (other nomogram), probabilities.
    n : int
        Number of candidates ``m``.
    mean_own, sd_own, mean_other, sd_other : float
        Mean and SD (ddof=1) of each prediction (the paper reports "0.62 ± 0.10 to 0.74 ± 0.01").
    mean_gain, gain_low, gain_high : float
        Mean of ``pfs2y_other - pfs2y_own`` and its paired-t 95 % (``level``) CI, probability units.
    t_statistic, t_p_value : float
        Paired t-test ``scipy.stats.ttest_rel(other, own)`` (the paper's test), two-sided.
    wilcoxon_statistic, wilcoxon_p_value : float
        Wilcoxon signed-rank test ``scipy.stats.wilcoxon(other, own)``, two-sided; NaN when
        every difference is zero.
    level : float
        Confidence level of the CI.

    Notes
    -----
    Every test is NaN with fewer than two candidates.
    """

    patient: NDArray[Any]
    pfs2y_own: NDArray[np.float64]
    pfs2y_other: NDArray[np.float64]
    n: int
    mean_own: float
    sd_own: float
    mean_other: float
    sd_other: float
    mean_gain: float
    gain_low: float
    gain_high: float
    t_statistic: float
    t_p_value: float
    wilcoxon_statistic: float
    wilcoxon_p_value: float
    level: float


def _candidate_mask(candidates: Any, n: int, labels: NDArray[Any]) -> NDArray[np.bool_]:
    if isinstance(candidates, CrossStratification):
        candidates = pd.Series(candidates.swap, index=candidates.patient)
    _, (mask,) = aligned({"candidates": candidates}, reference=labels)
    mask = np.asarray(mask)
    if mask.dtype != bool or mask.size != n:
        raise InputError("candidates", "must be a boolean mask, one value per patient",
                         "pass CrossStratification.swap")
    return mask


def _paired_tests(own: NDArray[np.float64], other: NDArray[np.float64]) -> tuple[float, float, float, float]:
    nan = float("nan")
    if own.size < 2:
        return nan, nan, nan, nan
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # zero-variance differences: scipy's inf/NaN
        t = stats.ttest_rel(other, own)
        w = stats.wilcoxon(other, own) if np.any(other != own) else None
    w_stat, w_p = (nan, nan) if w is None else (float(w.statistic), float(w.pvalue))
    return float(t.statistic), float(t.pvalue), w_stat, w_p


def _mean_ci(diff: NDArray[np.float64], level: float) -> tuple[float, float, float]:
    if diff.size < 2:
        mean = float(diff.mean()) if diff.size else float("nan")
        return mean, float("nan"), float("nan")
    half = stats.t.ppf(0.5 + level / 2, diff.size - 1) * diff.std(ddof=1) / np.sqrt(diff.size)
    return float(diff.mean()), float(diff.mean() - half), float(diff.mean() + half)


def _mean_sd(x: NDArray[np.float64]) -> tuple[float, float]:
    return (float(x.mean()) if x.size else float("nan"),
            float(x.std(ddof=1)) if x.size > 1 else float("nan"))


def swap_benefit(pfs2y_own: Any, pfs2y_other: Any, candidates: Any, *, level: float = 0.95) -> SwapBenefit:
    """Compare both nomograms' 2-year PFS for the swap candidates of one group (paired tests).

    Parameters
    ----------
    pfs2y_own : array-like, Series or DataArray (patient)
        2-year PFS predicted by the nomogram of the treatment received, for every patient of the
        group, probability.
    pfs2y_other : array-like, Series or DataArray (patient)
        2-year PFS predicted by the other treatment's nomogram for the same patients.
    candidates : bool array-like (patient) or CrossStratification
        Swap candidates (``CrossStratification.swap``), aligned like the predictions.
    level : float
        Confidence level of the CI of the mean gain.

    Returns
    -------
    SwapBenefit
        Candidates' predictions, mean ± SD of each, mean gain (other - own) with its paired-t CI,
        the paired t-test and the Wilcoxon signed-rank test.
    """
    if not 0 < level < 1:
        raise InputError("level", f"must be in (0, 1), got {level}", "use 0.95")
    labels, (own, other) = aligned({"pfs2y_own": pfs2y_own, "pfs2y_other": pfs2y_other})
    own, other = vector(own, "pfs2y_own"), vector(other, "pfs2y_other")
    mask = _candidate_mask(candidates, own.size, np.asarray(labels))
    own, other = own[mask], other[mask]
    gain = _mean_ci(other - own, level)
    return SwapBenefit(np.asarray(labels)[mask], own, other, int(mask.sum()), *_mean_sd(own), *_mean_sd(other),
                       *gain, *_paired_tests(own, other), level)
