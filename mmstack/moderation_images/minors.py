"""The minors classifier ("shows a child") and the combined filter shared by search and the batch screen.

The classifier is a logistic regression on EfficientNet-Lite0 pooled features of the whole photo at one or more
input sizes and, optionally, of a grid of overlapping crops (each crop at 224 px, their features max- and
mean-pooled over the crops, so a child that is a few pixels of the whole photo fills more of a crop); the feature
recipe is in the model file. Features are standardised; it is trained by :mod:`.minors_training` on the
Flickr8k training images labelled by their captions (:func:`caption_shows_minors`) and shipped as a small
``.npz`` file inside the package (:data:`MODEL_FILE`), so it scores offline without Flickr8k.

:class:`ChildFilter` withholds an image when the classifier's probability reaches its threshold OR when the
face-age check (:class:`mmstack.legal.MinorFilter`) estimates a face younger than its age threshold. The model
file holds two thresholds chosen on the training images' out-of-fold scores for the same recall: one for use
with the face check, one for the classifier alone. Unreadable images are withheld (fail closed).
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from ..data.images import ImageLimits, decode_image
from ..errors import ConfigError, MmstackError
from ..legal import DEFAULT_AGE_THRESHOLD, MinorFilter, content_hash, query_asks_for_minors
from ..store import atomic_path

log = logging.getLogger(__name__)

MODEL_FILE = Path(__file__).with_name("minors_model.npz")
_FORMAT = 2
EMBED_DIM = 1280  # EfficientNet-Lite0 pooled features
CROP_SIZE = 224
_CACHE_FORMAT = 2
EMBED_DIM = 1280  # EfficientNet-Lite0 pooled features
CROP_SIZE = 224


def caption_shows_minors(text: str) -> bool:
    """A caption says the photo shows a child: the search's query rule (:func:`mmstack.legal.query_asks_for_minors`,
    English and Russian), so that training labels and the benchmark's judge read captions the same way."""
    return query_asks_for_minors(text)


@dataclass(frozen=True)
class MinorsModel:
    """Standardised features -> logistic probability that a photo shows a child.

    ``sizes``: EfficientNet-Lite0 input sides whose pooled features are concatenated, in order; ``flip``: also
    score the mirrored photo and average the features; ``grid``: when > 1, a grid x grid of overlapping crops,
    each ``crop_frac`` of the photo's width and height, adds the max and the mean over crops of their pooled
    features (at 224 px). ``threshold`` is for use with the face check (OR), ``threshold_alone`` for the
    classifier without it; ``meta`` says how it was trained and measured.
    """

    sizes: tuple[int, ...]
    flip: bool
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    threshold: float
    threshold_alone: float
    meta: dict[str, Any] = field(default_factory=dict)
    grid: int = 0
    crop_frac: float = 0.5

    @property
    def n_features(self) -> int:
        return len(self.coef)

    @property
    def recipe(self) -> "FeatureRecipe":
        return FeatureRecipe(self.sizes, self.flip, self.grid, self.crop_frac)

    def probability(self, features: np.ndarray) -> np.ndarray:
        """P(shows a child) per row of ``features`` (n, n_features)."""
        features = np.asarray(features, np.float64)
        if features.ndim != 2 or features.shape[1] != self.n_features:
            raise ValueError(f"minors model: expected (n, {self.n_features}) features, got {features.shape}")
        z = ((features - self.mean) / self.scale) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-z))

    @property
    def version(self) -> str:
        """Names the model's weights and features (for caches): a hash of its arrays and sizes."""
        h = hashlib.sha256()
        for part in (self.mean, self.scale, self.coef, np.array([self.intercept])):
            h.update(np.ascontiguousarray(part, np.float64).tobytes())
        h.update(json.dumps([list(self.sizes), self.flip, self.grid, self.crop_frac]).encode())
        return h.hexdigest()[:16]

    def save(self, path: Path) -> Path:
        """Write the model as a ``.npz`` of float32 arrays and a JSON header (atomically)."""
        header = {"format": _FORMAT, "sizes": list(self.sizes), "flip": self.flip, "grid": self.grid,
                  "crop_frac": self.crop_frac, "intercept": self.intercept,
                  "threshold": self.threshold, "threshold_alone": self.threshold_alone, "meta": self.meta}
        path = Path(path)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, mean=self.mean.astype(np.float32), scale=self.scale.astype(np.float32),
                                    coef=self.coef.astype(np.float32), header=np.array(json.dumps(header)))
        return path

    @classmethod
    def load(cls, path: Path | None = None) -> "MinorsModel":
        """The model in ``path`` (default: the one shipped in the package); a clear error when unusable."""
        path = Path(path) if path is not None else MODEL_FILE
        try:
            with np.load(path, allow_pickle=False) as z:
                header = json.loads(str(z["header"]))
                arrays = {k: z[k].astype(np.float64) for k in ("mean", "scale", "coef")}
            if header.get("format") not in (1, _FORMAT):  # format 1: whole-photo features only
                raise ValueError(f"format {header.get('format')!r}, expected {_FORMAT}")
            model = cls(tuple(int(s) for s in header["sizes"]), bool(header["flip"]), arrays["mean"],
                        arrays["scale"], arrays["coef"], float(header["intercept"]), float(header["threshold"]),
                        float(header["threshold_alone"]), dict(header.get("meta", {})), int(header.get("grid", 0)),
                        float(header.get("crop_frac", 0.5)))
            model.recipe.check()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise MmstackError(f"minors model {path}: cannot be read ({type(exc).__name__}: {exc})") from None
        if not (len(model.mean) == len(model.scale) == len(model.coef) == model.recipe.n_features):
            raise MmstackError(f"minors model {path}: arrays do not match its features ({model.recipe.describe()})")
        return model


