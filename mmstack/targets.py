"""Targets and their problem types: what a task predicts, how its labels are coded, how predictions look.

A task declares one or more targets (:class:`TargetSpec`: a label column, a problem type, a primary metric).
Once the labels are read, each becomes a :class:`Target`: for classification the class list is read from the
labels in a stable (sorted) order and stored with it. A row whose label is missing is a row to predict for that
target; the labelled rows are its training rows, with folds of their own (:class:`TargetData`).

Predictions of every model, blender and fold are 2-D: rows x ``Target.n_outputs`` (one column of values for
regression, one column of P(positive) for binary, one column per class for multiclass, summing to 1).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .errors import ConfigError, InputError
from .metrics import METRICS, Metric, as_2d, get_metric
from .store import make_key

PROBLEMS = ("regression", "binary", "multiclass")
PROBABILITY_FLOOR = 1e-7


@dataclass(frozen=True)
class TargetSpec:
    """A task's declaration of one target: label column, problem type, primary metric, and for regression an
    optional value range that predictions are clipped to. ``problem = "classification"`` becomes binary or
    multiclass by the number of classes found. ``applies_to``: see :func:`mmstack.pipeline.in_scope`."""

    name: str
    problem: str
    metric: str | None = None
    value_range: tuple[float, float] | None = None
    report_metrics: tuple[str, ...] = ()
    # a label that exists for some kinds of rows only (gender of clothes): a row without it is predicted only when
    # its ``applies_to`` label (given, else predicted) is a class under which this label occurs in the data
    applies_to: str | None = None

    def __post_init__(self):
        if self.problem not in PROBLEMS + ("classification",):
            raise ConfigError(f"target {self.name!r}: problem type must be one of {PROBLEMS}, got {self.problem!r}")


@dataclass(frozen=True)
class Target:
    """A target with its problem type, metric and (classification) class list, ready to encode labels."""

    name: str
    problem: str
    metric: Metric
    classes: tuple[str, ...] = ()
    value_range: tuple[float, float] | None = None
    report_metrics: tuple[str, ...] = ()

    @property
    def is_classification(self) -> bool:
        return self.problem != "regression"

    @property
    def n_outputs(self) -> int:
        return len(self.classes) if self.problem == "multiclass" else 1

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def output_names(self) -> list[str]:
        """Column names of the prediction matrix: the value, P(positive class), or one per class."""
        if self.problem == "multiclass":
            return [f"p_{c}" for c in self.classes]
        if self.problem == "binary":
            return [f"p_{self.classes[1]}"]
        return [self.name]

    def key(self) -> str:
        return make_key(self.name, self.problem, self.metric.name, list(self.classes), self.value_range)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "problem": self.problem, "metric": self.metric.name,
                "classes": list(self.classes), "value_range": self.value_range,
                "report_metrics": list(self.report_metrics)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Target":
        rng = d.get("value_range")
        return cls(d["name"], d["problem"], METRICS[d["metric"]], tuple(d.get("classes", ())),
                   tuple(rng) if rng else None, tuple(d.get("report_metrics", ())))

    # ---- labels -------------------------------------------------------------------------------------------
    def encode(self, labels: pd.Series) -> np.ndarray:
        """Labels of labelled rows as model targets: floats for regression, class codes 0..C-1 otherwise."""
        if not self.is_classification:
            return pd.to_numeric(labels).to_numpy(dtype=np.float64)
        index = {c: i for i, c in enumerate(self.classes)}
        text = class_text(labels)
        codes = text.map(index)
        if codes.isna().any():
            bad = text[codes.isna()].iloc[0]
            raise InputError(self.name, f"label {bad!r} is not one of the target's classes {list(self.classes)}")
        return codes.to_numpy(dtype=np.int64)

    def decode(self, pred: np.ndarray) -> np.ndarray:
        """Predicted values (regression) or class labels (classification) from 2-D predictions."""
        from .metrics import to_labels

        if not self.is_classification:
            return as_2d(pred)[:, 0]
        return np.asarray(self.classes, dtype=object)[to_labels(pred)]

    def prior(self, y: np.ndarray) -> np.ndarray:
        """The constant prediction (one row of outputs) that the training labels ``y`` suggest."""
        if self.problem == "regression":
            return np.array([float(np.mean(y))])
        counts = np.bincount(np.asarray(y, np.int64), minlength=self.n_classes).astype(np.float64)
        share = (counts + 1.0) / (counts.sum() + self.n_classes)  # Laplace: no class gets 0
        return share[1:] if self.problem == "binary" else share

    def finish(self, pred: np.ndarray) -> np.ndarray:
        """Predictions made valid for this target: regression clipped to its range; probabilities kept inside
        (0, 1) and, for multiclass, renormalised to sum to 1."""
        pred = as_2d(pred)
        if pred.shape[1] != self.n_outputs:
            raise ValueError(f"target {self.name}: predictions have {pred.shape[1]} columns, expected "
                             f"{self.n_outputs}")
        if self.problem == "regression":
            return np.clip(pred, *self.value_range) if self.value_range else pred
        pred = np.clip(pred, PROBABILITY_FLOOR, 1.0 - PROBABILITY_FLOOR)
        return pred / pred.sum(axis=1, keepdims=True) if self.problem == "multiclass" else pred


def class_text(labels: pd.Series) -> pd.Series:
    """Labels as the strings classes are named by (1.0 and True read as "1", so 0/1 columns stay 0/1)."""
    def one(v: Any) -> str:
        if isinstance(v, (bool, np.bool_)):
            return str(int(v))
        if isinstance(v, (float, np.floating)) and float(v).is_integer():
            return str(int(v))
        return str(v)

    return labels.map(one)


def make_target(spec: TargetSpec, labels: pd.Series, metric: str | None = None) -> Target:
    """A :class:`Target` from its spec and the labels of all rows (missing = to predict)."""
    present = labels.dropna()
    if present.empty:
        raise InputError(spec.name, "no row has a label for this target")
    problem, classes = spec.problem, ()
    if problem != "regression":
        classes = tuple(sorted(class_text(present).unique(), key=_class_order))
        if len(classes) < 2:
            raise InputError(spec.name, f"a classification target needs at least 2 classes, found {list(classes)}")
        if problem == "classification":
            problem = "binary" if len(classes) == 2 else "multiclass"
        elif problem == "binary" and len(classes) != 2:
            raise InputError(spec.name, f"a binary target needs exactly 2 classes, found {len(classes)}")
    name = metric or spec.metric or {"regression": "rmse", "binary": "logloss", "multiclass": "logloss"}[problem]
    return Target(spec.name, problem, get_metric(name, problem), classes, spec.value_range, spec.report_metrics)


def _class_order(c: str) -> tuple[int, float | str]:
    """Numbers in numeric order, then strings alphabetically: "2" < "10", "0" before "1" for binary."""
    try:
        return (0, float(c))
    except ValueError:
        return (1, c)


@dataclass
class TargetData:
    """One target as the fold loop sees it: its labelled rows (row ids), their encoded labels and their folds."""

    target: Target
    rows: np.ndarray  # row ids of the labelled (training) rows, in fold-array order
    y: np.ndarray  # encoded labels of ``rows``
    folds: Any  # mmstack.folds.Folds over ``rows``
    predict_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # rows to predict

    @property
    def n_train(self) -> int:
        return len(self.rows)


def regression_target(name: str = "target", metric: str = "rmse",
                      value_range: tuple[float, float] | None = None) -> Target:
    """A plain regression target (what a model is made for when no target is given)."""
    return Target(name, "regression", get_metric(metric, "regression"), (), value_range)
