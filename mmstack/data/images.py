"""Listing images from a folder or from the original Kaggle zip, looked up by image id, decoded under limits.

Image ids are never joined into paths: the folder or zip is scanned once into an ``id -> location`` index, and an
id is only ever a key into that index. Ids that look like paths (``../x``, ``/etc/x``, ``a/b``) are rejected by
:func:`check_image_id` at validation time. A referenced image that is missing or unreadable is counted and
treated as "no image", never a crash.

Hostile files are contained here, in one place:

- the folder index holds regular files only: a symlink is followed only when it stays inside the folder, and
  devices, FIFOs and sockets are skipped (counted, with one warning per folder);
- every read is bounded by ``ImageLimits.max_bytes`` (a zip member by its declared size);
- every decode goes through :func:`decode_image`: the pixel count in the header is checked against
  ``ImageLimits.max_pixels`` before any pixel is decoded, and JPEGs bigger than the caller needs are decoded at
  1/2..1/8 scale (libjpeg ``draft``). An image over a limit is "no image", counted by reason.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import stat
import threading
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

from PIL import Image, UnidentifiedImageError

from ..errors import ConfigError, InputError
from ..store import make_key

log = logging.getLogger(__name__)

SAFE_ID = re.compile(r"^[A-Za-z0-9_\-]+$")
IMAGE_SUFFIXES = (".jpg", ".jpeg")
# what a decode of hostile bytes may raise; anything else is a bug and propagates
DECODE_ERRORS = (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError, SyntaxError,
                 EOFError)

# problem reasons, as counted in ImageSource.problems and written in warnings
MISSING = "missing"
UNREADABLE = "unreadable"
OVER_BYTES = "over the byte limit"
OVER_PIXELS = "over the pixel limit"
NOT_REGULAR = "not a regular file"
OUTSIDE = "a symlink out of the folder"


@dataclass(frozen=True)
class ImageLimits:
    """Per-image limits: bytes read from disk and pixels decoded (the header's width x height).

    The defaults are far above real listing and Flickr photos (under 1 MP and 1 MB) and above 48 MP phone
    photos, and far below what takes a machine down: a 12000 x 12000 JPEG is 2 MB on disk, 432 MB decoded.
    """

    max_pixels: int = 50_000_000
    max_bytes: int = 32 * 2**20

    @classmethod
    def from_options(cls, options: Mapping | None) -> "ImageLimits":
        """The limits set in a config's ``[data]`` (``max_image_pixels``, ``max_image_bytes``), else defaults."""
        options = options or {}
        values = {}
        for key, field_name in (("max_image_pixels", "max_pixels"), ("max_image_bytes", "max_bytes")):
            if key in options:
                value = options[key]
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ConfigError(f"data.{key} must be a positive integer, got {value!r}")
                values[field_name] = value
        return cls(**values)


DEFAULT_LIMITS = ImageLimits()


@dataclass
class Decoded:
    """A decoded RGB image (possibly reduced, see :func:`decode_image`) and the size its header declares."""

    image: Image.Image
    size: tuple[int, int]


def decode_image(data: bytes, limits: ImageLimits = DEFAULT_LIMITS, draft: int | None = None,
                 max_side: int | None = None, exif: bool = False) -> tuple[Decoded | None, str | None]:
    """Decode image bytes under ``limits``: ``(Decoded, None)``, or ``(None, reason)`` when it is not an image
    the kit will read (:data:`UNREADABLE`, :data:`OVER_BYTES`, :data:`OVER_PIXELS`).

    ``draft``: the side the caller needs; a JPEG is decoded at the smallest 1/2..1/8 scale that keeps both sides
    at least that (libjpeg draft: cheap, and a no-op for photos smaller than twice the need). ``max_side``:
    shrink what is still larger on its longer side. ``exif``: turn the image upright per its EXIF orientation.
    """
    if len(data) > limits.max_bytes:
        return None, OVER_BYTES
    try:
        with Image.open(io.BytesIO(data)) as img:
            # only the header is parsed so far: refuse bombs before a pixel is decoded
            width, height = img.size
            if width * height > limits.max_pixels:
                return None, OVER_PIXELS
            if draft is not None:
                img.draft("RGB", (draft, draft))
            img.load()
            out = img
            if exif:
                from PIL import ImageOps

                out = ImageOps.exif_transpose(out)
            out = out.convert("RGB")
        if max_side is not None and max(out.size) > max_side:
            out.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    except DECODE_ERRORS:
        return None, UNREADABLE
    return Decoded(out, (width, height)), None


def check_image_id(image_id: str, path: Path, column: str, row: int) -> None:
    """Reject ids that could name something outside the image folder."""
    if not SAFE_ID.match(image_id):
        raise InputError(path, f"image id {image_id!r} is not a plain file name (letters, digits, '_' or '-')",
                         column=column, row=row)


def regular_files(folder: Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES
                  ) -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
    """Index the image files under ``folder`` by stem: ``({stem: real path}, {stem: (file name, why skipped)})``.

    Only regular files inside the folder are indexed: a symlink is resolved and kept only when its target is a
    regular file inside ``folder``; symlinked folders are not entered; devices, FIFOs and sockets are skipped.
    """
    root = os.path.realpath(folder)
    found: dict[str, str] = {}
    skipped: dict[str, tuple[str, str]] = {}
    for dirpath, _, files in os.walk(root):  # followlinks=False: a symlinked folder is not entered
        for name in files:
            stem, suffix = os.path.splitext(name)
            if suffix.lower() not in suffixes:
                continue
            path = os.path.join(dirpath, name)
            real = os.path.realpath(path)
            if os.path.commonpath([root, real]) != root:
                skipped[stem] = (name, OUTSIDE)
                continue
            try:
                mode = os.stat(real).st_mode
            except OSError:  # a dangling link, or removed meanwhile
                skipped[stem] = (name, MISSING)
                continue
            if not stat.S_ISREG(mode):
                skipped[stem] = (name, NOT_REGULAR)
                continue
            found[stem] = real
    return found, skipped


def read_regular_file(path: str, max_bytes: int) -> bytes | str:
    """The bytes of a regular file, or a reason (:data:`NOT_REGULAR`, :data:`OVER_BYTES`, :data:`MISSING`).

    Checked again at read time, on the open descriptor: the file may have been swapped for a FIFO or a device
    since the folder was indexed. ``O_NONBLOCK`` keeps the open of a FIFO from waiting for a writer.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return MISSING
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return NOT_REGULAR
        if st.st_size > max_bytes:
            return OVER_BYTES
        data = fh.read(max_bytes + 1)  # bounded even if the file grows meanwhile
    return OVER_BYTES if len(data) > max_bytes else data


class ImageSource:
    """Images of one split (e.g. ``train_jpg``), from a folder or a zip, with counted problems."""

    def __init__(self, location: Path | None, limits: ImageLimits = DEFAULT_LIMITS):
        self.location = location
        self.limits = limits
        self._index: dict[str, str] = {}
        self._skipped: dict[str, tuple[str, str]] = {}  # id -> (file name, why it is not read)
        self._zip: zipfile.ZipFile | None = None
        self._lock = threading.Lock()
        self.problems: Counter[str] = Counter()
        if location is None:
            return
        if location.is_dir():
            self._index, self._skipped = regular_files(location)
            if self._skipped:
                why = Counter(reason for _, reason in self._skipped.values())
                log.warning("%s: skipped %d image file(s): %s", location, len(self._skipped),
                            ", ".join(f"{n} {reason}" for reason, n in sorted(why.items())))
        elif not stat.S_ISREG(os.stat(location).st_mode):  # a FIFO would block the zip check below
            raise InputError(location, "expected a folder of .jpg files or a .zip of them, not a special file")
        elif zipfile.is_zipfile(location):
            self._zip = zipfile.ZipFile(location)
            for info in self._zip.infolist():
                stem, suffix = os.path.splitext(os.path.basename(info.filename))
                if not info.is_dir() and suffix.lower() in IMAGE_SUFFIXES:
                    self._index[stem] = info.filename
        else:
            raise InputError(location, "expected a folder of .jpg files or a .zip of them")

    def __getstate__(self) -> dict:
        # a Ray task gets the source pickled: the open zip and the lock stay behind and are made anew
        return {k: v for k, v in self.__dict__.items() if k not in ("_zip", "_lock")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        is_zip = self.location is not None and self.location.is_file() and zipfile.is_zipfile(self.location)
        self._zip = zipfile.ZipFile(self.location) if is_zip else None

    @classmethod
    def from_files(cls, folder: Path, files: Mapping[str, str], limits: ImageLimits = DEFAULT_LIMITS
                   ) -> "ImageSource":
        """Images already indexed by a task's own scan (e.g. a catalogue's ``<nm>_<k>.png`` files): ``files`` maps
        image ids to real paths of regular files inside ``folder``. Reads and decodes are guarded as usual."""
        source = cls(None, limits)
        source.location = folder
        source._index = dict(files)
        return source

    @classmethod
    def find(cls, input_dir: Path, split: str, limits: ImageLimits = DEFAULT_LIMITS) -> "ImageSource":
        """The images of ``split`` ('train' or 'test') under ``input_dir``: ``<split>_jpg/`` or ``<split>_jpg.zip``."""
        for candidate in (input_dir / f"{split}_jpg", input_dir / f"{split}_jpg.zip"):
            if candidate.exists():
                return cls(candidate, limits)
        return cls(None, limits)

    def __contains__(self, image_id: object) -> bool:
        return isinstance(image_id, str) and image_id in self._index

    def __len__(self) -> int:
        return len(self._index)

    def ids(self) -> list[str]:
        """The image ids found, sorted."""
        return sorted(self._index)

    def skipped(self) -> dict[str, str]:
        """Files that look like images but are not read: ``{file name: reason}`` (see :func:`regular_files`)."""
        return {name: reason for name, reason in self._skipped.values()}

    def file_name(self, image_id: str) -> str:
        """The file name (without folders) an id was found under, e.g. ``1234_ab.jpg``."""
        return os.path.basename(self._index[image_id])

    def fingerprint(self) -> str:
        """Cheap identity of the image set (names and sizes) and the limits, for the keys of pixel blocks."""
        if self.location is None:
            return "no-images"
        if self._zip is not None:
            st = self.location.stat()
            return make_key("zip", str(self.location.resolve()), st.st_size, st.st_mtime_ns, self._limits_key())
        sizes = sorted((k, os.path.getsize(v)) for k, v in self._index.items())
        return make_key("dir", sizes, self._limits_key())

    def _limits_key(self) -> dict | None:
        # the defaults add nothing, so caches made before the limits existed stay valid
        return None if self.limits == DEFAULT_LIMITS else {"pixels": self.limits.max_pixels,
                                                           "bytes": self.limits.max_bytes}

    def read(self, image_id: str) -> tuple[bytes | None, str | None]:
        """``(bytes, None)``, or ``(None, why)`` when the image is missing, not a regular file or too big (counted
        in :attr:`problems`)."""
        location = self._index.get(image_id)
        if location is None:
            reason = self._skipped.get(image_id, ("", MISSING))[1]
        elif self._zip is not None:
            if self._zip.getinfo(location).file_size > self.limits.max_bytes:
                reason = OVER_BYTES
            else:
                with self._lock:
                    return self._zip.read(location), None  # bounded by the declared size, which zipfile enforces
        else:
            data = read_regular_file(location, self.limits.max_bytes)
            if not isinstance(data, str):
                return data, None
            reason = data
        with self._lock:  # image workers read in threads
            self.problems[reason] += 1
        return None, reason

    def read_bytes(self, image_id: str) -> bytes | None:
        """The image's bytes, or None (counted by reason) when it is missing, not a regular file or too big."""
        return self.read(image_id)[0]

    def decode(self, data: bytes, draft: int | None = None) -> Image.Image | None:
        """:func:`decode_image` under this source's limits; a rejected image is counted and gives None."""
        decoded, reason = decode_image(data, self.limits, draft)
        if decoded is None:
            self.problems[reason] += 1
            return None
        return decoded.image

    def open(self, image_id: str, draft: int | None = None) -> Image.Image | None:
        """The decoded RGB image, or None (counted) when it is missing or not a readable image."""
        data = self.read_bytes(image_id)
        return None if data is None else self.decode(data, draft)

    def report(self, split: str) -> None:
        for problem, count in sorted(self.problems.items()):
            log.warning("%s images: %d %s (treated as no image)", split, count, problem)


@contextlib.contextmanager
def counted_problems(images: Mapping[str, ImageSource], what: str) -> Iterator[None]:
    """Log one warning per split with the image problems counted inside the block (e.g. one pixel block)."""
    before = {split: Counter(source.problems) for split, source in images.items()}
    yield
    for split, source in images.items():
        new = source.problems - before[split]
        if new:
            log.warning("%s: %s images: %s (treated as no image)", what, split,
                        ", ".join(f"{n} {reason}" for reason, n in sorted(new.items())))
