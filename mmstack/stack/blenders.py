"""Blenders: turn level-1 OOF predictions into one prediction. One interface: ``fit(P, y)``, ``predict(P)``.

``P`` is an (n_rows, n_models, n_outputs) array of level-1 predictions (OOF for training rows, fold-averaged for
rows to predict); ``predict`` returns (n_rows, n_outputs). One blender per kind, each declaring the problem types
it serves:

| blender | regression | classification (probabilities) |
|---|---|---|
| ``weights`` | MSE-optimal weights, >= 0, sum 1 | logloss-optimal weights, >= 0, sum 1 |
| ``caruana`` | greedy selection on the target's metric | the same, on averaged probabilities |
| ``ridge`` | non-negative ridge on the OOF matrix | - |
| ``logistic`` | - | multinomial logistic regression on the models' log-probabilities |
| ``lgb`` | a small LightGBM | a small LightGBM (binary / multiclass objective) |

Their honest score comes from :func:`mmstack.stack.nested.nested_cv`, on the shared folds.
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from scipy.optimize import minimize
from sklearn.linear_model import LogisticRegression, Ridge

from ..errors import ConfigError
from ..metrics import class_probabilities
from ..targets import Target, regression_target

ALL = ("regression", "binary", "multiclass")
CLASSIFICATION = ("binary", "multiclass")


class Blender:
    """Base class: subclasses set ``key``, ``problems`` and ``weights_sum_to_one`` and implement ``fit`` (and
    ``predict`` when not a weighted average)."""

    key: ClassVar[str]
    problems: ClassVar[tuple[str, ...]] = ALL
    weights_sum_to_one: ClassVar[bool] = False
    default_params: ClassVar[dict[str, Any]] = {}

    def __init__(self, params: dict[str, Any] | None = None, seed: int = 42, target: Target | None = None):
        unknown = set(params or {}) - set(self.default_params)
        if unknown:
            raise ConfigError(f"stack.{self.key}: unknown param(s) {', '.join(sorted(unknown))}")
        self.params = {**self.default_params, **(params or {})}
        self.seed = seed
        self.target = target or regression_target()
        if self.target.problem not in self.problems:
            raise ConfigError(f"stack blender {self.key!r} does not serve {self.target.problem} targets")
        self.weights: np.ndarray | None = None

    def fit(self, P: np.ndarray, y: np.ndarray) -> "Blender":
        raise NotImplementedError

    def predict(self, P: np.ndarray) -> np.ndarray:
        """The weighted average of the models' predictions."""
        return np.einsum("nmc,m->nc", P, self.weights)


class ConstrainedWeights(Blender):
    """Weights, non-negative and summing to 1 (SLSQP), optimal for MSE (regression) or logloss (probabilities)."""

    key = "weights"
    weights_sum_to_one = True

    def fit(self, P, y):
        m = P.shape[1]
        if self.target.is_classification:
            # logloss of the mixture reads only each row's true-class probability of every model
            A = np.stack([class_probabilities(P[:, j])[np.arange(len(y)), y] for j in range(m)], axis=1)
            loss = lambda w: -np.mean(np.log(np.clip(A @ w, 1e-15, None)))  # noqa: E731
            jac = lambda w: -A.T @ (1.0 / np.clip(A @ w, 1e-15, None)) / len(y)  # noqa: E731
        else:
            X = P[:, :, 0]
            loss = lambda w: np.mean((X @ w - y) ** 2)  # noqa: E731
            jac = lambda w: 2 * X.T @ (X @ w - y) / len(y)  # noqa: E731
        result = minimize(loss, np.full(m, 1.0 / m), jac=jac, method="SLSQP", bounds=[(0.0, 1.0)] * m,
                          constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones(m)}],
                          options={"maxiter": 500, "ftol": 1e-12})
        w = np.clip(result.x, 0.0, None)
        self.weights = w / w.sum()
        return self


class CaruanaSelection(Blender):
    """Greedy ensemble selection with replacement (Caruana et al. 2004) on the target's metric: weights are
    selection counts."""

    key = "caruana"
    weights_sum_to_one = True
    default_params = {"iterations": 100, "init_best": 1}

    def fit(self, P, y):
        metric = self.target.metric
        m = P.shape[1]
        counts = np.zeros(m)
        order = sorted(range(m), key=lambda j: metric.loss(metric(y, P[:, j])))
        for j in order[: self.params["init_best"]]:
            counts[j] += 1
        total = P[:, order[: self.params["init_best"]]].sum(axis=1)
        for _ in range(self.params["iterations"] - self.params["init_best"]):
            n = counts.sum() + 1
            losses = [metric.loss(metric(y, (total + P[:, j]) / n)) for j in range(m)]
            best = int(np.argmin(losses))
            counts[best] += 1
            total += P[:, best]
        self.weights = counts / counts.sum()
        return self


