"""The model steps' memory savings keep the values: one float32 block for the model matrix, fold rows written in
place, the nets' scaler and the graph net's message PCA computed in chunks."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from mmstack.folds import Folds, make_fold_ids
from mmstack.memory import release
from mmstack.models import tabular_input
from mmstack.models.base import ModelInput, model_matrix
from mmstack.models.gbdt import missing_codes_as_nan
from mmstack.models.tabular_input import TabularScaler
from mmstack.projection import whitened


def _blocks(n: int = 50, seed: int = 0) -> list[pd.DataFrame]:
    rng = np.random.default_rng(seed)
    basic = pd.DataFrame({"region": rng.integers(-1, 4, n).astype(np.int32), "price": rng.normal(size=n)})
    other = pd.DataFrame({"te_region": rng.normal(size=n).astype(np.float32),
                          "emb": np.where(rng.random(n) < 0.2, np.nan, rng.normal(size=n)).astype(np.float32)})
    return [basic, other]


def test_model_matrix_is_one_float32_block_with_missing_codes_as_nan():
    basic, other = _blocks()
    X = model_matrix([basic, other], ["region"])
    assert list(X.columns) == ["region", "price", "te_region", "emb"]
    assert X._mgr.nblocks == 1 and (X.dtypes == np.float32).all()
    # a float32 matrix of it is a view (what LightGBM and XGBoost read), not a copy
    assert np.shares_memory(X.to_numpy(dtype=np.float32), X._mgr.blocks[0].values)
    codes = basic["region"].to_numpy()
    assert np.isnan(X["region"].to_numpy()[codes < 0]).all()
    np.testing.assert_array_equal(X["region"].to_numpy()[codes >= 0], codes[codes >= 0])
    np.testing.assert_array_equal(X["price"].to_numpy(), basic["price"].to_numpy(np.float32))
    np.testing.assert_array_equal(X["emb"].to_numpy(), other["emb"].to_numpy())
    # nothing left for LightGBM and XGBoost to convert: the same frame comes back, not a copy
    assert missing_codes_as_nan(X, ["region"]) is X
    with pytest.raises(ValueError, match="rows differ"):
        model_matrix([basic, other.set_index(np.arange(len(other)) + 1)])


def test_training_rows_write_the_fold_view_into_their_own_copy():
    X = model_matrix(_blocks(), ["region"])
    before = X.copy()
    view = pd.DataFrame({"te_region": np.arange(40, dtype=np.float32) + 100})
    inputs = ModelInput(X=X, categorical=["region"], block_keys={}, n_train=40, train_views={0: view})
    positions = np.array([3, 0, 7])
    rows = inputs.training_rows(0, positions)
    np.testing.assert_array_equal(rows.index.to_numpy(), [3, 0, 7])
    np.testing.assert_array_equal(rows["te_region"].to_numpy(), [103, 100, 107])
    np.testing.assert_array_equal(rows["price"].to_numpy(), X["price"].to_numpy()[[3, 0, 7]])
    pd.testing.assert_frame_equal(X, before)  # the model matrix itself is untouched
    # a fold without a view gets the plain rows
    np.testing.assert_array_equal(inputs.training_rows(1, positions)["te_region"].to_numpy(),
                                  X["te_region"].to_numpy()[[3, 0, 7]])


def test_scaler_in_chunks_equals_the_whole_matrix_at_once(monkeypatch):
    X = model_matrix(_blocks(n=1000, seed=3), ["region"])
    whole_fit = TabularScaler.fit(X, ["region"])
    whole_numbers, whole_codes = whole_fit.transform(X)
    monkeypatch.setattr(tabular_input, "PASS_VALUES", 7)  # fit: 1 column a pass; transform: 2 rows a pass
    chunked = TabularScaler.fit(X, ["region"])
    for name in ("median", "mean", "std"):
        np.testing.assert_array_equal(getattr(chunked, name), getattr(whole_fit, name))
    numbers, codes = chunked.transform(X)
    assert numbers.dtype == whole_numbers.dtype and numbers.shape == (1000, 3)
    np.testing.assert_array_equal(numbers.numpy(), whole_numbers.numpy())
    np.testing.assert_array_equal(codes.numpy(), whole_codes.numpy())
    # reference: the plain float64 formula on the whole matrix
    values = X[chunked.numeric].to_numpy(np.float64)
    expected = np.clip((np.where(np.isnan(values), chunked.median, values) - chunked.mean) / chunked.std, -5, 5)
    np.testing.assert_array_equal(numbers.numpy(), expected.astype(np.float32))
    # into given arrays (the graph net's node matrix)
    out = (np.zeros((1000, 3), np.float32), np.zeros((1000, 1), np.int64))
    chunked.transform(X, out=out)
    np.testing.assert_array_equal(out[0], numbers.numpy())
    np.testing.assert_array_equal(out[1], codes.numpy())


def test_whitened_columns_in_chunks_equal_the_copied_columns():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 6)) @ rng.normal(size=(6, 6))
    columns = np.array([0, 2, 3, 5])
    fit_rows = np.arange(300)
    expected = whitened(np.ascontiguousarray(x[:, columns]), fit_rows, 3)
    got = whitened(x, fit_rows, 3, chunk=64, columns=columns)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    # whitened: unit variance on the fitted rows
    np.testing.assert_allclose(got[fit_rows].std(axis=0), 1.0, atol=1e-9)
    # rows past x's own (the graph's active listings) are those of an all-zero row, in the dtype asked for
    padded = whitened(x, fit_rows, 3, chunk=64, columns=columns, n_out=530, dtype=np.float32)
    zeros = whitened(np.vstack([x, np.zeros((30, 6))]), fit_rows, 3, chunk=64, columns=columns)
    assert padded.shape == (530, 3) and padded.dtype == np.float32
    np.testing.assert_allclose(padded, zeros, rtol=0, atol=1e-5)
    assert np.abs(padded[500:]).max() > 0.1 and np.ptp(padded[500:], axis=0).max() == 0


def test_release_keeps_live_objects():
    keep = np.arange(1_000_000)
    release()
    assert keep.sum() == 999_999 * 1_000_000 // 2


def _watch_fold_rows(monkeypatch) -> list:
    """Weak references to each fold's copy of its training rows, as ModelInput.training_rows makes them."""
    import weakref

    made, training_rows = [], ModelInput.training_rows

    def spy_rows(self, k, positions):
        rows = training_rows(self, k, positions)
        made.append(weakref.ref(rows))
        return rows

    monkeypatch.setattr(ModelInput, "training_rows", spy_rows)
    return made


