"""Run one step of a run in a fresh process that exits when the step is done.

A long run's process keeps what its steps leave behind: glibc arenas fragmented by millions of small objects,
Python object arenas pinned by one live object, the libraries' pools and caches. At full size that residue
(hundreds of MB) adds to each later step's own needs. A step run by :func:`in_own_process` starts from a bare
interpreter and hands all of its memory back to the system when it exits. ``features.own_process = true``
(configs/avito-full.toml) builds the feature blocks this way (:func:`mmstack.pipeline.features_step`), so the
models train in a process whose heap the block builds never fragmented. Each model in a process of its own was
measured too, and was worse: every such process holds its own copy of the libraries (BENCHMARKS.md "Scale").

The function and its arguments are pickled to a spawned process (not forked: a fork inherits the parent's
OpenMP thread pools, which can hang in the child), so they must be importable and picklable; the result comes
back pickled, with the child's peak RSS. A child the system kills (out of memory) is reported as a
:class:`~mmstack.errors.MmstackError` naming the step, not as a broken pool.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import resource
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable

from .errors import MmstackError


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB: Linux's high-water mark (which :func:`reset_peak_rss` resets),
    else the lifetime peak ``getrusage`` reports."""
    try:
        with open("/proc/self/status") as fh:
            return int(fh.read().split("VmHWM:")[1].split()[0]) / 1024
    except (OSError, IndexError):
        scale = 1 if os.uname().sysname == "Linux" else 1024  # macOS reports bytes, Linux KB
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / scale


def reset_peak_rss() -> None:
    """Reset the high-water mark of :func:`peak_rss_mb` to the current RSS (Linux; elsewhere a no-op)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def _start_child(level: int) -> None:
    """The child logs as the CLI does (its progress bars share the parent's stderr)."""
    from .cli import _setup_logging

    _setup_logging(verbose=level <= logging.DEBUG)


def _measured(fn: Callable, args: tuple) -> tuple[Any, float]:
    return fn(*args), peak_rss_mb()


def in_own_process(what: str, fn: Callable, *args) -> tuple[Any, float]:
    """``fn(*args)`` run in a fresh spawned process: (its result, the child's peak RSS in MB). ``what`` names
    the step in the error raised when the child dies without an answer. An exception ``fn`` raises is raised
    here."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=_start_child,
                             initargs=(logging.getLogger().getEffectiveLevel(),)) as pool:
        try:
            return pool.submit(_measured, fn, args).result()
        except BrokenProcessPool:
            raise MmstackError(f"{what}: its process died without an answer (killed by the system: out of "
                               "memory?). Less memory per step: fewer rows per batch, or a machine with more "
                               "memory") from None
