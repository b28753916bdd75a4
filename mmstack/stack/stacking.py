"""The level-2 step of a run: blend a target's level-1 models with each configured blender, keep the one with
the best nested CV, measure what each model adds, and save the fitted blender so inference paths (search, a
predict-only kernel) load it instead of refitting."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import joblib
import numpy as np

from ..models.base import ModelResult
from ..store import Store, make_key, write_joblib
from ..targets import TargetData
from .blenders import Blender, blenders_for
from .nested import choose_stack, fit_stack

log = logging.getLogger(__name__)


@dataclass
class Stacked:
    """The chosen stack of one target: summary (for metrics.json), nested OOF and test predictions (rows x
    outputs), the fitted blender (None for a single model) and the level-1 runs it blends, in order."""

    summary: dict[str, Any]
    oof: np.ndarray
    test: np.ndarray
    blender: Blender | None
    models: list[str]

    def blend(self, P: np.ndarray) -> np.ndarray:
        """Blend new level-1 predictions (rows x models x outputs, models in ``self.models`` order)."""
        if self.blender is None:
            return P[:, 0]
        return self.blender.target.finish(self.blender.predict(P))


def stack_key(results: list[ModelResult], blenders: list[str], params: dict[str, Any], data: TargetData,
              seed: int) -> str:
    return make_key("stack", [r.name for r in results], blenders, params, data.folds.key, data.target.key(), seed)


def stack_path(store: Store, task: str, key: str):
    return store.path("oof", task, f"stack__{key}", ".joblib")


def load_stack(store: Store, task: str, key: str) -> Stacked:
    """A saved stack (with its fitted blender), as :func:`stack_predictions` wrote it."""
    return joblib.load(stack_path(store, task, key))


def stack_predictions(results: list[ModelResult], data: TargetData, blenders: list[str] | None,
                      params: dict[str, dict[str, Any]], seed: int, store: Store | None = None,
                      task: str = "") -> Stacked:
    """Blend the level-1 models of one target; cached under ``oof/<task>/stack__<key>.joblib`` (the key covers
    the level-1 runs, the blenders and their params, the target and its folds)."""
    keys = blenders_for(data.target, blenders)
    used_params = {k: params.get(k, {}) for k in keys}
    key = stack_key(results, keys, used_params, data, seed)
    path = stack_path(store, task, key) if store else None
    if path is not None and path.is_file():
        cached: Stacked = joblib.load(path)
        log.info("stack: reused %s (%s, nested cv %.5f)", key, cached.summary["method"], cached.summary["cv"])
        return cached
    stacked = _fit_stacks(results, data, keys, used_params, seed)
    stacked.summary["key"] = key
    if path is not None:
        write_joblib(path, stacked)
    return stacked


def _fit_stacks(results: list[ModelResult], data: TargetData, keys: list[str], params: dict[str, dict[str, Any]],
                seed: int) -> Stacked:
    target, y, folds = data.target, data.y, data.folds
    metric = target.metric
    names = [r.model for r in results]
    best_single = metric.best(results, lambda r: r.cv)
    if len(results) == 1:
        only = results[0]
        return Stacked({"method": "single", "cv": only.cv, "cv_in_sample": only.cv, "weights": {only.model: 1.0},
                        "blenders": {}, "best_single": {"model": only.model, "cv": only.cv}},
                       only.oof, only.test, None, names)
    P = np.stack([r.oof for r in results], axis=1)
    P_test = np.stack([r.test for r in results], axis=1)
    stacks = [fit_stack(key, params[key], names, P, y, P_test, folds, target, seed) for key in keys]
    best = choose_stack(stacks, target)
    for s in stacks:
        log.info("stack %s: nested cv %s=%.5f (in-sample %.5f)%s", s.key, metric.name, s.cv, s.cv_in_sample,
                 "  <- chosen" if s is best else "")
    # what each model adds: the chosen blender's nested CV with that model left out (+ = the model helps)
    without = {}
    if len(results) > 2:
        for j, name in enumerate(names):
            keep = [i for i in range(len(names)) if i != j]
            other = fit_stack(best.key, params[best.key], [names[i] for i in keep], P[:, keep], y, P_test[:, keep],
                              folds, target, seed)
            without[name] = {"cv": other.cv, "delta": metric.worse_by(other.cv, best.cv)}
    summary = {"method": best.key, "cv": best.cv, "cv_in_sample": best.cv_in_sample, "weights": best.weights,
               "without_model": without,
               "blenders": {s.key: {"cv": s.cv, "cv_in_sample": s.cv_in_sample, "weights": s.weights}
                            for s in stacks},
               "best_single": {"model": best_single.model, "cv": best_single.cv}}
    return Stacked(summary, best.nested_oof, best.test, best.blender, names)
