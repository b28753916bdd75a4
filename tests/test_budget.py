"""--time-limit: the run plans from measurements, skips (and reports) what will not fit, never half-trains."""
from __future__ import annotations

import json
import time

import pandas as pd
import pytest

from mmstack.budget import Budget, ModelSkipped

from .conftest import fast_config


def test_fold_check_projects_the_remaining_folds():
    budget = Budget(limit=100.0)
    budget.started -= 50.0  # 50 s used, 50 left, 15 reserved
    budget.check_fold("lgb", 1, 5, [5.0])  # 4 more folds at 5 s: 20 s fits in 35
    with pytest.raises(ModelSkipped, match="4 more folds at 12.0 s each"):
        budget.check_fold("cat", 1, 5, [12.0])
    assert Budget().left() == float("inf")
    Budget().check_fold("cat", 1, 5, [1e9])  # no limit: never skips


def test_blocks_are_planned_from_their_throughput():
    budget = Budget(limit=100.0)  # 40 s for features
    assert budget.block_fits("basic", 10.0) and not budget.block_fits("image_embed", 45.0)
    assert budget.skipped[0]["name"] == "image_embed" and "estimated 45 s" in budget.skipped[0]["why"]


def test_a_time_limited_run_ends_in_time_with_a_valid_submission(tiny_avito_dir, tmp_path):
    """Slow models (many CatBoost and XGBoost rounds at a small learning rate) under a 40 s limit: the first model
    trains, the others stop before a fold that would not fit, and the run ends within 10% of the limit."""
    from mmstack.pipeline import run

    limit = 40.0
    cfg = fast_config("features.blocks=['basic', 'text_stats', 'tabular', 'target_encoding']",
                      "models.train=['lgb', 'cat', 'xgb', 'mlp']", "ablation.enabled=false",
                      "models.cat.max_rounds=4000", "models.cat.early_stopping=4000", "models.cat.learning_rate=0.01",
                      "models.cat.depth=8", "models.xgb.max_rounds=4000", "models.xgb.early_stopping=4000",
                      "models.xgb.learning_rate=0.005")
    start = time.perf_counter()
    run_dir = run(cfg, tiny_avito_dir, tmp_path, time_limit=limit)
    elapsed = time.perf_counter() - start
    assert elapsed <= 1.1 * limit, f"took {elapsed:.1f} s for a {limit:.0f} s limit"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    budget = metrics["budget"]
    assert budget["limit"] == limit and budget["skipped"], "something had to give"
    trained = set(metrics["models"])
    assert "lgb" in trained and {s["name"] for s in budget["skipped"] if s["kind"] == "model"} == \
        {"cat", "xgb", "mlp"} - trained
    assert set(metrics["stack"]["weights"]) <= trained, "a skipped model never reaches the stack"
    sub = pd.read_csv(run_dir / "submission.csv")
    assert len(sub) > 0 and sub["deal_probability"].between(0, 1).all()
    assert "Time limit" in (run_dir / "report.html").read_text()


def test_cheap_blocks_are_built_after_a_slow_one_used_the_features_share():
    budget = Budget(limit=100.0)
    budget.started -= 45.0  # a slow block used more than the 40 s features' share
    assert budget.block_fits("tabular", 2.0)  # cheap: built while the run has time
    assert not budget.block_fits("image_embed", 20.0)
    budget.started -= 50.0  # 95 s used: inside the reserve, nothing more is built
    assert not budget.block_fits("tabular", 2.0)


def test_process_age_counts_from_the_process_start():
    from mmstack.budget import process_age

    assert 0.0 < process_age() < 24 * 3600  # this test process started before the test, not ages ago


def test_block_estimates_follow_the_measured_slowdown():
    budget = Budget(limit=100.0)  # 40 s for features
    assert budget.slowdown() == 1.0 and budget.block_fits("text_embed", 20.0)
    budget.block_built(0.1, 3.0)  # tiny blocks: fixed costs, not a slowdown
    assert budget.slowdown() == 1.0
    budget.block_built(2.0, 17.0)  # text_tfidf took 9x its estimate: the machine is busy
    assert budget.slowdown() == pytest.approx(20.0 / 2.1)
    assert not budget.block_fits("text_embed", 20.0) and "estimated 190 s" in budget.skipped[-1]["why"]
