"""Keep freed memory in the process while training on a CPU (glibc only).

Every training step allocates and frees large tensors: batches of 30-240 MB, activations, gradients.
glibc serves allocations above its mmap threshold (at most 32 MiB) with fresh ``mmap`` pages and
returns them on ``free``, so each step pays a page fault per 4 KiB page it touches again. On the
2-core machine this was half the time of a ``cpu``-profile step: 33 patients/s with the default
allocator, 67 with mmap disabled and trimming raised (``docs/model.md``, session 7). PyTorch's
performance guide recommends jemalloc or tcmalloc for the same reason; ``mallopt`` gets the effect
without preloading a library. Settings are restored, and the freed memory returned to the system,
when the context exits. Elsewhere (macOS, Windows, musl) this is a no-op. The settings are
process-wide: a second training running in another thread of the same process is merely slower
once the first one has restored them.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import sys
from collections.abc import Iterator

# mallopt parameters (glibc malloc.h) and their defaults.
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_DEFAULT_TRIM, _DEFAULT_MMAP_MAX = 128 * 1024, 65536
#: Free memory above this much at the top of the heap is still returned while training.
_KEEP_BYTES = 1 << 30


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - present in glibc only
        return libc
    except (OSError, AttributeError):
        return None


@contextlib.contextmanager
def reuse_freed_memory() -> Iterator[bool]:
    """Serve large allocations from the heap and keep freed memory for reuse, inside the context.

    Yields
    ------
    bool
        Whether the allocator was tuned (glibc) or left alone.
    """
    libc = _glibc()
    if libc is None or not (libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES)):
        yield False
        return
    try:
        yield True
    finally:
        libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
        libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM)
        libc.malloc_trim(0)
