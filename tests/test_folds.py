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


def test_classification_folds_are_stratified_and_record_their_strategy(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.choice(5, 400, p=[0.5, 0.3, 0.1, 0.07, 0.03])
    folds = load_or_make_folds(Store(tmp_path), "t", "fp", 400, 5, "kfold", 0, target="label", stratify=y)
    assert folds.strategy == "stratified" and folds.group_by is None
    for c in range(5):  # each class spread evenly: at most one row apart between folds
        per_fold = np.bincount(folds.fold[y == c], minlength=5)
        assert per_fold.max() - per_fold.min() <= 1, (c, per_fold)
    again = load_or_make_folds(Store(tmp_path), "t", "fp", 400, 5, "kfold", 0, target="label", stratify=y)
    assert again.strategy == "stratified" and (again.fold == folds.fold).all()


def test_grouped_classification_folds_keep_groups_and_balance_classes(tmp_path):
    rng = np.random.default_rng(1)
    groups = rng.integers(0, 80, 600).astype(str)
    y = (rng.random(600) < 0.2).astype(int)
    folds = load_or_make_folds(Store(tmp_path), "t", "fp", 600, 4, "group", 0, groups, target="label", stratify=y,
                               group_by="user")
    assert folds.strategy == "stratified_group" and folds.group_by == "user"
    for g in np.unique(groups):
        assert len(set(folds.fold[groups == g])) == 1
    shares = [y[folds.fold == k].mean() for k in range(4)]
    assert max(shares) - min(shares) < 0.08


def test_a_block_can_demand_grouped_folds():
    from mmstack.folds import Folds

    plain = Folds(make_fold_ids(50, 5, "kfold", 0), 5, "k")
    with pytest.raises(ConfigError, match='folds.strategy = "group" and folds.group_by = "image"'):
        plain.require_grouped_by("image", "features.caption_bridge")
    Folds(plain.fold, 5, "k", strategy="group", group_by="image").require_grouped_by("image", "x")


def test_folds_over_labelled_rows_only(tmp_path):
    """A target labelled on some rows gets folds over those rows; out_of_fold fills every row."""
    from mmstack.folds import Folds

    rows = np.array([0, 2, 3, 5, 6, 8])
    folds = Folds(np.array([0, 1, 2, 0, 1, 2], np.int8), 3, "k", rows=rows)
    y = np.zeros(9)
    y[rows] = [1, 2, 3, 4, 5, 6]
    values, views = folds.out_of_fold(lambda tr: y[tr].sum(), lambda s, ids: np.full(len(ids), s), n_rows=9)
    assert values[[1, 4, 7]].tolist() == [21, 21, 21], "unlabelled rows: all labelled rows"
    assert values[rows].tolist() == [21 - 5, 21 - 7, 21 - 9, 21 - 5, 21 - 7, 21 - 9]
    assert views[0].shape == (6,)
