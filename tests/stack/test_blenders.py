"""Blender contract: weights, finding a known combination, nested CV never beats in-sample on noise; the same for
probabilities (binary and multiclass)."""
from __future__ import annotations

import numpy as np
import pytest

from mmstack.errors import ConfigError
from mmstack.folds import Folds, make_fold_ids
from mmstack.metrics import METRICS
from mmstack.stack.blenders import BLENDERS, blenders_for, make_blender
from mmstack.stack.nested import fit_stack, nested_cv
from mmstack.targets import Target, regression_target

UNIT = regression_target("y", value_range=(0.0, 1.0))
BINARY = Target("y", "binary", METRICS["logloss"], ("0", "1"))
THREE = Target("y", "multiclass", METRICS["logloss"], ("a", "b", "c"))
REGRESSION_BLENDERS = sorted(k for k, b in BLENDERS.items() if "regression" in b.problems)
CLASSIFICATION_BLENDERS = sorted(k for k, b in BLENDERS.items() if "binary" in b.problems)


def _known_mix(n=3000, seed=0):
    """y = 0.7 * p0 + 0.3 * p1 exactly; p2 and p3 are noisy distractors. P is rows x models x 1."""
    rng = np.random.default_rng(seed)
    p0, p1 = rng.random(n), rng.random(n)
    y = 0.7 * p0 + 0.3 * p1
    P = np.column_stack([p0, p1, y + rng.normal(0, 0.3, n), rng.random(n)])
    return P[:, :, None], y


@pytest.mark.parametrize("key", REGRESSION_BLENDERS)
def test_blender_contract(key):
    P, y = _known_mix()
    blender = make_blender(key, seed=1, target=UNIT).fit(P, y)
    pred = blender.predict(P)
    assert pred.shape == (len(y), 1) and np.isfinite(pred).all()
    if blender.weights_sum_to_one:
        assert blender.weights.sum() == pytest.approx(1.0) and (blender.weights >= 0).all()
    if key in ("weights", "caruana", "ridge"):
        assert blender.weights[:2] == pytest.approx([0.7, 0.3], abs=0.03), "finds the known combination"
        assert blender.weights[3] == pytest.approx(0.0, abs=0.02), "ignores the random column"
    # it beats every single column
    rmse = METRICS["rmse"]
    assert rmse(y, pred) < min(rmse(y, P[:, j]) for j in range(P.shape[1]))


@pytest.mark.parametrize("key", REGRESSION_BLENDERS)
def test_nested_cv_not_better_than_in_sample_on_random_predictions(key):
    rng = np.random.default_rng(5)
    n = 800
    y = rng.random(n)
    P = rng.random((n, 6, 1))
    folds = Folds(make_fold_ids(n, 5, "kfold", 0), 5, "f")
    result = fit_stack(key, None, [f"m{j}" for j in range(6)], P, y, P[:10], folds, UNIT, seed=0)
    assert result.cv >= result.cv_in_sample, "nested CV is never better than in-sample on noise"
    # and the nested predictions of each fold come from a blender that never saw that fold
    oof = nested_cv(lambda: make_blender(key, seed=0, target=UNIT), P, y, folds, UNIT)
    assert oof.shape == (n, 1)


def test_constrained_weights_with_one_dominant_model():
    rng = np.random.default_rng(2)
    y = rng.random(2000)
    P = np.column_stack([y, rng.random(2000), y + rng.normal(0, 0.5, 2000)])[:, :, None]
    w = make_blender("weights", target=UNIT).fit(P, y).weights
    assert w[0] == pytest.approx(1.0, abs=1e-3)


def _probabilities(target: Target, n=3000, seed=0):
    """Labels, a good model, a weaker one that is right where the first is wrong, and a random one
    (rows x models x outputs)."""
    rng = np.random.default_rng(seed)
    k = target.n_classes
    y = rng.integers(0, k, n)
    good = np.where(rng.random(n) < 0.7, y, rng.integers(0, k, n))
    other = np.where(rng.random(n) < 0.5, y, rng.integers(0, k, n))

    def probs(labels, sharp):
        p = np.full((n, k), (1 - sharp) / (k - 1))
        p[np.arange(n), labels] = sharp
        return p

    models = [probs(good, 0.8), probs(other, 0.7), rng.dirichlet(np.ones(k), n)]
    P = np.stack([m[:, 1:] if target.problem == "binary" else m for m in models], axis=1)
    return P, y


@pytest.mark.parametrize("target", [BINARY, THREE], ids=["binary", "multiclass"])
@pytest.mark.parametrize("key", CLASSIFICATION_BLENDERS)
def test_probability_blender_contract(key, target):
    P, y = _probabilities(target)
    blender = make_blender(key, seed=1, target=target).fit(P, y)
    pred = target.finish(blender.predict(P))
    assert pred.shape == (len(y), target.n_outputs) and ((pred > 0) & (pred < 1)).all()
    if target.problem == "multiclass":
        np.testing.assert_allclose(pred.sum(axis=1), 1.0, atol=1e-9)
    if blender.weights_sum_to_one:
        assert blender.weights.sum() == pytest.approx(1.0) and (blender.weights >= 0).all()
        assert blender.weights[2] < 0.1, "the random model gets (almost) no weight"
    logloss = METRICS["logloss"]
    assert logloss(y, pred) < min(logloss(y, P[:, j]) for j in range(3)), "beats every single model"
    folds = Folds(make_fold_ids(len(y), 5, "kfold", 0, stratify=y), 5, "f")
    result = fit_stack(key, None, ["good", "other", "random"], P, y, P[:7], folds, target, seed=0)
    assert result.test.shape == (7, target.n_outputs) and result.cv >= result.cv_in_sample - 1e-3


def test_blenders_follow_the_problem_type():
    assert blenders_for(UNIT, ["weights", "logistic", "ridge"]) == ["weights", "ridge"]
    assert blenders_for(BINARY, ["weights", "ridge"]) == ["weights"]
    assert blenders_for(THREE, ["ridge"]) == ["weights", "caruana", "logistic"], "none fits: the type's defaults"
    with pytest.raises(ConfigError, match="does not serve"):
        make_blender("ridge", target=BINARY)
    with pytest.raises(ConfigError, match="unknown blender"):
        blenders_for(UNIT, ["magic"])


def test_caruana_follows_the_metric_direction():
    """With a higher-is-better metric (accuracy) the greedy selection still picks the better model."""
    target = Target("y", "binary", METRICS["accuracy"], ("0", "1"))
    P, y = _probabilities(target)
    w = make_blender("caruana", {"iterations": 10}, target=target).fit(P, y).weights
    assert w[0] > w[2]
