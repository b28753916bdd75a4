"""Honest scores for blenders: nested CV on the shared folds, and the choice of the final stack."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..folds import Folds
from .blenders import Blender, make_blender

log = logging.getLogger(__name__)


@dataclass
class StackResult:
    """One blender: nested OOF and CV, in-sample CV, fitted on all rows for the test predictions."""

    key: str
    nested_oof: np.ndarray
    cv: float
    cv_in_sample: float
    test: np.ndarray
    weights: dict[str, float]


def nested_cv(make: Callable[[], Blender], P: np.ndarray, y: np.ndarray, folds: Folds,
              clip: tuple[float, float] | None) -> np.ndarray:
    """OOF predictions of the blender: for each fold, fitted on the other folds' rows only."""
    pred = np.empty(len(y))
    for _, train, valid in folds.split():
        pred[valid] = make().fit(P[train], y[train]).predict(P[valid])
    return np.clip(pred, *clip) if clip else pred


def fit_stack(key: str, params: dict[str, Any] | None, names: list[str], P: np.ndarray, y: np.ndarray,
              P_test: np.ndarray, folds: Folds, score: Callable, clip: tuple[float, float] | None,
              seed: int) -> StackResult:
    make = lambda: make_blender(key, params, seed)  # noqa: E731
    oof = nested_cv(make, P, y, folds, clip)
    full = make().fit(P, y)
    in_sample = full.predict(P)
    test = full.predict(P_test)
    if clip:
        in_sample, test = np.clip(in_sample, *clip), np.clip(test, *clip)
    weights = {n: float(w) for n, w in zip(names, full.weights)} if full.weights is not None else {}
    return StackResult(key, oof, score(y, oof), score(y, in_sample), test, weights)


def choose_stack(results: list[StackResult], lower_is_better: bool = True) -> StackResult:
    """The blender with the best nested CV."""
    return (min if lower_is_better else max)(results, key=lambda r: r.cv)