def _toy_input(n: int, n_train: int):
    """A tiny task for one model: its input (``n`` rows, the first ``n_train`` labelled), target and 3 folds."""
    rng = np.random.default_rng(0)
    X = model_matrix([pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n),
                                    "c": rng.integers(-1, 5, n).astype(np.int32)})], ["c"])
    y = 1 / (1 + np.exp(-X["a"].to_numpy()[:n_train]))
    folds = Folds(make_fold_ids(n_train, 3, "kfold", 0), 3, "toy-folds")
    return ModelInput(X=X, categorical=["c"], block_keys={"toy": "k1"}, n_train=n_train), y, folds


@pytest.mark.parametrize("key", ["xgb", "lgb", "cat"])
def test_gbdt_frees_the_fold_rows_once_binned(key, monkeypatch, tmp_path):
    """The fold's own copy of its training rows is gone while the library trains (it holds the binned matrix):
    the fold loop hands it over as the only reference and the model drops it after binning."""
    import catboost
    import lightgbm
    import xgboost

    from mmstack.models.registry import make_model
    from mmstack.store import Store

    from ..conftest import train

    inputs, y, folds = _toy_input(1500, 1200)
    made, alive = _watch_fold_rows(monkeypatch), []
    library, entry = {"xgb": (xgboost, "train"), "lgb": (lightgbm, "train"),
                      "cat": (catboost.CatBoostRegressor, "fit")}[key]
    library_train = getattr(library, entry)

    def spy_train(*args, **kwargs):
        if key != "lgb":  # binned (a QuantileDMatrix, a Pool) before training starts
            alive.append(made[-1]() is not None)
        booster = library_train(*args, **kwargs)
        if key == "lgb":  # LightGBM bins inside train and then drops its reference
            alive.append(made[-1]() is not None)
        return booster

    monkeypatch.setattr(library, entry, spy_train)
    result = train(make_model(key, {"max_rounds": 50, "early_stopping": 10, "learning_rate": 0.3}), inputs, y, folds, Store(tmp_path))
    assert alive == [False, False, False]
    assert result.cv < np.std(y)  # and it learned: better than the mean


