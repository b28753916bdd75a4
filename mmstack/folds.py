"""Folds are data: one fold id per labelled row of a target, made once per (task, data fingerprint, target,
n_folds, strategy, seed) and read by everyone.

Every consumer that reads the target (target encodings, graph target means, level-1 models, blenders) reads the
stored folds through :class:`Folds`. No other module creates a KFold. Classification targets get stratified folds
(StratifiedKFold, or StratifiedGroupKFold when grouped). A ``Folds`` records its strategy and grouping, so a block
can demand one (:meth:`Folds.require_grouped_by`).
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold

from .errors import ConfigError
from .store import Store, make_key, write_parquet
from .targets import Target, TargetData

log = logging.getLogger(__name__)

STRATEGIES = ("kfold", "group")
MAX_FOLDS = 100  # fold ids are stored as int8


@dataclass(frozen=True)
class Folds:
    """Fold id (0..n_folds-1) of each labelled row, in the order of ``rows`` (their row ids), and its key.

    ``strategy`` is what was made: "kfold", "stratified", "group" or "stratified_group"; ``group_by`` names the
    column rows were grouped by (None when not grouped).
    """

    fold: np.ndarray
    n_folds: int
    key: str
    rows: np.ndarray | None = None  # row ids of the labelled rows; None = 0..len(fold)-1
    strategy: str = "kfold"
    group_by: str | None = None

    @property
    def row_ids(self) -> np.ndarray:
        return np.arange(len(self.fold)) if self.rows is None else self.rows

    def split(self) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Yield ``(k, train_positions, valid_positions)`` for each fold (positions into ``rows``)."""
        for k in range(self.n_folds):
            valid = np.flatnonzero(self.fold == k)
            train = np.flatnonzero(self.fold != k)
            yield k, train, valid

    def __len__(self) -> int:
        return len(self.fold)

    def require_grouped_by(self, column: str, who: str) -> None:
        """Stop with a clear error unless rows were grouped by ``column`` (e.g. a block that would otherwise leak
        a group's own labels across folds)."""
        if self.group_by != column:
            raise ConfigError(f"{who} needs folds grouped by {column!r} (got strategy {self.strategy!r}"
                              f"{'' if self.group_by is None else f' by {self.group_by!r}'}): set "
                              f"folds.strategy = \"group\" and folds.group_by = \"{column}\"")

    def out_of_fold(self, fit: Callable[[np.ndarray], Any], apply: Callable[[Any, np.ndarray], np.ndarray],
                    n_rows: int) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        """Target-reading values, nested so that no model sees its validation fold's targets.

        ``fit`` receives row ids of labelled rows whose targets it may read; ``apply`` receives row ids and
        returns one value (or row of values) per id. ``n_rows`` is the number of rows (row ids 0..n_rows-1).

        Returns ``(values, views)``. ``values`` covers all rows: a labelled row in fold k gets
        ``apply(fit(labelled rows outside fold k))`` (what the fold-k model is validated on), any other row
        ``apply(fit(all labelled rows))``. ``views[k]`` covers the labelled rows (in ``rows`` order) as the fold-k
        model must see them in training: a row in fold j != k gets ``apply(fit(rows outside folds j and k))``.
        Plain out-of-fold values for training rows would leak: within a group, rows of fold j see the group
        total minus fold j, which includes fold k's targets, so encoding and target are correlated alike in
        training and validation.
        """
        if self.n_folds < 3:
            raise ConfigError(f"features that read the target need folds.n_folds >= 3 (got {self.n_folds}): "
                              "with 2 folds no rows are left outside both a row's fold and the model's fold")
        ids = self.row_ids
        others = np.setdiff1d(np.arange(n_rows), ids)
        rest = np.asarray(apply(fit(ids), others)) if len(others) else None
        first = np.asarray(apply(fit(ids[self.fold != 0]), ids[self.fold == 0]))
        shape = first.shape[1:] if rest is None else rest.shape[1:]
        values = np.empty((n_rows,) + shape, dtype=np.float64)
        if rest is not None:
            values[others] = rest
        for k, train, valid in self.split():
            values[ids[valid]] = first if k == 0 else apply(fit(ids[train]), ids[valid])
        views = {}
        for k in range(self.n_folds):
            view = values[ids].copy()
            for j in range(self.n_folds):
                if j != k:
                    pos = np.flatnonzero(self.fold == j)
                    view[pos] = apply(fit(ids[(self.fold != j) & (self.fold != k)]), ids[pos])
            views[k] = view
        return values, views


def strategy_made(strategy: str, stratified: bool) -> str:
    """The name of the split :func:`make_fold_ids` makes: kfold, stratified, group or stratified_group."""
    if not stratified:
        return strategy
    return "stratified" if strategy == "kfold" else f"stratified_{strategy}"


