"""Run one function per patient: in-process, on local single-threaded processes, or on a cluster.

The only place that chooses a Dask/concurrency back end for per-patient work (convert,
preprocess). Library functions take ``workers``/``scheduler`` and pass them here; they never
create a cluster themselves.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def _single_thread() -> None:
    """Worker initialiser: one thread per process (threads do not help decoding; processes scale)."""
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLOSC_NTHREADS"):
        os.environ[name] = "1"
    import numcodecs.blosc  # already imported when forked from a preloaded server: set it too

    numcodecs.blosc.set_nthreads(1)


def _context(fn: Callable[..., Any]) -> Any:
    """Fresh processes (never a fork of this possibly threaded one), started fast where possible.

    With ``forkserver`` one clean server process imports ``fn``'s module once and every worker
    is forked from it, instead of each spawned worker importing numpy/dask/xarray/zarr/pydicom
    again (~1.5 s of start-up each, a large share of a short run). Spawn elsewhere (Windows).
    """
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return get_context("spawn")
    context = get_context("forkserver")
    context.set_forkserver_preload(["__main__", fn.__module__])  # no effect once the server runs
    return context


def map_patients(fn: Callable[[T], R], tasks: Iterable[T], *, workers: int = 0, scheduler: Any = None,
                 name: Callable[[T], str] = str) -> Iterator[R]:
    """Yield ``fn(task)`` for every task, in completion order.

    Parameters
    ----------
    fn : callable
        Picklable function of one task (a module-level function).
    tasks : iterable
        Picklable task descriptions.
    workers : int
        0: in-process, in order; N: N spawned single-threaded processes.
    scheduler : str or distributed.Client, optional
        A dask.distributed scheduler address or Client; takes precedence over ``workers``.
    name : callable
        Task -> key prefix shown on the distributed dashboard.
    """
    tasks = list(tasks)
    if scheduler is not None:
        yield from _distributed(fn, tasks, scheduler, name)
    elif workers > 0:
        with ProcessPoolExecutor(workers, mp_context=_context(fn), initializer=_single_thread) as pool:
            for future in as_completed([pool.submit(fn, t) for t in tasks]):
                yield future.result()
    else:
        yield from map(fn, tasks)


def _distributed(fn: Callable[[T], R], tasks: list[T], scheduler: Any, name: Callable[[T], str]) -> Iterator[R]:
    from distributed import Client
    from distributed import as_completed as completed

    client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
    try:
        futures = [client.submit(fn, t, key=name(t), pure=False) for t in tasks]
        for future in completed(futures):
            yield future.result()
    finally:
        if client is not scheduler:
            client.close()
