"""tabular: price against group norms, counts, seller and periods aggregates on hand-made frames."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mmstack.features.tabular import (counts, group_name, period_features, price_vs_group, price_vs_groups,
                                     seller_aggregates)


def _pool():
    return pd.DataFrame({
        "item_id": list("abcde"), "user_id": ["u1", "u1", "u2", "u2", "u2"],
        "category_name": ["c", "c", "c", "d", "d"], "city": ["x", "x", "y", "y", "y"],
        "log_price": np.log1p([100.0, 300.0, 200.0, 1000.0, np.nan]),
        "item_seq_number": [1, 2, 10, 11, 12], "source": ["train", "train", "test", "train_active", "train"],
        "title_key": ["t1", "t1", "t2", "t3", "t3"],
    })


def test_price_vs_group():
    pool = _pool()
    f = price_vs_group(pool, ["category_name"])
    lp = pool["log_price"]
    assert f["tab_price_cat_diff_mean"][0] == pytest.approx(lp[0] - lp[:3].mean())
    assert f["tab_price_cat_diff_median"][1] == pytest.approx(lp[1] - lp[:3].median())
    assert f["tab_price_cat_rank"][:3].tolist() == pytest.approx([1 / 3, 1, 2 / 3])
    assert np.isnan(f["tab_price_cat_z"][3]), "a group with one price has no spread"
    assert np.isnan(f["tab_price_cat_diff_mean"][4]), "no price, no difference"


def test_price_vs_groups_equals_pandas_groupby_with_ties_missing_prices_and_keys():
    """The block's polars statistics are pandas' groupby-transform figures: mean, median, std (ddof 1), rank with
    ties averaged over the priced rows; a missing key is a group of its own, and a row without a price gets only
    its group's median."""
    rng = np.random.default_rng(3)
    n = 400
    pool = pd.DataFrame({
        "category_name": rng.choice(["a", "b", "c", None], n),
        "city": rng.choice(["x", "y"], n),
        "image_top_1": rng.choice([1.0, 2.0, np.nan], n),
        "log_price": np.log1p(rng.choice([0, 100, 100, 250, 1000, 5000, np.nan], n)),  # ties and missing
    })
    pool.index = pool.index + 1000  # the result follows the pool's index
    groups = [["category_name"], ["category_name", "city"], ["image_top_1"]]
    got = price_vs_groups(pool, groups)
    assert got.index.equals(pool.index) and got.shape == (n, 5 * len(groups))
    for cols in groups:
        grouped = pool["log_price"].groupby([pool[c].astype("string").fillna("<NA>") for c in cols], sort=False)
        mean, median, std = grouped.transform("mean"), grouped.transform("median"), grouped.transform("std")
        expected = pd.DataFrame({"diff_mean": pool["log_price"] - mean, "diff_median": pool["log_price"] - median,
                                 "z": (pool["log_price"] - mean) / std.where(std > 0),
                                 "rank": grouped.rank(pct=True), "median": median})
        mine = got[[c for c in got.columns if c.startswith(f"tab_price_{group_name(cols)}_")]]
        np.testing.assert_allclose(mine.to_numpy(float), expected.to_numpy(float), rtol=1e-12, atol=1e-12)
    own = got[[c for c in got.columns if not c.endswith("_median") or c.endswith("_diff_median")]]
    assert own.isna().all(axis=1).equals(pool["log_price"].isna()), "no price, no figures of its own"
    assert got.filter(like="_median").notna().any(axis=1).all(), "the group's median stays for an unpriced row"
    assert price_vs_groups(pool, []).shape == (n, 0)


def test_counts_and_seller_aggregates():
    pool = _pool()
    assert counts(pool, ["category_name", "city"]).tolist() == [2, 2, 1, 2, 2]
    s = seller_aggregates(pool)
    assert s["tab_user_items"].tolist() == [2, 2, 3, 3, 3]
    assert s["tab_user_active_items"].tolist() == [0, 0, 1, 1, 1]
    assert s["tab_user_categories"].tolist() == [1, 1, 2, 2, 2]
    assert s["tab_seq_rank_in_user"].tolist() == pytest.approx([0.5, 1, 1 / 3, 2 / 3, 1])


def test_period_features():
    pool = _pool()
    periods = pd.DataFrame({"item_id": ["d", "d", "e"],
                            "date_from": pd.to_datetime(["2017-03-01", "2017-03-10", "2017-03-05"]),
                            "date_to": pd.to_datetime(["2017-03-04", "2017-03-12", "2017-03-06"])})
    f = period_features(pool, periods)
    assert f["tab_item_days_total"].tolist()[3:] == [5, 1] and np.isnan(f["tab_item_days_total"][0])
    assert f["tab_item_times_up"].tolist()[3:] == [2, 1]
    assert f["tab_user_days_mean"][2] == pytest.approx((2.5 + 1) / 2)
    assert np.isnan(f["tab_user_days_mean"][0])
