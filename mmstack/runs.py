"""The leaderboard of runs: one line per run in ``submissions/runs.jsonl``, newest last.

Concurrent runs append to the same file: each append holds an exclusive lock on it, writes its one line with a
single ``O_APPEND`` write and syncs it; a failed write (a full disk) is cut back off under the same lock, so the
file only ever holds whole lines. Readers skip a line that does not parse (one a machine crash cut short).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterator

from .store import Store

log = logging.getLogger(__name__)


def runs_path(store: Store) -> Path:
    return store.dir("submissions") / "runs.jsonl"


def _parse(text: str, path: Path) -> list[dict[str, Any]]:
    runs = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            runs.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("%s, line %d: not a complete run record, skipped", path, number)
    return runs


def load_runs(store: Store, task: str | None = None) -> list[dict[str, Any]]:
    path = runs_path(store)
    if not path.is_file():
        return []
    runs = _parse(path.read_text(), path)
    return [r for r in runs if task is None or r.get("task") == task]


@contextlib.contextmanager
def _locked_log(path: Path) -> Iterator[int]:
    """The log opened for appending, under an exclusive lock (released when the descriptor closes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)


def append_run(store: Store, record: dict[str, Any]) -> bool:
    """Add one run to the log, unless a line with its ``run_id`` is there already; True when it was added."""
    path = runs_path(store)
    line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
    with _locked_log(path) as fd:
        size = os.fstat(fd).st_size
        existing = os.pread(fd, size, 0).decode("utf-8", errors="replace") if size else ""
        if any(r.get("run_id") == record.get("run_id") for r in _parse(existing, path)):
            return False
        # a line cut short by a crash gets no company: the new record starts on a line of its own
        data = (("\n" if existing and not existing.endswith("\n") else "") + line).encode()
        try:
            written = 0
            while written < len(data):
                written += os.write(fd, data[written:])
            os.fsync(fd)
        except BaseException:
            os.ftruncate(fd, size)  # never leave half a line behind (a full disk, Ctrl-C)
            raise
    return True


def lower_is_better(record: dict[str, Any]) -> bool:
    """The direction of a run's stack score (older runs did not record it: read it from the metric's name)."""
    if "greater_is_better" in record:
        return not record["greater_is_better"]
    from .metrics import METRICS

    metric = METRICS.get(record.get("metric", ""))
    return True if metric is None else not metric.greater_is_better