@dataclass(frozen=True)
class FeatureRecipe:
    """Which EfficientNet-Lite0 features the classifier reads (see :class:`MinorsModel`), and their layout:
    pooled features per whole-photo size, then (when ``grid`` > 1) the max and the mean over the crops."""

    sizes: tuple[int, ...]
    flip: bool = False
    grid: int = 0
    crop_frac: float = 0.5

    @property
    def n_features(self) -> int:
        return EMBED_DIM * (len(self.sizes) + (2 if self.grid > 1 else 0))

    def check(self) -> None:
        if not self.sizes or any(s < 32 for s in self.sizes) or self.grid < 0 or not 0 < self.crop_frac <= 1:
            raise ValueError(f"bad feature recipe: {self}")

    def describe(self) -> str:
        crops = (f", {self.grid}x{self.grid} crops of {self.crop_frac:g} of the side at {CROP_SIZE} px (max and "
                 "mean over crops)" if self.grid > 1 else "")
        return f"EfficientNet-Lite0 pooled, whole photo at {list(self.sizes)} px{crops}, flip {self.flip}"

    def crop_boxes(self, width: int, height: int) -> list[tuple[int, int, int, int]]:
        """The grid's overlapping crops, row by row: corners spread evenly from the top left to the bottom right."""
        w, h = width * self.crop_frac, height * self.crop_frac
        steps = [k / (self.grid - 1) for k in range(self.grid)]
        return [(round((width - w) * c), round((height - h) * r), round((width - w) * c + w),
                 round((height - h) * r + h)) for r in steps for c in steps]