@pytest.mark.parametrize("complexity", [None, 1])
def test_catboost_combines_categoricals_as_configured(complexity, monkeypatch, tmp_path):
    """``max_ctr_complexity`` reaches CatBoost (avito-full.toml sets 1: no combined categoricals, a third less
    memory at 50k rows); left out, it is CatBoost's CPU default of 4."""
    import catboost

    from mmstack.models.registry import make_model
    from mmstack.store import Store

    from ..conftest import train

    inputs, y, folds = _toy_input(600, 500)
    seen, fit = [], catboost.CatBoostRegressor.fit

    def spy_fit(model, *args, **kwargs):
        seen.append(model.get_params()["max_ctr_complexity"])
        return fit(model, *args, **kwargs)

    monkeypatch.setattr(catboost.CatBoostRegressor, "fit", spy_fit)
    params = {"max_rounds": 30, "early_stopping": 10} | ({"max_ctr_complexity": complexity} if complexity else {})
    result = train(make_model("cat", params), inputs, y, folds, Store(tmp_path))
    assert seen == [complexity or 4] * 3
    assert result.cv < np.std(y)


def test_test_rows_are_a_view_when_they_follow_the_training_rows():
    X = model_matrix(_blocks(), ["region"])
    inputs = ModelInput(X=X, categorical=["region"], block_keys={}, n_train=40)
    rows = inputs.test_rows()
    pd.testing.assert_frame_equal(rows, inputs.rows(inputs.test_ids))
    assert np.shares_memory(rows.to_numpy(), X._mgr.blocks[0].values)  # no copy held through the folds
    scattered = ModelInput(X=X, categorical=["region"], block_keys={}, train_ids=np.arange(5, 45))
    rows = scattered.test_rows()  # rows 0-4 and 45-49: not one run, so a copy
    np.testing.assert_array_equal(rows.index.to_numpy(), np.r_[0:5, 45:50])
    assert not np.shares_memory(rows.to_numpy(), X._mgr.blocks[0].values)


