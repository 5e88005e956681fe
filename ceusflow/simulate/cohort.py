"""Synthetic patients: clinical covariates, latent tumour traits, treatment and outcome.

Everything here is pure and vectorised over patients: ``simulate_patients(n, rng)`` returns one
DataFrame with the clinical table, the latent traits, both true log-hazards, both true 2-year PFS
probabilities and the observed outcome. Marginals follow Table 1 of Liu et al. 2020; effect sizes
and their rationale are in ``docs/simulator.md``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import optimize

#: Weibull shape of progression-free survival (hazard slowly rising with time).
WEIBULL_SHAPE = 1.15
#: Share of patients who progress during follow-up in each treatment group (paper: 43.0 / 43.9 %).
TARGET_EVENT_RATE = 0.43
#: Administrative censoring: follow-up uniformly between these bounds (months; paper: >= 24 months
#: for progression-free patients, median follow-up 67-92 months).
FOLLOW_UP_MONTHS = (24.0, 130.0)
HORIZON_MONTHS = 24.0

# Population moments used to standardise traits (fixed, so hazards do not depend on cohort size).
_TRAIT_MOMENTS = {
    "heterogeneity": (0.4, 0.2),  # Beta(2, 3)
    "washout": (0.0, 1.0),
    "peak_ratio": (np.log(1.8), 0.25),  # log of arterial peak blood-volume ratio
    "rim": (1 / 3, 0.178),  # Beta(2, 4)
    "satellites": (0.45, 0.7),
}


def _clinical(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Covariates with marginals close to the paper's Table 1 (pooled RFA + SR)."""
    alb = rng.normal(39.5, 4.5, n).clip(25, 55)
    tbil = rng.lognormal(2.72, 0.50, n).clip(3.5, 80)
    albi = 0.66 * np.log10(tbil) - 0.085 * alb
    return pd.DataFrame({
        "age": rng.normal(55.0, 11.0, n).clip(25, 85).round().astype(int),
        "sex": rng.choice(["M", "F"], n, p=[0.87, 0.13]),
        "etiology": rng.choice(["HBV", "HCV", "fatty", "other"], n, p=[0.86, 0.04, 0.015, 0.085]),
        "cirrhosis": (rng.random(n) < 0.53).astype(int),
        "ecog": (rng.random(n) < 0.20).astype(int),
        "afp": (10 ** rng.normal(1.6, 1.15, n)).clip(0.5, 60000).round(1),
        "alt": rng.lognormal(3.45, 0.82, n).clip(4, 450).round(1),
        "tbil": tbil.round(1),
        "pt": rng.normal(12.95, 1.5, n).clip(10.5, 25).round(1),
        "alb": alb.round(1),
        "wbc": rng.lognormal(1.64, 0.49, n).clip(1.0, 40).round(2),
        "plt": rng.gamma(5.2, 30.6, n).clip(15, 480).round().astype(int),
        "tumor_size_cm": rng.lognormal(np.log(2.05), 0.38, n).clip(0.8, 5.0).round(1),
        "perivascular": (rng.random(n) < 0.21).astype(int),
        "periphery": (rng.random(n) < 0.29).astype(int),
        "albi_grade": np.select([albi <= -2.60, albi <= -1.39], [1, 2], 3),
    })


