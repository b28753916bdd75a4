"""The level-1 fold loop, written once.

A model family implements only :meth:`Level1Model.fit_fold` and :meth:`Level1Model.predict`. :func:`train_model`
owns the folds, out-of-fold accumulation (every training row predicted exactly once), test-prediction averaging,
seeding, timing, per-fold logging, saving, reuse of an unchanged run and resume of a killed one.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import joblib
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import ConfigError, ModelError
from ..folds import Folds
from ..metrics import METRICS
from ..store import Store, make_key, read_json, write_joblib, write_json, write_parquet

log = logging.getLogger(__name__)


@dataclass
class ModelInput:
    """A model's matrix over all rows (train then test) with the names of categorical columns."""

    X: pd.DataFrame | sp.csr_matrix
    categorical: list[str]
    block_keys: dict[str, str]
    n_train: int
    # per fold k: replacement values of target-reading columns for training rows (Folds.out_of_fold)
    train_views: dict[int, pd.DataFrame] = field(default_factory=dict)
    # other block artifacts by block name (e.g. {"graph": {"graph": torch_geometric Data}}); dense frames keep
    # the row id as their index, so a model can find its rows in them
    extras: dict[str, dict[str, Any]] = field(default_factory=dict)

    def rows(self, index: np.ndarray) -> pd.DataFrame | sp.csr_matrix:
        if isinstance(self.X, pd.DataFrame):
            return self.X.iloc[index]
        return self.X[index]

    def training_rows(self, k: int, index: np.ndarray) -> pd.DataFrame | sp.csr_matrix:
        """Rows ``index`` as the model of fold k is trained on them (nested target-reading columns)."""
        rows = self.rows(index)
        view = self.train_views.get(k)
        if view is None or view.shape[1] == 0:
            return rows
        return rows.assign(**{c: view[c].to_numpy()[index] for c in view.columns})

    @property
    def train_index(self) -> np.ndarray:
        return np.arange(self.n_train)

    @property
    def test_index(self) -> np.ndarray:
        return np.arange(self.n_train, self.X.shape[0])


class Level1Model:
    """A model family: subclasses set ``key``, ``version``, ``default_params``, ``input_kind`` and implement
    ``fit_fold`` and ``predict``."""

    key: ClassVar[str]
    version: ClassVar[str] = "1"
    input_kind: ClassVar[str] = "dense"  # "dense" (frames with categorical codes) or "sparse" (CSR)
    default_params: ClassVar[dict[str, Any]] = {}

    def __init__(self, params: dict[str, Any] | None = None, seed: int = 42):
        unknown = set(params or {}) - set(self.default_params)
        if unknown:
            raise ConfigError(f"models.{self.key}: unknown param(s) {', '.join(sorted(unknown))}; "
                              f"known: {', '.join(sorted(self.default_params))}")
        self.params = {**self.default_params, **(params or {})}
        self.seed = seed

    def bind(self, inputs: ModelInput) -> None:
        """Called once before the fold loop: a model that needs more than its rows (a graph, all rows' features)
        takes it here. The default needs nothing."""

    def fit_fold(self, X_train, y_train: np.ndarray, X_valid, y_valid: np.ndarray, categorical: list[str]) -> Any:
        raise NotImplementedError

    def predict(self, fitted: Any, X) -> np.ndarray:
        raise NotImplementedError

    def importance(self, fitted: Any) -> dict[str, float] | None:
        """Per-feature importance of a fitted fold model, where the family has one."""
        return None


@dataclass
class ModelResult:
    """A finished level-1 run: OOF and test predictions, per-fold scores, and where they are stored."""

    model: str
    run_key: str
    oof: np.ndarray
    test: np.ndarray
    fold_scores: list[float]
    cv: float
    seconds: float
    params: dict[str, Any]
    reused: bool
    importance: dict[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.model}__{self.run_key}"


def run_key(model: Level1Model, inputs: ModelInput, folds: Folds) -> str:
    return make_key(model.key, model.version, model.params, model.seed, inputs.block_keys, folds.key)


