"""Survival statistics as pure functions, each checked against an established reference.

Conventions (stated once, tested everywhere): ``risk`` means higher = earlier event; ties in
Cox models are Efron's unless asked otherwise; times are in the caller's unit (months in
ceusflow). Methods and references: ``docs/statistics.md`` and ``docs/statistics-regression.md``.
"""

from ceusflow.survival.calibration import (
    calibrate_bootstrap,
    calibration,
    gronnesby_borgan,
    hosmer_lemeshow,
    plot_calibration,
)
from ceusflow.survival.concordance import compare_concordance, concordance
from ceusflow.survival.cox import fit_cox, linear_predictor, predict_survival
from ceusflow.survival.cutpoint import cutpoint, stratify
from ceusflow.survival.decision_curve import decision_curve, plot_decision_curve
from ceusflow.survival.forest import plot_forest
from ceusflow.survival.kaplan_meier import hazard_ratio, kaplan_meier, logrank, median_survival, survival_at
from ceusflow.survival.nomogram import nomogram, nomogram_points, plot_nomogram
from ceusflow.survival.plots_km import plot_kaplan_meier, plot_td_roc
from ceusflow.survival.stepwise import selection_frequency, stepwise_aic
from ceusflow.survival.table_one import balanced_split, table_one
from ceusflow.survival.td_auc import td_auc, td_roc

__all__ = [
    "balanced_split",
    "calibrate_bootstrap",
    "calibration",
    "compare_concordance",
    "concordance",
    "cutpoint",
    "decision_curve",
    "fit_cox",
    "gronnesby_borgan",
    "hazard_ratio",
    "hosmer_lemeshow",
    "kaplan_meier",
    "linear_predictor",
    "logrank",
    "median_survival",
    "nomogram",
    "nomogram_points",
    "plot_calibration",
    "plot_decision_curve",
    "plot_forest",
    "plot_kaplan_meier",
    "plot_nomogram",
    "plot_td_roc",
    "predict_survival",
    "selection_frequency",
    "stepwise_aic",
    "stratify",
    "survival_at",
    "table_one",
    "td_auc",
    "td_roc",
]
