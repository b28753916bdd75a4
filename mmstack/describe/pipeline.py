"""One listing through the whole service: features, moderation, masking, one-or-many, best photo, description.

:class:`Describer` loads the models once (configs/describe.toml) and is shared by the CLI and the web app;
:meth:`Describer.describe` returns the JSON-ready result.
"""
from __future__ import annotations

import logging
import threading
import time
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from .best_photo import CategoryMatcher, ImageTextScorer, summary
from .captioners import CaptionQuery, LocalVisionCaptioner, NetCaptioner, RetrievalCaptioner
from .diversity import DiversityModel, listing_features
from .encode import ListingEncoder
from .masking import mask_attributes, restore, title_of
from .moderation import moderate_listing
from .validate import Listing

log = logging.getLogger(__name__)

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "describe.toml"
SHIPPED = Path(__file__).resolve().with_name("models")
IMAGES_CONFIG = DEFAULT_CONFIG.with_name("moderation_images.toml")
LISTING_MODELS, RETRIEVAL, NET = "listing_models.npz", "retrieval.npz", "caption_net.npz"
CAPTIONERS = ("retrieval", "net", "local")


@dataclass(frozen=True)
class Settings:
    """configs/describe.toml, flattened (section keys are unique)."""

    dir: str = ""
    captioner: str = "retrieval"
    local_model: str = ""
    image_size: int = 224
    block_flagged: bool = True
    toxicity_threshold: float = -1.0
    image_moderation: bool = True
    images_config: str = ""
    host: str = "127.0.0.1"
    port: int = 8000
    max_request_mb: int = 260

    @property
    def models_dir(self) -> Path:
        return Path(self.dir) if self.dir else SHIPPED

    @property
    def images_config_path(self) -> Path | None:
        """The image moderation's thresholds: images_config, else configs/moderation_images.toml when present."""
        if self.images_config:
            return Path(self.images_config)
        return IMAGES_CONFIG if IMAGES_CONFIG.is_file() else None


SECTIONS = {"models": ("dir", "captioner", "local_model"), "images": ("image_size",),
            "moderation": ("block_flagged", "toxicity_threshold", "image_moderation", "images_config"), "server": ("host", "port", "max_request_mb")}


def load_settings(path: Path | None = None, **overrides) -> Settings:
    """Settings from ``path`` (default configs/describe.toml; defaults when it is absent), then ``overrides``
    (None values ignored)."""
    explicit = path is not None
    path = Path(path) if explicit else DEFAULT_CONFIG
    values: dict = {}
    if path.is_file():
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from None
        for section, table in raw.items():
            if section not in SECTIONS or not isinstance(table, dict):
                raise ConfigError(f"{path}: unknown section [{section}]; sections are {', '.join(SECTIONS)}")
            for key, value in table.items():
                if key not in SECTIONS[section]:
                    raise ConfigError(f"{path}: unknown key {section}.{key}; [{section}] has "
                                      f"{', '.join(SECTIONS[section])}")
                values[key] = value
    elif explicit:
        raise ConfigError(f"{path}: no such config file")
    values.update({k: v for k, v in overrides.items() if v is not None})
    defaults = Settings()
    for f in fields(Settings):
        if f.name in values:
            want = type(getattr(defaults, f.name))
            value = values[f.name]
            ok = isinstance(value, want) and not (want is not bool and isinstance(value, bool))
            if want is float and isinstance(value, int) and not isinstance(value, bool):
                values[f.name], ok = float(value), True
            if not ok:
                raise ConfigError(f"{path}: {f.name} must be {want.__name__}, got {value!r}")
    settings = Settings(**values)
    if settings.captioner not in CAPTIONERS:
        raise ConfigError(f"{path}: models.captioner must be one of {', '.join(CAPTIONERS)}, got {settings.captioner!r}")
    if settings.captioner == "local" and not settings.local_model:
        raise ConfigError(f"{path}: models.captioner = 'local' needs models.local_model (a model directory)")
    if settings.image_size < 32:
        raise ConfigError(f"{path}: images.image_size must be at least 32, got {settings.image_size}")
    return settings


def listing_query(enc, masked_attributes: str, variative: bool, photos=()) -> CaptionQuery:
    """What the captioners read of an encoded listing: the mean of its photos' features, its text vector."""
    return CaptionQuery(image_vec=enc.pooled.mean(axis=0) if enc.n_photos else None,
                        text_vec=enc.text_vec if enc.has_text else None, attributes=masked_attributes,
                        variative=variative, photos=list(photos))


def load_listing_models(folder: Path) -> tuple[DiversityModel, CategoryMatcher]:
    path = Path(folder) / LISTING_MODELS
    if not path.is_file():
        raise ConfigError(f"{path}: no such model file (train: python -m mmstack.describe.train --out {folder})")
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    return DiversityModel.from_arrays(arrays, where=path), CategoryMatcher.from_arrays(arrays)


