"""A run's folder ``submissions/<run_id>/``: a unique id, written under a temporary name, visible when complete.

- **Unique ids.** ``<time>-<config and input hash>-<random>``: two runs of one config that finish in the same
  second (or on other input) never share an id, and the folder is created exclusively, never reused.
- **Visible only when complete.** A run writes into ``submissions/.partial-<run_id>/`` and :meth:`RunFolder.publish`
  renames it to ``submissions/<run_id>/`` once the submission, metrics and report are all there; then it points
  ``latest`` at it and appends the run's line to ``runs.jsonl`` (the same record is kept in the folder as
  ``run.json``).
- **Leftovers of killed runs are cleaned at the next run** (:func:`clean_leftovers`): a partial folder whose
  owner is gone (its lock is free) is removed, a published folder whose ``runs.jsonl`` line is missing (killed
  between the rename and the append) gets its line, stray temporaries are removed. A live run holds an exclusive
  ``flock`` on its partial folder's lock file from the folder's birth until it is published, so concurrent runs
  never clean each other's folders; the kernel drops the lock when a run dies, even by ``kill -9``.
"""
from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from .runs import append_run, load_runs
from .store import Store, make_key, write_json

log = logging.getLogger(__name__)

PARTIAL_PREFIX = ".partial-"
LOCK_NAME = ".lock"
RECORD_NAME = "run.json"
# a partial folder younger than this may still be taking its lock; stray temporaries older than it are dead
GRACE_SECONDS = 60.0


def new_run_id(config_raw: dict[str, Any], input_fingerprint: str, now: dt.datetime | None = None) -> str:
    """``YYYYmmdd-HHMMSS-<hash of config and input>-<random>``: sortable by time, unique across runs."""
    stamp = (now or dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{make_key(config_raw, input_fingerprint)[:6]}-{secrets.token_hex(3)}"


class RunFolder:
    """One run's folder while it is written: :attr:`path` (temporary, locked), then :meth:`publish`."""

    def __init__(self, store: Store, run_id: str):
        self.store = store
        self.run_id = run_id
        self.submissions = store.dir("submissions")
        self.final = self.submissions / run_id
        self.path = self.submissions / f"{PARTIAL_PREFIX}{run_id}"
        self._lock_fd: int | None = None

    @classmethod
    def begin(cls, store: Store, config_raw: dict[str, Any], input_fingerprint: str) -> "RunFolder":
        """Clean what killed runs left, then create a new run's temporary folder exclusively, locked from birth."""
        submissions = store.dir("submissions")
        submissions.mkdir(parents=True, exist_ok=True)
        clean_leftovers(store)
        for _ in range(100):
            folder = cls(store, new_run_id(config_raw, input_fingerprint))
            if folder.final.exists() or folder.path.exists():
                continue
            # the lock is taken in a private folder first: a partial folder is never seen without its lock
            birth = Path(tempfile.mkdtemp(prefix=".run-", suffix=".tmp", dir=submissions))
            fd = os.open(birth / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            try:
                os.rename(birth, folder.path)  # fails if another run made this name meanwhile (never empty)
            except OSError:
                os.close(fd)
                shutil.rmtree(birth, ignore_errors=True)
                continue
            folder._lock_fd = fd
            return folder
        raise RuntimeError(f"could not create a new run folder in {submissions}")

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def publish(self, record: dict[str, Any]) -> Path:
        """Make the complete folder visible as ``submissions/<run_id>``, point ``latest`` at it and log the run."""
        write_json(self.path / RECORD_NAME, record)
        if self.final.exists():  # ids are unique; never merge into or replace another run's folder
            raise RuntimeError(f"run folder {self.final} exists already")
        os.rename(self.path, self.final)
        (self.final / LOCK_NAME).unlink()
        self._unlock()
        point_latest(self.store, self.final)
        append_run(self.store, record)
        return self.final

    def abandon(self) -> None:
        """Remove the temporary folder of a run that failed (a killed one is removed by the next run)."""
        self._unlock()
        shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> "RunFolder":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and self.path.exists():
            self.abandon()


def point_latest(store: Store, run_dir: Path) -> None:
    """Make ``submissions/latest`` a relative symlink to ``run_dir`` (replaced atomically)."""
    latest = store.dir("submissions") / "latest"
    tmp = latest.with_name(f".latest.{os.getpid()}.{secrets.token_hex(3)}")
    os.symlink(run_dir.name, tmp)
    os.replace(tmp, latest)


def _owner_gone(partial: Path) -> bool:
    """Is the run that made ``partial`` gone? Its lock is free (or missing, and the folder past the grace time)."""
    try:
        fd = os.open(partial / LOCK_NAME, os.O_RDWR)
    except FileNotFoundError:
        return _age(partial) > GRACE_SECONDS
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def _age(path: Path) -> float:
    try:
        return time.time() - path.lstat().st_mtime
    except FileNotFoundError:
        return 0.0


def clean_leftovers(store: Store) -> None:
    """Remove what killed runs left in ``submissions/`` and add the log lines of runs killed after publishing."""
    submissions = store.dir("submissions")
    if not submissions.is_dir():
        return
    logged = {r.get("run_id") for r in load_runs(store)}
    for entry in sorted(submissions.iterdir()):
        name = entry.name
        if name.startswith(PARTIAL_PREFIX) and entry.is_dir() and not entry.is_symlink():
            if _owner_gone(entry):
                shutil.rmtree(entry, ignore_errors=True)
                log.info("submissions: removed %s, left by a run that was killed before it finished", name)
        elif name.startswith(".latest.") or (name.startswith(".") and name.endswith(".tmp")):
            # temporaries of the atomic writes (live for milliseconds): older ones belong to killed runs
            if _age(entry) > GRACE_SECONDS:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
        elif not name.startswith(".") and entry.is_dir() and name not in logged and (entry / RECORD_NAME).is_file():
            try:
                record = json.loads((entry / RECORD_NAME).read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if append_run(store, record):
                log.info("submissions: added the runs.jsonl line of %s (its run was killed after writing it)", name)
