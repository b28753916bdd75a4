"""Task metrics by name; ``score_all`` reports every metric of a task family at once."""
from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr


def _pair(y, pred) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(y, float), np.asarray(pred, float)


def mse(y: np.ndarray, pred: np.ndarray) -> float:
    y, pred = _pair(y, pred)
    return float(np.mean((y - pred) ** 2))


def rmse(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.sqrt(mse(y, pred)))


def mae(y: np.ndarray, pred: np.ndarray) -> float:
    y, pred = _pair(y, pred)
    return float(np.mean(np.abs(y - pred)))


def r2(y: np.ndarray, pred: np.ndarray) -> float:
    y, pred = _pair(y, pred)
    return float(1.0 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2))


def spearman(y: np.ndarray, pred: np.ndarray) -> float:
    return float(spearmanr(*_pair(y, pred)).statistic)


METRICS = {"rmse": rmse, "mse": mse, "mae": mae, "r2": r2, "spearman": spearman}
LOWER_IS_BETTER = {"rmse": True, "mse": True, "mae": True, "r2": False, "spearman": False}


def score_all(y: np.ndarray, pred: np.ndarray, names: tuple[str, ...] = ("mse", "rmse", "mae", "r2", "spearman"),
              ) -> dict[str, float]:
    return {name: METRICS[name](y, pred) for name in names}
