"""One run end to end: data -> folds -> feature blocks -> level-1 models -> stack -> submission and report."""
from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd

from .config import Config, diff_flat
from .data.dataset import Dataset
from .data.schema import check_rows_for_folds
from .errors import ConfigError
from .features.base import BlockCache, BlockOutput, FeatureBlock
from .features.registry import make_block
from .folds import Folds, load_or_make_folds
from .metrics import LOWER_IS_BETTER, METRICS
from .models.base import ModelInput, ModelResult, train_model
from .models.registry import make_model
from .report import build_metrics, write_report
from .run_folder import RunFolder
from .runs import load_runs
from .store import Store, make_key, write_joblib, write_text
from .tasks import TaskSpec, get_task

log = logging.getLogger(__name__)


@dataclass
class Timer:
    """Seconds spent per pipeline step, in order."""

    seconds: dict[str, float] = field(default_factory=dict)

    def step(self, name: str):
        timer = self

        class _Step:
            def __enter__(self):
                self.start = time.perf_counter()

            def __exit__(self, *exc):
                timer.seconds[name] = round(time.perf_counter() - self.start, 3)

        return _Step()


def resolve_input(config: Config, input_dir: Path | None) -> Path:
    if input_dir is not None:
        return Path(input_dir)
    configured = config.get("task.input")
    if not configured:
        raise ConfigError("no input folder: pass --input DIR or set task.input in the config")
    return Path(configured)


def prepare(config: Config, input_dir: Path, store: Store, timer: Timer) -> tuple[TaskSpec, Dataset, Folds]:
    spec = get_task(config.task)
    with timer.step("load"):
        data = spec.load(input_dir, store, config.get("data") or {})
    with timer.step("folds"):
        strategy = config.get("folds.strategy", "kfold")
        groups = None
        if strategy == "group":
            column = config.get("folds.group_by", spec.group_column)
            groups = data.train[column].astype(str).to_numpy()
        check_rows_for_folds(data.train, int(config.get("folds.n_folds", 5)))  # an error naming the file
        folds = load_or_make_folds(store, spec.name, data.fingerprint, data.n_train,
                                   n_folds=int(config.get("folds.n_folds", 5)), strategy=strategy,
                                   seed=int(config.get("folds.seed", config.seed)), groups=groups)
    return spec, data, folds


def build_features(config: Config, data: Dataset, folds: Folds, store: Store) -> tuple[BlockCache, dict[str, FeatureBlock]]:
    blocks: dict[str, FeatureBlock] = {}

    def resolve(name: str) -> FeatureBlock:
        if name not in blocks:
            blocks[name] = make_block(name, config.block_params(name))
        return blocks[name]

    cache = BlockCache(data, folds, store, config.seed)
    for name in config.blocks:
        cache.get(resolve(name), resolve)
    return cache, blocks


def assemble(cache: BlockCache, names: list[str], kind: str, n_train: int) -> ModelInput:
    """Join the chosen blocks' outputs into one model matrix (dense frame or sparse CSR)."""
    outputs: dict[str, BlockOutput] = {n: cache.outputs[n] for n in names}
    keys = {n: cache.keys[n] for n in names}
    if kind == "dense":
        frames, categorical = [], []
        for name, out in outputs.items():
            features = out.features()
            if features is not None and features.shape[1]:
                frames.append(features)
                categorical += [c for c in out.categorical if c in features.columns]
        if not frames:
            raise ConfigError(f"no dense features in blocks {names}")
        X = pd.concat(frames, axis=1)
        if X.columns.duplicated().any():
            raise ConfigError(f"feature name clash between blocks {names}: {list(X.columns[X.columns.duplicated()])}")
        folds = sorted({k for out in outputs.values() for k in out.train_views})
        views = {k: pd.concat([o.train_views[k] for o in outputs.values() if k in o.train_views], axis=1)
                 for k in folds}
        extras = {n: o.extras for n, o in outputs.items() if o.extras}
        return ModelInput(X=X, categorical=categorical, block_keys=keys, n_train=n_train, train_views=views,
                          extras=extras)
    import scipy.sparse as sp

    mats = [o.sparse for o in outputs.values() if o.sparse is not None]
    if not mats:
        raise ConfigError(f"no sparse features in blocks {names}")
    return ModelInput(X=sp.hstack(mats, format="csr"), categorical=[], block_keys=keys, n_train=n_train)


