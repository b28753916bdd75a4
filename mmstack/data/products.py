"""Marketplace catalogue (FACTS.md section 3): loader and validator of ``products.csv|parquet`` and ``images/``.

A catalogue folder holds ``products.parquet`` or ``products.csv`` (one row per product) and an optional ``images/``
folder with ``<nm>.jpg`` or ``<nm>_<k>.jpg`` (k = 1..10; jpg, jpeg, png, gif or webp). Only ``nm`` and ``title``
are required; every label column may be absent, or empty on some rows (a row to predict for that label; a row
without ``group`` is a row to match).

Bad input is one :class:`~mmstack.errors.InputError` naming file, column and 1-based row: a missing ``nm`` or
``title`` column, an empty or duplicated ``nm``, an ``nm`` that cannot be an image file name, a negative or
non-numeric price, an ``isadult`` that is not a boolean. A missing, unreadable, oversized or non-regular image
file is a counted warning (``Catalogue.problems``) and "no image", never a crash.

Images are found only through an index built by scanning ``images/`` once: an ``nm`` is a key into that index and
is never joined into a path. Symlinks are followed only to regular files inside the folder.
"""
from __future__ import annotations

import io
import json
import logging
import os
import re
import stat
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
from PIL import Image, ImageOps

from ..errors import InputError
from ..store import file_digest, make_key
from .schema import Column, Schema, check_unique, first_row, read_csv_text, validate

log = logging.getLogger(__name__)

TASK = "products"
LOADER_VERSION = "1"
ID = "nm"
TEXT_COLUMNS = ("title", "description", "brend", "attributes")
LABEL_COLUMNS = ("category", "sub_category", "price", "gender", "age_group", "isadult", "group")
TABLE_NAMES = ("products.parquet", "products.csv")
IMAGE_DIR = "images"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".webp")  # preference order when one stem has several files
IMAGE_FORMATS = ("JPEG", "PNG", "GIF", "WEBP")  # the only decoders PIL may use on catalogue bytes
MAX_IMAGES = 10
MAX_IMAGE_PIXELS = 40_000_000  # ~6300 x 6300; marketplace photos are far smaller
MAX_IMAGE_BYTES = 25 * 1024 * 1024  # 25 MB, the listing photo limit of FACTS.md section 4
# An nm must be usable as an image file stem: a word character first, then word characters, '-' or '.'
# (no separators, no spaces, no leading dot, so never '..' or a hidden file).
PLAIN_NAME = re.compile(r"^\w[\w.\-]{0,199}$")
TRUE_WORDS = {"true", "1", "yes", "да", "1.0"}
FALSE_WORDS = {"false", "0", "no", "нет", "0.0"}

SCHEMA = Schema((
    Column("nm", "str", False, "id"),
    Column("title", "str", True, "text"),
    Column("description", "str", True, "text"),
    Column("brend", "str", True, "categorical"),
    Column("attributes", "str", True, "text"),
    Column("category", "str", True, "target"),
    Column("sub_category", "str", True, "target"),
    Column("price", "float", True, "target", min_value=0.0),
    Column("gender", "str", True, "target"),
    Column("age_group", "str", True, "target"),
    Column("isadult", "str", True, "target"),  # parsed by _parse_isadult: validate() has no bool dtype
    Column("group", "str", True, "group"),
))
REQUIRED = ("nm", "title")
PROBLEMS = {
    "no_image": "products without an image file",
    "unreadable": "image reads failed: missing or not a decodable image (treated as no image)",
    "too_large": "images over the byte limit (treated as no image)",
    "not_regular": "entries of images/ skipped: not a regular file inside the folder",
    "duplicate_stem": "image files skipped: another file has the same name with another extension",
    "unmatched": "image files that match no nm",
    "attributes_unparsed": "attributes that look like JSON but do not parse (kept as raw text)",
}


def decode_image(data: bytes, max_pixels: int = MAX_IMAGE_PIXELS, max_bytes: int = MAX_IMAGE_BYTES) -> Image.Image | None:
    """The upright RGB image in ``data`` (first frame of a GIF), or None when it is not a JPEG/PNG/GIF/WebP, is
    corrupt, is over ``max_bytes`` bytes or over ``max_pixels`` pixels (checked from the header, before decoding)."""
    if len(data) > max_bytes:
        return None
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as img:
            width, height = img.size
            if width * height > max_pixels or width == 0 or height == 0:
                return None
            img.load()
            return ImageOps.exif_transpose(img).convert("RGB")
    except Exception:  # UnidentifiedImageError, truncated data (OSError), DecompressionBombError, bad EXIF ...
        return None


