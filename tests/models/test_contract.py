"""Contract of every registered level-1 model, on tiny generated data through the real feature blocks."""
from __future__ import annotations

import numpy as np
import pytest

import shutil

import pandas as pd

from mmstack.data import avito
from mmstack.features.base import BlockCache
from mmstack.features.registry import make_block
from mmstack.models.registry import MODELS, _load_all, make_model
from mmstack.models.base import train_model
from mmstack.pipeline import assemble
from mmstack.store import Store
from tests.conftest import relabel, target_data_for

import mmstack.features.image_tokens  # noqa: E402,F401  (register the token blocks)
import mmstack.features.text_tokens  # noqa: E402,F401
import mmstack.models.gnn  # noqa: E402,F401  (register the nets)
import mmstack.models.xattn  # noqa: E402,F401

_load_all()
FAST = {"max_rounds": 150, "early_stopping": 20, "epochs": 4, "patience": 2}
BLOCKS = ["basic", "text_stats", "text_tfidf", "tabular", "target_encoding"]
# blocks a model needs beyond BLOCKS (their artifacts reach it through ModelInput.extras)
MODEL_BLOCKS = {"xattn": ["text_tokens", "image_tokens"], "gnn": ["graph"]}
BLOCK_PARAMS = {"text_tfidf": {"svd_components": 5}, "graph": {"edges": ["user", "title"]},
                "image_tokens": {"image_size": 64, "pca_images": 64}}


@pytest.fixture(scope="module")
def blocks(tiny_avito_dir, tmp_path_factory):
    data = avito.load(tiny_avito_dir)
    store = Store(tmp_path_factory.mktemp("contract"))
    target = target_data_for(data, n_folds=3, store=store)
    cache = BlockCache(data, store, seed=0, target=target)
    made = {}
    for name in BLOCKS + sorted({b for extra in MODEL_BLOCKS.values() for b in extra}):
        cache.get(made.setdefault(name, make_block(name, BLOCK_PARAMS.get(name))), lambda n: made[n])
    return target, cache, made


def classification_labels(y: np.ndarray, problem: str) -> np.ndarray:
    """Labels with real signal, derived from the tiny data's deal probability: binary "sold at all";
    5 classes by value, imbalanced, with one class of only 3 rows."""
    if problem == "binary":
        return (y > 0).astype(int)
    labels = np.select([y == 0, y < 0.2, y < 0.5, y < 0.9], ["none", "low", "mid", "high"], "top").astype(object)
    labels[labels == "top"] = "high"
    labels[np.flatnonzero(y > 0.5)[:3]] = "rare"
    return labels


@pytest.fixture(scope="module", params=["binary", "multiclass"])
def classification(request, blocks, tiny_avito_dir, tmp_path_factory):
    """The contract's data with a classification target: the target-reading blocks rebuilt for it."""
    regression, shared, made = blocks
    data = relabel(shared.data, classification_labels(regression.y, request.param), problem=request.param,
                   fingerprint=f"contract-{request.param}")
    store = Store(tmp_path_factory.mktemp(f"contract-{request.param}"))
    target = target_data_for(data, n_folds=3, store=store)
    cache = BlockCache(data, store, seed=0, target=target)
    for name in made:
        cache.get(made[name], lambda n: made[n])
    return target, cache


def _params(key: str, **extra) -> dict:
    defaults = MODELS[key].default_params
    return {**{k: v for k, v in FAST.items() if k in defaults}, **extra}


def _changed(key: str) -> dict:
    """The model's fast params with one of its own numeric params nudged."""
    defaults = MODELS[key].default_params
    name = next(k for k, v in defaults.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                and k not in FAST and k != "num_threads")
    value = defaults[name]
    return _params(key, **{name: value + 1 if isinstance(value, int) else value * 1.5})


# models of pair tasks: their contract runs on relevance data (tests/test_relevance.py)
PAIR_MODELS = {"twotower"}


@pytest.mark.parametrize("key", sorted(set(MODELS) - PAIR_MODELS))
def test_model_contract(key, blocks, tmp_path):
    target, cache, _ = blocks
    assert_contract(key, target, cache, BLOCKS + MODEL_BLOCKS.get(key, []), "avito", tmp_path)


