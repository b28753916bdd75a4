"""Synthetic Avito data in the Kaggle format, with demand planted in every modality.

The generative story (also in the README):

* **Places and categories.** 28 regions with 1-4 cities each; every city has a price level and a demand offset.
  48 categories under 9 parents with the real parent mix; each has a median price and a base demand.
  Each (category, region) pair has its own demand offset: a categorical interaction.
* **Products.** Each category has a pool of products (noun, optional brand and adjective). A product has a
  price factor, a demand of its own, and a look (object shape and colour class). Its name is the listing title,
  so listings with the same normalised title share the product's demand: title-defined groups and same-title
  edges of the listing graph carry signal.
* **Sellers.** Private (71%), Company (25%) or Shop (4%) users with a hidden seller quality, a home city, a main
  category and an activity level; shops and companies post many items (large item_seq_number). A seller's quality
  raises the demand of all their items, shortens how long their other (active) items stay up in the periods file
  and lowers how often they are relisted: the seller's history and graph neighbourhood carry signal.
* **Listings.** price = category median x product factor x city level x exp(noise); the price relative to that
  norm is the strongest single signal (cheaper sells). Titles and multi-line descriptions mention condition, size,
  price and deal terms; phrases like "Срочно!" or "Новое, с биркой." raise demand, "Без торга." lowers it.
* **Images.** A drawn object on a category-coloured background; its colour class changes demand (content) and
  blur and brightness change it too (quality). 7.9% of listings have no image (lower demand). image_top_1 is a
  noisy class id derived from category, shape and colour, like the real classifier output.
* **Lots (only when asked: ``lots`` > 0; off for the Avito task).** A share of the listings of everyday
  categories show several items: many identical ones (a grid of the same object; "10 шт.", "оптом"), a set of
  one kind in different colours ("Набор", "Комплект") or a lot of different products ("Вещи пакетом: ..."). About
  30% of them say nothing about it in the text: the photos alone tell. Lots are drawn with a random stream of
  their own after everything else, so every other value (target included) is the same as without them.
* **Target.** A latent demand z sums all of the above plus noise. A listing gets deal_probability 0 unless
  z + noise clears the threshold that leaves 63.4% zeros; otherwise sigmoid(b + 1.4 z + noise) with b solved so
  the mean is 0.1475. Values above 0.985 become 1.0.
"""
from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
from joblib import Parallel, delayed
from PIL import Image, ImageDraw, ImageFilter
from scipy.optimize import brentq
from tqdm import tqdm

from ..store import atomic_path
from .avito_texts import draw_texts
from .avito_vocab import (ADJECTIVES, BRANDS, CATEGORIES, GENERIC_PARAM_1, LOT_LINES, LOT_PARENTS, LOT_TITLES, PARAM_1, PARAM_3_VALUES, REGIONS,
                          SIZES)

log = logging.getLogger(__name__)

ZERO_SHARE = 0.634
TARGET_MEAN = 0.1475
TEST_SHARE = 508_438 / 1_503_424
TRAIN_DATES = pd.date_range("2017-03-15", "2017-03-28")
TEST_DATES = pd.date_range("2017-04-12", "2017-04-18")
USER_TYPES = np.array(["Private", "Company", "Shop"])
# Listing shares are 71/25/4 (FACTS.md); companies and shops post more, so they are rarer as users.
USER_TYPE_ACTIVITY = np.array([0.0, 0.5, 1.0])
USER_TYPE_P = np.array([0.71, 0.25, 0.04]) / np.exp(USER_TYPE_ACTIVITY)
USER_TYPE_P = USER_TYPE_P / USER_TYPE_P.sum()
USER_TYPE_EFFECT = np.array([0.0, -0.25, -0.4])
# Object colour classes: (RGB, planted demand effect). Warm, saturated objects sell better in this story.
COLOURS = [((220, 40, 40), 0.35), ((240, 200, 30), 0.2), ((40, 160, 60), 0.0),
           ((40, 80, 220), -0.1), ((120, 120, 120), -0.25), ((60, 40, 30), -0.35)]
