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
    "models.lgb.max_rounds=200", "models.lgb.early_stopping=20",
    "models.cat.max_rounds=150", "models.cat.early_stopping=20",
    "models.xgb.max_rounds=150", "models.xgb.early_stopping=20",
    "models.mlp.epochs=4", "models.mlp.patience=2",
    "models.xattn.epochs=2", "models.gnn.epochs=3",
    "ablation.params={ learning_rate = 0.2, max_rounds = 100, early_stopping = 10 }",
    "features.text_tfidf.svd_components=5",
    "features.image_embed.image_size=64",
]


def fast_config(*overrides: str):
    from mmstack.config import Config

    return Config.load(ROOT / "configs" / "avito.toml", FAST + list(overrides))