def test_stored_fold_views_are_read_per_fold_and_joined_across_blocks(tmp_path):
    from mmstack.features.base import BlockOutput, StoredViews
    from mmstack.pipeline import join_blocks

    rng = np.random.default_rng(1)
    n, n_train = 30, 20
    te = pd.DataFrame({"te_a": rng.normal(size=n).astype(np.float32)})
    graph = pd.DataFrame({"nb_mean": rng.normal(size=n).astype(np.float32)})
    views = {name: {k: pd.DataFrame({col: np.full(n_train, 10 * k + i, np.float32)})
                    for k in range(3)} for i, (name, col) in enumerate([("te", "te_a"), ("graph", "nb_mean")])}
    for name, dense in (("te", te), ("graph", graph)):
        BlockOutput(dense=dense, train_views=views[name]).save(tmp_path / name)
    loaded = {name: BlockOutput.load(tmp_path / name) for name in ("te", "graph")}
    assert isinstance(loaded["te"].train_views, StoredViews) and sorted(loaded["te"].train_views) == [0, 1, 2]
    inputs = join_blocks(loaded, {"te": "k1", "graph": "k2"}, "dense", n_train=n_train)
    assert sorted(inputs.train_views) == [0, 1, 2]
    for k in range(3):
        rows = inputs.training_rows(k, np.array([0, 3]))
        np.testing.assert_array_equal(rows["te_a"].to_numpy(), [10 * k, 10 * k])
        np.testing.assert_array_equal(rows["nb_mean"].to_numpy(), [10 * k + 1, 10 * k + 1])
    # the same as the blocks held in memory
    held = join_blocks({"te": BlockOutput(dense=te, train_views=views["te"]),
                        "graph": BlockOutput(dense=graph, train_views=views["graph"])}, {}, "dense", n_train=n_train)
    pd.testing.assert_frame_equal(held.training_rows(2, np.arange(n_train)), inputs.training_rows(2, np.arange(n_train)))


def test_gnn_frees_the_fold_rows_and_holds_no_numbers_for_active_listings(monkeypatch, tmp_path):
    """While the graph net trains, the fold's copy of its rows is gone (its scaled values are in the node
    features), only row nodes hold numbers and codes, and every active listing sends the message of an all-zero
    row."""
    from mmstack.models import gnn
    from mmstack.models.registry import make_model
    from mmstack.store import Store

    from ..conftest import train
    from .test_nets import GNN_FAST, _planted_inputs

    inputs, y, folds = _planted_inputs(n_train=300, n_test=60, n_active=40)
    made, seen = _watch_fold_rows(monkeypatch), []
    train_graph = gnn._train_graph

    def spy_train(net, head, metric, features, *args, **kwargs):
        numeric, message, codes, active = features
        seen.append((made[-1]() is None, numeric.shape[0], codes.shape[0], message.shape[0],
                     np.ptp(message[360:].numpy(), axis=0).max(), active[:360].sum().item(), active[360:].sum().item()))
        return train_graph(net, head, metric, features, *args, **kwargs)

    monkeypatch.setattr(gnn, "_train_graph", spy_train)
    result = train(make_model("gnn", {**GNN_FAST, "epochs": 3, "message_components": 2}), inputs, y, folds,
                   Store(tmp_path))
    assert seen == [(True, 360, 360, 400, 0.0, 0.0, 40.0)] * 3
    assert np.isfinite(result.cv)


def test_mlp_frees_the_fold_rows_once_scaled(monkeypatch, tmp_path):
    """While the MLP trains, the fold's copy of its training rows is gone (the scaled tensors hold them)."""
    from mmstack.models import mlp
    from mmstack.models.registry import make_model
    from mmstack.store import Store

    from ..conftest import train

    inputs, y, folds = _toy_input(600, 500)
    made, alive = _watch_fold_rows(monkeypatch), []
    fit_with_params = mlp.fit_with_params

    def spy_fit(net, head, metric, params, seed, train_tensors, *args, **kwargs):
        alive.append((made[-1]() is not None, train_tensors[0].dtype))
        return fit_with_params(net, head, metric, params, seed, train_tensors, *args, **kwargs)

    monkeypatch.setattr(mlp, "fit_with_params", spy_fit)
    result = train(make_model("mlp", {"epochs": 5, "seeds": 1}), inputs, y, folds, Store(tmp_path))
    assert alive == [(False, torch.float16)] * 3, "the rows are gone and their numbers held as float16"
    assert result.cv < np.std(y)
    # float32 on request, and nearly the same model
    exact = train(make_model("mlp", {"epochs": 5, "seeds": 1, "numbers_dtype": "float32"}), inputs, y, folds,
                  Store(tmp_path / "float32"))
    assert alive[3:] == [(False, torch.float32)] * 3
    assert abs(exact.cv - result.cv) < 0.01 * result.cv