@dataclass
class Catalogue:
    """A validated catalogue; ``frame``, ``labels`` and ``images`` are aligned row by row, in file order.

    * ``frame``: ``nm`` (str), ``title``, ``description``, ``brend``, ``attributes`` (raw text; None where empty or
      absent from the file), ``attributes_parsed`` (normalised text, see :func:`normalise_attributes`; "" when
      none), then any extra columns of the file as text.
    * ``labels``: one column per label column present in the file, in :data:`LABEL_COLUMNS` order: ``price`` and
      ``isadult`` (0.0/1.0) as float with NaN where empty, the others as str with None where empty.
    * ``images``: per row, the names (in ``images/``) of the product's image files, ``<nm>.<ext>`` first, then
      ``<nm>_1`` .. ``<nm>_10``, at most :data:`MAX_IMAGES`; read them with :meth:`open_image`.
    * ``problems``: counted warnings (``no_image`` products, ``unreadable``/``too_large`` images, ``not_regular``
      files skipped, ``duplicate_stem`` files, ``unmatched`` image files, ``attributes_unparsed`` rows).
    """

    frame: pd.DataFrame
    labels: pd.DataFrame
    images: list[list[str]]
    fingerprint: str
    input_dir: Path
    table: Path
    problems: Counter = field(default_factory=Counter)
    max_pixels: int = MAX_IMAGE_PIXELS
    max_bytes: int = MAX_IMAGE_BYTES
    _paths: dict[str, str] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def label_columns(self) -> list[str]:
        return list(self.labels.columns)

    def read_bytes(self, row: int, k: int = 0) -> bytes | None:
        """Bytes of the ``k``-th image of ``row`` (0-based position in ``images[row]``), or None (counted) when the
        file is gone, no longer a regular file, or over ``max_bytes``."""
        names = self.images[row]
        if k >= len(names):
            return None
        path = self._paths[names[k]]
        try:
            # O_NONBLOCK: a FIFO swapped in after the scan must not hang the read; fstat then refuses it
            # paths in the index are never links (links were resolved at the scan): O_NOFOLLOW refuses one
            # swapped in since
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            self.problems["unreadable"] += 1
            return None
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                self.problems["not_regular"] += 1
                return None
            data = fh.read(self.max_bytes + 1)
        if len(data) > self.max_bytes:
            self.problems["too_large"] += 1
            return None
        return data

    def open_image(self, row: int, k: int = 0) -> Image.Image | None:
        """The ``k``-th image of ``row`` decoded to RGB, or None (counted in ``problems``) when unusable."""
        data = self.read_bytes(row, k)
        if data is None:
            return None
        img = decode_image(data, self.max_pixels, self.max_bytes)
        if img is None:
            self.problems["unreadable"] += 1
        return img

    def report(self) -> None:
        """Log each counted problem once."""
        for problem, count in sorted(self.problems.items()):
            if count:
                log.warning("products: %d %s", count, PROBLEMS.get(problem, problem))


