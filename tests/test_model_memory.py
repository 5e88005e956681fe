from __future__ import annotations

import ctypes

import numpy as np
import pytest

from ceusflow.model._memory import _glibc, reuse_freed_memory


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _mmapped_bytes(libc: ctypes.CDLL) -> int:
    libc.mallinfo2.restype = _Mallinfo2
    return int(libc.mallinfo2().hblkhd)


@pytest.mark.skipif(_glibc() is None or not hasattr(_glibc(), "mallinfo2"), reason="glibc >= 2.33 only")
def test_large_allocations_come_from_the_heap_only_inside_the_context():
    libc = _glibc()
    size = 64 << 20  # above glibc's largest mmap threshold (32 MiB)

    def mmapped_by_one_allocation() -> int:
        before = _mmapped_bytes(libc)
        block = np.ones(size, dtype=np.uint8)
        grown = _mmapped_bytes(libc) - before
        del block
        return grown

    assert mmapped_by_one_allocation() >= size  # default glibc: a fresh mapping (page faults each time)
    with reuse_freed_memory() as tuned:
        assert tuned
        assert mmapped_by_one_allocation() == 0  # served from the heap, reused after free
    assert mmapped_by_one_allocation() >= size  # restored on exit


def test_no_op_without_glibc(monkeypatch):
    import ceusflow.model._memory as memory

    monkeypatch.setattr(memory, "_glibc", lambda: None)
    with reuse_freed_memory() as tuned:
        assert tuned is False
