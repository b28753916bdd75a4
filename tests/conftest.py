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


@pytest.fixture
def avito_config():
    from mmstack.config import Config

    def make(*overrides: str) -> Config:
        # small and fast: 3 folds, few rounds
        base = ["folds.n_folds=3", "models.lgb.max_rounds=200", "models.lgb.early_stopping=20"]
        return Config.load(ROOT / "configs" / "avito.toml", base + list(overrides))

    return make
