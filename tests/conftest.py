"""Suite-wide settings: property tests draw the same examples on every run (CI must not flake).

Set ``HYPOTHESIS_PROFILE=explore`` to draw fresh random examples locally.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None)
settings.register_profile("explore", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
