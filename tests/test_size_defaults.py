"""Defaults that follow the data size: the tier table, --set winning over it, and the auto fold strategy."""
from __future__ import annotations

import numpy as np
import pandas as pd

from mmstack.config import Config
from mmstack.size_defaults import SIZE_TIERS, SizeTier, apply_size_defaults, tier_for

from .conftest import ROOT


def avito(*overrides: str) -> Config:
    return Config.load(ROOT / "configs" / "avito.toml", ["task.size_defaults=true", *overrides])


def test_tiers_are_ordered_and_the_embedded_default_keeps_the_config():
    bounds = [t.up_to for t in SIZE_TIERS[:-1]]
    assert bounds == sorted(bounds) and SIZE_TIERS[-1].up_to is None
    assert tier_for(1_000).name == "small" and tier_for(10_000).name == "default"
    assert tier_for(100_000).name == "large"
    cfg = avito()
    before = cfg.flat()
    assert apply_size_defaults(cfg, 10_000) == {"tier": "default", "rows": 10_000, "changed": []}
    assert cfg.flat() == before


def test_small_data_gets_the_small_tier_but_set_wins():
    cfg = avito("models.lgb.num_leaves=99", "models.train=['lgb', 'xattn']")
    sized = apply_size_defaults(cfg, 800)
    assert sized["tier"] == "small"
    small = SIZE_TIERS[0].settings
    assert cfg.get("models.lgb.learning_rate") == small["models.lgb.learning_rate"] != 0.1
    assert cfg.get("models.lgb.num_leaves") == 99  # the user's --set
    assert cfg.models == ["lgb", "xattn"]  # models.train was --set: nothing left out
    assert not any(c.startswith("models.cat.") for c in sized["changed"])  # cat is not trained: not touched
    assert any(c.startswith("models.lgb.learning_rate") for c in sized["changed"])
    plain = avito()
    apply_size_defaults(plain, 800)
    assert not set(SIZE_TIERS[0].leave_out) & set(plain.models) and "lgb" in plain.models


def test_off_by_default_and_a_custom_table():
    cfg = Config.load(ROOT / "configs" / "avito.toml", ["task.size_defaults=false"])
    assert apply_size_defaults(cfg, 50) == {}
    tiers = (SizeTier("tiny", 100, {"models.ridge.alpha": 50.0}), SizeTier("rest", None))
    cfg = avito()
    assert apply_size_defaults(cfg, 50, tiers)["changed"] == ["models.ridge.alpha: 3.0 -> 50.0"]
    assert cfg.model_params("ridge")["alpha"] == 50.0


def test_auto_strategy_groups_when_the_rows_to_predict_are_new_sellers():
    from mmstack.folds import auto_strategy
    from mmstack.targets import TargetSpec, make_target

    class Data:  # the three things auto_strategy reads from a Dataset
        def __init__(self, users: list[str], labelled: int):
            self.frame, self.n_rows, self.k = pd.DataFrame({"user_id": users}), len(users), labelled

        def all_rows(self):
            return self.frame

        def labelled(self, target):
            return np.arange(self.k), np.zeros(self.k)

    target = make_target(TargetSpec("y", "regression"), pd.Series(np.zeros(4)))
    seen = Data(["a", "b", "a", "b", "a", "b"], 4)  # the rows to predict are sellers seen labelled
    new = Data(["a", "b", "a", "b", "c", "d"], 4)  # new sellers
    assert auto_strategy(seen, target, "user_id") == "kfold"
    assert auto_strategy(new, target, "user_id") == "group"
    assert auto_strategy(new, target, None) == "kfold" and auto_strategy(new, target, "nope") == "kfold"
