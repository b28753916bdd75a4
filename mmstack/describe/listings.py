"""Labelled listings drawn from the embedded Avito generator, with up to a few photos each and with lots.

Each listing gets the attributes a seller would fill (title, category, kind, size or brand, condition, price,
city), its photos (photo 0 is the generator's listing image; later ones show the same thing from another angle,
or one item of a set or lot) and its description: the reference text of the captioners. ``kind`` is the
generator's truth: single, identical (many identical items), set (one kind, differing) or lot (different things).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from ..data.avito_synth import CLOTHES, AvitoGenerator, render_image

VARIATIVE_KINDS = ("set", "lot")


@dataclass
class GeneratedListing:
    attributes: dict[str, str]
    photos: list[Image.Image] = field(default_factory=list)
    description: str | None = None
    title: str = ""
    category: str = ""
    kind: str = "single"
    item_id: str = ""
    parent: str = ""  # the parent category (Личные вещи, Транспорт...)

    @property
    def variative(self) -> bool:
        """One item (or many identical ones) = False; several different items = True."""
        return self.kind in VARIATIVE_KINDS

    @property
    def text(self) -> str:
        return "\n".join(f"{k}: {v}" for k, v in self.attributes.items() if v.strip())


def seller_attributes(row) -> dict[str, str]:
    """What a seller would fill in for a generated listing (a row of :meth:`AvitoGenerator.build`'s frame)."""
    attrs = {"Название": str(row.title), "Категория": str(row.category_name)}
    if isinstance(row.param_1, str):
        attrs["Вид"] = row.param_1
    if isinstance(row.param_2, str):
        attrs["Размер" if row.category_name in CLOTHES else "Бренд"] = row.param_2
    if isinstance(row.param_3, str):
        attrs["Дополнительно"] = row.param_3
    if not (isinstance(row.price, float) and math.isnan(row.price)):
        attrs["Цена"] = f"{int(row.price)}"
    attrs["Город"] = str(row.city_name)
    return attrs


def embedded_listings(rows: int, seed: int = 0, lots: float = 0.4, max_photos: int = 3,
                      image_size: tuple[int, int] = (160, 120), with_images: float = 1.0,
                      stream: int | None = None) -> list[GeneratedListing]:
    """Listings of the generator's train and test parts (not its 'active' part) with ``lots`` of the everyday
    ones multi-item, 1..``max_photos`` photos each (a listing the generator drew without an image gets none).

    ``seed`` draws the world (categories, products, how each category's photos look); ``stream`` (None: the
    world's own stream) draws other listings of that same world: held-out listings for the models trained on
    ``stream=None``. Another ``seed`` is another marketplace, where a category's photos look different."""
    gen = AvitoGenerator(rows, seed=seed, image_size=image_size, lots=lots)
    if stream is not None:
        gen.rng = np.random.default_rng([seed, 0x57AE, stream])  # the world is drawn; the listings come next
    frame, _ = gen.build()
    rng = np.random.default_rng([seed, 0xD15C])
    out = []
    for position, row in enumerate(frame.itertuples(index=False)):
        if row.split == "active":
            continue
        photos = []
        if row.image is not None and rng.random() < with_images:
            n = int(rng.integers(1, max_photos + 1))
            photos = [render_image(gen.photo_spec(row, position, "", k)) for k in range(n)]
        out.append(GeneratedListing(seller_attributes(row), photos, row.description, str(row.title),
                                    str(row.category_name), str(row.lot_kind), str(row.item_id),
                                    str(row.parent_category_name)))
    return out
