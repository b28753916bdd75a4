"""Folds are data: one fold id per training row, made once per (task, data fingerprint, n_folds, strategy, seed).

Every consumer that reads the target (target encodings, graph target means, level-1 models, blenders) reads the
stored folds through :class:`Folds`. No other module creates a KFold.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold, KFold

from .errors import ConfigError
from .store import Store, make_key, write_parquet

log = logging.getLogger(__name__)

STRATEGIES = ("kfold", "group")


@dataclass(frozen=True)
class Folds:
    """Fold id (0..n_folds-1) of each training row, in training-row order, and the key it is stored under."""

    fold: np.ndarray
    n_folds: int
    key: str

    def split(self) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Yield ``(k, train_index, valid_index)`` for each fold."""
        for k in range(self.n_folds):
            valid = np.flatnonzero(self.fold == k)
            train = np.flatnonzero(self.fold != k)
            yield k, train, valid

    def __len__(self) -> int:
        return len(self.fold)


def make_fold_ids(n_rows: int, n_folds: int, strategy: str, seed: int, groups: np.ndarray | None = None) -> np.ndarray:
    """Assign each of ``n_rows`` rows to a fold (shuffled KFold, or GroupKFold when ``strategy='group'``)."""
    if n_folds < 2:
        raise ConfigError(f"folds.n_folds must be at least 2, got {n_folds}")
    if n_rows < n_folds:
        raise ConfigError(f"only {n_rows} training rows for {n_folds} folds")
    fold = np.full(n_rows, -1, dtype=np.int8)
    index = np.arange(n_rows)
    if strategy == "kfold":
        splitter = KFold(n_splits=n_folds, shuffle=True, random_state=seed).split(index)
    elif strategy == "group":
        if groups is None:
            raise ConfigError("folds.strategy='group' needs a group column (folds.group_by)")
        splitter = GroupKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(index, groups=groups)
    else:
        raise ConfigError(f"folds.strategy must be one of {STRATEGIES}, got {strategy!r}")
    for k, (_, valid) in enumerate(splitter):
        fold[valid] = k
    assert (fold >= 0).all(), "every training row must be in exactly one fold"
    return fold


def load_or_make_folds(
    store: Store,
    task: str,
    data_fingerprint: str,
    n_rows: int,
    n_folds: int = 5,
    strategy: str = "kfold",
    seed: int = 42,
    groups: np.ndarray | None = None,
) -> Folds:
    """Read the stored folds for these settings, or make and store them."""
    key = make_key("folds", task, data_fingerprint, n_folds, strategy, seed)
    path = store.path("features", "folds", key, ".parquet")
    if path.exists():
        fold = pd.read_parquet(path)["fold"].to_numpy(dtype=np.int8)
        if len(fold) == n_rows:
            log.info("folds: reused %s (%d folds, %s)", key, n_folds, strategy)
            return Folds(fold=fold, n_folds=n_folds, key=key)
        log.warning("folds: stored %s has %d rows, data has %d; remaking", key, len(fold), n_rows)
    fold = make_fold_ids(n_rows, n_folds, strategy, seed, groups)
    write_parquet(path, pd.DataFrame({"row_id": np.arange(n_rows), "fold": fold}))
    log.info("folds: made %s (%d folds, %s, seed %d)", key, n_folds, strategy, seed)
    return Folds(fold=fold, n_folds=n_folds, key=key)
