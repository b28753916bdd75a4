"""Listing images from a folder or from the original Kaggle zip, looked up by image id.

Image ids are never joined into paths: the folder or zip is scanned once into an ``id -> location`` index, and an
id is only ever a key into that index. Ids that look like paths (``../x``, ``/etc/x``, ``a/b``) are rejected by
:func:`check_image_id` at validation time. A referenced image that is missing or unreadable is counted and
treated as "no image", never a crash.
"""
from __future__ import annotations

import io
import logging
import os
import re
import threading
import zipfile
from collections import Counter
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ..errors import InputError
from ..store import make_key

log = logging.getLogger(__name__)

SAFE_ID = re.compile(r"^[A-Za-z0-9_\-]+$")
IMAGE_SUFFIXES = (".jpg", ".jpeg")


def check_image_id(image_id: str, path: Path, column: str, row: int) -> None:
    """Reject ids that could name something outside the image folder."""
    if not SAFE_ID.match(image_id):
        raise InputError(path, f"image id {image_id!r} is not a plain file name (letters, digits, '_' or '-')",
                         column=column, row=row)


class ImageSource:
    """Images of one split (e.g. ``train_jpg``), from a folder or a zip, with counted problems."""

    def __init__(self, location: Path | None):
        self.location = location
        self._index: dict[str, str] = {}
        self._zip: zipfile.ZipFile | None = None
        self._lock = threading.Lock()
        self.problems: Counter[str] = Counter()
        if location is None:
            return
        if location.is_dir():
            for dirpath, _, files in os.walk(location):
                for name in files:
                    stem, suffix = os.path.splitext(name)
                    if suffix.lower() in IMAGE_SUFFIXES:
                        self._index[stem] = os.path.join(dirpath, name)
        elif zipfile.is_zipfile(location):
            self._zip = zipfile.ZipFile(location)
            for info in self._zip.infolist():
                stem, suffix = os.path.splitext(os.path.basename(info.filename))
                if not info.is_dir() and suffix.lower() in IMAGE_SUFFIXES:
                    self._index[stem] = info.filename
        else:
            raise InputError(location, "expected a folder of .jpg files or a .zip of them")

    @classmethod
    def find(cls, input_dir: Path, split: str) -> "ImageSource":
        """The images of ``split`` ('train' or 'test') under ``input_dir``: ``<split>_jpg/`` or ``<split>_jpg.zip``."""
        for candidate in (input_dir / f"{split}_jpg", input_dir / f"{split}_jpg.zip"):
            if candidate.exists():
                return cls(candidate)
        return cls(None)

    def __contains__(self, image_id: object) -> bool:
        return isinstance(image_id, str) and image_id in self._index

    def __len__(self) -> int:
        return len(self._index)

    def ids(self) -> list[str]:
        """The image ids found, sorted."""
        return sorted(self._index)

    def file_name(self, image_id: str) -> str:
        """The file name (without folders) an id was found under, e.g. ``1234_ab.jpg``."""
        return os.path.basename(self._index[image_id])

    def fingerprint(self) -> str:
        """Cheap identity of the image set (names and sizes), for the keys of blocks that read pixels."""
        if self.location is None:
            return "no-images"
        if self._zip is not None:
            st = self.location.stat()
            return make_key("zip", str(self.location.resolve()), st.st_size, st.st_mtime_ns)
        sizes = sorted((k, os.path.getsize(v)) for k, v in self._index.items())
        return make_key("dir", sizes)

    def read_bytes(self, image_id: str) -> bytes | None:
        location = self._index.get(image_id)
        if location is None:
            self.problems["missing"] += 1
            return None
        if self._zip is not None:
            with self._lock:
                return self._zip.read(location)
        with open(location, "rb") as fh:
            return fh.read()

    def open(self, image_id: str) -> Image.Image | None:
        """The decoded RGB image, or None (counted) when it is missing or not a readable image."""
        data = self.read_bytes(image_id)
        if data is None:
            return None
        try:
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                return img.convert("RGB")
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
            self.problems["unreadable"] += 1
            return None

    def report(self, split: str) -> None:
        for problem, count in sorted(self.problems.items()):
            log.warning("%s images: %d %s (treated as no image)", split, count, problem)
