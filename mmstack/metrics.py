"""Metrics as objects: each knows its direction and what it reads (values, labels or probabilities).

Predictions reach a metric as a 2-D array (rows x outputs): one column of values for regression, one column of
P(positive) for binary targets, one column per class for multiclass targets. A metric that reads labels turns
probabilities into classes itself (argmax, or P >= 0.5 for one column), one that reads probabilities takes them as
they are; so nothing outside this module converts predictions for scoring, and nothing assumes lower is better.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, TypeVar

import numpy as np
from scipy.stats import spearmanr
from sklearn import metrics as skm

from .errors import ConfigError

READS = ("values", "labels", "probabilities")
EPS = 1e-15
T = TypeVar("T")


def as_2d(pred: np.ndarray) -> np.ndarray:
    """Predictions as (rows, outputs): a 1-D array is one output column."""
    pred = np.asarray(pred, dtype=np.float64)
    return pred.reshape(len(pred), -1) if pred.ndim != 2 else pred


def to_labels(pred: np.ndarray) -> np.ndarray:
    """Class codes from probabilities: P >= 0.5 for one column (binary), argmax for several."""
    pred = as_2d(pred)
    return (pred[:, 0] >= 0.5).astype(np.int64) if pred.shape[1] == 1 else pred.argmax(axis=1)


def class_probabilities(pred: np.ndarray) -> np.ndarray:
    """(rows, classes) probabilities, clipped away from 0 and 1 and summing to 1; one column means P(class 1)."""
    pred = as_2d(pred)
    if pred.shape[1] == 1:
        pred = np.hstack([1.0 - pred, pred])
    pred = np.clip(pred, EPS, 1.0)
    return pred / pred.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class Metric:
    """A named score with its direction and what it reads; ``metric(y, pred)`` scores 2-D (or 1-D) predictions."""

    name: str
    fn: Callable[[np.ndarray, np.ndarray], float]
    greater_is_better: bool
    reads: str

    def __call__(self, y: np.ndarray, pred: np.ndarray) -> float:
        y = np.asarray(y)
        if self.reads == "values":
            return float(self.fn(y.astype(np.float64), as_2d(pred)[:, 0]))
        if self.reads == "labels":
            return float(self.fn(y.astype(np.int64), to_labels(pred)))
        return float(self.fn(y.astype(np.int64), class_probabilities(pred)))

    def __reduce__(self):  # pickled by name: saved models and stacks load without the scoring functions
        return (_named, (self.name,))

    def loss(self, score: float) -> float:
        """The score turned into something to minimise."""
        return -score if self.greater_is_better else score

    def better(self, a: float, b: float) -> bool:
        """Is score ``a`` strictly better than ``b``?"""
        return self.loss(a) < self.loss(b)

    def best(self, items: Iterable[T], score: Callable[[T], float]) -> T:
        """The item with the best score."""
        return min(items, key=lambda item: self.loss(score(item)))

    def worse_by(self, score: float, reference: float) -> float:
        """How much worse ``score`` is than ``reference`` (positive = worse), whatever the direction."""
        return self.loss(score) - self.loss(reference)


def _rmse(y, p):
    return np.sqrt(np.mean((y - p) ** 2))


def _r2(y, p):
    return 1.0 - np.sum((y - p) ** 2) / np.sum((y - y.mean()) ** 2)


def _logloss(y, probs):
    return skm.log_loss(y, probs, labels=np.arange(probs.shape[1]))


def _auc(y, probs):
    if probs.shape[1] == 2:
        return skm.roc_auc_score(y, probs[:, 1]) if len(np.unique(y)) == 2 else np.nan
    present = np.unique(y)
    if len(present) < 2:
        return np.nan
    # one-vs-rest macro AUC over the classes present (a class absent from y has no AUC)
    return float(np.mean([skm.roc_auc_score(y == c, probs[:, c]) for c in present]))


def _f1_macro(y, labels):
    present = np.union1d(np.unique(y), np.unique(labels))
    return skm.f1_score(y, labels, average="macro", labels=present, zero_division=0)


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("rmse", _rmse, False, "values"),
    Metric("mse", lambda y, p: np.mean((y - p) ** 2), False, "values"),
    Metric("mae", lambda y, p: np.mean(np.abs(y - p)), False, "values"),
    Metric("r2", _r2, True, "values"),
    Metric("spearman", lambda y, p: spearmanr(y, p).statistic, True, "values"),
    Metric("logloss", _logloss, False, "probabilities"),
    Metric("auc", _auc, True, "probabilities"),
    Metric("accuracy", skm.accuracy_score, True, "labels"),
    Metric("f1_macro", _f1_macro, True, "labels"),
    Metric("f1", lambda y, p: skm.f1_score(y, p, zero_division=0), True, "labels"),
    Metric("precision", lambda y, p: skm.precision_score(y, p, zero_division=0), True, "labels"),
    Metric("recall", lambda y, p: skm.recall_score(y, p, zero_division=0), True, "labels"),
)}
# which metrics make sense for which problem type (the first is the default primary metric)
FOR_PROBLEM = {
    "regression": ("rmse", "mse", "mae", "r2", "spearman"),
    "binary": ("logloss", "auc", "f1", "precision", "recall", "accuracy", "f1_macro"),
    "multiclass": ("logloss", "f1_macro", "accuracy", "auc"),
}


def _named(name: str) -> Metric:
    return METRICS[name]


def get_metric(name: str, problem: str | None = None) -> Metric:
    """The metric called ``name``; with ``problem``, also checked to fit that problem type."""
    if name not in METRICS:
        raise ConfigError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
    if problem is not None and name not in FOR_PROBLEM[problem]:
        raise ConfigError(f"metric {name!r} does not fit a {problem} target; use one of "
                          f"{', '.join(FOR_PROBLEM[problem])}")
    return METRICS[name]


def score_all(y: np.ndarray, pred: np.ndarray, names: tuple[str, ...] = ("mse", "rmse", "mae", "r2", "spearman"),
              ) -> dict[str, float]:
    return {name: METRICS[name](y, pred) for name in names}


# names kept for callers that only need values in and a float out
def rmse(y: np.ndarray, pred: np.ndarray) -> float:
    return METRICS["rmse"](y, pred)


def mse(y: np.ndarray, pred: np.ndarray) -> float:
    return METRICS["mse"](y, pred)