def train_models(config: Config, spec: TaskSpec, data: Dataset, folds: Folds, store: Store,
                 cache: BlockCache, only: list[str] | None = None) -> list[ModelResult]:
    results = []
    for key in only or config.models:
        params = config.model_params(key)
        block_names = params.pop("blocks", None) or config.blocks
        unknown = [b for b in block_names if b not in cache.outputs]
        if unknown:
            raise ConfigError(f"models.{key}.blocks names block(s) not in [features] blocks: {', '.join(unknown)}")
        model = make_model(key, params, config.seed)
        inputs = assemble(cache, block_names, model.input_kind, data.n_train)
        results.append(train_model(model, inputs, data.y, folds, store, spec.name, spec.metric, spec.target_range))
    return results


def ablation(config: Config, spec: TaskSpec, data: Dataset, folds: Folds, store: Store,
             cache: BlockCache) -> dict[str, dict[str, Any]]:
    """CV of one model on the skeleton's blocks, on all blocks, and with each block left out.

    ``delta`` is the CV without the block minus the CV with all blocks: for RMSE, positive means the block helps.
    Every variant is an ordinary cached model run, so an unchanged ablation costs nothing on the next run.
    """
    if not config.get("ablation.enabled", False):
        return {}
    key = config.get("ablation.model", "lgb")
    params = {**config.model_params(key), **config.get("ablation.params", {})}
    params.pop("blocks", None)
    blocks = config.blocks
    variants = {"all blocks": blocks, "skeleton only": [b for b in config.get("ablation.baseline", ["basic"]) if b in blocks]}
    variants.update({f"without {b}": [x for x in blocks if x != b] for b in blocks if len(blocks) > 1})
    results: dict[str, dict[str, Any]] = {}
    for label, names in variants.items():
        if not names:
            continue
        model = make_model(key, params, config.seed)
        inputs = assemble(cache, names, model.input_kind, data.n_train)
        res = train_model(model, inputs, data.y, folds, store, spec.name, spec.metric, spec.target_range)
        results[label] = {"cv": res.cv, "blocks": names}
    base = results["all blocks"]["cv"]
    for label, r in results.items():
        r["delta"] = r["cv"] - base
    log.info("ablation (%s): %s", key, ", ".join(f"{k} {v['cv']:.5f}" for k, v in results.items()))
    return results


