"""The data contract: dimension names, units and variable names shared by every stage.

=================  ===============================  =============================================
object             dims                             notes
=================  ===============================  =============================================
cine (one exam)    ``time, y, x``                   ``time`` in s since the exam's first frame,
                                                    ``y``/``x`` in mm; name ``intensity`` (uint8)
ROI cohort         ``patient, phase, time, y, x``   ``intensity`` float32 in [0, 1]; ``frame_ok``
                                                    bool (patient, phase, time)
outcomes           ``patient``                      ``duration`` (months), ``event`` (bool),
                                                    ``treatment`` in {"RFA", "SR"}, covariates
risk               ``patient``                      name ``risk``; higher = earlier event
=================  ===============================  =============================================

The follow-up time is called ``duration``, never ``time``: ``time`` is the cine axis.
"""

from __future__ import annotations

from typing import Final

import numpy as np

PATIENT: Final = "patient"
PHASE: Final = "phase"
TIME: Final = "time"
Y: Final = "y"
X: Final = "x"

CINE_DIMS: Final = (TIME, Y, X)
COHORT_DIMS: Final = (PATIENT, PHASE, TIME, Y, X)

INTENSITY: Final = "intensity"
FRAME_OK: Final = "frame_ok"
#: Per-frame coordinate of a cine: the index of the clip (DICOM file) the frame came from.
CLIP: Final = "clip"
DURATION: Final = "duration"
EVENT: Final = "event"
TREATMENT: Final = "treatment"
RISK: Final = "risk"

TREATMENTS: Final = ("RFA", "SR")
PHASES: Final = ("AP", "PP", "VP")
#: Phase windows in seconds after injection: arterial, portal venous, late (Liu et al. 2020 use the
#: 3-minute cine; boundaries follow the EFSUMB 2020 liver CEUS guideline: AP 10-45 s, PP 45-120 s,
#: late > 120 s).
PHASE_WINDOWS_S: Final = {"AP": (0.0, 45.0), "PP": (45.0, 120.0), "VP": (120.0, 180.0)}

UNITS: Final = {TIME: "s", Y: "mm", X: "mm", DURATION: "month"}

#: Columns of clinical.csv, in order (the input layout of docs/data-formats.md).
CLINICAL_COLUMNS: Final = (
    "patient_id", "treatment", "pfs_months", "progression",
    "age", "sex", "etiology", "cirrhosis", "ecog", "afp", "alt", "tbil", "pt", "alb",
    "wbc", "plt", "tumor_size_cm", "perivascular", "periphery", "albi_grade",
)
ROI_COLUMNS: Final = ("patient_id", "t_s", "x0", "y0", "x1", "y1")


def as_text(values: object) -> np.ndarray:
    """Labels as a fixed-width ``str`` array, whatever their storage.

    Zarr v3 string arrays come back as NumPy's variable-width ``StringDType``, which NumPy 2.4
    refuses to cast with a bare ``astype(str)``; going through ``object`` works for it, for fixed
    width ``U`` arrays and for object arrays alike.
    """
    return np.asarray(values, dtype=object).astype(str)
