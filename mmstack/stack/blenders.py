"""Blenders: turn level-1 OOF predictions into one prediction. One interface: ``fit(P, y)``, ``predict(P)``.

``P`` is an (n_rows, n_models) matrix of level-1 predictions (OOF for training rows, fold-averaged for test rows).
Their honest score comes from :func:`mmstack.stack.nested.nested_cv`, on the shared folds.
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from scipy.optimize import minimize
from sklearn.linear_model import Ridge

from ..errors import ConfigError


class Blender:
    """Base class: subclasses set ``key`` and ``weights_sum_to_one`` and implement ``fit`` and ``predict``."""

    key: ClassVar[str]
    weights_sum_to_one: ClassVar[bool] = False
    default_params: ClassVar[dict[str, Any]] = {}

    def __init__(self, params: dict[str, Any] | None = None, seed: int = 42):
        unknown = set(params or {}) - set(self.default_params)
        if unknown:
            raise ConfigError(f"stack.{self.key}: unknown param(s) {', '.join(sorted(unknown))}")
        self.params = {**self.default_params, **(params or {})}
        self.seed = seed
        self.weights: np.ndarray | None = None

    def fit(self, P: np.ndarray, y: np.ndarray) -> "Blender":
        raise NotImplementedError

    def predict(self, P: np.ndarray) -> np.ndarray:
        return P @ self.weights


def _rmse(pred: np.ndarray, y: np.ndarray) -> float:
    return float(np.sqrt(np.mean((pred - y) ** 2)))


class ConstrainedWeights(Blender):
    """RMSE-optimal weights, non-negative and summing to 1 (SLSQP)."""

    key = "weights"
    weights_sum_to_one = True

    def fit(self, P, y):
        m = P.shape[1]
        result = minimize(lambda w: np.mean((P @ w - y) ** 2), np.full(m, 1.0 / m),
                          jac=lambda w: 2 * P.T @ (P @ w - y) / len(y), method="SLSQP", bounds=[(0.0, 1.0)] * m,
                          constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones(m)}],
                          options={"maxiter": 500, "ftol": 1e-12})
        w = np.clip(result.x, 0.0, None)
        self.weights = w / w.sum()
        return self


class CaruanaSelection(Blender):
    """Greedy ensemble selection with replacement (Caruana et al. 2004): weights are selection counts."""

    key = "caruana"
    weights_sum_to_one = True
    default_params = {"iterations": 100, "init_best": 1}

    def fit(self, P, y):
        m = P.shape[1]
        counts = np.zeros(m)
        order = np.argsort([_rmse(P[:, j], y) for j in range(m)])
        for j in order[: self.params["init_best"]]:
            counts[j] += 1
        total = P[:, order[: self.params["init_best"]]].sum(axis=1)
        for _ in range(self.params["iterations"] - self.params["init_best"]):
            n = counts.sum() + 1
            scores = [_rmse((total + P[:, j]) / n, y) for j in range(m)]
            best = int(np.argmin(scores))
            counts[best] += 1
            total += P[:, best]
        self.weights = counts / counts.sum()
        return self


class RidgeStacker(Blender):
    """Ridge regression on the OOF matrix (with intercept; optionally non-negative coefficients)."""

    key = "ridge"
    default_params = {"alpha": 1.0, "positive": True}

    def fit(self, P, y):
        self.model = Ridge(alpha=self.params["alpha"], positive=self.params["positive"]).fit(P, y)
        self.weights = self.model.coef_
        return self

    def predict(self, P):
        return self.model.predict(P)


class LGBStacker(Blender):
    """A small LightGBM on the OOF matrix: can learn where each model is better (fixed rounds, no peeking)."""

    key = "lgb"
    default_params = {"num_leaves": 7, "learning_rate": 0.03, "rounds": 300, "min_data_in_leaf": 50}

    def fit(self, P, y):
        import lightgbm as lgb

        p = self.params
        params = {"objective": "regression", "num_leaves": p["num_leaves"], "learning_rate": p["learning_rate"],
                  "min_data_in_leaf": p["min_data_in_leaf"], "seed": self.seed, "deterministic": True,
                  "force_row_wise": True, "verbosity": -1, "num_threads": 2}
        self.model = lgb.train(params, lgb.Dataset(P, y), num_boost_round=p["rounds"])
        return self

    def predict(self, P):
        return self.model.predict(P)


BLENDERS: dict[str, type[Blender]] = {b.key: b for b in (ConstrainedWeights, CaruanaSelection, RidgeStacker, LGBStacker)}


def make_blender(key: str, params: dict | None = None, seed: int = 42) -> Blender:
    if key not in BLENDERS:
        raise ConfigError(f"unknown blender {key!r}; known: {', '.join(sorted(BLENDERS))}")
    return BLENDERS[key](params, seed)
