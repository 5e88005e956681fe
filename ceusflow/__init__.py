"""ceusflow: CEUS cines to validated survival models and treatment recommendations.

Reproduces, as a reusable toolkit, the method of Liu et al. 2020 (Liver Cancer,
doi 10.1159/000505694). ``import ceusflow`` is light: torch is imported only by
``ceusflow.model``.
"""

from ceusflow.errors import CeusflowError, InputError
from ceusflow.simulate import SimulationConfig, write_synthetic_export

__version__ = "0.1.0"

__all__ = [
    "CeusflowError",
    "InputError",
    "SimulationConfig",
    "__version__",
    "write_synthetic_export",
]
