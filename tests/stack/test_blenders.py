"""Blender contract: weights, finding a known combination, nested CV never beats in-sample on noise."""
from __future__ import annotations

import numpy as np
import pytest

from mmstack.folds import Folds, make_fold_ids
from mmstack.metrics import rmse
from mmstack.stack.blenders import BLENDERS, make_blender
from mmstack.stack.nested import fit_stack, nested_cv


def _known_mix(n=3000, seed=0):
    """y = 0.7 * p0 + 0.3 * p1 exactly; p2 and p3 are noisy distractors."""
    rng = np.random.default_rng(seed)
    p0, p1 = rng.random(n), rng.random(n)
    y = 0.7 * p0 + 0.3 * p1
    P = np.column_stack([p0, p1, y + rng.normal(0, 0.3, n), rng.random(n)])
    return P, y


@pytest.mark.parametrize("key", sorted(BLENDERS))
def test_blender_contract(key):
    P, y = _known_mix()
    blender = make_blender(key, seed=1).fit(P, y)
    pred = blender.predict(P)
    assert pred.shape == y.shape and np.isfinite(pred).all()
    if blender.weights_sum_to_one:
        assert blender.weights.sum() == pytest.approx(1.0) and (blender.weights >= 0).all()
    if key in ("weights", "caruana", "ridge"):
        assert blender.weights[:2] == pytest.approx([0.7, 0.3], abs=0.03), "finds the known combination"
        assert blender.weights[3] == pytest.approx(0.0, abs=0.02), "ignores the random column"
    # it beats every single column
    assert rmse(y, pred) < min(rmse(y, P[:, j]) for j in range(P.shape[1]))


@pytest.mark.parametrize("key", sorted(BLENDERS))
def test_nested_cv_not_better_than_in_sample_on_random_predictions(key):
    rng = np.random.default_rng(5)
    n = 800
    y = rng.random(n)
    P = rng.random((n, 6))
    folds = Folds(make_fold_ids(n, 5, "kfold", 0), 5, "f")
    result = fit_stack(key, None, [f"m{j}" for j in range(6)], P, y, P[:10], folds, rmse, (0.0, 1.0), seed=0)
    assert result.cv >= result.cv_in_sample, "nested CV is never better than in-sample on noise"
    # and the nested predictions of each fold come from a blender that never saw that fold
    oof = nested_cv(lambda: make_blender(key, seed=0), P, y, folds, None)
    assert oof.shape == (n,)


def test_constrained_weights_with_one_dominant_model():
    rng = np.random.default_rng(2)
    y = rng.random(2000)
    P = np.column_stack([y, rng.random(2000), y + rng.normal(0, 0.5, 2000)])
    w = make_blender("weights").fit(P, y).weights
    assert w[0] == pytest.approx(1.0, abs=1e-3)