def train_model(model: Level1Model, inputs: ModelInput, y: np.ndarray, folds: Folds, store: Store, task: str,
                metric: str = "rmse", clip: tuple[float, float] | None = None) -> ModelResult:
    """Fit ``model`` on every fold, or reuse what is stored; returns OOF and fold-averaged test predictions."""
    score = METRICS[metric]
    key = run_key(model, inputs, folds)
    name = f"{model.key}__{key}"
    oof_path = store.path("oof", task, name, ".parquet")
    test_path = store.path("oof", task, name, ".test.parquet")
    info_path = store.path("oof", task, name, ".json")
    if oof_path.is_file() and test_path.is_file() and info_path.is_file():
        info = read_json(info_path)
        log.info("%s: reused %s (cv %s=%.5f)", model.key, key, metric, info["cv"])
        return ModelResult(model.key, key, pd.read_parquet(oof_path)["pred"].to_numpy(),
                           pd.read_parquet(test_path)["pred"].to_numpy(), info["folds"], info["cv"],
                           info["seconds"], info["params"], True, info.get("importance", {}))

    n_train = inputs.n_train
    oof = np.full(n_train, np.nan)
    covered = np.zeros(n_train, dtype=np.int32)
    test_sum = np.zeros(inputs.X.shape[0] - n_train)
    fold_scores, fold_seconds, importance = [], [], {}
    fold_dir = store.path("models", task, name)
    X_test = inputs.rows(inputs.test_index)
    model.bind(inputs)
    for k, tr, va in folds.split():
        fold_file = fold_dir / f"fold{k}.joblib"
        if fold_file.is_file():
            saved = joblib.load(fold_file)
            log.info("%s fold %d/%d reused (%s=%.5f)", model.key, k + 1, folds.n_folds, metric, saved["score"])
        else:
            start = time.perf_counter()
            fitted = model.fit_fold(inputs.training_rows(k, tr), y[tr], inputs.rows(va), y[va], inputs.categorical)
            valid_pred = _clip(model.predict(fitted, inputs.rows(va)), clip)
            test_pred = _clip(model.predict(fitted, X_test), clip)
            if not (np.isfinite(valid_pred).all() and np.isfinite(test_pred).all()):  # never store a broken fold
                raise ModelError(f"{model.key} fold {k + 1}/{folds.n_folds}: predictions are not finite (NaN); "
                                 "nothing stored for it (check the inputs, or lower the learning rate)")
            saved = {"model": fitted, "valid_pred": valid_pred, "test_pred": test_pred,
                     "score": score(y[va], valid_pred), "seconds": time.perf_counter() - start,
                     "importance": model.importance(fitted)}
            write_joblib(fold_file, saved)
            log.info("%s fold %d/%d %s=%.5f (%.1fs)", model.key, k + 1, folds.n_folds, metric, saved["score"],
                     saved["seconds"])
        oof[va] = saved["valid_pred"]
        covered[va] += 1
        test_sum += saved["test_pred"]
        fold_scores.append(float(saved["score"]))
        fold_seconds.append(float(saved["seconds"]))
        for feat, value in (saved.get("importance") or {}).items():
            importance[feat] = importance.get(feat, 0.0) + float(value) / folds.n_folds
    if not (covered == 1).all():
        raise RuntimeError(f"{model.key}: {int((covered != 1).sum())} training rows not predicted exactly once")
    if not np.isfinite(oof).all():
        raise RuntimeError(f"{model.key}: non-finite out-of-fold predictions")
    test = test_sum / folds.n_folds
    cv = score(y, oof)
    seconds = float(sum(fold_seconds))
    write_parquet(test_path, pd.DataFrame({"row_id": inputs.test_index, "pred": test}))
    write_json(info_path, {"model": model.key, "key": key, "params": model.params, "seed": model.seed,
                           "blocks": inputs.block_keys, "folds_key": folds.key, "metric": metric, "cv": cv,
                           "folds": fold_scores, "fold_seconds": fold_seconds, "seconds": seconds,
                           "importance": importance})
    # the OOF file is written last: its presence marks the run complete
    write_parquet(oof_path, pd.DataFrame({"row_id": inputs.train_index, "fold": folds.fold, "pred": oof}))
    log.info("%s: cv %s=%.5f (folds %s) in %.1fs", model.key, metric, cv,
             " ".join(f"{s:.4f}" for s in fold_scores), seconds)
    return ModelResult(model.key, key, oof, test, fold_scores, cv, seconds, model.params, False, importance)


def _clip(pred: np.ndarray, clip: tuple[float, float] | None) -> np.ndarray:
    pred = np.asarray(pred, dtype=np.float64).ravel()
    return np.clip(pred, *clip) if clip else pred
