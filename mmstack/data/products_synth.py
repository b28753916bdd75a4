"""Synthetic WB-style catalogue in the ``products`` format (FACTS.md section 3), with every label.

The generative story (also in the README):

* **Categories.** 13 categories (Одежда 22%, Дом 12%, Обувь 10% ... Товары для взрослых 2%) hold 101
  sub-categories of unequal sizes (Dirichlet weights within each category). A sub-category has a median price,
  a drawn shape (some shapes are shared: a yoga mat, a bath mat and a car mat look alike), a colour palette,
  preferred patterns and 2-4 nouns ("Футболка", "Майка", "Футболка оверсайз").
* **Products.** A product draws its sub-category (systematic sampling, so small shares hold on small data), a
  brand with a price tier (of the category's kind, or one of 6 marketplace-wide labels for 25%), a material
  (leather costs more than polyester), a colour (mostly from the sub-category's palette, sometimes neutral), a
  pattern, 0-2 style words and, for clothes and shoes, a gender (shares per sub-category: dresses are female)
  and an age group (15% child: child sizes, smaller drawn object). Its price is the sub-category median x
  lognormal noise x brand tier x material: a heavy tail across and within sub-categories. Products of the
  adult category (кальяны, табачные аксессуары, интимные товары, эротическое бельё, алкогольная атрибутика) are
  the 18+ goods: ``isadult`` is true for them alone (about 2%).
* **Photos.** Each product has 1-3 views: its object drawn with the sub-category's shape in its colour and
  pattern, on a background tinted by the category (or a white studio, or a floor), rotated and placed at random.
  Category shows in the background and the shape family, sub-category in shape, palette and pattern, gender in
  the palette, age in the object size.
* **Listings.** About 20% of rows belong to groups of 2-5 listings of the same product (the ``group`` column);
  the others are products listed once (their own group). Each listing writes the product's title anew: its
  noun or a synonym, agreeing adjectives (gender, age, style, colour), material, brand, model code, in varying
  order with seller words ("Хит!", "новинка 2025"); 9% of titles are generic ("Подарок", "Хит продаж") and 5%
  name another sub-category's noun, so text alone is noisy and image + text does better than either. The
  description is 1-9 Russian sentences, few of them specific to the category (empty on 20%, simple HTML on 10%
  of the rest); attributes (5% empty) are a JSON object or "key: value; ..." text with the keys in listing
  order. A repeated listing reuses the product's photos, re-cropped, resized, brightened and re-encoded at
  another JPEG quality, and its price is the same or near. ``nm`` is a unique 8-9 digit number; images are
  ``<nm>.jpg`` or ``<nm>_<k>.jpg`` (8% .jpeg, .png or .webp).
* **Unlabelled rows.** Each label column is empty on 12% of its rows independently (rows to predict); ``group``
  is empty for whole groups covering about 15% of rows (rows to match). gender and age_group are empty for
  products that are not clothes or shoes.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from joblib import Parallel, delayed

from ..store import atomic_path, write_text
from .products_draw import PATTERNS, ImageSpec, Photo, draw_batch
from .products_vocab import (ADULT_KIND, ADULT_SHOE_SIZES, ADULT_SIZES, ANY_SENTENCES, ANY_STYLE_WORDS, BRANDS,
                             CATEGORIES, CHILD_SHARE, CHILD_SHOE_SIZES, CHILD_SIZES, CHILD_WORDS, COLOURS,
                             COUNTRIES, DESCRIPTION_SENTENCES, GENDER_ATTRIBUTE, GENDER_SHARES, GENDER_WORDS,
                             GENDERED_KINDS, GENERAL_BRAND_SHARE, GENERAL_BRANDS, GENERIC_TITLES, INTRO_SENTENCES,
                             MATERIALS, NEUTRAL_COLOURS, SEASONS, SELLER_WORDS, STYLE_WORDS, TIER_FACTOR)

log = logging.getLogger(__name__)

COLUMNS = ["nm", "title", "description", "brend", "attributes", "category", "sub_category", "price", "gender",
           "age_group", "isadult", "group"]
GROUPED_SHARE = 0.20
GROUP_SIZES, GROUP_SIZE_P = np.array([2, 3, 4, 5]), np.array([0.5, 0.25, 0.15, 0.10])
UNGROUPED_SHARE = 0.15  # rows whose group is left empty (whole groups): rows to match
MISSING_LABEL_SHARE = 0.12  # per label column: rows to predict
GENERIC_TITLE_SHARE, MISLEADING_TITLE_SHARE = 0.09, 0.05
EMPTY_DESCRIPTION_SHARE, HTML_DESCRIPTION_SHARE = 0.2, 0.10
CANVAS_MARGIN = 1.12  # the photo canvas is this much larger than the image: room for re-crops
FEMALE_COLOURS, MALE_COLOURS = (6, 4, 13, 17), (12, 0, 2, 10)  # pink, red, violet, mint / blue, black, grey, khaki


@dataclass
class Product:
    """The hidden truth of one product: everything its listings share."""

    sub: int
    brand: str | None
    tier: int
    material: tuple[str, str, float] | None
    colour: int
    gender: str | None
    age_group: str | None
    nouns: list[str]
    noun: str
    styles: list[str]
    code: str | None
    price: float
    attributes: dict[str, str]
    sentences: list[str]
    views: list[Photo]


def agree(adjective: str, gender: str) -> str:
    """``"stem|m|f|n|p"`` in the form for a noun of grammatical gender m/f/n/p; other text as is."""
    if "|" not in adjective:
        return adjective
    stem, *endings = adjective.split("|")
    return stem + endings["mfnp".index(gender)]


def split_noun(noun: str) -> tuple[str, str]:
    word, _, gender = noun.rpartition(":")
    return word, gender


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _nice_price(x: float) -> float:
    """Two significant digits minus one rouble, as shops write them (1299, 23999); small prices as whole roubles."""
    if x < 100:
        return float(max(1, round(x)))
    step = 10 ** (int(np.floor(np.log10(x))) - 1)
    return float(round(x / step) * step - 1)


def _hex(seed: int, kind: str, i: int, length: int = 10) -> str:
    return hashlib.sha256(f"{seed}:{kind}:{i}".encode()).hexdigest()[:length]


class ProductsGenerator:
    """Draws the world (categories, sub-categories, palettes), products, then listings, labels and image specs."""

    def __init__(self, rows: int, seed: int = 42, image_size: tuple[int, int] = (96, 96)):
        if rows < 20:
            raise ValueError("make-data products needs --rows of at least 20")
        self.rows, self.seed, self.image_size = rows, seed, tuple(image_size)
        self.rng = np.random.default_rng(seed)
        self._world()

    # -- the world -----------------------------------------------------------------------------------------
    def _world(self) -> None:
        rng = self.rng
        self.cat_names = list(CATEGORIES)
        self.cat_kind = [CATEGORIES[c][1] for c in self.cat_names]
        # one background hue per category, spread around the colour wheel in random order
        hues = rng.permutation(len(self.cat_names)) / len(self.cat_names)
        self.cat_background = [tuple(int(170 + 70 * (0.5 + 0.5 * np.sin(2 * np.pi * (h + k / 3)))) for k in range(3))
                               for h in hues]
        subs = []
        for c, name in enumerate(self.cat_names):
            share, kind, members = CATEGORIES[name]
            weights = rng.dirichlet(np.full(len(members), 1.2)) * share
            for (sub, (median, shape, nouns)), w in zip(members.items(), weights):
                palette = rng.choice(np.arange(4, len(COLOURS)), 3, replace=False)
                subs.append(dict(name=sub, cat=c, kind=kind, median=median, shape=shape, nouns=nouns, weight=w,
                                 palette=palette, patterns=rng.dirichlet(np.full(len(PATTERNS), 0.6))))
        self.subs = subs
        w = np.array([s["weight"] for s in subs])
        self.sub_p = w / w.sum()

    # -- products ------------------------------------------------------------------------------------------
    def _draw_subs(self, n: int) -> np.ndarray:
        """Sub-categories of ``n`` products by systematic sampling (each count within 1 of its expectation, so
        small shares such as the 2% of 18+ goods hold on small data too), in random order."""
        u = (self.rng.random() + np.arange(n)) / n
        subs = np.minimum(np.searchsorted(np.cumsum(self.sub_p), u), len(self.subs) - 1)
        return subs[self.rng.permutation(n)]

    def _product(self, i: int, s: int) -> Product:
        rng = self.rng
        sub = self.subs[s]
        kind = sub["kind"]
        brand, tier = None, 1
        r = rng.random()
        if r < GENERAL_BRAND_SHARE:
            brand, tier = GENERAL_BRANDS[int(rng.integers(len(GENERAL_BRANDS)))]
        elif r < 0.92:
            brand, tier = BRANDS[kind][int(rng.integers(len(BRANDS[kind])))]
        materials = MATERIALS[kind]
        material = materials[int(rng.integers(len(materials)))] if materials else None
        gender = age = None
        if kind in GENDERED_KINDS:
            female, male = GENDER_SHARES.get(sub["name"], (0.5, 0.4))
            gender = str(rng.choice(["female", "male", "unisex"], p=[female, male, 1 - female - male]))
            age = "child" if rng.random() < CHILD_SHARE else "adult"
        r = rng.random()
        if r < (0.5 if gender in ("female", "male") else 0.7):
            colour = int(rng.choice(sub["palette"]))
        elif r < 0.9 and gender in ("female", "male"):
            colour = int(rng.choice(FEMALE_COLOURS if gender == "female" else MALE_COLOURS))
        else:
            colour = int(rng.choice(NEUTRAL_COLOURS))
        styles = [str(x) for x in rng.choice(STYLE_WORDS[kind] + ANY_STYLE_WORDS, int(rng.integers(0, 3)), replace=False)]
        code = None
        if rng.random() < 0.5:
            code = (f"арт. {rng.integers(1000, 99999)}" if rng.random() < 0.5
                    else f"{''.join(rng.choice(list('ABCDKMSTXZ'), 2))}-{rng.integers(10, 999)}")
        price = sub["median"] * np.exp(rng.normal(0.0, 0.5)) * TIER_FACTOR[tier] * (material[2] if material else 1.0)
        product = Product(sub=s, brand=brand, tier=tier, material=material, colour=colour, gender=gender,
                          age_group=age, nouns=sub["nouns"], noun=str(rng.choice(sub["nouns"])), styles=styles,
                          code=code, price=_nice_price(price), attributes={}, sentences=[], views=[])
        product.attributes = self._attributes(product)
        product.sentences = self._sentences(product)
        product.views = self._views(i, product)
        return product

    def _attributes(self, p: Product) -> dict[str, str]:
        rng = self.rng
        sub = self.subs[p.sub]
        kind = sub["kind"]
        colour = agree(COLOURS[p.colour][0], "m")
        out: dict[str, str] = {"Цвет": colour}
        child = p.age_group == "child"
        if kind == "clothes":
            second = MATERIALS["clothes"][int(rng.integers(len(MATERIALS["clothes"])))][0]
            share = int(rng.choice([100, 95, 80, 70]))
            out["Состав"] = (f"{p.material[0]} {share}%" if share == 100 or second == p.material[0]
                             else f"{p.material[0]} {share}%, {second} {100 - share}%")
            out["Размер"] = str(rng.choice(CHILD_SIZES if child else ADULT_SIZES))
            out["Сезон"] = str(rng.choice(SEASONS))
            if rng.random() < 0.3:
                out["Уход за вещами"] = "стирка при 30 градусах"
        elif kind == "shoes":
            out["Материал верха"] = p.material[0]
            out["Материал подошвы"] = str(rng.choice(["резина", "ЭВА", "ТЭП", "полиуретан"]))
            out["Размер"] = str(rng.choice(CHILD_SHOE_SIZES if child else ADULT_SHOE_SIZES))
            out["Сезон"] = str(rng.choice(SEASONS))
        elif p.material is not None:
            out["Материал"] = p.material[0]
        if p.gender is not None and rng.random() < 0.5:
            out["Пол"] = GENDER_ATTRIBUTE[p.gender] if not child else ("Девочки" if p.gender == "female" else
                                                                         "Мальчики" if p.gender == "male" else "Детский")
        if kind == "electronics":
            out["Гарантийный срок"] = str(rng.choice(["6 месяцев", "12 месяцев", "2 года"]))
        elif kind == "beauty":
            out["Объём"] = f"{rng.choice([15, 30, 50, 100, 250, 400])} мл"
        elif kind == "toys":
            out["Возрастные ограничения"] = str(rng.choice(["3+", "6+", "от 1 года", "8+"]))
        elif kind == ADULT_KIND and rng.random() < 0.5:
            out["Возрастные ограничения"] = "18+"
        out["Страна производства"] = str(rng.choice(COUNTRIES))
        if rng.random() < 0.5:
            out["Комплектация"] = str(rng.choice(["1 шт.", "набор", "товар, упаковка", "2 шт."]))
        if rng.random() < 0.4:
            out["Вес товара с упаковкой (г)"] = str(int(rng.integers(50, 3000)))
        return out

    def _sentences(self, p: Product) -> list[str]:
        rng = self.rng
        sub = self.subs[p.sub]
        word = split_noun(p.noun)[0]
        intro = []
        if rng.random() < 0.6:
            template = str(rng.choice(INTRO_SENTENCES))
            intro.append(template.format(noun=word, noun_lower=_lower_first(word), brand=p.brand or "нашего магазина"))
        sentences: list[str] = []
        pool = DESCRIPTION_SENTENCES[sub["kind"]]
        n_kind = min(int(rng.choice([0, 1, 2], p=[0.35, 0.4, 0.25])), len(pool))
        sentences += [str(x) for x in rng.choice(pool, n_kind, replace=False)]
        if p.material is not None and rng.random() < 0.5:
            sentences.append(f"Материал: {p.material[0]}.")
        if rng.random() < 0.3:
            sentences.append(f"Цвет: {agree(COLOURS[p.colour][0], 'm')}.")
        sentences += [str(x) for x in rng.choice(ANY_SENTENCES, int(rng.integers(1, 4)), replace=False)]
        rng.shuffle(sentences)
        sentences = intro + sentences
        return sentences

    def _views(self, i: int, p: Product) -> list[Photo]:
        rng = self.rng
        sub = self.subs[p.sub]
        bg = np.array(self.cat_background[sub["cat"]], float)
        style = rng.choice(["studio", "tint", "floor"], p=[0.35, 0.45, 0.2])
        if style == "studio":
            bg = 0.85 * np.array([246.0, 246.0, 244.0]) + 0.15 * bg
        bg = tuple(int(v) for v in np.clip(bg + rng.normal(0, 8, 3), 0, 255))
        floor = tuple(int(v * 0.7) for v in bg) if style == "floor" else None
        pattern = str(rng.choice(PATTERNS, p=sub["patterns"]))
        pattern_colour = COLOURS[int(rng.choice([1, 0] + list(sub["palette"])))][1]
        if pattern_colour == COLOURS[p.colour][1]:
            pattern_colour = COLOURS[1][1] if p.colour != 1 else COLOURS[0][1]
        accent = COLOURS[int(rng.integers(len(COLOURS)))][1]
        scale = rng.uniform(0.62, 0.78) * (0.78 if p.age_group == "child" else 1.0)
        rotation = rng.normal(0, 8)
        centre = (rng.uniform(0.45, 0.55), rng.uniform(0.45, 0.55))
        period, angle = rng.uniform(0.08, 0.16), rng.uniform(0, 180)
        n_views = int(rng.choice([1, 2, 3], p=[0.4, 0.35, 0.25]))
        canvas = int(round(max(self.image_size) * CANVAS_MARGIN))
        views = []
        for v in range(n_views):
            # view 0 is the front; view 1 turned and smaller; view 2 a close-up
            zoom = (1.0, rng.uniform(0.8, 0.9), rng.uniform(1.3, 1.6))[v]
            turn = (0.0, rng.choice([-1, 1]) * rng.uniform(15, 35), rng.normal(0, 10))[v]
            shift = (0.0, 0.0) if v == 0 else tuple(rng.uniform(-0.08, 0.08, 2))
            views.append(Photo(seed=int(self.seed * 1_000_003 + i * 7 + v), canvas=canvas, shape=sub["shape"],
                               colour=COLOURS[p.colour][1], accent=accent, pattern=pattern,
                               pattern_colour=pattern_colour, pattern_period=period * zoom, pattern_angle=angle + turn,
                               scale=scale * zoom, rotation=rotation + turn,
                               centre=(centre[0] + shift[0], centre[1] + shift[1]), background=bg, floor=floor))
        return views

    # -- listings ------------------------------------------------------------------------------------------
    def _group_sizes(self) -> list[int]:
        """Listing counts per product: groups of 2-5 for about 20% of rows, the rest listed once, summing to rows."""
        rng = self.rng
        target = int(round(GROUPED_SHARE * self.rows))
        sizes: list[int] = []
        while sum(sizes) < target:
            sizes.append(int(rng.choice(GROUP_SIZES, p=GROUP_SIZE_P)))
        over = sum(sizes) - target
        if over and sizes[-1] - over >= 2:
            sizes[-1] -= over
        return sizes + [1] * (self.rows - sum(sizes))

    def _title(self, p: Product, repeat: bool) -> str:
        rng = self.rng
        sub = self.subs[p.sub]
        r = rng.random()
        if r < GENERIC_TITLE_SHARE:
            title = str(rng.choice(GENERIC_TITLES))
            return f"{title} {p.brand}" if p.brand and rng.random() < 0.5 else title
        noun = p.noun if rng.random() < (0.5 if repeat else 0.7) else str(rng.choice(p.nouns))
        if r < GENERIC_TITLE_SHARE + MISLEADING_TITLE_SHARE:
            # keyword stuffing or a mistake: the noun of another sub-category, often of the same kind
            same_kind = [s for s in self.subs if s["kind"] == sub["kind"] and s["name"] != sub["name"]]
            other = same_kind if same_kind and rng.random() < 0.5 else self.subs
            noun = str(rng.choice(rng.choice(other)["nouns"]))
        word, g = split_noun(noun)
        tail = []
        if p.gender is not None and rng.random() < 0.6:
            if p.age_group == "child":
                tail.append(agree(str(rng.choice(CHILD_WORDS[p.gender])), g))
            else:
                tail.append(agree(GENDER_WORDS[p.gender], g))
        tail += [agree(s, g) for s in p.styles if rng.random() < 0.7]
        if rng.random() < 0.45:
            tail.append(agree(COLOURS[p.colour][0], g))
        if p.material is not None and rng.random() < 0.3:
            tail.append(f"из {p.material[1]}")
        if rng.random() < (0.6 if repeat else 0.3):
            rng.shuffle(tail)
        if p.brand and rng.random() < 0.5:
            tail.append(p.brand)
        if p.code and rng.random() < 0.7:
            tail.append(p.code)
        words = [word] + tail
        if len(tail) > 1 and rng.random() < 0.15:  # an adjective first: "Женская футболка"
            words = [tail[0], _lower_first(word)] + tail[1:]
        if rng.random() < (0.5 if repeat else 0.15):
            seller = str(rng.choice(SELLER_WORDS))
            words = [seller] + words if rng.random() < 0.5 else words + [seller]
        title = " ".join(words)
        title = title[:1].upper() + title[1:]
        return title.upper() if rng.random() < 0.03 else title

    def _description(self, p: Product, repeat: bool) -> str | None:
        rng = self.rng
        if rng.random() < EMPTY_DESCRIPTION_SHARE:
            return None
        sentences = list(p.sentences)
        if repeat:
            rng.shuffle(sentences)
            if len(sentences) > 2 and rng.random() < 0.5:
                sentences = sentences[:-1]
        if rng.random() < HTML_DESCRIPTION_SHARE:
            head, rest = sentences[:2], sentences[2:]
            html = f"<p>{' '.join(head)}</p>"
            if rest:
                html += "<p><b>Преимущества:</b></p><ul>" + "".join(f"<li>{s}</li>" for s in rest) + "</ul>"
            return html
        return "\n".join(sentences) if rng.random() < 0.3 else " ".join(sentences)

    def _attributes_text(self, p: Product, repeat: bool) -> str | None:
        rng = self.rng
        if rng.random() < 0.05:
            return None
        items = list(p.attributes.items())
        if repeat or rng.random() < 0.5:
            items = [items[k] for k in rng.permutation(len(items))]
        if repeat and len(items) > 2 and rng.random() < 0.2:
            items = items[:-1]
        if rng.random() < 0.5:
            return json.dumps(dict(items), ensure_ascii=False)
        return "; ".join(f"{k}: {v}" for k, v in items)

    def _listing_images(self, p: Product, repeat: bool) -> list[tuple[Photo, tuple[float, float, float], float, int]]:
        """(photo, crop, brightness, JPEG quality) of each image of a listing; a repeat re-crops and re-encodes."""
        rng = self.rng
        views = list(p.views)
        if repeat and len(views) > 1:
            if rng.random() < 0.3:
                views = views[:-1]
            if rng.random() < 0.2:
                views = [views[k] for k in rng.permutation(len(views))]
        out = []
        margin = 1.0 / CANVAS_MARGIN
        for photo in views:
            if repeat:
                side = rng.uniform(0.85, 0.95)
                left, top = rng.uniform(0, 1 - side, 2)
                out.append((photo, (float(left), float(top), float(side)), float(rng.uniform(0.93, 1.07)),
                            int(rng.integers(55, 93))))
            else:
                off = (1 - margin) / 2
                out.append((photo, (off, off, margin), 1.0, 88))
        return out

    def build(self) -> tuple[pd.DataFrame, list[list[tuple]]]:
        """The catalogue rows (all labels, before masking, plus hidden ``product`` and ``repeat``) and, per row,
        its images as (photo, crop, brightness, quality)."""
        rng = self.rng
        sizes = self._group_sizes()
        products = [self._product(i, int(s)) for i, s in enumerate(self._draw_subs(len(sizes)))]
        rows, images = [], []
        for i, (p, size) in enumerate(zip(products, sizes)):
            sub = self.subs[p.sub]
            for k in range(size):
                repeat = k > 0
                price = p.price if not repeat or rng.random() < 0.5 else _nice_price(p.price * np.exp(rng.normal(0, 0.06)))
                rows.append(dict(title=self._title(p, repeat), description=self._description(p, repeat),
                                 brend=p.brand, attributes=self._attributes_text(p, repeat),
                                 category=self.cat_names[sub["cat"]], sub_category=sub["name"], price=price,
                                 gender=p.gender, age_group=p.age_group, isadult=sub["kind"] == ADULT_KIND,
                                 group=_hex(self.seed, "group", i), product=i, group_size=size, repeat=repeat))
                images.append(self._listing_images(p, repeat))
        order = rng.permutation(len(rows))
        frame = pd.DataFrame([rows[j] for j in order]).reset_index(drop=True)
        images = [images[j] for j in order]
        # WB-like article numbers: unique 8-9 digit ints, in draw order
        raw = rng.integers(10_000_000, 999_999_999, 2 * len(frame) + 10)
        _, first = np.unique(raw, return_index=True)
        frame.insert(0, "nm", raw[np.sort(first)][: len(frame)].astype(np.int64))
        return frame, images

    def mask_labels(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Empty each label on 12% of its rows (independently), and ``group`` for whole groups on ~15% of rows."""
        rng = self.rng
        out = frame.copy()
        for col in ("category", "sub_category", "price", "gender", "age_group", "isadult"):
            known = np.flatnonzero(out[col].notna().to_numpy())
            drop = rng.choice(known, int(round(MISSING_LABEL_SHARE * len(known))), replace=False)
            out[col] = out[col].astype(object)
            out.loc[drop, col] = None
        sizes = out.groupby("product").size()
        products = sizes.index.to_numpy()[rng.permutation(len(sizes))]
        covered, hidden = 0, []
        for prod in products:
            if covered >= UNGROUPED_SHARE * len(out):
                break
            hidden.append(prod)
            covered += int(sizes[prod])
        out.loc[out["product"].isin(hidden), "group"] = None
        return out

    def image_specs(self, frame: pd.DataFrame, images: list[list[tuple]], folder: Path) -> tuple[list[ImageSpec], list[list[str]]]:
        """Specs of every image file and, per row, the file names written (in k order)."""
        rng = self.rng
        specs, names = [], []
        for nm, items in zip(frame["nm"], images):
            r = rng.random()
            ext, fmt = ("jpg", "JPEG") if r < 0.92 else ("jpeg", "JPEG") if r < 0.95 else ("png", "PNG") if r < 0.98 \
                else ("webp", "WEBP")
            bare_first = rng.random() < (0.5 if len(items) == 1 else 0.3)
            row_names = []
            for k, (photo, crop, brightness, quality) in enumerate(items):
                name = f"{nm}.{ext}" if k == 0 and bare_first else f"{nm}_{k + 1 - bare_first}.{ext}"
                row_names.append(name)
                specs.append(ImageSpec(path=str(folder / name), photo=photo, size=self.image_size, crop=crop,
                                       brightness=brightness, format=fmt, quality=quality))
            names.append(row_names)
        return specs, names


