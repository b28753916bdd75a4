"""Folds: stable for the same settings, each row in exactly one fold, groups kept whole, stored once."""
from __future__ import annotations

import numpy as np
import pytest

from mmstack.errors import ConfigError
from mmstack.folds import load_or_make_folds, make_fold_ids
from mmstack.store import Store


def test_every_row_in_exactly_one_fold():
    fold = make_fold_ids(103, 5, "kfold", 1)
    assert fold.shape == (103,) and set(fold) == set(range(5))
    counts = np.bincount(fold)
    assert counts.max() - counts.min() <= 1
    seen = np.zeros(103, int)
    from mmstack.folds import Folds

    for _, tr, va in Folds(fold, 5, "k").split():
        assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == 103
        seen[va] += 1
    assert (seen == 1).all()


def test_stable_for_same_seed_and_different_for_another():
    assert (make_fold_ids(500, 5, "kfold", 3) == make_fold_ids(500, 5, "kfold", 3)).all()
    assert (make_fold_ids(500, 5, "kfold", 3) != make_fold_ids(500, 5, "kfold", 4)).any()


def test_group_folds_keep_each_user_in_one_fold():
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 60, 400).astype(str)
    fold = make_fold_ids(400, 4, "group", 0, groups)
    for g in np.unique(groups):
        assert len(set(fold[groups == g])) == 1


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError):
        make_fold_ids(10, 1, "kfold", 0)
    with pytest.raises(ConfigError):
        make_fold_ids(10, 3, "stratified-by-magic", 0)
    with pytest.raises(ConfigError):
        make_fold_ids(10, 3, "group", 0, None)


def test_folds_are_made_once_and_read_back(tmp_path, caplog):
    store = Store(tmp_path)
    first = load_or_make_folds(store, "avito", "fp1", 200, 5, "kfold", 42)
    with caplog.at_level("INFO"):
        second = load_or_make_folds(store, "avito", "fp1", 200, 5, "kfold", 42)
    assert "reused" in caplog.text
    assert first.key == second.key and (first.fold == second.fold).all()
    other = load_or_make_folds(store, "avito", "fp2", 200, 5, "kfold", 42)
    assert other.key != first.key, "a different data fingerprint gives different folds key"