@pytest.mark.parametrize("key", sorted(set(MODELS) - PAIR_MODELS))
def test_model_contract_classification(key, classification, tmp_path):
    target, cache = classification
    assert_contract(key, target, cache, BLOCKS + MODEL_BLOCKS.get(key, []), "avito", tmp_path)


def _fit(key, params, target, inputs, store, task):
    return train_model(make_model(key, params, seed=3, target=target.target), inputs, target, store, task)


def assert_contract(key, target, cache, block_names, task, tmp_path, **overrides):
    """OOF coverage, shapes, valid values (in range; probabilities summing to 1), better than the prior, stored
    OOF, reuse, resume of a killed fold, determinism, and a key that changes with a param and with the seed."""
    t = target.target
    inputs = assemble(cache, block_names, make_model(key, target=t).input_kind, target)
    store = Store(tmp_path / "a")
    result = _fit(key, _params(key, **overrides), target, inputs, store, task)
    n_out = t.n_outputs
    assert result.oof.shape == (target.n_train, n_out) and result.test.shape == (len(target.predict_rows), n_out)
    assert np.isfinite(result.oof).all() and np.isfinite(result.test).all()
    both = np.vstack([result.oof, result.test])
    if t.is_classification or t.value_range == (0.0, 1.0):
        assert (both >= 0).all() and (both <= 1).all()
    if t.problem == "multiclass":
        np.testing.assert_allclose(both.sum(axis=1), 1.0, atol=1e-6)
    assert len(result.fold_scores) == target.folds.n_folds and not result.reused
    prior, _ = target.folds.out_of_fold(lambda tr: t.prior(target.y[np.searchsorted(target.rows, tr)]),
                                        lambda m, ids: np.tile(m, (len(ids), 1)), cache.data.n_rows)
    prior_cv = t.metric(target.y, prior[target.rows])
    margin = 1.05 if t.problem == "regression" else 1.0  # regression: no worse than a constant, give or take noise
    assert t.metric.loss(result.cv) < t.metric.loss(prior_cv) * margin, (result.cv, prior_cv)
    oof_file = store.path("oof", task, result.name, ".parquet")
    stored = pd.read_parquet(oof_file)
    assert stored["row_id"].tolist() == target.rows.tolist() and (stored["fold"].to_numpy() == target.folds.fold).all()
    # second call: reused, same predictions
    again = _fit(key, _params(key, **overrides), target, inputs, store, task)
    assert again.reused and np.array_equal(again.oof, result.oof)
    # killed after fold 1: only fold 1's model is on disk; the rerun fits folds 2.. and matches the full run
    killed = Store(tmp_path / "killed")
    first_fold = store.path("models", task, result.name) / "fold0.joblib"
    (killed.path("models", task, result.name)).mkdir(parents=True)
    shutil.copy(first_fold, killed.path("models", task, result.name) / "fold0.joblib")
    resumed = _fit(key, _params(key, **overrides), target, inputs, killed, task)
    assert not resumed.reused and np.array_equal(resumed.oof, result.oof) and np.array_equal(resumed.test, result.test)
    # determinism: a fresh store, same seed, identical OOF
    fresh = _fit(key, _params(key, **overrides), target, inputs, Store(tmp_path / "b"), task)
    assert not fresh.reused and np.array_equal(fresh.oof, result.oof) and np.array_equal(fresh.test, result.test)
    # a changed param changes the key
    changed = make_model(key, _changed(key), seed=3, target=t)
    from mmstack.models.base import run_key

    assert run_key(changed, inputs, target.folds) != result.run_key
    assert run_key(make_model(key, _params(key, **overrides), seed=4, target=t), inputs, target.folds) != result.run_key, \
        "the seed is in the key"


def test_registry_has_the_zoo():
    assert {"lgb", "cat", "xgb", "ridge", "mlp", "xattn", "gnn", "twotower"} <= set(MODELS)
    assert MODELS["ridge"].input_kind == "sparse"
