"""Per-patient parallel map: same results as in-process, single-threaded fresh workers."""

from __future__ import annotations

import os

from ceusflow.parallel import map_patients


def _describe(task: int) -> tuple[int, int, str, int]:
    import numcodecs.blosc

    return task * task, os.getpid(), os.environ.get("OMP_NUM_THREADS", ""), numcodecs.blosc.get_nthreads()


def test_workers_give_the_in_process_results_in_single_threaded_fresh_processes():
    local = sorted(r[0] for r in map_patients(_describe, range(6)))
    pooled = list(map_patients(_describe, range(6), workers=2))
    assert sorted(r[0] for r in pooled) == local
    assert {r[1] for r in pooled} - {os.getpid()} == {r[1] for r in pooled}  # not this process
    assert 1 <= len({r[1] for r in pooled}) <= 2
    assert {r[2] for r in pooled} == {"1"}  # OpenMP, BLAS and Blosc held to one thread
    assert {r[3] for r in pooled} == {1}
