"""The embedded Avito generator: FACTS.md statistics, Kaggle format, determinism, planted signal per modality."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.stats import spearmanr

from mmstack.data.avito_synth import AvitoGenerator


@pytest.fixture(scope="module")
def world():
    frame, periods = AvitoGenerator(6000, seed=11).build()
    return frame, periods


def test_target_statistics_follow_facts(world):
    frame, _ = world
    y = frame.loc[frame["split"] == "train", "deal_probability"]
    assert (y == 0).mean() == pytest.approx(0.634, abs=0.02)
    assert y.mean() == pytest.approx(0.1475, abs=0.01)
    assert y.std() == pytest.approx(0.266, abs=0.03)
    assert y.max() == 1.0 and y.min() == 0.0
    assert ((y > 0) & (y < 1)).mean() > 0.3, "continuous values in between"


def test_missing_rates_and_mixes_follow_facts(world):
    frame, _ = world
    t = frame[frame["split"] == "train"]
    for col, rate in {"param_1": 0.044, "param_2": 0.447, "param_3": 0.594, "description": 0.067, "price": 0.065,
                      "image": 0.079}.items():
        assert t[col].isna().mean() == pytest.approx(rate, abs=0.02), col
    parents = t["parent_category_name"].value_counts(normalize=True)
    assert parents["Личные вещи"] == pytest.approx(0.43, abs=0.04)
    assert t["parent_category_name"].nunique() == 9 and t["category_name"].nunique() >= 40
    types = t["user_type"].value_counts(normalize=True)
    assert types["Private"] == pytest.approx(0.71, abs=0.05) and types["Shop"] == pytest.approx(0.04, abs=0.03)
    price = t["price"].dropna()
    assert 500 <= price.median() <= 3000 and price.max() > 1e6 and (price == 0).any()
    assert t["user_id"].duplicated().any(), "repeat sellers"
    dates = t["activation_date"]
    assert (dates.max() - dates.min()).days == 13
    assert frame.loc[frame["split"] == "test", "activation_date"].min() > dates.max()


def test_russian_multiline_text_mentions_sizes_prices_conditions(world):
    frame, _ = world
    desc = frame["description"].dropna()
    assert desc.str.contains("\n").mean() > 0.4
    assert desc.str.contains(r"[а-яё]", flags=re.I).all()
    for pattern in ("Размер", "Цена \\d+ руб", "Состояние"):
        assert desc.str.contains(pattern).any(), pattern


def test_same_seed_same_data_other_seed_other_data():
    a, _ = AvitoGenerator(300, seed=5).build()
    b, _ = AvitoGenerator(300, seed=5).build()
    c, _ = AvitoGenerator(300, seed=6).build()
    pd.testing.assert_series_equal(a["deal_probability"], b["deal_probability"])
    assert not a["deal_probability"].equals(c["deal_probability"])


def _corr(frame, column):
    t = frame[frame["split"] == "train"]
    return spearmanr(t[column], t["deal_probability"]).statistic


def test_signal_is_planted_in_every_modality(world):
    frame, periods = world
    t = frame[frame["split"] == "train"].copy()
    assert _corr(frame, "rel_price") < -0.15, "price relative to the category/city norm"
    assert _corr(frame, "text_effect") > 0.1, "words in title and description"
    with_image = t[t["has_image"]]
    assert spearmanr(with_image["image_effect"], with_image["deal_probability"]).statistic > 0.05, "image content/quality"
    assert t.loc[~t["has_image"], "deal_probability"].mean() < t.loc[t["has_image"], "deal_probability"].mean()
    # seller: mean target of the seller's *other* items predicts this one (the listing graph's same-user edges)
    g = t.groupby("user_id")["deal_probability"]
    n = g.transform("count")
    others = ((g.transform("sum") - t["deal_probability"]) / (n - 1)).where(n > 1)
    ok = others.notna()
    assert spearmanr(others[ok], t.loc[ok, "deal_probability"]).statistic > 0.15
    # same normalised title shares a product demand
    g = t.groupby(t["title"].str.lower())["deal_probability"]
    n = g.transform("count")
    others = ((g.transform("sum") - t["deal_probability"]) / (n - 1)).where(n > 1)
    ok = others.notna()
    assert spearmanr(others[ok], t.loc[ok, "deal_probability"]).statistic > 0.1
    # periods: sellers whose active items stay up longer sell less
    days = (periods["date_to"] - periods["date_from"]).dt.days
    per_item = days.groupby(periods["item_id"]).mean()
    user_days = frame.set_index("item_id").loc[per_item.index, "user_id"].to_frame().assign(d=per_item.values)
    user_days = user_days.groupby("user_id")["d"].mean()
    m = t["user_id"].map(user_days)
    assert spearmanr(m[m.notna()], t.loc[m.notna(), "deal_probability"]).statistic < -0.05


def test_written_files_are_kaggle_format(tiny_avito_dir):
    train = pd.read_csv(tiny_avito_dir / "train.csv")
    assert list(train.columns) == ["item_id", "user_id", "region", "city", "parent_category_name", "category_name",
                                   "param_1", "param_2", "param_3", "title", "description", "price",
                                   "item_seq_number", "activation_date", "user_type", "image", "image_top_1",
                                   "deal_probability"]
    test = pd.read_csv(tiny_avito_dir / "test.csv")
    assert list(test.columns) == list(train.columns[:-1])
    assert train["image"].dropna().str.fullmatch(r"[0-9a-f]{64}").all()
    image_id = train["image"].dropna().iloc[0]
    with Image.open(tiny_avito_dir / "train_jpg" / f"{image_id}.jpg") as img:
        assert img.format == "JPEG"
    periods = pd.read_csv(tiny_avito_dir / "periods_train.csv")
    active = pd.read_csv(tiny_avito_dir / "train_active.csv")
    assert set(periods["item_id"]) <= set(active["item_id"])
    assert "deal_probability" not in active.columns and "image" not in active.columns


def test_bulk_helpers_match_a_row_loop():
    from mmstack.data.avito_synth import previous_of_same, repost_root

    keys = np.random.default_rng(0).integers(0, 7, 200)
    last, expected = {}, []
    for i, k in enumerate(keys):
        expected.append(last.get(k, -1))
        last[k] = i
    assert previous_of_same(keys).tolist() == expected
    repost_of = np.array([-1, 0, 1, -1, 3, 2, -1])
    assert repost_root(repost_of).tolist() == [0, 0, 0, 3, 3, 0, 6]


def test_reposts_copy_their_first_listing_and_periods_follow_each_other(world):
    frame, periods = world
    reposts = frame.index[frame["repost_of"] >= 0]
    assert 0.02 < len(reposts) / len(frame) < 0.08
    source = frame.loc[frame.loc[reposts, "repost_of"]]
    for col in ("title", "product", "cat", "city", "has_image", "img_colour", "img_sharp"):
        assert (frame.loc[reposts, col].to_numpy() == source[col].to_numpy()).all(), col
    per = periods.sort_values(["item_id", "date_from"])
    up = (per["date_to"] - per["date_from"]).dt.days
    assert up.between(1, 20).all()
    first = ~per["item_id"].duplicated()
    assert (per.loc[first, "date_from"] == per.loc[first, "activation_date"]).all()
    gap = (per["date_from"] - per.groupby("item_id")["date_to"].shift()).dt.days[~first]
    assert gap.between(1, 5).all() and gap.nunique() == 5
