"""Price against its group's norm, counts, item_seq_number, seller aggregates and listing periods.

Statistics are computed over train + test + the unlabeled active listings (no target is read), which is what
mattered most in the winning Avito solutions: the price relative to category, city, params, image_top_1 and
title-defined groups, and user-level aggregates from the active and periods files.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl

from ..textnorm import title_key
from .base import BlockContext, BlockOutput, FeatureBlock
from .registry import register

DEFAULT_PRICE_GROUPS = [
    ["category_name"],
    ["category_name", "city"],
    ["category_name", "region"],
    ["parent_category_name", "city"],
    ["category_name", "param_1"],
    ["category_name", "param_1", "param_2", "param_3"],
    ["image_top_1"],
    ["category_name", "image_top_1"],
    ["title_key"],
    ["category_name", "title_key"],
]
DEFAULT_COUNT_GROUPS = [
    ["region"], ["city"], ["category_name"], ["param_1"], ["param_2"], ["param_3"], ["image_top_1"],
    ["user_id"], ["title_key"], ["category_name", "city"], ["user_id", "category_name"],
    ["user_id", "activation_date"],
]


def listing_pool(ctx: BlockContext) -> pd.DataFrame:
    """Train and test rows (row ids first, in order) followed by the active listings, with a ``title_key``."""
    rows = ctx.data.all_rows()
    rows["source"] = np.where(rows["is_test"], "test", "train")
    extras = [f.assign(source=name) for name, f in ctx.data.extras.items() if name.endswith("_active")]
    pool = pd.concat([rows, *extras], ignore_index=True) if extras else rows
    pool["title_key"] = pool["title"].map(title_key)
    pool["log_price"] = np.log1p(pool["price"].astype(float))
    return pool


def group_name(cols: list[str]) -> str:
    return "x".join(c.replace("_name", "").replace("category", "cat") for c in cols)


def price_vs_groups(pool: pd.DataFrame, groups: list[list[str]]) -> pd.DataFrame:
    """Where a listing's log price stands in each group of columns (missing is a value of its own): difference to
    the group's mean and median, z-score, rank (average for ties, over the priced rows) and the median; five
    columns per group. A listing without a price gets only its group's median, and a group with one price no
    z-score.

    In polars, one pass over all groups (benchmarks/scale.py measures it beside pandas' groupby, checked equal):
    on one thread pandas is ahead at 200k rows (1.4 s against 1.6) and polars at 500k (4.9 against 5.3), growing
    slower toward the full size's 16M; and it spreads over the cores (2.7 s on two at 500k), which pandas does not."""
    if not groups:
        return pd.DataFrame(index=pool.index)
    lp = pl.col("log_price")
    exprs = []
    for cols in groups:
        mean, median, std = lp.mean().over(cols), lp.median().over(cols), lp.std().over(cols)
        name = group_name(cols)
        exprs += [(lp - mean).alias(f"tab_price_{name}_diff_mean"),
                  (lp - median).alias(f"tab_price_{name}_diff_median"),
                  ((lp - mean) / pl.when(std > 0).then(std)).alias(f"tab_price_{name}_z"),
                  (lp.rank("average").over(cols) / lp.count().over(cols)).alias(f"tab_price_{name}_rank"),
                  median.alias(f"tab_price_{name}_median")]
    return _polars_select(pool, {c for cols in groups for c in cols} | {"log_price"}, exprs)


def price_vs_group(pool: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    return price_vs_groups(pool, [cols])


def group_counts(pool: pd.DataFrame, groups: list[list[str]]) -> pd.DataFrame:
    """Rows per value of each group of columns (missing is a value of its own), one column per group. In polars,
    as the price statistics: 2.4x faster than pandas' groupby-transform on one thread at 500k rows, the same
    counts (benchmarks/scale.py measures both)."""
    if not groups:
        return pd.DataFrame(index=pool.index)
    return _polars_select(pool, {c for cols in groups for c in cols},
                          [pl.len().over(cols).alias(f"tab_count_{group_name(cols)}") for cols in groups])


def _polars_select(pool: pd.DataFrame, columns: set[str], exprs: list[pl.Expr]) -> pd.DataFrame:
    """``exprs`` evaluated by polars on the pool's ``columns`` (NaN read as null), on the pool's index."""
    return pl.from_pandas(pool[sorted(columns)]).select(exprs).to_pandas().set_axis(pool.index)


def counts(pool: pd.DataFrame, cols: list[str]) -> pd.Series:
    return group_counts(pool, [cols]).iloc[:, 0]


def seller_aggregates(pool: pd.DataFrame) -> pd.DataFrame:
    """What a seller's whole catalogue (train + test + active) looks like."""
    by_user = pool.groupby("user_id", sort=False)
    seq = pool["item_seq_number"].astype(float)
    return pd.DataFrame({
        "tab_user_items": by_user["item_id"].transform("size"),
        # vectorised (a Python call per seller took minutes at full size)
        "tab_user_active_items": pool["source"].str.endswith("active").groupby(pool["user_id"], sort=False)
        .transform("sum"),
        "tab_user_categories": by_user["category_name"].transform("nunique"),
        "tab_user_cities": by_user["city"].transform("nunique"),
        "tab_user_price_mean": by_user["log_price"].transform("mean"),
        "tab_user_price_std": by_user["log_price"].transform("std"),
        "tab_user_seq_max": seq.groupby(pool["user_id"]).transform("max"),
        "tab_seq_rank_in_user": seq.groupby(pool["user_id"]).rank(pct=True),
        "tab_user_titles": by_user["title_key"].transform("nunique"),
    })


def period_features(pool: pd.DataFrame, periods: pd.DataFrame) -> pd.DataFrame:
    """Days listed and times put up, per item (where the item has periods) and averaged per seller."""
    days = (periods["date_to"] - periods["date_from"]).dt.days.astype(float)
    per_item = pd.DataFrame({"days": days, "item_id": periods["item_id"]}).groupby("item_id")["days"]
    item = pd.DataFrame({"item_days_total": per_item.sum(), "item_times_up": per_item.size(),
                         "item_days_mean": per_item.mean()})
    joined = pool[["item_id", "user_id"]].join(item, on="item_id")
    by_user = joined.groupby("user_id", sort=False)
    return pd.DataFrame({
        "tab_item_days_total": joined["item_days_total"],
        "tab_item_times_up": joined["item_times_up"],
        "tab_user_days_mean": by_user["item_days_mean"].transform("mean"),
        "tab_user_days_total_mean": by_user["item_days_total"].transform("mean"),
        "tab_user_times_up_mean": by_user["item_times_up"].transform("mean"),
        "tab_user_items_with_periods": by_user["item_times_up"].transform("count"),
    })


@register
class TabularBlock(FeatureBlock):
    name = "tabular"
    rows_per_second = 8000  # measured here at the default params (README), for --time-limit
    version = "1"
    default_params = {"price_groups": DEFAULT_PRICE_GROUPS, "count_groups": DEFAULT_COUNT_GROUPS}

    def build(self, ctx: BlockContext) -> BlockOutput:
        pool = listing_pool(ctx)
        n = ctx.data.n_train + ctx.data.n_test

        def kept(part: pd.DataFrame) -> pd.DataFrame:
            """The train and test rows, in float32: the active listings only feed the statistics, and at full
            size (14M active rows) a float64 copy of every part would double the block's peak."""
            return part.iloc[:n].astype(np.float32).reset_index(drop=True)

        parts = [kept(price_vs_groups(pool, self.params["price_groups"])),
                 kept(group_counts(pool, self.params["count_groups"])),
                 kept(seller_aggregates(pool))]
        periods = [f for name, f in ctx.data.extras.items() if name.startswith("periods")]
        if periods:
            parts.append(kept(period_features(pool, pd.concat(periods, ignore_index=True))))
        parts.append(kept(pd.DataFrame({
            "tab_price_is_zero": (pool["price"] == 0).astype(float),
            "tab_title_desc_same_user_dupes": counts(pool, ["user_id", "title_key"])})))
        return BlockOutput(dense=pd.concat(parts, axis=1))
