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


@register
class CatBoostModel(Level1Model):
    """CatBoost regressor; categorical codes go in natively as categorical features."""

    key = "cat"
    version = "1"
    default_params = {
        "learning_rate": 0.08,
        "depth": 6,
        "l2_leaf_reg": 3.0,
        "max_rounds": 2000,
        "early_stopping": 100,
        "loss_function": "RMSE",  # or "CrossEntropy" on the 0..1 target
        "num_threads": 2,
    }

    def fit_fold(self, X_train, y_train, X_valid, y_valid, categorical):
        from catboost import CatBoostRegressor, Pool

        cats = [c for c in categorical if c in X_train.columns]
        p = self.params
        model = CatBoostRegressor(learning_rate=p["learning_rate"], depth=p["depth"], l2_leaf_reg=p["l2_leaf_reg"],
                                  iterations=p["max_rounds"], od_type="Iter", od_wait=p["early_stopping"],
                                  loss_function=p["loss_function"], eval_metric="RMSE", random_seed=self.seed,
                                  thread_count=p["num_threads"], verbose=False, allow_writing_files=False)
        model.fit(Pool(self._cats_as_int(X_train, cats), y_train, cat_features=cats),
                  eval_set=Pool(self._cats_as_int(X_valid, cats), y_valid, cat_features=cats), use_best_model=True)
        return model, cats

    @staticmethod
    def _cats_as_int(X, cats):
        return X.assign(**{c: X[c].fillna(-1).astype(np.int64) for c in cats}) if cats else X

    def predict(self, fitted, X) -> np.ndarray:
        from catboost import Pool

        model, cats = fitted
        return model.predict(Pool(self._cats_as_int(X, cats), cat_features=cats))

    def importance(self, fitted) -> dict[str, float]:
        model, _ = fitted
        return {n: float(v) for n, v in zip(model.feature_names_, model.get_feature_importance())}


@register
class XGBoostModel(Level1Model):
    """XGBoost (hist) regressor. Category codes are used as ordered numbers (missing = NaN)."""

    key = "xgb"
    version = "1"
    default_params = {
        "learning_rate": 0.05,
        "max_depth": 7,
        "min_child_weight": 5.0,
        "subsample": 0.9,
        "colsample_bytree": 0.8,
        "reg_lambda": 1.0,
        "max_rounds": 3000,
        "early_stopping": 100,
        "objective": "reg:squarederror",  # or "reg:logistic" on the 0..1 target
        "num_threads": 2,
    }

    def _matrix(self, X, cats, label=None):
        import xgboost as xgb

        X = X.assign(**{c: X[c].where(X[c] >= 0) for c in cats}) if cats else X
        return xgb.DMatrix(X.astype(np.float32), label=label, missing=np.nan)

    def fit_fold(self, X_train, y_train, X_valid, y_valid, categorical):
        import xgboost as xgb

        cats = [c for c in categorical if c in X_train.columns]
        p = self.params
        params = {"eta": p["learning_rate"], "max_depth": p["max_depth"], "min_child_weight": p["min_child_weight"],
                  "subsample": p["subsample"], "colsample_bytree": p["colsample_bytree"], "lambda": p["reg_lambda"],
                  "objective": p["objective"], "eval_metric": "rmse", "tree_method": "hist", "seed": self.seed,
                  "nthread": p["num_threads"]}
        valid = self._matrix(X_valid, cats, y_valid)
        booster = xgb.train(params, self._matrix(X_train, cats, y_train), num_boost_round=p["max_rounds"],
                            evals=[(valid, "valid")], early_stopping_rounds=p["early_stopping"], verbose_eval=False)
        return booster, cats

    def predict(self, fitted, X) -> np.ndarray:
        booster, cats = fitted
        return booster.predict(self._matrix(X, cats), iteration_range=(0, booster.best_iteration + 1))

    def importance(self, fitted) -> dict[str, float]:
        booster, _ = fitted
        return {k: float(v) for k, v in booster.get_score(importance_type="total_gain").items()}
