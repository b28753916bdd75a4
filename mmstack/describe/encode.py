"""Features of a listing, computed once and shared by moderation, diversity, best photo and the captioners.

- text: the USE multilingual vector of the attribute text (zeros when there is none);
- per photo: EfficientNet-Lite0 pooled features and ImageNet class probabilities (the zero-shot label bridge
  reads them) and object-region statistics (:func:`region_stats`): how many separate things stand out from the
  background, and how much they differ in colour and size.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image
from scipy import ndimage

from ..features.image_embed import EMBED_DIM, N_CLASSES, EfficientNetLite0Encoder
from ..features.text_embed import UseEncoder
from ..threads import torch_threads

log = logging.getLogger(__name__)

REGION_SIDE = 128  # regions are found on a thumbnail this big
REGION_NAMES = ("regions", "colour_spread", "colour_max", "size_cv", "colour_groups", "foreground")
COLOUR_NAMES = ("bg_r", "bg_g", "bg_b", "bg_hue_cos", "bg_hue_sin", "mean_r", "mean_g", "mean_b")


@dataclass
class Encoded:
    """A listing's features: ``text_vec`` (512,), and per photo ``pooled`` (n, 1280), ``probs`` (n, 1000),
    ``regions`` (n, len(REGION_NAMES)), ``colours`` (n, len(COLOUR_NAMES))."""

    text: str
    text_vec: np.ndarray
    pooled: np.ndarray
    probs: np.ndarray
    regions: np.ndarray
    colours: np.ndarray

    @property
    def n_photos(self) -> int:
        return len(self.pooled)

    @property
    def has_text(self) -> bool:
        return bool(self.text.strip())


def region_stats(image: Image.Image, threshold: float = 40.0, min_share: float = 0.004) -> np.ndarray:
    """Object regions of a photo against its background (the median colour of its border), on a
    :data:`REGION_SIDE` thumbnail: the number of regions, the mean and largest colour distance between them
    (0..1), the coefficient of variation of their areas, the number of colour groups (regions within 0.12 of
    each other count once) and the foreground share. One thing on a plain background: 1 region, no spread; many
    identical things: many regions, little spread; a set or a lot: several regions that differ."""
    img = image.convert("RGB")
    img.thumbnail((REGION_SIDE, REGION_SIDE), Image.Resampling.BILINEAR)
    pixels = np.asarray(img, dtype=np.float32)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    background = np.median(border, axis=0)
    foreground = np.abs(pixels - background).max(axis=2) > threshold
    foreground = ndimage.binary_opening(foreground, iterations=1)
    foreground = ndimage.binary_closing(foreground, iterations=2)
    labels, n = ndimage.label(foreground)
    if n == 0:
        return np.array([0, 0, 0, 0, 0, 0], np.float32)
    areas = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(1, n + 1))
    keep = np.flatnonzero(areas >= min_share * labels.size) + 1
    if len(keep) == 0:
        return np.array([0, 0, 0, 0, 0, foreground.mean()], np.float32)
    colours = np.stack([pixels[labels == k].mean(axis=0) for k in keep]) / 255.0
    kept_areas = areas[keep - 1]
    if len(keep) > 1:
        dist = np.sqrt(((colours[:, None] - colours[None]) ** 2).sum(axis=2))
        pairs = dist[np.triu_indices(len(keep), 1)]
        spread, largest = pairs.mean(), pairs.max()
    else:
        spread = largest = 0.0
    groups: list[np.ndarray] = []
    for colour in colours:
        if not any(np.sqrt(((colour - g) ** 2).sum()) < 0.12 for g in groups):
            groups.append(colour)
    cv = kept_areas.std() / kept_areas.mean()
    return np.array([len(keep), spread, largest, cv, len(groups), foreground.mean()], np.float32)


def colour_stats(image: Image.Image) -> np.ndarray:
    """Brightness-free colour of a photo (:data:`COLOUR_NAMES`): the chromaticity (r, g, b over their sum) of its
    background (the median of its border) and its hue as a point on the circle weighted by saturation, and the
    chromaticity of the whole photo. Where a photo is taken (the setting a category's photos share) shows in them;
    ImageNet features, trained to ignore colour casts, keep little of it."""
    img = image.convert("RGB")
    img.thumbnail((REGION_SIDE, REGION_SIDE), Image.Resampling.BILINEAR)
    pixels = np.asarray(img, dtype=np.float64)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    bg = np.median(border, axis=0)
    chroma = bg / max(bg.sum(), 1e-9)
    mean = pixels.reshape(-1, 3).mean(axis=0)
    r, g, b = bg / 255.0
    hue = np.arctan2(np.sqrt(3) * (g - b), 2 * r - g - b)
    saturation = (bg.max() - bg.min()) / max(bg.max(), 1e-9)
    return np.array([*chroma, saturation * np.cos(hue), saturation * np.sin(hue), *(mean / max(mean.sum(), 1e-9))],
                    np.float32)


class ListingEncoder:
    """Encodes listings (texts and PIL photos); the models load on first use and are shared by threads
    (one lock: a request's features are computed whole, one request at a time)."""

    def __init__(self, image_size: int = 224, num_threads: int = 1):
        self.image_size = image_size
        self.num_threads = num_threads
        self._images: EfficientNetLite0Encoder | None = None
        self._text: UseEncoder | None = None
        self.lock = threading.RLock()

    @property
    def text_encoder(self) -> UseEncoder:
        if self._text is None:
            self._text = UseEncoder(num_threads=1)
        return self._text

    @property
    def image_encoder(self) -> EfficientNetLite0Encoder:
        if self._images is None:
            self._images = EfficientNetLite0Encoder(self.image_size, device="cpu", num_threads=self.num_threads)
        return self._images

    def texts(self, texts: Sequence[str]) -> np.ndarray:
        """Unit USE vectors (n, 512); an empty text gets zeros."""
        out = np.zeros((len(texts), 512), np.float32)
        present = [i for i, t in enumerate(texts) if t and t.strip()]
        if present:
            with self.lock:
                out[present] = self.text_encoder.encode([texts[i] for i in present])
        return out

    def photos(self, images: Sequence[Image.Image], batch_size: int = 16
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Pooled features (n, 1280), ImageNet probabilities (n, 1000), region and colour statistics of PIL
        images."""
        if not images:
            return (np.zeros((0, EMBED_DIM), np.float32), np.zeros((0, N_CLASSES), np.float32),
                    np.zeros((0, len(REGION_NAMES)), np.float32), np.zeros((0, len(COLOUR_NAMES)), np.float32))
        with self.lock, torch_threads(self.num_threads):
            pooled, logits = self.image_encoder.encode(list(images), batch_size=batch_size)
        logits = logits.astype(np.float64)
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        regions = np.stack([region_stats(img) for img in images])
        colours = np.stack([colour_stats(img) for img in images])
        return pooled, probs.astype(np.float32), regions, colours

    def encode(self, text: str, images: Sequence[Image.Image]) -> Encoded:
        pooled, probs, regions, colours = self.photos(images)
        return Encoded(text, self.texts([text])[0], pooled, probs, regions, colours)

    def encode_many(self, texts: Sequence[str], photo_lists: Sequence[Sequence[Image.Image]],
                    chunk: int = 64) -> list[Encoded]:
        """:meth:`encode` for many listings, photos batched across listings."""
        text_vecs = self.texts(list(texts))
        flat = [img for photos in photo_lists for img in photos]
        parts = [self.photos(flat[s:s + chunk]) for s in range(0, len(flat), chunk)] or [self.photos([])]
        pooled, probs, regions, colours = (np.concatenate([p[k] for p in parts]) for k in range(4))
        out, start = [], 0
        for text, vec, photos in zip(texts, text_vecs, photo_lists):
            end = start + len(photos)
            out.append(Encoded(text, vec, pooled[start:end], probs[start:end], regions[start:end], colours[start:end]))
            start = end
        return out