def make_fold_ids(n_rows: int, n_folds: int, strategy: str, seed: int, groups: np.ndarray | None = None,
                  stratify: np.ndarray | None = None) -> np.ndarray:
    """Assign each of ``n_rows`` rows to a fold.

    "kfold": shuffled KFold, StratifiedKFold when ``stratify`` (class codes) is given; "group": GroupKFold,
    StratifiedGroupKFold with ``stratify`` (:func:`strategy_made` names the result).
    """
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or not 2 <= n_folds <= MAX_FOLDS:
        raise ConfigError(f"folds.n_folds must be an integer in [2, {MAX_FOLDS}], got {n_folds!r}")
    if n_rows < n_folds:
        raise ConfigError(f"only {n_rows} labelled rows for {n_folds} folds")
    fold = np.full(n_rows, -1, dtype=np.int8)
    index = np.arange(n_rows)
    made = strategy_made(strategy, stratify is not None)
    if strategy == "kfold":
        if stratify is not None:
            with warnings.catch_warnings():  # a class rarer than n_folds: sklearn warns, the folds are still fine
                warnings.simplefilter("ignore", UserWarning)
                splitter = list(StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
                                .split(index, stratify))
        else:
            splitter = KFold(n_splits=n_folds, shuffle=True, random_state=seed).split(index)
    elif strategy == "group":
        if groups is None:
            raise ConfigError("folds.strategy='group' needs a group column (folds.group_by)")
        if len(np.unique(groups)) < n_folds:
            raise ConfigError(f"folds.strategy='group': only {len(np.unique(groups))} groups for {n_folds} folds")
        if stratify is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                splitter = list(StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
                                .split(index, stratify, groups=groups))
        else:
            splitter = GroupKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(index, groups=groups)
    else:
        raise ConfigError(f"folds.strategy must be one of {STRATEGIES}, got {strategy!r}")
    for k, (_, valid) in enumerate(splitter):
        fold[valid] = k
    if (fold < 0).any() or len(np.unique(fold)) != n_folds:
        raise ConfigError(f"could not make {n_folds} non-empty folds from {n_rows} rows with strategy {made!r}")
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
    *,
    target: str | None = None,
    rows: np.ndarray | None = None,
    stratify: np.ndarray | None = None,
    group_by: str | None = None,
) -> Folds:
    """Read the stored folds for these settings, or make and store them.

    ``rows``: the row ids of the labelled rows (default 0..n_rows-1); ``stratify``: their class codes, for a
    classification target; ``target`` names the target the folds are for (part of the key).
    """
    row_ids = np.arange(n_rows) if rows is None else np.asarray(rows, np.int64)
    if len(row_ids) != n_rows:
        raise ValueError("rows must hold n_rows row ids")
    key = make_key("folds", task, data_fingerprint, n_folds, strategy, seed, target,
                   None if rows is None else make_key(row_ids.tolist()), stratify is not None,
                   group_by if strategy == "group" else None)
    path = store.path("features", "folds", key, ".parquet")
    grouped = group_by if strategy == "group" else None
    if path.exists():
        stored = pd.read_parquet(path)
        if len(stored) == n_rows and (stored["row_id"].to_numpy() == row_ids).all():
            made = str(stored["strategy"].iloc[0]) if "strategy" in stored.columns else strategy
            log.info("folds: reused %s (%d folds, %s)", key, n_folds, made)
            return Folds(stored["fold"].to_numpy(dtype=np.int8), n_folds, key, row_ids, made, grouped)
        log.warning("folds: stored %s has %d rows, data has %d; remaking", key, len(stored), n_rows)
    fold = make_fold_ids(n_rows, n_folds, strategy, seed, groups, stratify)
    made = strategy_made(strategy, stratify is not None)
    write_parquet(path, pd.DataFrame({"row_id": row_ids, "fold": fold, "strategy": made}))
    log.info("folds: made %s (%d folds, %s, seed %d)", key, n_folds, made, seed)
    return Folds(fold, n_folds, key, row_ids, made, grouped)


def auto_strategy(data, target: Target, group_by: str | None, min_seen: float = 0.5) -> str:
    """"group" when the rows to predict mostly come from groups (e.g. sellers) never seen labelled, else "kfold".

    CV should split the labelled rows the way the labelled and the to-predict rows are split: when under
    ``min_seen`` of the rows to predict share their ``group_by`` value with a labelled row, shuffled K-fold would
    let every group-keyed statistic look better in CV than it can be at prediction time.
    """
    frame = data.all_rows()
    if not group_by or group_by not in frame.columns:
        return "kfold"
    rows, _ = data.labelled(target)
    values = frame[group_by].astype(str).to_numpy()
    predict = np.setdiff1d(np.arange(data.n_rows), rows)
    if not len(predict):
        return "kfold"
    seen = float(np.isin(values[predict], values[rows]).mean())
    chosen = "group" if seen < min_seen else "kfold"
    log.info("folds: strategy auto -> %s (%.0f%% of the rows to predict share a %s with a labelled row)",
             chosen, 100 * seen, group_by)
    return chosen


def target_data(store: Store, data, target: Target, n_folds: int = 5, strategy: str = "kfold", seed: int = 42,
                group_by: str | None = None) -> TargetData:
    """A target of ``data`` (a :class:`~mmstack.data.dataset.Dataset`) as the fold loop sees it: its labelled
    rows, their encoded labels and their folds (stratified for classification; grouped by the column
    ``group_by`` with strategy "group")."""
    rows, y = data.labelled(target)
    groups = None
    if strategy == "group":
        if group_by is None:
            raise ConfigError("folds.strategy='group' needs a group column (folds.group_by)")
        frame = data.all_rows()
        if group_by not in frame.columns:
            raise ConfigError(f"folds.group_by: no column {group_by!r} in the data")
        groups = frame[group_by].astype(str).to_numpy()[rows]
    folds = load_or_make_folds(store, data.task, data.fingerprint, len(rows), n_folds=n_folds, strategy=strategy,
                               seed=seed, groups=groups, target=target.name, rows=rows,
                               stratify=y if target.is_classification else None, group_by=group_by)
    return TargetData(target, rows, y, folds, np.setdiff1d(np.arange(data.n_rows), rows))