def stack_predictions(config: Config, spec: TaskSpec, results: list[ModelResult], y: np.ndarray,
                      folds: Folds, store: Store | None = None) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Blend the level-1 models with each configured blender; keep the one with the best nested CV.

    Cached under ``oof/<task>/stack__<key>.joblib``: the key covers the level-1 runs, the stack settings and folds.
    """
    key = make_key("stack", [r.name for r in results], config.get("stack"), folds.key, config.seed)
    path = store.path("oof", spec.name, f"stack__{key}", ".joblib") if store else None
    if path is not None and path.is_file():
        cached = joblib.load(path)
        log.info("stack: reused %s (%s, nested cv %.5f)", key, cached[0]["method"], cached[0]["cv"])
        return cached
    result = _fit_stacks(config, spec, results, y, folds)
    if path is not None:
        write_joblib(path, result)
    return result


def _fit_stacks(config: Config, spec: TaskSpec, results: list[ModelResult], y: np.ndarray,
                folds: Folds) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    from .stack.nested import choose_stack, fit_stack

    names = [r.model for r in results]
    if len(results) == 1:
        only = results[0]
        return ({"method": "single", "cv": only.cv, "cv_in_sample": only.cv, "weights": {only.model: 1.0},
                 "blenders": {}}, only.oof, only.test)
    P = np.column_stack([r.oof for r in results])
    P_test = np.column_stack([r.test for r in results])
    blenders = config.get("stack.blenders", ["weights", "caruana", "ridge", "lgb"])
    stacks = [fit_stack(key, config.get(f"stack.{key}", {}), names, P, y, P_test, folds, METRICS[spec.metric],
                        spec.target_range, config.seed) for key in blenders]
    best = choose_stack(stacks, LOWER_IS_BETTER[spec.metric])
    for s in stacks:
        log.info("stack %s: nested cv %s=%.5f (in-sample %.5f)%s", s.key, spec.metric, s.cv, s.cv_in_sample,
                 "  <- chosen" if s is best else "")
    # what each model adds: the chosen blender's nested CV with that model left out
    without = {}
    if len(results) > 2:
        for j, name in enumerate(names):
            keep = [i for i in range(len(names)) if i != j]
            other = fit_stack(best.key, config.get(f"stack.{best.key}", {}), [names[i] for i in keep], P[:, keep], y,
                              P_test[:, keep], folds, METRICS[spec.metric], spec.target_range, config.seed)
            without[name] = {"cv": other.cv, "delta": other.cv - best.cv}
    summary = {"method": best.key, "cv": best.cv, "cv_in_sample": best.cv_in_sample, "weights": best.weights,
               "without_model": without,
               "blenders": {s.key: {"cv": s.cv, "cv_in_sample": s.cv_in_sample, "weights": s.weights}
                            for s in stacks},
               "best_single": {"model": min(results, key=lambda r: r.cv).model,
                               "cv": min(r.cv for r in results)}}
    return summary, best.nested_oof, best.test


def features_only(config: Config, input_dir: Path | None = None, workdir: Path | str = ".") -> BlockCache:
    """Build (or reuse) the configured feature blocks; ``mmstack features``."""
    store = Store(workdir)
    _, data, folds = prepare(config, resolve_input(config, input_dir), store, Timer())
    cache, _ = build_features(config, data, folds, store)
    return cache


def train_only(config: Config, models: list[str], input_dir: Path | None = None,
               workdir: Path | str = ".") -> list[ModelResult]:
    """Build what the models need and train (or reuse) just ``models``; ``mmstack train``."""
    store = Store(workdir)
    spec, data, folds = prepare(config, resolve_input(config, input_dir), store, Timer())
    cache, _ = build_features(config, data, folds, store)
    return train_models(config, spec, data, folds, store, cache, only=models)


def run(config: Config, input_dir: Path | None = None, workdir: Path | str = ".") -> Path:
    """Run the whole pipeline; returns the run's folder under ``submissions/``."""
    store = Store(workdir)
    timer = Timer()
    input_dir = resolve_input(config, input_dir)
    spec, data, folds = prepare(config, input_dir, store, timer)
    with timer.step("features"):
        cache, _ = build_features(config, data, folds, store)
    with timer.step("models"):
        results = train_models(config, spec, data, folds, store, cache)
    with timer.step("ablation"):
        ablation_cv = ablation(config, spec, data, folds, store, cache)
    with timer.step("stack"):
        stack, stack_oof, stack_test = stack_predictions(config, spec, results, data.y, folds, store)
    folder = RunFolder.begin(store, config.raw, data.fingerprint)  # visible as run_dir once complete
    run_id, run_dir = folder.run_id, folder.final
    with folder, timer.step("report"):
        *key_cols, pred_col = spec.submission_columns
        submission = data.test[key_cols].reset_index(drop=True).assign(
            **{pred_col: np.clip(stack_test, *spec.target_range)})
        write_text(folder.path / "submission.csv", submission.to_csv(index=False))
        previous = load_runs(store, spec.name)
        changes = diff_flat(previous[-1]["config"], config.flat()) if previous else ["(first run)"]
        metrics = build_metrics(spec.name, spec.metric, folds.n_folds, results, stack, extra={
            "run_id": run_id, "n_train": data.n_train, "n_test": data.n_test, "data_fingerprint": data.fingerprint,
            "folds_key": folds.key, "features": {n: {"key": cache.keys[n], "reused": cache.reused[n],
                                                      "seconds": round(cache.seconds[n], 3)} for n in cache.keys},
        })
        metrics["ablation"] = ablation_cv
        metrics["seconds"] = dict(timer.seconds)
        groups = {c: data.train[c].astype(str).to_numpy() for c in config.get("report.residual_groups", [])
                  if c in data.train.columns}
        write_report(folder.path, metrics, data.y, results, stack_oof, timer.seconds, changes, groups)
        folder.publish({"run_id": run_id, "task": spec.name, "time": dt.datetime.now().isoformat(timespec="seconds"),
                        "config_path": str(config.path), "overrides": config.overrides, "config": config.flat(),
                        "changes": changes, "models": {r.model: r.cv for r in results}, "stack": stack["cv"],
                        "metric": spec.metric, "submission": str(run_dir / "submission.csv")})
    reused = [r.model for r in results if r.reused] + [n for n, v in cache.reused.items() if v]
    log.info("run %s: stack %s=%.5f; reused %s; wrote %s", run_id, spec.metric, stack["cv"],
             ", ".join(reused) or "nothing", run_dir / "submission.csv")
    return run_dir