def to_csv_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The public columns, as text: prices as whole roubles, isadult as true/false, empty labels as ''."""
    out = frame[COLUMNS].copy()
    out["price"] = [("" if v is None or pd.isna(v) else str(int(v))) for v in out["price"]]
    out["isadult"] = [("" if v is None or pd.isna(v) else "true" if bool(v) else "false") for v in out["isadult"]]
    return out


def write_products(out: Path | str, rows: int, seed: int = 42, images: bool = True, n_jobs: int = 1,
                   image_size: tuple[int, int] = (96, 96)) -> dict[str, int]:
    """Write ``products.csv`` and ``images/`` of a synthetic catalogue of ``rows`` listings to ``out``.

    Deterministic for a seed (also with ``n_jobs > 1``: each image has its own seed). ``images/`` is replaced as
    a whole and ``products.csv`` is written last, so a finished folder is always complete. Returns counts."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    gen = ProductsGenerator(rows, seed, image_size)
    frame, row_images = gen.build()
    frame = gen.mask_labels(frame)
    n_images = 0
    if not images and (out / "images").exists():
        log.warning("make-data products: %s is left as it was (--no-images); its files may not match", out / "images")
    if images:
        with atomic_path(out / "images") as folder:
            folder.mkdir()
            specs, _ = gen.image_specs(frame, row_images, folder)
            batches = [specs[i:i + 400] for i in range(0, len(specs), 400)]
            n_images = sum(Parallel(n_jobs=n_jobs)(delayed(draw_batch)(b) for b in batches))
    write_text(out / "products.csv", to_csv_frame(frame).to_csv(index=False))
    counts = {"products.csv": len(frame), "images": n_images}
    log.info("make-data products: %d rows, %d images to %s", len(frame), n_images, out)
    return counts
