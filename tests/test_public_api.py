"""The top-level API: every listed name resolves, and importing ceusflow stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

import ceusflow


@pytest.mark.parametrize("name", [n for n in ceusflow.__all__ if n != "__version__"])
def test_public_name_resolves(name: str) -> None:
    assert getattr(ceusflow, name) is not None


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError):
        ceusflow.no_such_thing  # noqa: B018


def test_import_is_light() -> None:
    heavy = "('torch', 'xarray', 'dask', 'matplotlib')"
    code = f"import sys, ceusflow; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
