"""The fold loop: OOF coverage, test averaging, determinism, resume after a crash."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mmstack.folds import Folds, make_fold_ids
from mmstack.metrics import METRICS
from mmstack.models.base import Level1Model, ModelInput, train_model
from mmstack.models.registry import make_model
from mmstack.store import Store
from mmstack.targets import Target, TargetData, regression_target

UNIT = regression_target("y", value_range=(0.0, 1.0))


def _data(y, folds, target=UNIT) -> TargetData:
    return TargetData(target, np.arange(len(y)), y, folds)


def _inputs(n_train=300, n_test=80, seed=0):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"a": rng.normal(size=n_train + n_test), "b": rng.normal(size=n_train + n_test),
                      "c": rng.integers(-1, 5, n_train + n_test).astype(np.int32)})
    y = 1 / (1 + np.exp(-(X["a"] - 0.5 * X["b"]).to_numpy()[:n_train] + rng.normal(0, 0.3, n_train)))
    return ModelInput(X=X, categorical=["c"], block_keys={"toy": "k1"}, n_train=n_train), y


class Crashing(Level1Model):
    """A mean predictor that counts its fits and crashes (like Ctrl-C) on the fit numbered ``crash_on``.

    The crash switch is a class attribute, not a param, so the crashed and the resumed run share one key.
    """

    key = "crashing"
    default_params = {"shrink": 1.0}
    fits = 0
    crash_on: int | None = None

    def fit_fold(self, X_train, y_train, X_valid, y_valid, categorical):
        Crashing.fits += 1
        if Crashing.crash_on == Crashing.fits:
            raise KeyboardInterrupt
        return float(np.mean(y_train)) * self.params["shrink"]

    def predict(self, fitted, X):
        return np.full(X.shape[0], fitted)


def test_lgb_oof_covers_every_row_and_is_deterministic(tmp_path):
    inputs, y = _inputs()
    folds = Folds(make_fold_ids(300, 4, "kfold", 1), 4, "f1")
    params = {"max_rounds": 60, "early_stopping": 10, "num_leaves": 7, "min_data_in_leaf": 5}
    data = _data(y, folds)
    a = train_model(make_model("lgb", params, target=UNIT), inputs, data, Store(tmp_path / "a"), "toy")
    b = train_model(make_model("lgb", params, target=UNIT), inputs, data, Store(tmp_path / "b"), "toy")
    assert a.oof.shape == (300, 1) and a.test.shape == (80, 1)
    assert np.isfinite(a.oof).all() and (a.oof >= 0).all() and (a.oof <= 1).all()
    assert np.array_equal(a.oof, b.oof) and np.array_equal(a.test, b.test)
    assert a.cv < np.std(y)
    again = train_model(make_model("lgb", params, target=UNIT), inputs, data, Store(tmp_path / "a"), "toy")
    assert again.reused and np.array_equal(again.oof, a.oof)
    changed = train_model(make_model("lgb", {**params, "num_leaves": 5}, target=UNIT), inputs, data,
                          Store(tmp_path / "a"), "toy")
    assert not changed.reused and changed.run_key != a.run_key


def test_resume_continues_at_the_crashed_fold(tmp_path):
    inputs, y = _inputs()
    folds = Folds(make_fold_ids(300, 5, "kfold", 2), 5, "f2")
    store = Store(tmp_path)
    Crashing.fits, Crashing.crash_on = 0, 4  # killed while fitting fold 4 of 5 (index 3)
    with pytest.raises(KeyboardInterrupt):
        train_model(Crashing(target=UNIT), inputs, _data(y, folds), store, "toy")
    assert len(list(store.path("models", "toy", "x").parent.glob("*/fold*.joblib"))) == 3
    Crashing.fits, Crashing.crash_on = 0, None
    resumed = train_model(Crashing(target=UNIT), inputs, _data(y, folds), store, "toy")
    assert Crashing.fits == 2, "folds 1-3 are reused, only folds 4 and 5 are fitted"
    assert not resumed.reused
    Crashing.fits = 0
    clean = train_model(Crashing(target=UNIT), inputs, _data(y, folds), Store(tmp_path / "clean"), "toy")
    assert Crashing.fits == 5
    np.testing.assert_array_equal(resumed.oof, clean.oof)
    np.testing.assert_array_equal(resumed.test, clean.test)
    assert resumed.run_key == clean.run_key


class NaNOnFold(Level1Model):
    """A mean predictor whose third fit predicts NaN (as an MLP that diverged on inf inputs does)."""

    key = "nan_on_fold"
    default_params = {"bad_fit": 3}
    fits = 0

    def fit_fold(self, X_train, y_train, X_valid, y_valid, categorical):
        NaNOnFold.fits += 1
        return np.nan if NaNOnFold.fits == self.params["bad_fit"] else float(np.mean(y_train))

    def predict(self, fitted, X):
        return np.full(X.shape[0], fitted)


def test_a_fold_that_is_not_finite_is_never_stored(tmp_path):
    from mmstack.errors import ModelError

    inputs, y = _inputs()
    folds = Folds(make_fold_ids(300, 5, "kfold", 3), 5, "f3")
    store = Store(tmp_path)
    NaNOnFold.fits = 0
    with pytest.raises(ModelError, match=r"^nan_on_fold fold 3/5: predictions are not finite"):
        train_model(NaNOnFold(target=UNIT), inputs, _data(y, folds), store, "toy")
    stored = sorted(p.name for p in (tmp_path / "models" / "toy").glob("*/fold*.joblib"))
    assert stored == ["fold0.joblib", "fold1.joblib"], "folds 1-2 kept for resume, nothing of fold 3"
    assert not (tmp_path / "oof").exists()


def test_a_class_missing_from_a_fold_keeps_the_shape(tmp_path):
    """Class "rare" has one row: the training part of its fold has none of it, and every fold still predicts
    three probability columns that sum to 1."""
    rng = np.random.default_rng(5)
    n = 240
    X = pd.DataFrame({"a": rng.normal(size=n + 30), "b": rng.normal(size=n + 30)})
    y = (X["a"].to_numpy()[:n] > 0).astype(int)
    y[17] = 2
    target = Target("label", "multiclass", METRICS["logloss"], ("neg", "pos", "rare"))
    folds = Folds(make_fold_ids(n, 3, "kfold", 0, stratify=y), 3, "fc")
    data = _data(y, folds, target)
    inputs = ModelInput(X=X, categorical=[], block_keys={"toy": "k"}, n_train=n)
    for key in ("lgb", "mlp"):
        res = train_model(make_model(key, {"max_rounds": 50, "early_stopping": 10} if key == "lgb" else
                                     {"epochs": 3}, target=target), inputs, data, Store(tmp_path / key), "toy")
        assert res.oof.shape == (n, 3) and res.test.shape == (30, 3)
        np.testing.assert_allclose(res.oof.sum(axis=1), 1.0, atol=1e-6)
        assert res.oof[17, 2] < 0.5 and res.cv < np.log(3)


def test_a_seed_bag_averages_runs_of_each_seed_and_predicts_from_the_store(tmp_path):
    from mmstack.errors import ConfigError
    from mmstack.models.base import SeedBag, load_fold
    from mmstack.predict import level1_predictions

    inputs, y = _inputs()
    folds = Folds(make_fold_ids(300, 3, "kfold", 1), 3, "f1")
    data = _data(y, folds, regression_target("y"))  # no clipping: the bag's mean is the runs' mean
    params = {"max_rounds": 40, "early_stopping": 10, "num_leaves": 7, "min_data_in_leaf": 5,
              "bagging_fraction": 0.7, "bagging_freq": 1, "feature_fraction": 0.7}
    store = Store(tmp_path)
    one, two = (train_model(make_model("lgb", params, seed=s, target=data.target), inputs, data, store, "toy")
                for s in (42, 43))
    assert not np.allclose(one.oof, two.oof)  # the seeds differ, so the bag has something to average
    bag = train_model(make_model("lgb", {**params, "seeds": 2}, seed=42, target=data.target), inputs, data, store,
                      "toy")
    assert bag.run_key not in (one.run_key, two.run_key)
    assert np.allclose(bag.oof, (one.oof + two.oof) / 2) and np.allclose(bag.test, (one.test + two.test) / 2)
    assert bag.cv <= (one.cv + two.cv) / 2  # the mean of two predictions is never further off than both on average
    model, fitted = load_fold(store, "toy", bag.name, 0)
    assert isinstance(fitted, SeedBag) and len(fitted.members) == 2 and model.seed == 42
    # a fresh process's path: the saved fold bags predict the test rows as the run did
    from mmstack.features.base import BlockOutput

    BlockOutput(dense=inputs.X, categorical=["c"]).save(store.path("features", "toy", "k1"))
    assert np.allclose(level1_predictions(store, "toy", bag.name, inputs.test_ids), bag.test)
    for bad in (0, 1.5, True):
        with pytest.raises(ConfigError, match="seeds must be a whole number"):
            make_model("lgb", {"seeds": bad})