SHAPES = ("ellipse", "rectangle", "triangle", "stripes")
NO_BRAND = {"Недвижимость", "Услуги", "Животные", "Растения", "Продукты питания", "Книги и журналы"}
CLOTHES = {"Одежда, обувь, аксессуары", "Детская одежда и обувь"}
LOT_KINDS = ("identical", "set", "lot")
LOT_TEXT_CUE = 0.7  # share of lots whose title or description says so


@dataclass(frozen=True)
class ImageSpec:
    """Everything needed to draw one listing image deterministically."""

    path: str
    seed: int
    background: tuple[int, int, int]
    colour: tuple[int, int, int]
    shape: str
    blur: float
    brightness: float
    quality: int
    size: tuple[int, int]
    # several objects: (shape, RGB, (cx, cy, rx, ry) as shares of the width and height); () = one random object
    objects: tuple = ()


def _hex_id(seed: int, kind: str, i: int, length: int) -> str:
    return hashlib.sha256(f"{seed}:{kind}:{i}".encode()).hexdigest()[:length]


def previous_of_same(keys: np.ndarray) -> np.ndarray:
    """Per row, the last earlier row with the same key (-1 for a key's first row)."""
    order = np.argsort(keys, kind="stable")
    previous = np.full(len(keys), -1)
    same = keys[order[1:]] == keys[order[:-1]]
    previous[order[1:][same]] = order[:-1][same]
    return previous


def repost_root(repost_of: np.ndarray) -> np.ndarray:
    """Per row, the first listing of its repost chain (itself when it is no repost): what it copies."""
    root = np.where(repost_of >= 0, repost_of, np.arange(len(repost_of)))
    while True:  # pointer jumping: log2(longest chain) rounds
        nxt = root[root]
        if np.array_equal(nxt, root):
            return root
        root = nxt


def _nice_price(x: np.ndarray) -> np.ndarray:
    """Round prices to two significant digits, as people write them (1500, 25000, 2400000)."""
    x = np.maximum(x, 1.0)
    digits = np.floor(np.log10(x)) - 1
    step = np.power(10.0, np.maximum(digits, 0))
    return np.round(x / step) * step


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, colour: tuple[int, int, int], cx: float, cy: float,
                rx: float, ry: float) -> None:
    box = (cx - rx, cy - ry, cx + rx, cy + ry)
    if shape == "ellipse":
        draw.ellipse(box, fill=colour)
    elif shape == "rectangle":
        draw.rectangle(box, fill=colour)
    elif shape == "triangle":
        draw.polygon([(cx, cy - ry), (cx - rx, cy + ry), (cx + rx, cy + ry)], fill=colour)
    else:
        for k in range(5):
            y0 = cy - ry + k * 2 * ry / 5
            draw.rectangle((cx - rx, y0, cx + rx, y0 + ry / 5), fill=colour)


