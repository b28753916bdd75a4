"""Honest scores for blenders: nested CV on the shared folds, and the choice of the final stack."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..folds import Folds
from ..targets import Target
from .blenders import Blender, make_blender

log = logging.getLogger(__name__)


@dataclass
class StackResult:
    """One blender: nested OOF and CV, in-sample CV, and the blender fitted on all rows with its test
    predictions (rows x outputs)."""

    key: str
    nested_oof: np.ndarray
    cv: float
    cv_in_sample: float
    test: np.ndarray
    weights: dict[str, float]
    blender: Blender | None = None


def nested_cv(make: Callable[[], Blender], P: np.ndarray, y: np.ndarray, folds: Folds,
              target: Target) -> np.ndarray:
    """OOF predictions of the blender: for each fold, fitted on the other folds' rows only."""
    pred = np.empty((len(y), target.n_outputs))
    for _, train, valid in folds.split():
        pred[valid] = make().fit(P[train], y[train]).predict(P[valid])
    return target.finish(pred)


def fit_stack(key: str, params: dict[str, Any] | None, names: list[str], P: np.ndarray, y: np.ndarray,
              P_test: np.ndarray, folds: Folds, target: Target, seed: int) -> StackResult:
    """Score blender ``key`` by nested CV and fit it on all rows (``P``: rows x models x outputs)."""
    make = lambda: make_blender(key, params, seed, target)  # noqa: E731
    oof = nested_cv(make, P, y, folds, target)
    full = make().fit(P, y)
    in_sample = target.finish(full.predict(P))
    test = target.finish(full.predict(P_test))
    weights = {n: float(w) for n, w in zip(names, full.weights)} if full.weights is not None else {}
    return StackResult(key, oof, target.metric(y, oof), target.metric(y, in_sample), test, weights, full)


def choose_stack(results: list[StackResult], target: Target) -> StackResult:
    """The blender with the best nested CV, in the direction of the target's metric."""
    return target.metric.best(results, lambda r: r.cv)
