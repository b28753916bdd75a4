"""Contract of every registered level-1 model, on tiny generated data through the real feature blocks."""
from __future__ import annotations

import numpy as np
import pytest

from mmstack.data import avito
from mmstack.features.base import BlockCache
from mmstack.features.registry import make_block
from mmstack.folds import load_or_make_folds
from mmstack.models.registry import MODELS, _load_all, make_model
from mmstack.models.base import train_model
from mmstack.pipeline import assemble
from mmstack.store import Store

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
    folds = load_or_make_folds(store, "avito", data.fingerprint, data.n_train, n_folds=3)
    cache = BlockCache(data, folds, store, seed=0)
    made = {}
    for name in BLOCKS + sorted({b for extra in MODEL_BLOCKS.values() for b in extra}):
        cache.get(made.setdefault(name, make_block(name, BLOCK_PARAMS.get(name))), lambda n: made[n])
    return data, folds, cache


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
    data, folds, cache = blocks
    assert_contract(key, data, folds, cache, BLOCKS + MODEL_BLOCKS.get(key, []), "avito", tmp_path)


def assert_contract(key, data, folds, cache, block_names, task, tmp_path):
    """OOF coverage, shapes, finite values in range, no worse than a constant, stored OOF, reuse, determinism,
    and a key that changes with a param and with the seed."""
    model = make_model(key, _params(key), seed=3)
    inputs = assemble(cache, block_names, model.input_kind, data.n_train)
    store = Store(tmp_path / "a")
    result = train_model(model, inputs, data.y, folds, store, task, clip=(0.0, 1.0))
    assert result.oof.shape == (data.n_train,) and result.test.shape == (data.n_test,)
    assert np.isfinite(result.oof).all() and np.isfinite(result.test).all()
    assert (result.oof >= 0).all() and (result.oof <= 1).all() and (result.test >= 0).all() and (result.test <= 1).all()
    assert len(result.fold_scores) == folds.n_folds and not result.reused
    assert result.cv < 1.05 * np.std(data.y), "no worse than a constant, give or take noise on 600 rows"
    oof_file = store.path("oof", task, result.name, ".parquet")
    import pandas as pd

    stored = pd.read_parquet(oof_file)
    assert stored["row_id"].tolist() == list(range(data.n_train)) and (stored["fold"].to_numpy() == folds.fold).all()
    # second call: reused, same predictions
    again = train_model(make_model(key, _params(key), seed=3), inputs, data.y, folds, store, task, clip=(0.0, 1.0))
    assert again.reused and np.array_equal(again.oof, result.oof)
    # determinism: a fresh store, same seed, identical OOF
    fresh = train_model(make_model(key, _params(key), seed=3), inputs, data.y, folds, Store(tmp_path / "b"), task,
                        clip=(0.0, 1.0))
    assert not fresh.reused and np.array_equal(fresh.oof, result.oof) and np.array_equal(fresh.test, result.test)
    # a changed param changes the key
    changed = make_model(key, _changed(key), seed=3)
    from mmstack.models.base import run_key

    assert run_key(changed, inputs, folds) != result.run_key
    assert run_key(make_model(key, _params(key), seed=4), inputs, folds) != result.run_key, "the seed is in the key"


def test_registry_has_the_zoo():
    assert {"lgb", "cat", "xgb", "ridge", "mlp", "xattn", "gnn", "twotower"} <= set(MODELS)
    assert MODELS["ridge"].input_kind == "sparse"
