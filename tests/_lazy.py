"""Test helper shared by the preprocessing tests: assert that a block stays lazy."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import dask


@contextlib.contextmanager
def raise_if_dask_computes() -> Iterator[None]:
    """Like xarray's test helper: any dask compute inside the block raises."""
    def scheduler(dsk, keys, **kwargs):  # noqa: ANN001, ANN003, ANN202
        raise RuntimeError("dask computed inside a block that must stay lazy")
    with dask.config.set(scheduler=scheduler):
        yield
