"""Give freed memory back to the operating system between the steps of a run.

A long run allocates and frees gigabytes per step (a block's build, a model's fold copies). Without help much of
it stays in the process: pyarrow's allocator (mimalloc) keeps what a parquet read used, and glibc keeps freed
blocks in its arenas. Each step then starts from the previous step's high-water mark, and a full-size run's peak
is the sum, not the largest step. :func:`release` empties pyarrow's pool and asks glibc to trim; it is called
after every block, every model matrix and every fold (BENCHMARKS.md "Scale" shows the effect). It does not run
Python's cycle collector: the arrays are freed by reference counting, and a full collection costs about half a
second once torch and the GBDT libraries are loaded (minutes over a test suite's thousands of folds).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys
from functools import cache


@cache
def _malloc_trim():
    """glibc's ``malloc_trim`` (Linux), or None where the C library has none (macOS, musl)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


def release() -> None:
    """Hand freed memory back to the operating system where the allocators allow it (cheap: milliseconds)."""
    pyarrow = sys.modules.get("pyarrow")
    if pyarrow is not None:
        pyarrow.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
