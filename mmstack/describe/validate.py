"""Input validation of a listing: attributes (a JSON object of strings) and 0 to 10 photos (JPEG, PNG or GIF by
content, at most 25 MB each, decodable, no decompression bombs); at least one of text or photo.

Every violation is a :class:`Problem` naming the field or the file; :func:`validate_listing` collects all of them
and raises one :class:`ValidationError` (an HTTP 422 in the API, exit 2 in the CLI). Photos are decoded through
the kit's guard (:func:`mmstack.data.images.decode_image`): the header's pixel count is checked before a pixel is
decoded, and a big JPEG is decoded at 1/2..1/8 scale, so a 25 MB photo never costs more than one reduced image.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterable

from PIL import Image

from ..data.images import DECODE_ERRORS, OVER_BYTES, OVER_PIXELS, ImageLimits, decode_image, read_regular_file
from ..errors import MmstackError

log = logging.getLogger(__name__)

MAX_PHOTOS = 10
MAX_PHOTO_BYTES = 25 * 2**20
MAX_PIXELS = 50_000_000  # a 48 MP phone photo passes; a 20000 x 20000 "bomb" (400 MP) does not
FORMATS = {"JPEG": "jpg", "PNG": "png", "GIF": "gif"}  # what the content must be; the file name does not count
MAX_ATTRIBUTES = 50
MAX_ATTRIBUTE_CHARS = 2000
WORK_SIDE = 448  # photos are kept at most this big once validated: the models read 224 px
PHOTO_LIMITS = ImageLimits(max_pixels=MAX_PIXELS, max_bytes=MAX_PHOTO_BYTES)


@dataclass(frozen=True)
class Problem:
    """One violation: the field (``attributes``, ``attributes["Цена"]``, ``photos``) or the file, and what is wrong."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class ValidationError(MmstackError):
    """A listing that cannot be described; ``problems`` names each field or file at fault."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("; ".join(map(str, problems)))


@dataclass
class Photo:
    """A validated photo: its name as uploaded, the decoded image (reduced to :data:`WORK_SIDE`), the size its
    header declares and its format."""

    name: str
    image: Image.Image
    size: tuple[int, int]
    format: str


@dataclass
class Listing:
    """A validated listing: attributes (name -> value, both strings) and photos."""

    attributes: dict[str, str] = field(default_factory=dict)
    photos: list[Photo] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The attributes as the text the models read: one ``name: value`` line each."""
        return "\n".join(f"{k}: {v}" for k, v in self.attributes.items() if v.strip())

    @property
    def has_text(self) -> bool:
        return bool(self.text.strip())


def _json_type(value: Any) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "an object",
            type(None): "null"}.get(type(value), type(value).__name__)


def parse_attributes(raw: str | bytes | dict | None, name: str = "attributes") -> tuple[dict[str, str], list[Problem]]:
    """Attributes from JSON text (or an already parsed object): ``(attributes, problems)``. None or empty text
    is no attributes."""
    if raw is None or (isinstance(raw, (str, bytes)) and not raw.strip()):
        return {}, []
    if isinstance(raw, (str, bytes)):
        try:
            raw = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return {}, [Problem(name, f"not valid JSON ({exc.msg if hasattr(exc, 'msg') else exc}); expected an "
                                      'object of strings, e.g. {"Цена": "5000"}')]
    if not isinstance(raw, dict):
        return {}, [Problem(name, f'expected a JSON object of strings, e.g. {{"Цена": "5000"}}; got {_json_type(raw)}')]
    problems = []
    if len(raw) > MAX_ATTRIBUTES:
        problems.append(Problem(name, f"{len(raw)} attributes: at most {MAX_ATTRIBUTES}"))
    out = {}
    for key, value in raw.items():
        where = f"{name}[{json.dumps(key, ensure_ascii=False)}]"
        if not str(key).strip():
            problems.append(Problem(where, "empty attribute name"))
        elif not isinstance(value, str):
            hint = f' (write "{value}")' if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
            problems.append(Problem(where, f"expected a string, got {_json_type(value)}{hint}"))
        elif len(value) > MAX_ATTRIBUTE_CHARS:
            problems.append(Problem(where, f"{len(value)} characters: at most {MAX_ATTRIBUTE_CHARS}"))
        else:
            out[str(key).strip()] = value.strip()
    return out, problems