def render_image(spec: ImageSpec) -> Image.Image:
    """One image: object(s) on a background, then blur, brightness and a little sensor noise."""
    rng = np.random.default_rng(spec.seed)
    w, h = spec.size
    img = Image.new("RGB", spec.size, spec.background)
    draw = ImageDraw.Draw(img)
    if spec.objects:
        for shape, colour, (cx, cy, rx, ry) in spec.objects:
            _draw_shape(draw, shape, colour, cx * w, cy * h, rx * w, ry * h)
    else:
        cx, cy = rng.uniform(0.35, 0.65) * w, rng.uniform(0.35, 0.65) * h
        rx, ry = rng.uniform(0.18, 0.32) * w, rng.uniform(0.2, 0.38) * h
        _draw_shape(draw, spec.shape, spec.colour, cx, cy, rx, ry)
    if spec.blur > 0.05:
        img = img.filter(ImageFilter.GaussianBlur(spec.blur))
    pixels = np.asarray(img, dtype=np.float32) * spec.brightness
    pixels += rng.normal(0, 6, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def draw_image(spec: ImageSpec) -> None:
    """Render one JPEG to ``spec.path``."""
    img = render_image(spec)
    with atomic_path(Path(spec.path)) as tmp:
        img.save(tmp, format="JPEG", quality=spec.quality)


def lot_layout(kind: str, items: list[tuple[str, tuple[int, int, int]]], rng: np.random.Generator) -> tuple:
    """Where the items of a lot stand in a photo (see :class:`ImageSpec`): a jittered grid, one item per cell;
    identical items share one size, a set's or a lot's differ."""
    n = len(items)
    cols = int(math.ceil(math.sqrt(n * 4 / 3)))
    rows = int(math.ceil(n / cols))
    cells = rng.permutation(cols * rows)[:n]
    scale = 0.3 if kind == "identical" else 1.0
    objects = []
    for (shape, colour), cell in zip(items, cells):
        r, c = divmod(int(cell), cols)
        size = scale if kind == "identical" else rng.uniform(0.2, 0.36)
        jx, jy = rng.uniform(-0.06, 0.06, 2)
        objects.append((shape, colour, ((c + 0.5 + jx) / cols, (r + 0.5 + jy) / rows, size / cols, size / rows)))
    return tuple(objects)


def _draw_batch(specs: list[ImageSpec]) -> int:
    for spec in specs:
        draw_image(spec)
    return len(specs)


class AvitoGenerator:
    """Draws the world (places, categories, products, sellers), then listings, target and images."""

    def __init__(self, rows: int, seed: int = 42, image_size: tuple[int, int] = (160, 120), lots: float = 0.0):
        if rows < 50:
            raise ValueError("make-data avito needs --rows of at least 50")
        if not 0.0 <= lots <= 1.0:
            raise ValueError(f"lots is a share of listings from 0 to 1, got {lots}")
        self.lots = lots
        self.n_train = rows
        self.n_test = max(10, int(round(rows * TEST_SHARE)))
        self.n_active = rows // 2
        self.seed = seed
        self.image_size = image_size
        self.rng = np.random.default_rng(seed)
        self._world()

    # -- the world ------------------------------------------------------------------------------------
    def _world(self) -> None:
        rng = self.rng
        cats = []
        for parent, (share, members) in CATEGORIES.items():
            weights = rng.dirichlet(np.full(len(members), 2.0)) * share
            for (name, (median, base, nouns)), wgt in zip(members.items(), weights):
                cats.append((parent, name, median, base, nouns, wgt))
        self.cat_parent = np.array([c[0] for c in cats])
        self.cat_name = np.array([c[1] for c in cats])
        self.cat_median = np.array([c[2] for c in cats], dtype=float)
        self.cat_base = np.array([c[3] for c in cats])
        self.cat_p = np.array([c[5] for c in cats]) / sum(c[5] for c in cats)
        self.cat_hue = rng.permutation(len(cats)) / len(cats)

        self.region_names = np.array(list(REGIONS))
        self.region_p = rng.dirichlet(np.full(len(REGIONS), 3.0))
        cities, city_region = [], []
        for r, members in enumerate(REGIONS.values()):
            cities += members
            city_region += [r] * len(members)
        self.city_names = np.array(cities)
        self.city_region = np.array(city_region)
        self.city_level = np.exp(rng.normal(0, 0.25, len(cities)))
        self.city_demand = rng.normal(0, 0.12, len(cities))
        self.cat_region_effect = rng.normal(0, 0.3, (len(cats), len(REGIONS)))

        # products: a pool per category
        prod_cat, prod_name, prod_factor, prod_demand, prod_shape, prod_colour = [], [], [], [], [], []
        for c, (_, _, _, _, nouns, _) in enumerate(cats):
            for _ in range(14):
                name = str(rng.choice(nouns))
                if cats[c][0] not in NO_BRAND and cats[c][1] not in NO_BRAND and rng.random() < 0.45:
                    name += f" {rng.choice(BRANDS)}"
                if rng.random() < 0.3:
                    name += f" {rng.choice(ADJECTIVES)}"
                prod_cat.append(c)
                prod_name.append(name)
            n_new = 14
            prod_factor += list(np.exp(rng.normal(0, 0.45, n_new)))
            prod_demand += list(rng.normal(0, 0.45, n_new))
            prod_shape += list(rng.integers(0, len(SHAPES), n_new))
            prod_colour += list(rng.integers(0, len(COLOURS), n_new))
        self.prod_cat = np.array(prod_cat)
        self.prod_name = np.array(prod_name)
        self.prod_factor = np.array(prod_factor)
        self.prod_demand = np.array(prod_demand)
        self.prod_shape = np.array(prod_shape)
        self.prod_colour = np.array(prod_colour)
        self.prod_popularity = np.exp(rng.normal(0, 1.0, len(prod_cat)))

        n_listings = self.n_train + self.n_test + self.n_active
        n_users = max(20, int(n_listings / 2.4))
        self.user_id = np.array([_hex_id(self.seed, "user", i, 12) for i in range(n_users)])
        self.user_type = rng.choice(3, n_users, p=USER_TYPE_P)
        self.user_quality = rng.normal(0, 1, n_users)
        self.user_city = rng.choice(len(cities), n_users, p=self._city_p())
        self.user_cat = rng.choice(len(cats), n_users, p=self.cat_p)
        self.user_activity = np.exp(rng.normal(0, 0.8, n_users) + USER_TYPE_ACTIVITY[self.user_type])
        self.user_seq_base = np.where(self.user_type == 0, rng.integers(1, 40, n_users),
                                      rng.integers(20, 20_000, n_users))

    def _city_p(self) -> np.ndarray:
        p = np.zeros(len(self.city_names))
        for r in range(len(self.region_names)):
            members = np.flatnonzero(self.city_region == r)
            within = np.r_[0.6, np.full(len(members) - 1, 0.4 / max(1, len(members) - 1))] if len(members) > 1 else [1.0]
            p[members] = self.region_p[r] * np.asarray(within)
        return p / p.sum()

    # -- listings -------------------------------------------------------------------------------------
    def listings(self) -> pd.DataFrame:
        rng = self.rng
        n = self.n_train + self.n_test + self.n_active
        split = np.repeat(np.array(["train", "test", "active"], dtype=object), [self.n_train, self.n_test, self.n_active])
        user = rng.choice(len(self.user_id), n, p=self.user_activity / self.user_activity.sum())
        cat = np.where(rng.random(n) < 0.8, self.user_cat[user], rng.choice(len(self.cat_name), n, p=self.cat_p))
        product = np.empty(n, dtype=int)
        for c in np.unique(cat):
            rows = np.flatnonzero(cat == c)
            pool = np.flatnonzero(self.prod_cat == c)
            w = self.prod_popularity[pool]
            product[rows] = rng.choice(pool, len(rows), p=w / w.sum())
        city = np.where(rng.random(n) < 0.9, self.user_city[user], rng.choice(len(self.city_names), n, p=self._city_p()))
        dates = np.where(split == "test", rng.choice(TEST_DATES.values, n), rng.choice(TRAIN_DATES.values, n))
        # reposts: a listing copies an earlier listing of the same seller (same product, title and picture)
        # (one uniform per listing whose seller posted before, in listing order: the draws of a per-row loop)
        previous = previous_of_same(user)
        seen = np.flatnonzero(previous >= 0)
        reposted = seen[rng.random(len(seen)) < 0.05]
        repost_of = np.full(n, -1)
        repost_of[reposted] = previous[reposted]
        source = repost_root(repost_of)
        cat, product, city = cat[source], product[source], city[source]

        frame = pd.DataFrame({"split": split, "user": user, "cat": cat, "product": product, "city": city,
                              "activation_date": pd.to_datetime(dates), "repost_of": repost_of})
        # item_seq_number grows with each of the seller's listings in date order
        order = frame.sort_values(["user", "activation_date"], kind="stable").index
        frame.loc[order, "seq"] = frame.loc[order].groupby("user").cumcount().to_numpy()
        frame["seq"] = (self.user_seq_base[user] + frame["seq"].to_numpy() * rng.integers(1, 4, n)).astype(int)

        fair = self.cat_median[cat] * self.prod_factor[product] * self.city_level[city]
        deviation = rng.standard_t(5, n) * 0.45
        price = _nice_price(fair * np.exp(deviation))
        price = np.minimum(price, 7.2e7)
        free = rng.random(n) < 0.006
        price[free] = 0.0
        no_price = rng.random(n) < 0.065
        rel_price = np.where(free, 0.0, np.log(np.maximum(price, 1)) - np.log(fair))
        frame["price"] = np.where(no_price, np.nan, price)
        frame["rel_price"] = rel_price
        frame["free"] = free
        frame["no_price"] = no_price
        return frame

    def _texts(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Titles, descriptions and their planted effect (:mod:`.avito_texts`); a repost shows its first
        listing's title."""
        n = len(frame)
        no_desc = self.rng.random(n) < 0.067
        titles, descriptions, effect = draw_texts(
            self.rng, self.prod_name, frame["product"].to_numpy(), repost_root(frame["repost_of"].to_numpy()),
            np.isin(self.cat_name[frame["cat"].to_numpy()], list(CLOTHES)), frame["price"].to_numpy(float), no_desc)
        frame["title"] = titles
        frame["description"] = descriptions
        frame["text_effect"] = effect
        return frame

    def _params(self, frame: pd.DataFrame) -> pd.DataFrame:
        rng = self.rng
        n = len(frame)
        cat_names = self.cat_name[frame["cat"].to_numpy()]
        # each category's param_1 values side by side: a row draws an offset into its category's stretch
        options = [PARAM_1.get(c, GENERIC_PARAM_1) for c in self.cat_name]
        starts = np.cumsum([0] + [len(o) for o in options])
        flat = np.array([v for o in options for v in o], dtype=object)
        cat = frame["cat"].to_numpy()
        p1 = flat[starts[cat] + rng.integers(0, starts[cat + 1] - starts[cat])]
        frame["param_1"] = np.where(rng.random(n) < 0.044, None, p1)
        p2 = np.where(np.isin(cat_names, list(CLOTHES)), rng.choice(np.array(SIZES, dtype=object), n),
                      rng.choice(np.array(BRANDS, dtype=object), n))
        frame["param_2"] = np.where(rng.random(n) < 0.447, None, p2.astype(object))
        frame["param_3"] = np.where(rng.random(n) < 0.594, None, rng.choice(np.array(PARAM_3_VALUES, dtype=object), n))
        return frame

    def _images(self, frame: pd.DataFrame) -> pd.DataFrame:
        rng = self.rng
        n = len(frame)
        has_image = (rng.random(n) >= 0.079) & (frame["split"] != "active").to_numpy()
        sharp = rng.beta(4, 2, n)
        bright = rng.beta(3, 2, n)
        colour = self.prod_colour[frame["product"].to_numpy()].copy()
        recolour = rng.random(n) < 0.25  # sellers photograph other variants too
        colour[recolour] = rng.integers(0, len(COLOURS), int(recolour.sum()))
        # a repost shows its first listing's picture
        source = repost_root(frame["repost_of"].to_numpy())
        sharp, bright, colour, has_image = sharp[source], bright[source], colour[source], has_image[source]
        colour_effect = np.array([c[1] for c in COLOURS])[colour]
        image_effect = np.where(has_image, 0.7 * (sharp - 0.66) + 0.5 * (bright - 0.6) + colour_effect, -0.5)
        shape = self.prod_shape[frame["product"].to_numpy()]
        klass = (frame["cat"].to_numpy() * 61 + shape * 7 + colour) % 3067
        noisy = rng.random(n) < 0.15
        klass[noisy] = rng.integers(0, 3067, int(noisy.sum()))
        image = np.full(n, None, dtype=object)
        image[has_image] = [_hex_id(self.seed, "image", i, 64) for i in np.flatnonzero(has_image)]
        frame["image"] = image
        frame["image_top_1"] = np.where(has_image, klass.astype(float), np.nan)
        frame["has_image"] = has_image
        frame["img_sharp"], frame["img_bright"], frame["img_colour"] = sharp, bright, colour
        frame["image_effect"] = image_effect
        return frame

    def _target(self, frame: pd.DataFrame) -> np.ndarray:
        rng = self.rng
        n = len(frame)
        user, cat, city = frame["user"].to_numpy(), frame["cat"].to_numpy(), frame["city"].to_numpy()
        z = (self.cat_base[cat] + self.city_demand[city] + self.cat_region_effect[cat, self.city_region[city]]
             + 0.5 * self.user_quality[user] + USER_TYPE_EFFECT[self.user_type[user]]
             - 0.06 * np.log1p(frame["seq"].to_numpy())
             + self.prod_demand[frame["product"].to_numpy()]
             - 0.9 * np.clip(frame["rel_price"].to_numpy(), -2.5, 2.5)
             + 0.8 * frame["free"].to_numpy() - 0.2 * frame["no_price"].to_numpy()
             + frame["text_effect"].to_numpy() + frame["image_effect"].to_numpy()
             + 0.05 * (frame["activation_date"].dt.dayofweek.to_numpy() >= 5)
             + rng.normal(0, 0.5, n))
        score = z + rng.logistic(0, 0.6, n)
        labelled = (frame["split"] != "active").to_numpy()
        threshold = np.quantile(score[labelled], ZERO_SHARE)
        nonzero = score > threshold
        noise = rng.normal(0, 0.9, n)
        needed = TARGET_MEAN / (1 - ZERO_SHARE)
        mask = nonzero & labelled

        def gap(b: float) -> float:
            return float(np.mean(1 / (1 + np.exp(-(b + 1.4 * z[mask] + noise[mask]))))) - needed

        b = brentq(gap, -10, 10)
        value = np.where(nonzero, 1 / (1 + np.exp(-(b + 1.4 * z + noise))), 0.0)
        value = np.where(value > 0.985, 1.0, value)
        return np.round(value, 5)

    def _periods(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Periods of the active listings: good sellers' items stay up for less time and are relisted less."""
        rng = self.rng
        active = frame[frame["split"] == "active"]
        q = self.user_quality[active["user"].to_numpy()]
        times = 1 + rng.poisson(np.exp(-0.3 - 0.4 * q))
        # one row per period; an item's periods follow each other with a gap of 1-5 days
        item = np.repeat(np.arange(len(active)), times)
        up = np.clip(rng.geometric(1 / np.exp(1.8 - 0.35 * q[item])), 1, 20)
        step = up + rng.integers(1, 6, len(item))
        before = np.cumsum(step) - step  # days of all earlier periods, of this and earlier items
        first = np.cumsum(times) - times
        offset = before - before[first][item]
        start = active["activation_date"].to_numpy()[item]
        date_from = start + offset.astype("timedelta64[D]")
        return pd.DataFrame({"item_id": active["item_id"].to_numpy()[item], "activation_date": start,
                             "date_from": date_from, "date_to": date_from + up.astype("timedelta64[D]")})

    # -- output ---------------------------------------------------------------------------------------
    def build(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """All listings with their hidden variables, and the periods of the active ones."""
        frame = self.listings()
        frame["item_id"] = [_hex_id(self.seed, "item", i, 12) for i in range(len(frame))]
        frame = self._params(frame)
        frame = self._texts(frame)
        frame = self._images(frame)
        frame["deal_probability"] = self._target(frame)
        u, c, ci = frame["user"].to_numpy(), frame["cat"].to_numpy(), frame["city"].to_numpy()
        # object arrays indexed per row share one str per value (a numpy str array would make one per row)
        frame["user_id"] = self.user_id.astype(object)[u]
        frame["user_type"] = USER_TYPES.astype(object)[self.user_type[u]]
        frame["parent_category_name"] = self.cat_parent.astype(object)[c]
        frame["category_name"] = self.cat_name.astype(object)[c]
        frame["city_name"] = self.city_names.astype(object)[ci]
        frame["region"] = self.region_names.astype(object)[self.city_region[ci]]
        frame["item_seq_number"] = frame["seq"]
        periods = self._periods(frame)
        return self._lots(frame), periods

    def _lots(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Turn a ``lots`` share of the everyday listings into multi-item ones (module docstring, "Lots"):
        ``lot_kind`` (single, identical, set, lot), ``lot_items`` ((shape, colour index) per item shown) and, for
        the chosen listings, a title and description that may say so. Its own random stream: nothing else moves."""
        n = len(frame)
        kind = np.full(n, "single", dtype=object)
        items: list[tuple] = [()] * n
        frame["lot_kind"], frame["lot_items"] = kind, items
        if self.lots <= 0:
            return frame
        rng = np.random.default_rng([self.seed, 0x107])
        cat = frame["cat"].to_numpy()
        eligible = np.isin(self.cat_parent[cat], list(LOT_PARENTS)) & (frame["repost_of"].to_numpy() < 0)
        chosen = np.flatnonzero(eligible & (rng.random(n) < self.lots))
        titles, descriptions = frame["title"].to_numpy().copy(), frame["description"].to_numpy().copy()
        for i in chosen:
            k = str(rng.choice(LOT_KINDS))
            product = int(frame["product"].iat[i])
            colour = int(frame["img_colour"].iat[i])
            shape = int(self.prod_shape[product])
            if k == "identical":
                count = int(rng.integers(3, 13))
                shown = [(shape, colour)] * count
                names = [str(self.prod_name[product])]
            elif k == "set":
                count = int(rng.integers(2, 6))
                others = rng.permutation([c for c in range(len(COLOURS)) if c != colour])[:count - 1]
                shown = [(shape, colour)] + [(shape, int(c)) for c in others]
                names = [str(self.prod_name[product])]
            else:
                count = int(rng.integers(2, 5))
                parent = self.cat_parent[cat[i]]
                pool = np.flatnonzero((self.cat_parent[self.prod_cat] == parent) & (self.prod_name != self.prod_name[product]))
                picked = [product] + [int(p) for p in rng.choice(pool, count - 1, replace=False)]
                shown = [(int(self.prod_shape[p]), int(self.prod_colour[p])) for p in picked]
                names = list(dict.fromkeys(str(self.prod_name[p]) for p in picked))
            kind[i], items[i] = k, tuple(shown)
            if rng.random() >= LOT_TEXT_CUE:
                continue  # the photos alone tell
            fill = {"title": titles[i], "n": count, "items": ", ".join(names)}
            cue_title, cue_line = rng.random() < 0.6, rng.random() < 0.8
            if cue_title or not cue_line:
                text = str(rng.choice(LOT_TITLES[k])).format(**fill)
                titles[i] = text[:1].upper() + text[1:]
            if cue_line and descriptions[i] is not None:
                lines = str(descriptions[i]).split("\n")
                lines.insert(1, str(rng.choice(LOT_LINES[k])).format(**{**fill, "items": fill["items"].lower()}))
                descriptions[i] = "\n".join(lines)
        frame["title"], frame["description"] = titles, descriptions
        frame["lot_kind"], frame["lot_items"] = kind, items
        return frame

    def image_specs(self, frame: pd.DataFrame, out: Path) -> list[ImageSpec]:
        specs = []
        for i, row in enumerate(frame.itertuples(index=False)):
            if row.image is None or row.split == "active":
                continue
            specs.append(self.photo_spec(row, i, str(out / f"{row.split}_jpg" / f"{row.image}.jpg")))
        return specs

    def photo_spec(self, row, position: int, path: str, photo: int = 0) -> ImageSpec:
        """The spec of photo number ``photo`` of listing ``row`` (a row of :meth:`build`'s frame at
        ``position``). Photo 0 is the listing's Kaggle image; later ones show the same thing from another angle
        (another seed); a later photo of a set or a lot may show one of its items alone."""
        hue = self.cat_hue[row.cat]
        background = tuple(int(v) for v in 150 + 90 * np.array([math.sin(6.283 * (hue + k / 3)) * 0.5 + 0.5 for k in range(3)]))
        source = row.repost_of if row.repost_of >= 0 else position
        seed = self.seed * 1_000_003 + source + photo * 7_919_000_003
        objects: tuple = ()
        lot_kind = getattr(row, "lot_kind", "single")
        if lot_kind != "single":
            rng = np.random.default_rng([seed, 0x107])
            shown = [(SHAPES[s], COLOURS[c][0]) for s, c in row.lot_items]
            if photo > 0 and lot_kind != "identical" and rng.random() < 0.5:
                shape, colour = shown[(photo - 1) % len(shown)]  # a close-up of one item
                box = (rng.uniform(0.35, 0.65), rng.uniform(0.35, 0.65), rng.uniform(0.18, 0.32),
                       rng.uniform(0.2, 0.38))
                objects = ((shape, colour, box),)
            else:
                objects = lot_layout(lot_kind, shown, rng)
        return ImageSpec(
            path=path, seed=seed, background=background, colour=COLOURS[row.img_colour][0],
            shape=SHAPES[self.prod_shape[row.product]], blur=float((1 - row.img_sharp) * 3.5),
            brightness=float(0.45 + 0.9 * row.img_bright), quality=85 if row.repost_of < 0 else 70,
            size=self.image_size, objects=objects)


KAGGLE_COLUMNS = ["item_id", "user_id", "region", "city", "parent_category_name", "category_name", "param_1",
                  "param_2", "param_3", "title", "description", "price", "item_seq_number", "activation_date",
                  "user_type", "image", "image_top_1"]


def _polars_column(name: str, column: pd.Series) -> pl.Series:
    """A pandas column as polars: str/None objects as strings (not inferred from the first values), NaN as null
    (an empty CSV field, as pandas writes it)."""
    if column.dtype == object:
        return pl.Series(name, column.tolist(), dtype=pl.String)
    return pl.Series(name, column.to_numpy(), nan_to_null=True)


def write_avito(out: Path | str, rows: int, seed: int = 42, n_jobs: int = 2, images: bool = True,
                image_size: tuple[int, int] = (160, 120), lots: float = 0.0) -> dict[str, int]:
    """Write a Kaggle-format Avito dataset of ``rows`` training rows to ``out``; returns row counts.
    ``lots``: the share of everyday listings drawn as multi-item ones (0: none, the Avito task's data)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    gen = AvitoGenerator(rows, seed, image_size, lots)
    frame, periods = gen.build()
    if images:
        specs = gen.image_specs(frame, out)
        for split in ("train", "test"):
            (out / f"{split}_jpg").mkdir(exist_ok=True)
        batches = [specs[i:i + 500] for i in range(0, len(specs), 500)]
        with tqdm(total=len(specs), desc="drawing images", unit="img", leave=False) as bar:
            for done in Parallel(n_jobs=n_jobs, return_as="generator")(delayed(_draw_batch)(b) for b in batches):
                bar.update(done)
    # only the Kaggle columns go on, in polars (compact strings; its CSV bytes equal pandas' to_csv); each table is
    # gathered in the shuffled order, written and dropped in turn
    frame = frame.rename(columns={"city": "city_index", "city_name": "city"})
    # column by column, each dropped from the frame once copied (a whole-frame copy doubled the peak memory)
    kaggle = pl.DataFrame([_polars_column(c, frame.pop(c)) for c in KAGGLE_COLUMNS + ["deal_probability", "split"]])
    del frame
    kaggle = kaggle.with_columns(pl.col("activation_date").dt.strftime("%Y-%m-%d"))
    order = np.random.default_rng(seed + 1).permutation(kaggle.height)
    split = kaggle["split"].to_numpy()[order]
    tables = [  # (file, split, columns); train.csv last: its presence means the dataset is complete
        ("test.csv", "test", KAGGLE_COLUMNS),
        ("train_active.csv", "active", [c for c in KAGGLE_COLUMNS if c not in ("image", "image_top_1")]),
        ("train.csv", "train", KAGGLE_COLUMNS + ["deal_probability"]),
    ]
    counts = {"periods_train.csv": len(periods)}
    with atomic_path(out / "periods_train.csv") as tmp:
        pl.from_pandas(periods).with_columns(
            pl.col("activation_date", "date_from", "date_to").dt.strftime("%Y-%m-%d")).write_csv(tmp)
    for name, part, cols in tables:
        rows = order[split == part]
        with atomic_path(out / name) as tmp:
            kaggle.select(cols)[rows].write_csv(tmp)
        counts[name] = len(rows)
    log.info("make-data avito: %s to %s", ", ".join(f"{k} {v}" for k, v in counts.items()), out)
    return counts