class ImageFeatures:
    """The classifier's features of decoded RGB images, per :class:`FeatureRecipe` (encoders load lazily)."""

    def __init__(self, sizes: Sequence[int], flip: bool = False, num_threads: int = 1, batch_size: int = 16,
                 grid: int = 0, crop_frac: float = 0.5):
        self.recipe = FeatureRecipe(tuple(sizes), flip, grid, crop_frac)
        self.sizes = self.recipe.sizes
        self.flip = flip
        self.num_threads = num_threads
        self.batch_size = batch_size
        self._encoders: dict[int, Any] = {}

    @classmethod
    def for_model(cls, model: "MinorsModel", num_threads: int = 1, batch_size: int = 16) -> "ImageFeatures":
        r = model.recipe
        return cls(r.sizes, r.flip, num_threads, batch_size, r.grid, r.crop_frac)

    def _encoder(self, size: int):
        if size not in self._encoders:
            from ..features.image_embed import EfficientNetLite0Encoder

            self._encoders[size] = EfficientNetLite0Encoder(size, num_threads=self.num_threads or None)
        return self._encoders[size]

    def _pooled(self, images: list[Image.Image], size: int) -> np.ndarray:
        return self._encoder(size).encode(images, self.batch_size)[0].astype(np.float64)

    def _features(self, images: list[Image.Image]) -> np.ndarray:
        blocks = [self._pooled(images, size) for size in self.sizes]
        if self.recipe.grid > 1:
            crops = [im.crop(box) for im in images for box in self.recipe.crop_boxes(*im.size)]
            per_crop = self._pooled(crops, CROP_SIZE).reshape(len(images), -1, EMBED_DIM)
            blocks += [per_crop.max(axis=1), per_crop.mean(axis=1)]
        return np.hstack(blocks)

    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(n, recipe.n_features) float64 (averaged with the mirrored photos' features if ``flip``)."""
        images = list(images)
        if not images:
            return np.zeros((0, self.recipe.n_features))
        features = self._features(images)
        if self.flip:
            features = (features + self._features([ImageOps.mirror(im) for im in images])) / 2
        return features


@dataclass(frozen=True)
class MinorDecision:
    """Whether one image may be shown: the classifier's probability (None when not scored), the face ages, and
    why it is withheld (or why it passes)."""

    withheld: bool
    reason: str
    score: float | None = None
    ages: tuple[float, ...] = ()


class ChildFilter:
    """Withhold images that show a child: classifier probability >= threshold, or a face estimated under age.

    ``model``: a :class:`MinorsModel` (default: the shipped one); ``threshold``: overrides the model's own;
    ``face_filter``: the face-age check (default :class:`MinorFilter` with its defaults), or None to use the
    classifier alone (then the model's ``threshold_alone`` applies unless ``threshold`` is given).
    """

    def __init__(self, model: MinorsModel | None = None, threshold: float | None = None,
                 face_filter: MinorFilter | None | bool = True, num_threads: int = 1, batch_size: int = 16,
                 limits: ImageLimits | None = None, progress: bool = True):
        self.model = model if model is not None else MinorsModel.load()
        if face_filter is True:
            face_filter = MinorFilter(progress=progress)
        self.face_filter: MinorFilter | None = face_filter or None
        default = self.model.threshold if self.face_filter is not None else self.model.threshold_alone
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                      or not 0.0 <= threshold <= 1.0):
            raise ConfigError(f"minors filter: threshold must be a probability in [0, 1], got {threshold!r}")
        self.threshold = float(default if threshold is None else threshold)
        self.limits = limits or ImageLimits()
        self.progress = progress
        self.features = ImageFeatures.for_model(self.model, num_threads, batch_size)

    @property
    def face_threshold(self) -> float:
        return self.face_filter.age_threshold if self.face_filter is not None else DEFAULT_AGE_THRESHOLD

    def decide(self, score: float | None, ages: Sequence[float] | None) -> MinorDecision:
        """The decision from a classifier probability and the face ages (None: the image was not readable)."""
        if score is None or ages is None:
            return MinorDecision(True, "unreadable", score)
        ages = tuple(float(a) for a in ages)
        young = [a for a in ages if a < self.face_threshold] if self.face_filter is not None else []
        why = []
        if score >= self.threshold:
            why.append(f"minors classifier {score:.2f} >= {self.threshold:.2f}")
        if young:
            why.append(f"face estimated age {min(young):g} < {self.face_threshold:g}")
        if why:
            return MinorDecision(True, "; ".join(why), score, ages)
        return MinorDecision(False, f"minors classifier {score:.2f} < {self.threshold:.2f}"
                             + (f", no face under {self.face_threshold:g}" if self.face_filter is not None else ""),
                             score, ages)

    def check_images(self, images: Sequence[Image.Image]) -> list[MinorDecision]:
        """Decisions for decoded RGB images (upright), in order."""
        if not images:
            return []
        scores = self.model.probability(self.features(images))
        ages: list[list[float] | None] = [[] for _ in images]
        if self.face_filter is not None:
            ages = [self._face_ages(im) for im in images]
        return [self.decide(float(s), a) for s, a in zip(scores, ages)]

    def _face_ages(self, image: Image.Image) -> list[float] | None:
        assert self.face_filter is not None
        try:
            return self.face_filter.estimate_image(image)
        except MmstackError:  # the face models cannot be loaded: a setup problem, not this image's
            raise
        except Exception as exc:  # fail closed: an image the estimator chokes on is withheld as unreadable
            log.warning("minors filter: face check failed (%s: %s); image withheld", type(exc).__name__, exc)
            return None

    def check_many(self, items: dict[str, bytes], cache_path: Path | None = None,
                   face_cache_path: Path | None = None) -> dict[str, MinorDecision]:
        """Decide for each named encoded image; with ``cache_path`` the classifier's scores are kept per content
        hash (and model version) in a JSON file, and the face ages in the face filter's own cache
        (``face_cache_path``, default ``decisions.json`` beside it)."""
        version = f"{self.model.version};limits={self.limits.max_pixels},{self.limits.max_bytes}"
        scores = _load_scores(cache_path, version) if cache_path is not None else {}
        hashes = {name: content_hash(data) for name, data in items.items()}
        todo = sorted({h: name for name, h in hashes.items() if h not in scores}.items())
        step = self.features.batch_size
        for start in tqdm(range(0, len(todo), step), desc="minors classifier", unit="batch",
                          disable=not self.progress or not todo):
            chunk = todo[start:start + step]
            decoded = [decode_image(items[name], self.limits, exif=True)[0] for _, name in chunk]
            readable = [(h, d.image) for (h, _), d in zip(chunk, decoded) if d is not None]
            probs = self.model.probability(self.features([im for _, im in readable])) if readable else []
            scores.update({h: float(p) for (h, _), p in zip(readable, probs)})
            scores.update({h: None for (h, _), d in zip(chunk, decoded) if d is None})
        if cache_path is not None and todo:
            _write_scores(cache_path, version, scores)
        faces = {}
        if self.face_filter is not None:
            face_cache = face_cache_path or (None if cache_path is None else
                                             Path(cache_path).with_name("decisions.json"))
            faces = self.face_filter.check_many(items, cache_path=face_cache)
        out = {}
        for name, h in hashes.items():
            face = faces.get(name)
            # the face check could not read or check the image: fail closed, as the face filter does
            failed = face is not None and (face.reason == "unreadable" or face.reason.startswith("check failed"))
            out[name] = self.decide(scores[h], None if failed else (face.ages if face is not None else ()))
        return out


def _load_scores(path: Path, version: str) -> dict[str, float | None]:
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("format") != _CACHE_FORMAT or doc.get("model_version") != version:
            return {}
        scores = doc["scores"]
        for h, s in scores.items():  # validate, so a hand-edited file cannot smuggle a wrong decision
            if s is not None and (isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 <= s <= 1):
                raise ValueError(f"bad entry {h}")
        return scores
    except (OSError, ValueError, KeyError, AttributeError, TypeError) as exc:
        log.warning("minors filter: ignoring unreadable cache %s (%s)", path, exc)
        return {}


def _write_scores(path: Path, version: str, scores: dict[str, float | None]) -> None:
    doc = {"format": _CACHE_FORMAT, "model_version": version, "scores": scores}
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(json.dumps(doc, indent=1, sort_keys=True), encoding="utf-8")
