"""Gradient-boosted trees: LightGBM (more families join in the level-1 zoo issue)."""
from __future__ import annotations

from typing import Any

import lightgbm as lgb
import numpy as np

from .base import Level1Model
from .registry import register


@register
class LightGBMModel(Level1Model):
    """LightGBM regressor with early stopping on the fold's validation part; categorical codes go in natively."""

    key = "lgb"
    version = "1"
    default_params = {
        "objective": "regression",  # or "cross_entropy" on the 0..1 target
        "learning_rate": 0.05,
        "num_leaves": 63,
        "min_data_in_leaf": 40,
        "feature_fraction": 0.8,
        "bagging_fraction": 0.9,
        "bagging_freq": 1,
        "lambda_l2": 1.0,
        "cat_smooth": 20.0,
        "max_rounds": 3000,
        "early_stopping": 100,
        "num_threads": 2,
    }

    def _booster_params(self) -> dict[str, Any]:
        p = {k: v for k, v in self.params.items() if k not in ("max_rounds", "early_stopping")}
        return {**p, "metric": "rmse", "seed": self.seed, "deterministic": True, "force_row_wise": True,
                "verbosity": -1}

    @staticmethod
    def _missing_codes_as_nan(X, cats):
        # category code -1 means missing; LightGBM wants NaN there (negative codes draw a warning)
        if not cats:
            return X
        return X.assign(**{c: X[c].where(X[c] >= 0) for c in cats})

    def fit_fold(self, X_train, y_train, X_valid, y_valid, categorical):
        cats = [c for c in categorical if c in X_train.columns]
        train = lgb.Dataset(self._missing_codes_as_nan(X_train, cats), y_train, categorical_feature=cats)
        valid = lgb.Dataset(self._missing_codes_as_nan(X_valid, cats), y_valid, reference=train,
                            categorical_feature=cats)
        booster = lgb.train(self._booster_params(), train, num_boost_round=self.params["max_rounds"],
                            valid_sets=[valid],
                            callbacks=[lgb.early_stopping(self.params["early_stopping"], verbose=False)])
        return booster, cats

    def predict(self, fitted, X) -> np.ndarray:
        booster, cats = fitted
        return booster.predict(self._missing_codes_as_nan(X, cats), num_iteration=booster.best_iteration)

    def importance(self, fitted) -> dict[str, float]:
        booster, _ = fitted
        gain = booster.feature_importance(importance_type="gain")
        return {name: float(v) for name, v in zip(booster.feature_name(), gain)}
