"""Run a whole study: configuration, stage cache, analysis (``run_study`` in :mod:`.run`)."""
