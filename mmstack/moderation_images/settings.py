"""Thresholds and limits of image moderation, read from the ``[images]`` table of a moderation config.

Every key is optional (the defaults below are the shipped ones, see configs/moderation_images.toml); a key
that is unknown or of the wrong type is one :class:`~mmstack.errors.ConfigError` line naming it.
"""
from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from ..data.images import ImageLimits
from ..errors import ConfigError

SECTION = "images"


@dataclass(frozen=True)
class ImageModerationSettings:
    """What the image checks flag, and the limits every image is read under."""

    nsfw_threshold: float = 0.5  # open_nsfw probability at or above which a photo is flagged
    minor_threshold: float | None = None  # classifier probability; None: the model file's own (train OOF)
    face_age_threshold: float = 25.0  # a face estimated younger than this withholds the image
    face_upscale_to: int = 1000  # small photos are upscaled to this longer side before face detection
    use_faces: bool = True  # run the face-age check beside the classifier (about half the time per image)
    mismatch_threshold: float = 0.05  # listing flagged when every photo's image-text score is below this
    max_image_pixels: int = 50_000_000
    max_image_bytes: int = 32 * 2**20
    batch_size: int = 16
    num_threads: int = 1

    @property
    def limits(self) -> ImageLimits:
        return ImageLimits(max_pixels=self.max_image_pixels, max_bytes=self.max_image_bytes)

    @classmethod
    def from_table(cls, table: dict[str, Any], where: str = SECTION) -> "ImageModerationSettings":
        """Settings from a ``[images]`` table; unknown keys and wrong types are ConfigErrors naming the key."""
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in table.items():
            if key not in known:
                raise ConfigError(f"{where}.{key}: unknown key; expected one of {', '.join(sorted(known))}")
            values[key] = _checked(f"{where}.{key}", key, value)
        return replace(cls(), **values)

    @classmethod
    def load(cls, path: Path | str | None) -> "ImageModerationSettings":
        """Settings from a TOML file's ``[images]`` table (the defaults when ``path`` is None)."""
        if path is None:
            return cls()
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            raw = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        table = raw.get(SECTION, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [{SECTION}] must be a table")
        return cls.from_table(table, f"{path.name}: {SECTION}")


_UNIT = ("nsfw_threshold", "minor_threshold")
_POSITIVE_INT = ("face_upscale_to", "max_image_pixels", "max_image_bytes", "batch_size")


def _checked(name: str, key: str, value: Any) -> Any:
    if key == "use_faces":
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true or false, got {value!r}")
        return value
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if key in _POSITIVE_INT or key == "num_threads":
        low = 0 if key == "num_threads" else 1
        if not number or not isinstance(value, int) or value < low:
            raise ConfigError(f"{name}: expected an integer >= {low}, got {value!r}")
        return value
    if not number or not math.isfinite(value):
        raise ConfigError(f"{name}: expected a finite number, got {value!r}")
    if key in _UNIT and not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name}: expected a probability in [0, 1], got {value!r}")
    if key == "face_age_threshold" and not 0 < value <= 120:
        raise ConfigError(f"{name}: expected a number of years in (0, 120], got {value!r}")
    return float(value)
