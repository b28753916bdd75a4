"""Gradient-boosted trees: LightGBM, CatBoost, XGBoost. Objective, early-stopping metric and output shape come
from the target's problem type through the tables below (problem types as data, not branches in the fits)."""
from __future__ import annotations

from typing import Any

import lightgbm as lgb
import numpy as np

from ..targets import Target
from .base import Level1Model
from .registry import register


def missing_codes_as_nan(X, cats):
    """``X`` with missing category codes (-1) as NaN, as LightGBM and XGBoost want them (LightGBM warns on
    negative codes). The model matrix already holds NaN there (:func:`~mmstack.models.base.model_matrix`): then
    ``X`` itself comes back, not a copy."""
    if not cats or not (X[cats].to_numpy() < 0).any():
        return X
    return X.assign(**{c: X[c].where(X[c] >= 0) for c in cats})


def _library_metric(target: Target, names: dict[str, Any]) -> str:
    """The library's name for the target's metric where it has one, else its logloss / RMSE."""
    fallback = "logloss" if target.is_classification else "rmse"
    name = names.get(target.metric.name, names[fallback])
    return name[target.problem] if isinstance(name, dict) else name


# ---- LightGBM ------------------------------------------------------------------------------------------------
LGB_OBJECTIVES = {"binary": {"objective": "binary"}, "multiclass": {"objective": "multiclass"}}
LGB_METRICS = {"rmse": "rmse", "mse": "l2", "mae": "l1", "auc": "auc",
               "logloss": {"binary": "binary_logloss", "multiclass": "multi_logloss"},
               "accuracy": {"binary": "binary_error", "multiclass": "multi_error"}}


@register
class LightGBMModel(Level1Model):
    """LightGBM with early stopping on the fold's validation part; categorical codes go in natively."""

    key = "lgb"
    version = "2"
    default_params = {
        "objective": "regression",  # regression targets only: or "cross_entropy" on a 0..1 target
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
        "class_weight": "",  # classification: "balanced" weighs classes by inverse frequency
        "num_threads": 2,
    }

    def _booster_params(self) -> dict[str, Any]:
        p = {k: v for k, v in self.params.items() if k not in ("max_rounds", "early_stopping", "class_weight")}
        t = self.target
        p.update(LGB_OBJECTIVES.get(t.problem, {}))
        if t.problem == "multiclass":
            p["num_class"] = t.n_classes
        return {**p, "metric": _library_metric(t, LGB_METRICS), "seed": self.seed, "deterministic": True,
                "force_row_wise": True, "verbosity": -1}

    def fit_fold(self, X_train, y_train, X_valid, y_valid, categorical):
        cats = [c for c in categorical if c in X_train.columns]
        train = lgb.Dataset(missing_codes_as_nan(X_train, cats), y_train, categorical_feature=cats,
                            weight=self.sample_weight(y_train))
        valid = lgb.Dataset(missing_codes_as_nan(X_valid, cats), y_valid, reference=train,
                            categorical_feature=cats)
        del X_train  # the Dataset drops the raw rows once binned (free_raw_data): then nothing holds them
        def stop_at_deadline(env) -> None:
            if self.out_of_time():
                raise lgb.callback.EarlyStopException(env.iteration, env.evaluation_result_list)

        booster = lgb.train(self._booster_params(), train, num_boost_round=self.params["max_rounds"],
                            valid_sets=[valid],
                            callbacks=[lgb.early_stopping(self.params["early_stopping"], verbose=False),
                                       stop_at_deadline])
        return booster, cats

    def predict(self, fitted, X) -> np.ndarray:
        booster, cats = fitted
        return booster.predict(missing_codes_as_nan(X, cats), num_iteration=booster.best_iteration)

    def importance(self, fitted) -> dict[str, float]:
        booster, _ = fitted
        gain = booster.feature_importance(importance_type="gain")
        return {name: float(v) for name, v in zip(booster.feature_name(), gain)}


# ---- CatBoost ------------------------------------------------------------------------------------------------
class _Deadline:
    """CatBoost callback: stop boosting at the model's fold deadline (mmstack.budget)."""

    def __init__(self, model: Level1Model):
        self.model = model

    def after_iteration(self, info) -> bool:
        return not self.model.out_of_time()


CAT_LOSSES = {"binary": "Logloss", "multiclass": "MultiClass"}
CAT_METRICS = {"rmse": "RMSE", "mse": "RMSE", "mae": "MAE", "auc": "AUC", "accuracy": "Accuracy",
               "logloss": {"binary": "Logloss", "multiclass": "MultiClass"}}


