"""Folds are data: one fold id per training row, made once per (task, data fingerprint, n_folds, strategy, seed).

Every consumer that reads the target (target encodings, graph target means, level-1 models, blenders) reads the
stored folds through :class:`Folds`. No other module creates a KFold.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterator

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

    def out_of_fold(self, fit: Callable[[np.ndarray], Any], apply: Callable[[Any, np.ndarray], np.ndarray],
                    n_test: int) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        """Target-reading values, nested so that no model sees its validation fold's targets.

        ``fit`` receives training-row indices whose targets it may read; ``apply`` receives row ids (training
        rows 0..n_train-1, test rows n_train..) and returns one value (or row of values) per id.

        Returns ``(values, views)``. ``values`` covers all rows: a training row in fold k gets
        ``apply(fit(rows outside fold k))`` (what the fold-k model is validated on), a test row
        ``apply(fit(all training rows))``. ``views[k]`` covers the training rows as the fold-k model must see
        them in training: a row in fold j != k gets ``apply(fit(rows outside folds j and k))``. Plain out-of-fold
        values for training rows would leak: within a group, rows of fold j see the group total minus fold j,
        which includes fold k's targets, so encoding and target are correlated alike in training and validation.
        """
        if self.n_folds < 3:
            raise ConfigError(f"features that read the target need folds.n_folds >= 3 (got {self.n_folds}): "
                              "with 2 folds no rows are left outside both a row's fold and the model's fold")
        n_train = len(self.fold)
        test_values = np.asarray(apply(fit(np.arange(n_train)), np.arange(n_train, n_train + n_test)))
        values = np.empty((n_train + n_test,) + test_values.shape[1:], dtype=np.float64)
        values[n_train:] = test_values
        for k, train, valid in self.split():
            values[valid] = apply(fit(train), valid)
        views = {}
        for k in range(self.n_folds):
            view = values[:n_train].copy()
            for j in range(self.n_folds):
                if j != k:
                    rows = np.flatnonzero(self.fold == j)
                    view[rows] = apply(fit(np.flatnonzero((self.fold != j) & (self.fold != k))), rows)
            views[k] = view
        return values, views


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
