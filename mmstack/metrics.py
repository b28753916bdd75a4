"""Task metrics by name."""
from __future__ import annotations

import numpy as np


def rmse(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(y, float) - np.asarray(pred, float)) ** 2)))


METRICS = {"rmse": rmse}
LOWER_IS_BETTER = {"rmse": True}
