"""Proxy tasks: how well an embedding describes a product, judged by classifiers of its labels.

Protocol (a), the seed project's: logistic regression and a small MLP on the embedding alone, out of fold on
each target's own stored folds (a row is scored by classifiers fitted without it). Protocol (b) is the kit's full
machinery per target (level-1 models on every block plus the embedding, stacked): the pipeline's multi-target
run; :func:`scores` turns its out-of-fold stack into the same figures.
"""
from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from ..metrics import METRICS
from ..targets import Target, TargetData

log = logging.getLogger(__name__)

MULTICLASS = ("f1_macro", "accuracy", "logloss")
BINARY = ("f1", "precision", "recall", "auc", "f1_macro", "accuracy", "logloss")


def scores(target: Target, y: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """The proxy figures of out-of-fold predictions (rows x outputs): multiclass f1_macro, accuracy, logloss;
    binary also f1, precision, recall and auc of the positive class (the second in class order)."""
    names = BINARY if target.problem == "binary" else MULTICLASS
    out: dict[str, Any] = {name: float(METRICS[name](y, pred)) for name in names}
    out.update(n=int(len(y)), n_classes=int(target.n_classes))
    return out


def _classifier(kind: str, params: dict[str, Any], seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "logreg":
        return make_pipeline(StandardScaler(), LogisticRegression(C=params.get("logreg_c", 1.0), max_iter=2000))
    hidden = int(params.get("mlp_hidden", 256))
    return make_pipeline(StandardScaler(), MLPClassifier(
        hidden_layer_sizes=(hidden,), alpha=float(params.get("mlp_alpha", 1e-3)), max_iter=200, early_stopping=True,
        n_iter_no_change=10, validation_fraction=0.1, random_state=seed))


def fit_predict(kind: str, Xl: np.ndarray, y: np.ndarray, train: np.ndarray, valid: np.ndarray, probs: np.ndarray,
                params: dict[str, Any], seed: int) -> None:
    """Fit a ``kind`` classifier on rows ``train`` of ``Xl`` (labelled rows) and write its class probabilities
    of rows ``valid`` into ``probs``."""
    y_train = y[train]
    present = np.unique(y_train)
    if len(present) == 1:  # a fold whose training part holds one class predicts it
        probs[np.ix_(valid, present)] = 1.0
        return
    model = _classifier(kind, params, seed)
    # one BLAS thread: OpenMP/BLAS threads spin when the machine is shared
    with warnings.catch_warnings(), threadpool_limits(1):  # convergence and tiny-class warnings: the
        warnings.simplefilter("ignore")                     # figures say how it went
        model.fit(np.asarray(Xl[train], np.float64), y_train)
        probs[np.ix_(valid, model.classes_)] = model.predict_proba(np.asarray(Xl[valid], np.float64))


def out_of_fold(kind: str, X: np.ndarray, data: TargetData, params: dict[str, Any] | None = None,
                seed: int = 42) -> np.ndarray:
    """Out-of-fold class probabilities (labelled rows x outputs) of a ``kind`` ("logreg" or "mlp") classifier
    of ``X`` (all rows, row-id order) on the target's folds."""
    target, params = data.target, params or {}
    Xl = np.asarray(X[data.rows], np.float64)
    probs = np.zeros((len(data.rows), target.n_classes))
    for _, train, valid in data.folds.split():
        fit_predict(kind, Xl, data.y, train, valid, probs, params, seed)
    return target.finish(probs[:, 1:] if target.problem == "binary" else probs)


def embedding_protocol(X: np.ndarray, data: TargetData, params: dict[str, Any] | None = None,
                       seed: int = 42, kinds: tuple[str, ...] = ("logreg", "mlp")) -> dict[str, dict[str, Any]]:
    """Protocol (a) figures of one target for each classifier kind."""
    out = {}
    for kind in kinds:
        pred = out_of_fold(kind, X, data, params, seed)
        out[kind] = scores(data.target, data.y, pred)
        log.info("proxy %s (%s on the embedding): %s", data.target.name, kind,
                 ", ".join(f"{k}={v:.4f}" for k, v in out[kind].items() if isinstance(v, float)))
    return out