# -- attributes ---------------------------------------------------------------------------------------------
def _flat_value(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(_flat_value(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return "" if value is None else str(value)


def parse_attributes(text: str | None) -> dict[str, str] | None:
    """Characteristics as ``{key: value}``: a JSON object, a JSON list of ``{"name"|"key": .., "value": ..}``
    items, or ``key: value; key: value`` text (also newline separated). Keys are lower-cased with whitespace
    collapsed; list values are joined with ", ". A part without ':' is kept under the key "". Returns None for
    text that starts like JSON but does not parse (the caller counts it); ``{}`` for empty text."""
    if text is None or not str(text).strip():
        return {}
    text = str(text).strip()
    pairs: list[tuple[str, str]] = []
    if text[0] in "{[":
        try:
            obj = json.loads(text)
        except ValueError:
            return None
        if isinstance(obj, dict):
            pairs = [(str(k), _flat_value(v)) for k, v in obj.items()]
        elif isinstance(obj, list) and all(isinstance(i, dict) for i in obj):
            for item in obj:
                key = item.get("name", item.get("key", ""))
                pairs.append((str(key), _flat_value(item.get("value", item.get("values", "")))))
        else:
            return None
    else:
        for part in re.split(r"[;\n]", text):
            key, sep, value = part.partition(":")
            if not part.strip():
                continue
            pairs.append((key, value) if sep else ("", part))
    out: dict[str, str] = {}
    for key, value in pairs:
        key = " ".join(key.split()).lower()
        value = " ".join(value.split())
        if value:
            out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def normalise_attributes(parsed: dict[str, str]) -> str:
    """``key: value; key: value`` sorted by key, so the same characteristics in another order or format give the
    same text (a part without a key is written as its value alone)."""
    return "; ".join(f"{k}: {v}" if k else v for k, v in sorted(parsed.items()))


# -- reading and validating the table ------------------------------------------------------------------------
def find_table(input_dir: Path) -> Path:
    """``products.parquet`` or ``products.csv`` in ``input_dir`` (both present is an error: which one is meant?)."""
    found = [input_dir / name for name in TABLE_NAMES if (input_dir / name).is_file()]
    if not found:
        raise InputError(input_dir / "products.csv", f"file not found (the products task needs products.csv or "
                                                     f"products.parquet in {input_dir})")
    if len(found) > 1:
        raise InputError(found[0], "both products.parquet and products.csv are present; keep one")
    return found[0]


def read_table_text(path: Path) -> pl.DataFrame:
    """The table with every column as text (parquet values are cast: ints as '123', bools as 'true')."""
    if path.suffix == ".csv":
        return read_csv_text(path)
    try:
        frame = pl.read_parquet(path)
    except Exception as exc:  # polars raises several kinds for a damaged or non-parquet file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(path, f"not a readable parquet file: {first}") from None
    if frame.height == 0:
        raise InputError(path, "file has no rows")
    casts = []
    for name, dtype in frame.schema.items():
        if dtype.is_nested() or dtype == pl.Binary:
            raise InputError(path, f"expected text, numbers or booleans, got a {dtype} column", column=name)
        casts.append(pl.col(name).cast(pl.String))
    return frame.with_columns(casts)


def _check_nm(raw: pl.DataFrame, path: Path) -> None:
    ids = raw[ID].str.strip_chars()
    bad = ids.is_not_null() & (ids != "") & ~ids.str.contains(PLAIN_NAME.pattern)
    if bad.any():
        row = int(bad.arg_true()[0]) + 1
        raise InputError(path, f"nm {ids[row - 1]!r} is not a plain file name (letters, digits, '_', '-' or '.', "
                               "not starting with '.'); image files are named after it", column=ID, row=row)


def _parse_isadult(values: pd.Series, path: Path) -> pd.Series:
    """``true/false/1/0/yes/no`` (any case; ``да/нет``) -> 1.0/0.0, empty -> NaN; anything else is an error."""
    text = values.fillna("").astype(str).str.strip().str.lower()
    out = pd.Series(np.nan, index=values.index)
    out[text.isin(TRUE_WORDS)] = 1.0
    out[text.isin(FALSE_WORDS)] = 0.0
    bad = (text != "") & out.isna()
    if bad.any():
        row = first_row(bad)
        raise InputError(path, f"expected a boolean (true/false, 1/0, yes/no), got {values.iloc[row - 1]!r}",
                         column="isadult", row=row)
    return out


def _validate(raw: pl.DataFrame, path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    missing = [c for c in REQUIRED if c not in raw.columns]
    if missing:
        raise InputError(path, f"missing column(s) {', '.join(missing)}; found {', '.join(raw.columns)}",
                         column=missing[0])
    _check_nm(raw, path)
    schema = Schema(tuple(c for c in SCHEMA.columns if c.name in raw.columns))
    typed = validate(raw, schema, path)
    check_unique(typed, ID, path)
    labels = typed[[c for c in LABEL_COLUMNS if c in typed.columns]].copy()
    if "isadult" in labels:
        labels["isadult"] = _parse_isadult(labels["isadult"], path)
    if "price" in labels:
        labels["price"] = labels["price"].astype(np.float64)
    known = set(SCHEMA.names)
    frame = pd.DataFrame({ID: typed[ID].astype(str)})
    for col in TEXT_COLUMNS:
        frame[col] = typed[col] if col in typed else None
    for col in typed.columns:  # extra columns of the file, kept as text after the known ones
        if col not in known:
            frame[col] = typed[col]
    return frame.reset_index(drop=True), labels.reset_index(drop=True)


# -- images --------------------------------------------------------------------------------------------------
def _scan_images(folder: Path, problems: Counter) -> dict[str, str]:
    """``file name -> path`` of the image files directly in ``folder``; non-regular entries (FIFOs, devices,
    links leading out of the folder or to non-files) are skipped and counted."""
    index: dict[str, str] = {}
    if not folder.is_dir():
        return index
    root = os.path.realpath(folder)
    with os.scandir(folder) as entries:
        for entry in entries:
            if os.path.splitext(entry.name)[1].lower() not in IMAGE_SUFFIXES:
                continue
            path = entry.path
            if entry.is_symlink():
                target = os.path.realpath(path)
                if not target.startswith(root + os.sep) or not os.path.isfile(target):
                    problems["not_regular"] += 1
                    continue
                path = target
            elif not entry.is_file(follow_symlinks=False):
                problems["not_regular"] += 1
                continue
            index[entry.name] = path
    return index


def _by_stem(names: list[str], problems: Counter) -> dict[str, str]:
    """``stem -> file name``; when one stem has several files (a.jpg and a.png) the first suffix of
    :data:`IMAGE_SUFFIXES` wins and the others are counted."""
    rank = {s: i for i, s in enumerate(IMAGE_SUFFIXES)}
    stems: dict[str, str] = {}
    for name in sorted(names, key=lambda n: (os.path.splitext(n)[0], rank[os.path.splitext(n)[1].lower()], n)):
        stem = os.path.splitext(name)[0]
        if stem in stems:
            problems["duplicate_stem"] += 1
        else:
            stems[stem] = name
    return stems


def match_images(ids: list[str], file_names: list[str], problems: Counter) -> list[list[str]]:
    """Per id, its image file names: ``<id>.<ext>`` then ``<id>_1`` .. ``<id>_10``, at most :data:`MAX_IMAGES`.

    A stem that is itself an id belongs to that id only (nm ``a_1`` owns ``a_1.jpg``, not nm ``a``).
    """
    stems = _by_stem(file_names, problems)
    id_set = set(ids)
    used: set[str] = set()
    out = []
    for nm in ids:
        found = []
        for stem in [nm] + [f"{nm}_{k}" for k in range(1, MAX_IMAGES + 1)]:
            if stem in stems and (stem == nm or stem not in id_set):
                found.append(stems[stem])
                used.add(stem)
        out.append(found[:MAX_IMAGES])
    problems["no_image"] += sum(1 for f in out if not f)
    problems["unmatched"] += len(set(stems) - used)
    return out


# -- entry point ---------------------------------------------------------------------------------------------
def load_catalogue(input_dir: Path | str, max_pixels: int = MAX_IMAGE_PIXELS,
                   max_bytes: int = MAX_IMAGE_BYTES) -> Catalogue:
    """Read and validate the catalogue in ``input_dir``; see :class:`Catalogue` for what it holds."""
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise InputError(input_dir, "input folder not found")
    table = find_table(input_dir)
    frame, labels = _validate(read_table_text(table), table)
    problems: Counter = Counter()
    parsed = [parse_attributes(t) for t in frame["attributes"]]
    problems["attributes_unparsed"] += sum(p is None for p in parsed)
    frame["attributes_parsed"] = [normalise_attributes(p) if p is not None else " ".join(str(t).split())
                                  for p, t in zip(parsed, frame["attributes"])]
    paths = _scan_images(input_dir / IMAGE_DIR, problems)
    images = match_images(frame[ID].tolist(), list(paths), problems)
    used = sorted(name for names in images for name in names)
    fingerprint = make_key(TASK, LOADER_VERSION, table.name, file_digest(table),
                           [(name, file_digest(Path(paths[name]))) for name in used])
    catalogue = Catalogue(frame=frame, labels=labels, images=images, fingerprint=fingerprint, input_dir=input_dir,
                          table=table, problems=+problems, max_pixels=max_pixels, max_bytes=max_bytes,
                          _paths={name: paths[name] for name in used})
    log.info("products: %d rows from %s, labels %s, %d with images (%d files)", len(frame), table.name,
             ", ".join(labels.columns) or "none", len(frame) - problems["no_image"], len(used))
    catalogue.report()
    return catalogue


# -- the products task's Dataset -----------------------------------------------------------------------------
PRICE_RANGE = "price_range"
DEFAULT_PRICE_BINS = 5
FOLD_GROUP = "fold_group"
HTML_TAG = re.compile(r"<[^>]+>")


def price_bin_edges(prices: np.ndarray, n_bins: int) -> np.ndarray:
    """Inner edges of ``n_bins`` quantile bins of the labelled prices (ties merged, so maybe fewer bins)."""
    inner = np.quantile(prices, np.arange(1, n_bins) / n_bins) if len(prices) else np.zeros(0)
    return np.unique(inner)


def price_range(prices: pd.Series, edges: np.ndarray) -> pd.Series:
    """Bin number "1".."K" of each price (bins closed on the left: a price equal to an edge goes up), None where
    the price is missing."""
    codes = np.searchsorted(edges, prices.to_numpy(np.float64), side="right") + 1
    return pd.Series([None if np.isnan(p) else str(c) for p, c in zip(prices.to_numpy(np.float64), codes)],
                     index=prices.index, dtype=object)


def plain_text(text: object) -> str | None:
    """Description without HTML tags and entities, whitespace collapsed; None when empty."""
    if not isinstance(text, str):
        return None
    import html as html_lib

    out = " ".join(html_lib.unescape(HTML_TAG.sub(" ", text)).split())
    return out or None


def load(input_dir: Path | str, store=None, options: dict | None = None):
    """The catalogue as the ``products`` task's :class:`~mmstack.data.dataset.Dataset`.

    Every row is in ``train`` and ``test`` is empty: each target's rows to predict are its unlabelled rows. The
    feature table holds ``nm``, ``title``, ``description`` (HTML removed), ``brend``, ``attributes`` (the
    normalised ``key: value; ...`` text), ``images`` (the product's image ids, space-separated; ids are file names
    in ``data.images["train"]``), ``n_images`` and ``fold_group`` (``group``, or the row's own ``nm`` when it has
    none: folds keep listings of one product together; not a feature). Labels: the targets of
    :data:`mmstack.tasks.products` plus ``price`` and ``group`` (read by the duplicates finder only).
    ``price_range`` is derived: ``data.price_bins`` (default 5) quantile bins of the labelled prices, numbered
    "1".. from cheapest; the edges are in ``extras["price_bins"]``.
    """
    from ..tasks.products_targets import TARGETS  # the task's targets, declared beside its wiring
    from .dataset import Dataset
    from .images import ImageLimits, ImageSource

    options = options or {}
    n_bins = options.get("price_bins", DEFAULT_PRICE_BINS)
    limits = ImageLimits.from_options(options)
    catalogue = load_catalogue(input_dir, max_pixels=limits.max_pixels, max_bytes=limits.max_bytes)
    frame = catalogue.frame
    table = pd.DataFrame({
        ID: frame[ID], "title": frame["title"].fillna(""), "description": frame["description"].map(plain_text),
        "brend": frame["brend"], "attributes": frame["attributes_parsed"].replace("", None),
        "images": [" ".join(names) for names in catalogue.images],
        "n_images": [len(names) for names in catalogue.images],
    })
    labels = catalogue.labels
    group = labels["group"] if "group" in labels else pd.Series([None] * len(table), dtype=object)
    table[FOLD_GROUP] = [g if isinstance(g, str) and g else f"nm:{nm}" for g, nm in zip(group, table[ID])]
    extras = {}
    if "price" in labels and labels["price"].notna().any():
        edges = price_bin_edges(labels["price"].dropna().to_numpy(np.float64), int(n_bins))
        table[PRICE_RANGE] = price_range(labels["price"], edges).to_numpy()
        bounds = np.r_[0.0, edges]
        extras["price_bins"] = pd.DataFrame({"bin": [str(i + 1) for i in range(len(bounds))], "from": bounds,
                                             "to": np.r_[edges, np.inf]})
    for column in labels.columns:
        table[column] = labels[column].to_numpy()
    images = {"train": ImageSource.from_files(catalogue.input_dir / IMAGE_DIR, catalogue._paths, limits)}
    fingerprint = make_key(catalogue.fingerprint, "dataset", int(n_bins))
    test = table.iloc[:0].copy()
    return Dataset.with_labels(task=TASK, train=table, test=test, id_col=ID, fingerprint=fingerprint,
                               input_dir=catalogue.input_dir, specs=TARGETS,
                               label_columns=("price", "group"), extras=extras, images=images)
