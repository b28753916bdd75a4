"""Content-addressed cache of artifacts with atomic writes.

An artifact lives at ``<root>/<kind>/<name>/<key>`` where ``key`` hashes everything that decides its content:
the data fingerprint, the producer's params and code version, and the folds key when the producer reads the
target. A changed input gives a new key, so nothing stale is ever reused. Every write goes to a temporary
sibling first and is renamed into place, so a crash or Ctrl-C never leaves a half-written artifact.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import joblib
import pandas as pd

KEY_LENGTH = 16


def _canonical(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return obj.item()
    return obj


def make_key(*parts: Any) -> str:
    """Stable short hash of JSON-able parts (dict order does not matter)."""
    text = json.dumps(_canonical(list(parts)), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:KEY_LENGTH]


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, streamed."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it onto ``final`` only if the block succeeds.

    Works for files and directories. On any exception (KeyboardInterrupt included) the temporary is removed.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    target = tmp / "artifact"
    try:
        yield target
        if final.is_dir() and not final.is_symlink():
            shutil.rmtree(final)
        os.replace(target, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def write_parquet(path: Path, frame: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_joblib(path: Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        joblib.dump(obj, tmp)


class Store:
    """Artifact folders under one work directory: ``features/``, ``models/``, ``oof/``, ``submissions/``."""

    KINDS = ("features", "models", "oof", "submissions")

    def __init__(self, workdir: Path | str):
        self.workdir = Path(workdir)

    def dir(self, kind: str) -> Path:
        if kind not in self.KINDS:
            raise ValueError(f"unknown artifact kind {kind!r}")
        return self.workdir / kind

    def path(self, kind: str, name: str, key: str, suffix: str = "") -> Path:
        """Where the artifact ``name`` with ``key`` lives (a file when suffix is given, else a folder)."""
        return self.dir(kind) / name / f"{key}{suffix}"
