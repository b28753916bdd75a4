"""Give freed memory back to the operating system between the steps of a run.

A long run allocates and frees gigabytes per step (a block's build, a model's fold copies). Without help much of
it stays in the process: pyarrow's allocator (mimalloc) keeps what a parquet read used, and glibc keeps freed
blocks in its arenas. Each step then starts from the previous step's high-water mark, and a full-size run's peak
is the sum, not the largest step. :func:`release` empties pyarrow's pool and asks glibc to trim; it is called
after every block, every model matrix and every fold (BENCHMARKS.md "Scale" shows the effect). After a whole
step (a block, a model) on large data it also runs Python's cycle collector: pandas frames sit in reference
cycles that reference counting never frees (hundreds of MB at 200k rows after loading or after the graph block),
and the automatic collector seldom reaches them. Not per fold and not on small data: a full collection costs
about half a second once torch and the GBDT libraries are loaded (minutes over a test suite's thousands of folds).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
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


# from this many rows a step's cyclic garbage outweighs a collection's half second
COLLECT_FROM_ROWS = 50_000


def worth_collecting(n_rows: int) -> bool:
    return n_rows >= COLLECT_FROM_ROWS


def release(collect: bool = False) -> None:
    """Hand freed memory back to the operating system where the allocators allow it (cheap: milliseconds);
    ``collect``: free reference cycles first (half a second: after whole steps on large data only)."""
    if collect:
        gc.collect()
    pyarrow = sys.modules.get("pyarrow")
    if pyarrow is not None:
        pyarrow.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