def _traits(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Latent tumour traits visible in the cine (units in column names)."""
    early = rng.random(n) < 0.2  # a minority of HCC wash out early (< 60 s) and markedly
    return pd.DataFrame({
        "heterogeneity": rng.beta(2, 3, n),  # non-enhancing core radius / tumour radius (x0.7)
        "washout_onset_s": np.where(early, rng.uniform(35, 55, n), rng.uniform(60, 110, n)),
        "washout_degree": np.where(early, rng.uniform(0.75, 0.9, n), rng.uniform(0.5, 0.72, n)),
        "washout_tau_s": np.where(early, rng.uniform(12, 25, n), rng.uniform(25, 60, n)),
        "peak_ratio": np.exp(rng.normal(np.log(1.8), 0.25, n)),  # tumour / parenchyma blood volume
        "rim": rng.beta(2, 4, n),  # peritumoral arterial rim enhancement, 0-1
        "satellites": np.minimum(rng.poisson(0.45, n), 3),  # nodules within ~1 cm of the margin
    })


def _z(values: np.ndarray, name: str) -> np.ndarray:
    mean, sd = _TRAIT_MOMENTS[name]
    return (np.asarray(values, dtype=float) - mean) / sd


def washout_score(traits: pd.DataFrame) -> np.ndarray:
    """Standardised washout trait: higher = earlier, deeper, faster washout."""
    onset = -(traits["washout_onset_s"] - 75.0) / 22.0
    degree = (traits["washout_degree"] - 0.66) / 0.11
    speed = -(np.log(traits["washout_tau_s"]) - np.log(35.0)) / 0.45
    return ((onset + degree + speed) / np.sqrt(3 * 1.6)).to_numpy()


def true_log_hazards(clin: pd.DataFrame, traits: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """True log-hazards under RFA and under SR (before the baseline).

    RFA: mostly whole-tumour traits (heterogeneity, washout, arterial peak) plus age > 60,
    PLT < 100; SR: mostly periphery traits (rim, satellites) plus ALT > 40, ALB < 35 (the
    paper's Fig. 3 and its feature maps). Both share size > 2 cm, AFP >= 200 ng/mL and ECOG 1
    (tumour biology and fitness act under either treatment), which keeps the share of patients
    who would do better under the other treatment near the paper's 17-27 %.
    """
    big = (clin["tumor_size_cm"] > 2).to_numpy(float)
    shared = 0.45 * big + 0.5 * (clin["afp"] >= 200) + 0.3 * clin["ecog"]
    rfa_img, sr_img = imaging_log_hazards(traits)
    rfa = rfa_img + 0.5 * (clin["age"] > 60) + 0.5 * (clin["plt"] < 100) + shared
    sr = sr_img + 0.5 * (clin["alt"] > 40) + 0.55 * (clin["alb"] < 35) + shared
    return rfa.to_numpy(float), sr.to_numpy(float)


def imaging_log_hazards(traits: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The parts of the true log-hazards (RFA, SR) carried by the tumour traits seen on CEUS."""
    het, wash = _z(traits["heterogeneity"], "heterogeneity"), washout_score(traits)
    peak = _z(np.log(traits["peak_ratio"]), "peak_ratio")
    rim, sat = _z(traits["rim"], "rim"), _z(traits["satellites"], "satellites")
    rfa = 0.8 * het + 0.55 * wash + 0.3 * peak + 0.3 * rim
    sr = 0.8 * rim + 0.55 * sat + 0.3 * het + 0.2 * wash
    return np.asarray(rfa, float), np.asarray(sr, float)


#: How strongly the team's choice follows the (unobserved) true benefit: confounding by indication.
CHOICE_SKILL = 2.5


def _assign_treatment(
    clin: pd.DataFrame, benefit_sr: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Observational assignment: larger and peripheral tumours are more often resected.

    The multidisciplinary team also partly sees, on imaging, who would do better with resection
    (``benefit_sr`` = the CEUS-visible part of the log-hazard under RFA minus under SR), so most
    patients get the better treatment, as the paper's 17-27 % swap share implies. Clinical
    covariates do not enter the choice beyond size, location and cirrhosis, so they stay
    balanced between the groups, as in the paper's Table 1.
    """
    logit = (-0.1 + 0.3 * (clin["tumor_size_cm"] - 2.1) + 0.35 * clin["periphery"]
             - 0.3 * clin["cirrhosis"] + CHOICE_SKILL * benefit_sr)
    return np.where(rng.random(len(clin)) < 1 / (1 + np.exp(-logit)), "SR", "RFA")


def _event_share(log_scale: float, eta: np.ndarray) -> float:
    """Expected share of events given Weibull hazards and uniform administrative censoring."""
    lo, hi = FOLLOW_UP_MONTHS
    grid = np.linspace(lo, hi, 64)
    cum = np.exp(log_scale + eta)[:, None] * grid[None, :] ** WEIBULL_SHAPE
    return float(np.mean(1 - np.exp(-cum)))


def baseline_log_scale(eta: np.ndarray) -> float:
    """Weibull log-scale giving the target event share for log-hazards ``eta``."""
    return float(optimize.brentq(lambda s: _event_share(s, eta) - TARGET_EVENT_RATE, -30, 10))


def pfs_probability(eta: np.ndarray, log_scale: float, t: float = HORIZON_MONTHS) -> np.ndarray:
    """True PFS probability at ``t`` months for log-hazards ``eta``."""
    return np.exp(-np.exp(log_scale + eta) * t**WEIBULL_SHAPE)


def _outcome(eta: np.ndarray, log_scale: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    u = rng.random(eta.size)
    t_event = (-np.log(u) / np.exp(log_scale + eta)) ** (1 / WEIBULL_SHAPE)
    t_cens = rng.uniform(*FOLLOW_UP_MONTHS, eta.size)
    return np.minimum(t_event, t_cens).round(1).clip(0.1), (t_event <= t_cens).astype(int)


def simulate_patients(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Simulate ``n`` patients: clinical table, latent traits, truth and observed outcome.

    Parameters
    ----------
    n : int
        Number of patients.
    rng : numpy.random.Generator
        Random generator (the caller owns the seed).

    Returns
    -------
    pandas.DataFrame
        One row per patient: the clinical.csv covariates, ``treatment``, ``pfs_months``,
        ``progression``, the latent traits, ``log_hazard_rfa``/``log_hazard_sr`` (including the
        Weibull baseline log-scale), ``pfs24_rfa``/``pfs24_sr`` and ``better_treatment``.
    """
    clin, traits = _clinical(n, rng), _traits(n, rng)
    eta = dict(zip(("RFA", "SR"), true_log_hazards(clin, traits), strict=True))
    rfa_img, sr_img = imaging_log_hazards(traits)
    treatment = _assign_treatment(clin, rfa_img - sr_img, rng)
    scale = {k: baseline_log_scale(v[treatment == k]) if np.any(treatment == k) else baseline_log_scale(v)
             for k, v in eta.items()}
    received = np.where(treatment == "RFA", eta["RFA"] + scale["RFA"], eta["SR"] + scale["SR"])
    pfs, progression = _outcome(received, 0.0, rng)
    pfs24 = {k: pfs_probability(eta[k], scale[k]) for k in eta}
    truth = pd.DataFrame({
        "treatment": treatment, "pfs_months": pfs, "progression": progression,
        "log_hazard_rfa": eta["RFA"] + scale["RFA"], "log_hazard_sr": eta["SR"] + scale["SR"],
        "pfs24_rfa": pfs24["RFA"], "pfs24_sr": pfs24["SR"],
        "better_treatment": np.where(pfs24["RFA"] >= pfs24["SR"], "RFA", "SR"),
    })
    return pd.concat([clin, traits, truth], axis=1)


def oracle_summary(patients: pd.DataFrame) -> dict[str, float]:
    """Oracle C-index of the true log-hazard per treatment, event rate, follow-up, swap share."""
    from sksurv.metrics import concordance_index_censored

    out: dict[str, float] = {"n": float(len(patients)), "event_rate": float(patients["progression"].mean())}
    for arm in ("RFA", "SR"):
        g = patients[patients["treatment"] == arm]
        if g["progression"].sum() > 0 and len(g) > 1:
            eta = g[f"log_hazard_{arm.lower()}"].to_numpy()
            out[f"oracle_c_{arm}"] = concordance_index_censored(g["progression"].astype(bool), g["pfs_months"], eta)[0]
        out[f"swap_share_{arm}"] = float((g["better_treatment"] != arm).mean()) if len(g) else float("nan")
        out[f"n_{arm}"] = float(len(g))
    censored = patients.loc[patients["progression"] == 0, "pfs_months"]
    out["median_follow_up_months"] = float(censored.median()) if len(censored) else float("nan")
    out["swap_share"] = float((patients["better_treatment"] != patients["treatment"]).mean())
    return out


__all__ = ["simulate_patients", "oracle_summary", "true_log_hazards", "pfs_probability"]