class Describer:
    """The loaded service: encoder, diversity model, matcher, captioner and toxicity model."""

    def __init__(self, settings: Settings | None = None):
        self.settings = settings or load_settings()
        s = self.settings
        self.encoder = ListingEncoder(s.image_size)
        self.diversity, matcher = load_listing_models(s.models_dir)
        self.scorer = ImageTextScorer(self.encoder, matcher)
        self.captioner = self._captioner()
        from ..moderation.screen import load_settings as moderation_settings
        from ..moderation.toxicity import ToxicityModel, load_default

        text = moderation_settings()
        self.toxicity = ToxicityModel.load(text.model) if text.model else load_default()
        if s.toxicity_threshold >= 0:
            self.toxicity_threshold = s.toxicity_threshold
        else:
            self.toxicity_threshold = text.threshold if text.threshold is not None else self.toxicity.threshold
        self.image_screen = None
        if s.image_moderation:
            from ..moderation_images.batch import ImageScreen
            from ..moderation_images.settings import ImageModerationSettings

            self.image_screen = ImageScreen(ImageModerationSettings.load(s.images_config_path))
        self.lock = threading.Lock()  # one listing at a time: the models are shared

    def _captioner(self):
        s = self.settings
        if s.captioner == "local":
            return LocalVisionCaptioner(s.local_model)
        if s.captioner == "net":
            return NetCaptioner.load(s.models_dir / NET)
        return RetrievalCaptioner.load(s.models_dir / RETRIEVAL)

    def warm_up(self) -> None:
        """Load the lazily loaded models (USE, EfficientNet, the label vectors) before the first request."""
        from PIL import Image

        self.scorer.warm_up()
        grey = Image.new("RGB", (64, 64), (128, 128, 128))
        self.encoder.encode("проверка", [grey])
        if self.image_screen is not None:
            self.image_screen.nsfw.score([grey])
            self.image_screen.minors.check_images([grey])

    def describe(self, listing: Listing, validation_seconds: float = 0.0) -> dict:
        with self.lock:
            return self._describe(listing, validation_seconds)

    def _describe(self, listing: Listing, validation_seconds: float) -> dict:
        t0 = time.perf_counter()
        images = [p.image for p in listing.photos]
        names = [p.name for p in listing.photos]
        enc = self.encoder.encode(listing.text, images)
        t1 = time.perf_counter()
        verdicts = moderate_listing(listing.text, images, enc, self.scorer, self.toxicity, self.toxicity_threshold,
                                    self.image_screen, names)
        flagged = any(v.flagged for v in verdicts)
        t2 = time.perf_counter()
        masked = mask_attributes(listing.attributes)
        diversity = float(self.diversity.score(listing_features(enc, title_of(listing.attributes) or ""))[0])
        token = self.diversity.token(diversity)
        scores = self.scorer.scores(enc)
        best = self.scorer.best_photo(enc)
        text = masked_text = None
        if not (flagged and self.settings.block_flagged):
            order = [best] + [i for i in range(len(images)) if i != best] if best is not None else []
            query = listing_query(enc, masked.text, token == "<VARIATIVE>", [images[i] for i in order])
            masked_text = self.captioner.describe(query)
            text = restore(masked_text, masked.values)
        t3 = time.perf_counter()
        description_scores = None
        if text and enc.n_photos:
            text_vec = self.encoder.texts([text])[0]
            description_scores = self.scorer.scores(enc, text_vec)
        photos = [{"name": p.name, "width": p.size[0], "height": p.size[1], "format": p.format,
                   "score": round(float(scores["score"][i]), 4)} for i, p in enumerate(listing.photos)]
        return {
            "status": "rejected" if flagged and self.settings.block_flagged else "ok",
            "text": text,
            "masked_text": masked_text,
            "captioner": self.captioner.name,
            "diversity": {"token": token, "score": round(diversity, 4)},
            "best_photo": None if best is None else {"index": best, "name": names[best],
                                                     "score": photos[best]["score"]},
            "moderation": {"flagged": flagged, "verdicts": [v.as_dict() for v in verdicts]},
            "image_text": {"listing": _image_text(scores), "description": _image_text(description_scores)},
            "photos": photos,
            "seconds": {"validation": round(validation_seconds, 4), "features": round(t1 - t0, 4),
                        "moderation": round(t2 - t0, 4), "generation": round(t3 - t2, 4),
                        "total": round(validation_seconds + t3 - t0, 4)},
        }


def _image_text(scores: dict | None) -> dict | None:
    """Mean and max over the photos of the image-text score (the CLIPScore role) and of the label bridge."""
    if scores is None or not len(scores["bridge"]):
        return None
    score = summary(scores["score"])
    bridge = summary(scores["bridge"])
    return {"mean": score["mean"], "max": score["max"], "bridge_mean": bridge["mean"], "bridge_max": bridge["max"]}