class RidgeStacker(Blender):
    """Ridge regression on the OOF matrix (with intercept; optionally non-negative coefficients)."""

    key = "ridge"
    problems = ("regression",)
    default_params = {"alpha": 1.0, "positive": True}

    def fit(self, P, y):
        self.model = Ridge(alpha=self.params["alpha"], positive=self.params["positive"]).fit(P[:, :, 0], y)
        self.weights = self.model.coef_
        return self

    def predict(self, P):
        return self.model.predict(P[:, :, 0])[:, None]


def _log_probabilities(P: np.ndarray) -> np.ndarray:
    """(n, m * classes) log-probabilities of every model, the logistic stacker's inputs."""
    return np.hstack([np.log(class_probabilities(P[:, j])) for j in range(P.shape[1])])


class LogisticStacker(Blender):
    """Multinomial logistic regression on the models' log-probabilities (a learned, calibrated combination)."""

    key = "logistic"
    problems = CLASSIFICATION
    default_params = {"C": 1.0, "max_iter": 1000}

    def fit(self, P, y):
        self.model = LogisticRegression(C=self.params["C"], max_iter=self.params["max_iter"],
                                        random_state=self.seed).fit(_log_probabilities(P), y)
        coef = np.abs(self.model.coef_).reshape(self.model.coef_.shape[0], P.shape[1], -1).sum(axis=(0, 2))
        self.weights = coef / max(coef.sum(), 1e-12)  # shown as each model's share of the coefficients
        return self

    def predict(self, P):
        probs = np.zeros((P.shape[0], self.target.n_classes))
        probs[:, self.model.classes_] = self.model.predict_proba(_log_probabilities(P))
        return probs[:, 1:] if self.target.problem == "binary" else probs


class LGBStacker(Blender):
    """A small LightGBM on the OOF matrix: can learn where each model is better (fixed rounds, no peeking)."""

    key = "lgb"
    default_params = {"num_leaves": 7, "learning_rate": 0.03, "rounds": 300, "min_data_in_leaf": 50}

    def fit(self, P, y):
        import lightgbm as lgb

        p, t = self.params, self.target
        objective = {"regression": {"objective": "regression"}, "binary": {"objective": "binary"},
                     "multiclass": {"objective": "multiclass", "num_class": t.n_classes}}[t.problem]
        params = {**objective, "num_leaves": p["num_leaves"], "learning_rate": p["learning_rate"],
                  "min_data_in_leaf": p["min_data_in_leaf"], "seed": self.seed, "deterministic": True,
                  "force_row_wise": True, "verbosity": -1, "num_threads": 2}
        self.model = lgb.train(params, lgb.Dataset(P.reshape(len(P), -1), y), num_boost_round=p["rounds"])
        return self

    def predict(self, P):
        return self.model.predict(P.reshape(len(P), -1)).reshape(len(P), -1)


BLENDERS: dict[str, type[Blender]] = {b.key: b for b in (ConstrainedWeights, CaruanaSelection, RidgeStacker,
                                                         LogisticStacker, LGBStacker)}
DEFAULT_BLENDERS = {"regression": ["weights", "caruana", "ridge", "lgb"],
                    "binary": ["weights", "caruana", "logistic"], "multiclass": ["weights", "caruana", "logistic"]}


def make_blender(key: str, params: dict | None = None, seed: int = 42, target: Target | None = None) -> Blender:
    if key not in BLENDERS:
        raise ConfigError(f"unknown blender {key!r}; known: {', '.join(sorted(BLENDERS))}")
    return BLENDERS[key](params, seed, target)


def blenders_for(target: Target, wanted: list[str] | None) -> list[str]:
    """The configured blenders that serve ``target``'s problem type (the type's defaults when none does)."""
    unknown = [k for k in wanted or [] if k not in BLENDERS]
    if unknown:
        raise ConfigError(f"stack.blenders: unknown blender(s) {unknown}; known: {', '.join(sorted(BLENDERS))}")
    usable = [k for k in wanted or [] if target.problem in BLENDERS[k].problems]
    return usable or DEFAULT_BLENDERS[target.problem]
