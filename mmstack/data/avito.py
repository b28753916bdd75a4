"""Avito Demand Prediction: declared schema, loader and validator for the Kaggle files (FACTS.md section 1)."""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import polars as pl

from ..errors import InputError
from ..store import Store, file_digest, make_key, write_parquet
from ..targets import TargetSpec
from .dataset import Dataset
from .images import SAFE_ID, ImageLimits, ImageSource
from .schema import Column, Schema, check_unique, first_row, read_csv_text, separator_hint, validate

log = logging.getLogger(__name__)

TASK = "avito"
TARGET = "deal_probability"
TARGETS = (TargetSpec(TARGET, "regression", "rmse", value_range=(0.0, 1.0)),)
ID = "item_id"
LOADER_VERSION = "1"

TRAIN_SCHEMA = Schema((
    Column("item_id", "str", False, "id"),
    Column("user_id", "str", False, "group"),
    Column("region", "str", False, "categorical"),
    Column("city", "str", False, "categorical"),
    Column("parent_category_name", "str", False, "categorical"),
    Column("category_name", "str", False, "categorical"),
    Column("param_1", "str", True, "categorical"),
    Column("param_2", "str", True, "categorical"),
    Column("param_3", "str", True, "categorical"),
    Column("title", "str", True, "text"),
    Column("description", "str", True, "text"),
    Column("price", "float", True, "numeric", min_value=0.0),
    Column("item_seq_number", "int", False, "numeric", min_value=0.0),
    Column("activation_date", "date", False, "date"),
    Column("user_type", "str", False, "categorical"),
    Column("image", "str", True, "image"),
    Column("image_top_1", "float", True, "categorical"),
    Column(TARGET, "float", False, "target", min_value=0.0, max_value=1.0),
))
TEST_SCHEMA = TRAIN_SCHEMA.without("target")
# Unlabeled extras: test's columns without the image ones (Kaggle's active files have none), and looser:
# only the id must always be set.
ACTIVE_SCHEMA = Schema(tuple(
    Column(c.name, c.dtype, c.role != "id", c.role, c.min_value, c.max_value)
    for c in TEST_SCHEMA.columns if c.name not in ("image", "image_top_1")
))
PERIODS_SCHEMA = Schema((
    Column("item_id", "str", False, "id"),
    Column("activation_date", "date", True, "date"),
    Column("date_from", "date", False, "date"),
    Column("date_to", "date", False, "date"),
))
EXTRA_FILES = {
    "train_active": ("train_active.csv", ACTIVE_SCHEMA),
    "test_active": ("test_active.csv", ACTIVE_SCHEMA),
    "periods_train": ("periods_train.csv", PERIODS_SCHEMA),
    "periods_test": ("periods_test.csv", PERIODS_SCHEMA),
}


def _check_columns_match(train_cols: list[str], test_cols: list[str], test_path: Path) -> None:
    expected = [c for c in train_cols if c != TARGET]
    extra = [c for c in test_cols if c not in expected]
    missing = [c for c in expected if c not in test_cols]
    if extra or missing:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing)}")
        if extra:
            parts.append(f"unexpected {', '.join(extra)}")
        hint = separator_hint(test_path, ",") if len(test_cols) == 1 else ""
        raise InputError(test_path, f"columns do not match train.csv minus '{TARGET}': {'; '.join(parts)}"
                                    + (f": {hint}" if hint else ""), column=(missing or extra)[0])


def _check_image_ids(frame: pl.DataFrame, path: Path) -> None:
    if "image" not in frame.columns:
        return
    ids = frame["image"]
    bad = ids.is_not_null() & (ids.str.strip_chars() != "") & ~ids.str.strip_chars().str.contains(SAFE_ID.pattern)
    if bad.any():
        row = int(bad.arg_true()[0]) + 1
        raise InputError(path, f"image id {ids[row - 1]!r} is not a plain file name (letters, digits, '_' or '-'); "
                               "ids may not name paths", column="image", row=row)