@register
class CatBoostModel(Level1Model):
    """CatBoost; categorical codes go in natively as categorical features."""

    key = "cat"
    version = "2"
    default_params = {
        "learning_rate": 0.08,
        "depth": 6,
        "l2_leaf_reg": 3.0,
        "max_ctr_complexity": 4,  # categorical features combined per CTR (CatBoost's CPU default); 1: none
        "max_rounds": 2000,
        "early_stopping": 100,
        "loss_function": "RMSE",  # regression targets only: or "CrossEntropy" on a 0..1 target
        "class_weight": "",  # classification: "balanced" weighs classes by inverse frequency
        "num_threads": 2,
    }

    def fit_fold(self, X_train, y_train, X_valid, y_valid, categorical):
        from catboost import CatBoostClassifier, CatBoostRegressor, Pool

        cats = [c for c in categorical if c in X_train.columns]
        p, t = self.params, self.target
        common = dict(learning_rate=p["learning_rate"], depth=p["depth"], l2_leaf_reg=p["l2_leaf_reg"],
                      max_ctr_complexity=p["max_ctr_complexity"],
                      iterations=p["max_rounds"], od_type="Iter", od_wait=p["early_stopping"],
                      eval_metric=_library_metric(t, CAT_METRICS), random_seed=self.seed,
                      thread_count=p["num_threads"], verbose=False, allow_writing_files=False)
        if t.is_classification:  # every class named: a class missing from this fold keeps its column
            model = CatBoostClassifier(loss_function=CAT_LOSSES[t.problem], class_names=list(range(t.n_classes)),
                                       **common)
        else:
            model = CatBoostRegressor(loss_function=p["loss_function"], **common)
        train = Pool(self._cats_as_int(X_train, cats), y_train, cat_features=cats, weight=self.sample_weight(y_train))
        del X_train  # the Pool holds its own copy: the raw rows go now (Level1Model.fit_bag)
        model.fit(train, eval_set=Pool(self._cats_as_int(X_valid, cats), y_valid, cat_features=cats),
                  use_best_model=True, callbacks=[_Deadline(self)] if self.deadline is not None else None)
        return model, cats

    @staticmethod
    def _cats_as_int(X, cats):
        return X.assign(**{c: X[c].fillna(-1).astype(np.int64) for c in cats}) if cats else X

    def predict(self, fitted, X) -> np.ndarray:
        from catboost import Pool

        model, cats = fitted
        pool = Pool(self._cats_as_int(X, cats), cat_features=cats)
        if not self.target.is_classification:
            return model.predict(pool)
        probs = model.predict_proba(pool)
        return probs[:, 1:] if self.target.problem == "binary" else probs

    def importance(self, fitted) -> dict[str, float]:
        model, _ = fitted
        return {n: float(v) for n, v in zip(model.feature_names_, model.get_feature_importance())}


# ---- XGBoost -------------------------------------------------------------------------------------------------
XGB_OBJECTIVES = {"binary": "binary:logistic", "multiclass": "multi:softprob"}
XGB_METRICS = {"rmse": "rmse", "mse": "rmse", "mae": "mae", "auc": "auc",
               "logloss": {"binary": "logloss", "multiclass": "mlogloss"},
               "accuracy": {"binary": "error", "multiclass": "merror"}}


@register
class XGBoostModel(Level1Model):
    """XGBoost (hist). Category codes are used as ordered numbers (missing = NaN)."""

    key = "xgb"
    version = "2"
    default_params = {
        "learning_rate": 0.05,
        "max_depth": 7,
        "min_child_weight": 5.0,
        "subsample": 0.9,
        "colsample_bytree": 0.8,
        "reg_lambda": 1.0,
        "max_rounds": 3000,
        "early_stopping": 100,
        "objective": "reg:squarederror",  # regression targets only: or "reg:logistic" on a 0..1 target
        "class_weight": "",  # classification: "balanced" weighs classes by inverse frequency
        "num_threads": 2,
    }

    def _matrix(self, X, cats, label=None, weight=None, quantised: bool = False, ref=None):
        """A DMatrix of ``X`` (missing category codes as NaN); ``quantised``: a QuantileDMatrix (binned once, a
        byte per value instead of the raw copy; the same trees with tree_method hist), ``ref`` its bins' source."""
        import xgboost as xgb

        X = missing_codes_as_nan(X, cats).astype(np.float32, copy=False)
        if quantised:
            return xgb.QuantileDMatrix(X, label=label, weight=weight, missing=np.nan, ref=ref)
        return xgb.DMatrix(X, label=label, weight=weight, missing=np.nan)

    def fit_fold(self, X_train, y_train, X_valid, y_valid, categorical):
        import xgboost as xgb

        cats = [c for c in categorical if c in X_train.columns]
        p, t = self.params, self.target
        params = {"eta": p["learning_rate"], "max_depth": p["max_depth"], "min_child_weight": p["min_child_weight"],
                  "subsample": p["subsample"], "colsample_bytree": p["colsample_bytree"], "lambda": p["reg_lambda"],
                  "objective": XGB_OBJECTIVES.get(t.problem, p["objective"]),
                  "eval_metric": _library_metric(t, XGB_METRICS), "tree_method": "hist", "seed": self.seed,
                  "nthread": p["num_threads"]}
        if t.problem == "multiclass":
            params["num_class"] = t.n_classes
        train = self._matrix(X_train, cats, y_train, self.sample_weight(y_train), quantised=True)
        del X_train  # binned: the raw rows go now where this was their last reference (Level1Model.fit_bag)
        valid = self._matrix(X_valid, cats, y_valid, quantised=True, ref=train)
        class StopAtDeadline(xgb.callback.TrainingCallback):
            def after_iteration(cb, model, epoch, evals_log) -> bool:  # noqa: N805
                return self.out_of_time()

        booster = xgb.train(params, train,
                            num_boost_round=p["max_rounds"], evals=[(valid, "valid")],
                            early_stopping_rounds=p["early_stopping"], verbose_eval=False,
                            callbacks=[StopAtDeadline()])
        return booster, cats

    def predict(self, fitted, X) -> np.ndarray:
        booster, cats = fitted
        best = getattr(booster, "best_iteration", None)  # unset when a time limit stopped the first round
        return booster.predict(self._matrix(X, cats), iteration_range=(0, best + 1) if best is not None else (0, 0))

    def importance(self, fitted) -> dict[str, float]:
        booster, _ = fitted
        return {k: float(v) for k, v in booster.get_score(importance_type="total_gain").items()}
