"""Shared fixtures: tiny generated datasets, made once per test session. Nothing here reads ../shared."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_avito_dir(tmp_path_factory) -> Path:
    """A small Kaggle-format Avito dataset with images, active and periods files (read-only by convention)."""
    from mmstack.data.avito_synth import write_avito

    out = tmp_path_factory.mktemp("avito") / "input"
    write_avito(out, rows=600, seed=7, n_jobs=1, image_size=(64, 48))
    return out


@pytest.fixture
def avito_copy(tiny_avito_dir, tmp_path) -> Path:
    """A private copy of the tiny dataset that a test may damage."""
    dest = tmp_path / "input"
    shutil.copytree(tiny_avito_dir, dest)
    return dest


# The default config made small and fast for tiny data: 3 folds, few rounds and epochs, small encoders.
FAST = [
    "folds.n_folds=3",
    "task.size_defaults=false",  # tests pin their settings; tests/test_size_defaults.py covers the tiers
    "models.lgb.max_rounds=200", "models.lgb.early_stopping=20",
    "models.cat.max_rounds=150", "models.cat.early_stopping=20",
    "models.xgb.max_rounds=150", "models.xgb.early_stopping=20",
    "models.mlp.epochs=4", "models.mlp.patience=2",
    "models.xattn.epochs=2", "models.gnn.epochs=3",
    # one seed per model: the seed bags are covered by tests/models/test_fold_loop.py
    "models.lgb.seeds=1", "models.mlp.seeds=1", "models.xattn.seeds=1", "models.gnn.seeds=1",
    "ablation.params={ learning_rate = 0.2, max_rounds = 100, early_stopping = 10 }",
    "features.text_tfidf.svd_components=5",
    "features.image_embed.image_size=64",
]


def fast_config(*overrides: str):
    from mmstack.config import Config

    return Config.load(ROOT / "configs" / "avito.toml", FAST + list(overrides))


def relabel(data, y, problem: str = "regression", name: str | None = None, fingerprint: str = "relabelled"):
    """``data`` with its (first) target's labels of the training rows replaced by ``y`` (rows to predict stay
    unlabelled) and the target's problem type set to ``problem``."""
    import dataclasses

    import numpy as np

    from mmstack.targets import TargetSpec, make_target

    old = data.target(name)
    labels = data.labels.copy()
    labels[old.name] = np.r_[np.asarray(y, dtype=object if problem != "regression" else float),
                             np.full(data.n_test, np.nan)]
    if problem == "regression":
        labels[old.name] = labels[old.name].astype(float)
    spec = TargetSpec(old.name, problem, value_range=old.value_range if problem == "regression" else None)
    return dataclasses.replace(data, _labels=labels, targets=[make_target(spec, labels[old.name])],
                               fingerprint=fingerprint)


def target_data_for(data, n_folds: int = 3, seed: int = 0, name: str | None = None, store=None, **kwargs):
    """The (first) target of ``data`` with folds, as the fold loop and target-reading blocks see it."""
    from mmstack.folds import target_data
    from mmstack.store import Store

    if store is None:  # a folder of its own, removed when the test session ends
        import atexit
        import shutil
        import tempfile

        folder = tempfile.mkdtemp(prefix="folds-")
        atexit.register(shutil.rmtree, folder, True)
        store = Store(folder)
    return target_data(store, data, data.target(name), n_folds=n_folds, seed=seed, **kwargs)


def train(model, inputs, y, folds, store, task: str = "toy", value_range=(0.0, 1.0)):
    """``train_model`` for a toy regression task: labelled rows 0..len(y)-1 with ``folds``; the model is made
    for a regression target with ``value_range`` (as the tasks' 0..1 targets)."""
    import numpy as np

    from mmstack.models.base import train_model
    from mmstack.targets import TargetData, regression_target

    model.target = regression_target("y", value_range=value_range)
    return train_model(model, inputs, TargetData(model.target, np.arange(len(y)), np.asarray(y), folds), store, task)