def _read_table(path: Path, schema: Schema) -> tuple[pd.DataFrame, list[str]]:
    raw = read_csv_text(path)
    _check_image_ids(raw, path)
    frame = validate(raw, schema, path)
    return frame, list(raw.columns)


def _fingerprint(input_dir: Path) -> tuple[str, dict[str, Path]]:
    tables = {"train": input_dir / "train.csv", "test": input_dir / "test.csv"}
    for name, (fname, _) in EXTRA_FILES.items():
        if (input_dir / fname).is_file():
            tables[name] = input_dir / fname
    for name in ("train", "test"):
        if not tables[name].is_file():
            raise InputError(tables[name], f"file not found (the Avito task needs train.csv and test.csv in {input_dir})")
    digests = {name: file_digest(path) for name, path in sorted(tables.items())}
    return make_key(TASK, LOADER_VERSION, digests), tables


def load(input_dir: Path | str, store: Store | None = None, options: dict | None = None) -> Dataset:
    """Load and validate the Avito files in ``input_dir``; parsed tables are cached in ``store`` by file digest.

    ``options`` (the config's ``[data]``): ``max_image_pixels`` and ``max_image_bytes`` (:class:`ImageLimits`);
    ``rows`` sizes the generator only."""
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise InputError(input_dir, "input folder not found")
    fingerprint, tables = _fingerprint(input_dir)
    cache = store.path("features", "data", fingerprint) if store else None
    frames: dict[str, pd.DataFrame] = {}
    if cache is not None and cache.is_dir() and all((cache / f"{n}.parquet").is_file() for n in tables):
        frames = {name: pd.read_parquet(cache / f"{name}.parquet") for name in tables}
        log.info("data: reused parsed tables %s", fingerprint)
    else:
        train, train_cols = _read_table(tables["train"], TRAIN_SCHEMA)
        test_raw = read_csv_text(tables["test"])
        _check_columns_match(train_cols, list(test_raw.columns), tables["test"])
        _check_image_ids(test_raw, tables["test"])
        test = validate(test_raw, TEST_SCHEMA, tables["test"])
        check_unique(train, ID, tables["train"])
        check_unique(test, ID, tables["test"])
        overlap = test[ID].isin(set(train[ID]))
        if overlap.any():
            row = first_row(overlap)
            raise InputError(tables["test"], f"item_id {test[ID].iloc[row - 1]!r} is also in train.csv", column=ID, row=row)
        frames = {"train": train, "test": test}
        for name, (fname, schema) in EXTRA_FILES.items():
            if name in tables:
                frames[name], _ = _read_table(tables[name], schema)
        if cache is not None:
            for name, frame in frames.items():
                write_parquet(cache / f"{name}.parquet", frame)
        log.info("data: parsed %d train and %d test rows (%s)", len(train), len(test),
                 ", ".join(n for n in frames if n not in ("train", "test")) or "no extras")
    limits = ImageLimits.from_options(options)
    images = {split: ImageSource.find(input_dir, split, limits) for split in ("train", "test")}
    for split in ("train", "test"):
        ids = frames[split]["image"]
        referenced = ids.notna()
        skipped = {name.rsplit(".", 1)[0] for name in images[split].skipped()}  # warned about by the source
        missing = int((referenced & ~ids.map(images[split].__contains__) & ~ids.isin(skipped)).sum())
        if missing:
            log.warning("%s: %d of %d referenced images not found (treated as no image)",
                        split, missing, int(referenced.sum()))
    frames["train"].attrs["source"] = str(tables["train"])  # named by errors about the rows as a whole
    extras = {n: f for n, f in frames.items() if n not in ("train", "test")}
    return Dataset.with_labels(task=TASK, train=frames["train"], test=frames["test"], id_col=ID,
                               fingerprint=fingerprint, input_dir=input_dir, specs=TARGETS, extras=extras,
                               images=images)
