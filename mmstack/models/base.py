"""The level-1 fold loop, written once.

A model family implements only :meth:`Level1Model.fit_fold` and :meth:`Level1Model.predict`. :func:`train_model`
owns the folds, out-of-fold accumulation (every training row predicted exactly once), test-prediction averaging,
seeding, timing, per-fold logging, saving, reuse of an unchanged run and resume of a killed one.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import joblib
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..budget import Budget
from ..errors import ConfigError, ModelError
from ..folds import Folds
from ..memory import release
from ..store import Store, make_key, read_json, write_joblib, write_json, write_parquet
from ..targets import Target, TargetData, regression_target

log = logging.getLogger(__name__)


@dataclass
class ModelInput:
    """A model's matrix over all rows (row-id order) with the names of categorical columns.

    ``train_ids`` are the row ids of the target's labelled rows, in the order of its folds; ``test_ids`` the rows
    to predict. ``n_train`` is a shortcut for the common layout: labelled rows 0..n_train-1, the rest to predict.
    """

    X: pd.DataFrame | sp.csr_matrix
    categorical: list[str]
    block_keys: dict[str, str]
    n_train: int | None = None
    # per fold k: replacement values of target-reading columns for the labelled rows (Folds.out_of_fold)
    # per fold, the nested target-reading columns of its training rows (read when the fold asks: JoinedViews)
    train_views: Mapping[int, pd.DataFrame] = field(default_factory=dict)
    # other block artifacts by block name (e.g. {"graph": {"graph": torch_geometric Data}}); dense frames keep
    # the row id as their index, so a model can find its rows in them
    extras: dict[str, dict[str, Any]] = field(default_factory=dict)
    train_ids: np.ndarray | None = None
    test_ids: np.ndarray | None = None

    def __post_init__(self):
        if self.train_ids is None:
            if self.n_train is None:
                raise ValueError("ModelInput needs train_ids or n_train")
            self.train_ids = np.arange(self.n_train)
        if self.test_ids is None:
            self.test_ids = np.setdiff1d(np.arange(self.X.shape[0]), self.train_ids)
        self.train_ids = np.asarray(self.train_ids, np.int64)
        self.test_ids = np.asarray(self.test_ids, np.int64)
        self.n_train = len(self.train_ids)

    def rows(self, ids: np.ndarray) -> pd.DataFrame | sp.csr_matrix:
        """The rows with row ids ``ids`` (a new frame of their own)."""
        if isinstance(self.X, pd.DataFrame):
            return self.X.take(ids)
        return self.X[ids]

    def test_rows(self) -> pd.DataFrame | sp.csr_matrix:
        """The rows to predict, to be read only: a view of the matrix when they are one ascending run of row ids
        (test rows after the training rows, the usual case), else a copy. Held through a model's folds, so at
        full size the copy would be a few hundred MB for nothing."""
        ids = self.test_ids
        if isinstance(self.X, pd.DataFrame) and len(ids) and (np.diff(ids) == 1).all():
            return self.X.iloc[int(ids[0]):int(ids[-1]) + 1]
        return self.rows(ids)

    def training_rows(self, k: int, positions: np.ndarray) -> pd.DataFrame | sp.csr_matrix:
        """Labelled rows at ``positions`` as the model of fold k is trained on them (nested target-reading
        columns)."""
        rows = self.rows(self.train_ids[positions])
        view = self.train_views.get(k)
        if view is None or view.shape[1] == 0:
            return rows
        # the rows are this call's own copy: the nested values are written into it (assign would copy it again)
        columns = rows.columns.get_indexer(view.columns)
        rows.iloc[:, columns] = view.to_numpy(dtype=np.result_type(*rows.dtypes.iloc[columns]))[positions]
        return rows

    @property
    def train_index(self) -> np.ndarray:
        return self.train_ids

    @property
    def test_index(self) -> np.ndarray:
        return self.test_ids


def model_matrix(frames: list[pd.DataFrame], categorical: list[str] = ()) -> pd.DataFrame:
    """Dense frames (same rows) side by side as one float32 frame backed by a single column-major array, with
    the ``categorical`` columns' missing codes (-1) as NaN.

    Memory at full size: a row selection is one copy, and a library that asks for a float32 matrix (LightGBM,
    XGBoost, the nets' scaler) gets a view of it, not a copy per block and dtype; with NaN for missing codes no
    model needs its own converted copy."""
    index = frames[0].index
    for frame in frames[1:]:
        if not frame.index.equals(index):
            raise ValueError("model_matrix: the frames' rows differ")
    columns = [c for f in frames for c in f.columns]
    values = np.empty((len(index), len(columns)), dtype=np.float32, order="F")
    start = 0
    for frame in frames:
        values[:, start:start + frame.shape[1]] = frame.to_numpy(dtype=np.float32)
        start += frame.shape[1]
    for j in np.flatnonzero(pd.Index(columns).isin(list(categorical))):
        values[values[:, j] < 0, j] = np.nan
    return pd.DataFrame(values, index=index, columns=columns, copy=False)


class Level1Model:
    """A model family: subclasses set ``key``, ``version``, ``default_params``, ``input_kind`` and implement
    ``fit_fold`` and ``predict``.

    A model is made for one target (:class:`~mmstack.targets.Target`): its objective, head and output shape
    follow the target's problem type; ``predict`` returns rows x ``target.n_outputs``. What :meth:`bind` derives
    from all rows (token tables, a graph) is listed in ``row_tables``: it is left out when the model is saved with
    a fold, so a saved fold model carries its params, target and fitted state, and predicts new rows after
    :meth:`bind` is called with those rows' inputs.
    """

    key: ClassVar[str]
    version: ClassVar[str] = "1"
    input_kind: ClassVar[str] = "dense"  # "dense" (frames with categorical codes) or "sparse" (CSR)
    default_params: ClassVar[dict[str, Any]] = {}
    row_tables: ClassVar[tuple[str, ...]] = ()  # attributes set by bind() from all rows' inputs
    requires_blocks: ClassVar[tuple[str, ...]] = ()  # the family needs at least one of these blocks

    def __init__(self, params: dict[str, Any] | None = None, seed: int = 42, target: Target | None = None):
        params = dict(params or {})
        # every family's bag of seeds: each fold is fitted with seeds seed, seed + 1, ... and their predictions
        # averaged (the nets' and GBDTs' run-to-run spread is as large as a tuning step)
        self.n_seeds = params.pop("seeds", 1)
        if not isinstance(self.n_seeds, int) or isinstance(self.n_seeds, bool) or self.n_seeds < 1:
            raise ConfigError(f"models.{self.key}.seeds must be a whole number >= 1, got {self.n_seeds!r}")
        unknown = set(params) - set(self.default_params)
        if unknown:
            raise ConfigError(f"models.{self.key}: unknown param(s) {', '.join(sorted(unknown))}; "
                              f"known: {', '.join(sorted([*self.default_params, 'seeds']))}")
        self.params = {**self.default_params, **params}
        self.seed = seed
        self.target = target or regression_target()

    # a time limit's end for the fold being fitted (time.monotonic()); families stop boosting / epochs there and
    # set ``truncated`` (mmstack.budget)
    deadline: float | None = None
    truncated: bool = False

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in self.row_tables + ("deadline", "truncated")}

    def out_of_time(self) -> bool:
        """Has the fold's deadline passed? (Marks the fold truncated.)"""
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.truncated = True
        return self.truncated

    def bind(self, inputs: ModelInput) -> None:
        """Called once before the fold loop (and before predicting new rows): a model that needs more than its
        rows' matrix (a graph, token tables) takes it here. The default needs nothing."""

    def fit_fold(self, X_train, y_train: np.ndarray, X_valid, y_valid: np.ndarray, categorical: list[str]) -> Any:
        raise NotImplementedError

    def predict(self, fitted: Any, X) -> np.ndarray:
        raise NotImplementedError

    def importance(self, fitted: Any) -> dict[str, float] | None:
        """Per-feature importance of a fitted fold model, where the family has one."""
        return None

    def fit_bag(self, X_train, y_train: np.ndarray, X_valid, y_valid: np.ndarray, categorical: list[str]) -> Any:
        """``fit_fold`` once per seed of the bag: the fitted state, or a :class:`SeedBag` of them. Past the fold's
        deadline the bag stops early (at least one member)."""
        if self.n_seeds == 1:
            # hand the fold's own copy of its rows over as the only reference, so that a model that bins them
            # (the GBDTs) frees them once binned: the copy is about as large as the binned matrix
            rows = [X_train]
            del X_train
            return self.fit_fold(rows.pop(), y_train, X_valid, y_valid, categorical)
        base, members = self.seed, []
        try:
            for offset in range(self.n_seeds):
                self.seed = base + offset
                members.append(self.fit_fold(X_train, y_train, X_valid, y_valid, categorical))
                if self.out_of_time():
                    break
        finally:
            self.seed = base
        return SeedBag(members)

    def predict_fitted(self, fitted: Any, X) -> np.ndarray:
        """``predict`` of a fitted fold state, averaged over the members of a seed bag."""
        if isinstance(fitted, SeedBag):
            return np.mean([self.predict(member, X) for member in fitted.members], axis=0)
        return self.predict(fitted, X)

    def bag_importance(self, fitted: Any) -> dict[str, float] | None:
        """``importance``, averaged over the members of a seed bag."""
        if not isinstance(fitted, SeedBag):
            return self.importance(fitted)
        parts = [self.importance(member) or {} for member in fitted.members]
        names = {name for part in parts for name in part}
        return {name: float(np.mean([part.get(name, 0.0) for part in parts])) for name in names} or None

    def sample_weight(self, y: np.ndarray) -> np.ndarray | None:
        """Per-row training weights from the ``class_weight`` param ("balanced": rows weighted by the inverse of
        their class's frequency), or None."""
        mode = self.params.get("class_weight")
        if not mode or not self.target.is_classification:
            return None
        if mode != "balanced":
            raise ConfigError(f"models.{self.key}.class_weight must be \"balanced\" or empty, got {mode!r}")
        counts = np.bincount(y, minlength=self.target.n_classes).astype(np.float64)
        weights = len(y) / (self.target.n_classes * np.maximum(counts, 1.0))
        return weights[y]


@dataclass
class SeedBag:
    """The fitted states of one fold, one per seed (see ``models.<key>.seeds``)."""

    members: list[Any]


@dataclass
class ModelResult:
    """A finished level-1 run: OOF and test predictions (rows x outputs), per-fold scores, where they are stored."""

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
    target: str = ""

    @property
    def name(self) -> str:
        return f"{self.model}__{self.run_key}"


def run_key(model: Level1Model, inputs: ModelInput, folds: Folds) -> str:
    bag = [model.n_seeds] if model.n_seeds > 1 else []  # runs of one seed keep the keys they always had
    return make_key(model.key, model.version, model.params, model.seed, inputs.block_keys, folds.key,
                    model.target.key(), *bag)


def pred_columns(n_outputs: int) -> list[str]:
    """Column names of stored predictions: ``pred`` for one output, ``pred_0..`` for several."""
    return ["pred"] if n_outputs == 1 else [f"pred_{j}" for j in range(n_outputs)]


def _read_preds(path) -> np.ndarray:
    frame = pd.read_parquet(path)
    return frame[[c for c in frame.columns if c == "pred" or c.startswith("pred_")]].to_numpy(dtype=np.float64)


def _pred_frame(row_ids: np.ndarray, pred: np.ndarray, **columns) -> pd.DataFrame:
    return pd.DataFrame({"row_id": row_ids, **columns, **dict(zip(pred_columns(pred.shape[1]), pred.T))})


def fold_path(store: Store, task: str, name: str, k: int):
    """Where fold ``k`` of the level-1 run ``name`` is saved (a stand-alone fold model, see :func:`load_fold`)."""
    return store.path("models", task, name) / f"fold{k}.joblib"


def load_fold(store: Store, task: str, name: str, k: int) -> tuple[Level1Model, Any]:
    """A saved fold model: the model (params, seed, target; call ``bind`` with new rows' inputs before predicting
    when the family needs row tables) and its fitted state."""
    saved = joblib.load(fold_path(store, task, name, k))
    return saved["model_object"], saved["model"]


def fit_fold_saved(model: Level1Model, inputs: ModelInput, data: TargetData, X_test, fold_file,
                   split: tuple[int, np.ndarray, np.ndarray]) -> dict[str, Any]:
    """Fit fold ``k`` of ``split = (k, train positions, valid positions)``, predict its validation rows and the
    test rows, and save it all as the stand-alone fold file; returns what was saved."""
    k, tr, va = split
    target, y, folds = data.target, data.y, data.folds
    model.truncated = False
    start = time.perf_counter()
    X_valid = inputs.rows(inputs.train_ids[va])
    fitted = model.fit_bag(inputs.training_rows(k, tr), y[tr], X_valid, y[va], inputs.categorical)
    valid_pred = target.finish(model.predict_fitted(fitted, X_valid))
    # every row labelled (nothing to predict): LightGBM and others refuse an empty frame
    test_pred = (target.finish(model.predict_fitted(fitted, X_test)) if len(inputs.test_ids)
                 else np.zeros((0, target.n_outputs)))
    if not (np.isfinite(valid_pred).all() and np.isfinite(test_pred).all()):
        raise ModelError(f"{model.key} fold {k + 1}/{folds.n_folds}: predictions are not finite (NaN); "
                         "nothing stored for it (check the inputs, or lower the learning rate)")
    if model.truncated:
        log.warning("%s fold %d/%d: stopped at the time limit's fold deadline", model.key, k + 1, folds.n_folds)
    saved = {"model": fitted, "model_object": model, "truncated": model.truncated,
             "valid_pred": valid_pred, "test_pred": test_pred,
             "score": target.metric(y[va], valid_pred), "seconds": time.perf_counter() - start,
             "importance": model.bag_importance(fitted)}
    write_joblib(fold_file, saved)
    log.info("%s fold %d/%d %s=%.5f (%.1fs)", model.key, k + 1, folds.n_folds, target.metric.name, saved["score"],
             saved["seconds"])
    return saved


def _remote_fold(model: Level1Model, inputs: ModelInput, data: TargetData, item: tuple[str, int]) -> int:
    """One fold ``item = (fold file, k)`` as a work unit of :mod:`mmstack.parallel` (a Ray task): fit and save
    it unless it is saved already (a retried task finds it)."""
    from pathlib import Path

    fold_file, k = Path(item[0]), item[1]
    if not fold_file.is_file():
        model.bind(inputs)  # row tables are not pickled with the model
        split = next(s for s in data.folds.split() if s[0] == k)
        fit_fold_saved(model, inputs, data, inputs.test_rows(), fold_file, split)
    return k


def _fit_folds_elsewhere(model: Level1Model, inputs: ModelInput, data: TargetData, store: Store, task: str,
                         name: str, budget: Budget | None) -> None:
    """On a distributed executor (``--ray``), fit the folds not yet saved side by side as tasks that write their
    fold files into the shared store; the fold loop then reads them as it reads a resumed run's. Not under a time
    limit: its fold deadlines are planned one fold after another."""
    from .. import parallel

    executor = parallel.current()
    if not executor.distributed or (budget is not None and budget.limited):
        return
    todo = [k for k in range(data.folds.n_folds) if not fold_path(store, task, name, k).is_file()]
    if todo:
        log.info("%s: %d fold(s) as distributed tasks", model.key, len(todo))
        items = [(str(fold_path(store, task, name, k)), k) for k in todo]
        executor.map(_remote_fold, items, shared=(model, inputs, data))


def train_model(model: Level1Model, inputs: ModelInput, data: TargetData, store: Store, task: str,
                budget: Budget | None = None) -> ModelResult:
    """Fit ``model`` on every fold of ``data``, or reuse what is stored; returns OOF and fold-averaged test
    predictions (rows x outputs, made valid for the target by :meth:`Target.finish`). With a ``budget``, the model
    stops (:class:`~mmstack.budget.ModelSkipped`) before a fold its remaining folds' time would not fit."""
    target, y, folds = data.target, data.y, data.folds
    if model.target.key() != target.key():
        raise ValueError(f"{model.key} was made for target {model.target.name}, not {target.name}")
    if not np.array_equal(inputs.train_ids, folds.row_ids):
        raise ValueError(f"{model.key}: the model matrix's labelled rows are not the folds' rows")
    metric = target.metric
    key = run_key(model, inputs, folds)
    name = f"{model.key}__{key}"
    oof_path = store.path("oof", task, name, ".parquet")
    test_path = store.path("oof", task, name, ".test.parquet")
    info_path = store.path("oof", task, name, ".json")
    if oof_path.is_file() and test_path.is_file() and info_path.is_file():
        info = read_json(info_path)
        log.info("%s: reused %s (cv %s=%.5f)", model.key, key, metric.name, info["cv"])
        return ModelResult(model.key, key, _read_preds(oof_path), _read_preds(test_path), info["folds"], info["cv"],
                           info["seconds"], info["params"], True, info.get("importance", {}), target.name)

    n_out = target.n_outputs
    oof = np.full((len(y), n_out), np.nan)
    covered = np.zeros(len(y), dtype=np.int32)
    test_sum = np.zeros((len(inputs.test_ids), n_out))
    fold_scores, fold_seconds, importance, fitted_seconds = [], [], {}, []
    X_test = inputs.test_rows()
    model.bind(inputs)
    _fit_folds_elsewhere(model, inputs, data, store, task, name, budget)
    for k, tr, va in folds.split():
        fold_file = fold_path(store, task, name, k)
        saved = joblib.load(fold_file) if fold_file.is_file() else None
        if saved is not None and saved.get("truncated") and (budget is None or not budget.limited):
            saved = None  # cut short by an earlier run's time limit: fit it properly now
        if saved is not None:
            log.info("%s fold %d/%d reused (%s=%.5f)", model.key, k + 1, folds.n_folds, metric.name, saved["score"])
        else:
            if budget is not None:
                model.deadline = budget.fold_deadline(model.key, k, folds.n_folds, fitted_seconds)
            saved = fit_fold_saved(model, inputs, data, X_test, fold_file, (k, tr, va))
            fitted_seconds.append(saved["seconds"])
            release()  # the fold's copies of its rows, the library's matrices
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
        raise ModelError(f"{model.key}: non-finite out-of-fold predictions")
    test = target.finish(test_sum / folds.n_folds)
    cv = metric(y, oof)
    seconds = float(sum(fold_seconds))
    write_parquet(test_path, _pred_frame(inputs.test_ids, test))
    write_json(info_path, {"model": model.key, "key": key, "params": model.params, "seed": model.seed,
                           "seeds": model.n_seeds,
                           "target": target.to_dict(), "blocks": inputs.block_keys, "folds_key": folds.key,
                           "metric": metric.name, "greater_is_better": metric.greater_is_better, "cv": cv,
                           "folds": fold_scores, "fold_seconds": fold_seconds, "seconds": seconds,
                           "importance": importance})
    # the OOF file is written last: its presence marks the run complete
    write_parquet(oof_path, _pred_frame(inputs.train_ids, oof, fold=folds.fold))
    log.info("%s: cv %s=%.5f (folds %s) in %.1fs", model.key, metric.name, cv,
             " ".join(f"{s:.4f}" for s in fold_scores), seconds)
    return ModelResult(model.key, key, oof, test, fold_scores, cv, seconds, model.params, False, importance,
                       target.name)
