"""Synthetic CEUS cohorts in the hospital-export layout, with known ground truth.

The pure generators live in :mod:`.cohort` (patients and outcomes), :mod:`.perfusion`
(time–intensity curves), :mod:`.scene` and :mod:`.render` (images); :mod:`.dicom_writer` and
:mod:`.export` are the only modules that write files.
"""

from ceusflow.simulate.cohort import oracle_summary, simulate_patients
from ceusflow.simulate.export import (
    SimulationConfig,
    SimulationResult,
    truth_dir_for,
    write_synthetic_export,
)

__all__ = [
    "SimulationConfig",
    "SimulationResult",
    "oracle_summary",
    "simulate_patients",
    "truth_dir_for",
    "write_synthetic_export",
]
