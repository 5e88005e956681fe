"""Lazy ROI preprocessing: boxes, resampling, tracking, crop/resize, phases, TICs (docs/preprocess.md).

Submodules are the namespaces: ``roi``, ``resample``, ``track``, ``crop``, ``phases``, ``tic``,
``patient`` (one patient's plan and lazy graph) and ``cohort`` (``preprocess_cohort``).
Importing this package imports nothing heavy.
"""