def _megabytes(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def check_photo(name: str, data: bytes | str | Path | BinaryIO | None, size: int | None = None) -> tuple[Photo | None, Problem | None]:
    """One uploaded photo (its bytes, an open file, or the path of a file holding them): ``(Photo, None)`` or
    ``(None, Problem)``. ``size``: the upload's full size when only its first bytes were kept (the upload
    stopped at the cap)."""
    where = f"photo {name!r}"
    if size is not None and size > MAX_PHOTO_BYTES:
        return None, Problem(where, f"{_megabytes(size)}, over the {MAX_PHOTO_BYTES // 2**20} MB limit")
    if hasattr(data, "read"):  # an upload's (spooled) file: read one photo at most, only now
        data.seek(0)
        data = data.read(MAX_PHOTO_BYTES + 1)
    if isinstance(data, (str, Path)):
        data = read_regular_file(str(data), MAX_PHOTO_BYTES)
        if data == OVER_BYTES:
            return None, Problem(where, f"over the {MAX_PHOTO_BYTES // 2**20} MB limit")
        if isinstance(data, str):
            return None, Problem(where, f"cannot be read ({data})")
    if not data:
        return None, Problem(where, "empty file")
    if len(data) > MAX_PHOTO_BYTES:
        return None, Problem(where, f"{_megabytes(len(data))}, over the {MAX_PHOTO_BYTES // 2**20} MB limit")
    import io

    try:
        with Image.open(io.BytesIO(data)) as img:  # the header only: what the content is, whatever the name says
            kind = img.format
    except Image.DecompressionBombError:  # PIL's own guard fires on the header of a huge image
        return None, Problem(where, f"over {MAX_PIXELS // 1_000_000} megapixels (a decompression bomb?)")
    except DECODE_ERRORS:
        return None, Problem(where, "not an image (expected a JPEG, PNG or GIF file)")
    if kind not in FORMATS:
        return None, Problem(where, f"a {kind} image: expected a JPEG, PNG or GIF file")
    decoded, reason = decode_image(data, PHOTO_LIMITS, draft=WORK_SIDE, max_side=WORK_SIDE, exif=True)
    if decoded is None:
        if reason == OVER_PIXELS:
            return None, Problem(where, f"over {MAX_PIXELS // 1_000_000} megapixels (a decompression bomb?)")
        return None, Problem(where, "cannot be decoded (damaged or truncated)")
    return Photo(name, decoded.image, decoded.size, FORMATS[kind]), None


def validate_listing(attributes: str | bytes | dict | None,
                     photos: Iterable[tuple[str, bytes | str | Path | BinaryIO | None, int | None]] = (),
                     attributes_name: str = "attributes") -> Listing:
    """A :class:`Listing` from raw attributes and ``(name, bytes / open file / path, full size or None)`` photos,
    or a :class:`ValidationError` listing every problem. Files are read one at a time (never all at once)."""
    attrs, problems = parse_attributes(attributes, attributes_name)
    photos = list(photos)
    checked: list[Photo] = []
    if len(photos) > MAX_PHOTOS:
        problems.append(Problem("photos", f"{len(photos)} photos: at most {MAX_PHOTOS}"))
    else:
        for name, data, size in photos:
            photo, problem = check_photo(name, data, size)
            if problem is not None:
                problems.append(problem)
            else:
                checked.append(photo)
    listing = Listing(attrs, checked)
    if not problems and not listing.has_text and not listing.photos:
        problems.append(Problem("listing", "empty: give at least one attribute or one photo"))
    if problems:
        raise ValidationError(problems)
    return listing
