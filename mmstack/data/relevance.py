"""Image-text relevance (Flickr8k course format, FACTS.md section 2): schema, loader, validator, target mapping.

Training rows are (image, query) pairs from ``train_dataset.csv`` scored by three experts (``ExpertAnnotations.tsv``,
1 = unrelated .. 4 = exact match) and, for some pairs, by a crowd (``CrowdAnnotations.tsv``: share of yes votes).
The target is the expert mean mapped to 0..1, ``(mean - 1) / 3``; with ``data.crowd_weight = w`` the crowd share is
blended in where present: ``(1 - w) * expert + w * crowd``.

Test rows are the pairs of ``test_pairs.csv`` (``image,query_id,query_text``; images in ``test_images/`` or
``train_images/``) when the folder has one, else every query of ``test_queries.csv`` (pipe-separated, with an
unnamed index column) against every image of ``test_images.csv``: the matrix that search ranks.

A query_id is ``<image file>#<n>``: the query is a caption of that image. Features never read it (a search system
has no captions for new images); it is kept to report retrieval of the query's source image.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputError
from ..store import Store, file_digest, make_key
from ..targets import TargetSpec
from .dataset import Dataset
from .images import SAFE_ID, ImageLimits, ImageSource
from .schema import Column, Schema, check_unique, first_row, read_csv_text, validate

log = logging.getLogger(__name__)

TASK = "relevance"
TARGET = "relevance"
TARGETS = (TargetSpec(TARGET, "regression", "mse", value_range=(0.0, 1.0)),)
LOADER_VERSION = "1"
IMAGE_SUFFIXES = (".jpg", ".jpeg")

PAIRS_SCHEMA = Schema((
    Column("image", "str", False, "image"),
    Column("query_id", "str", False, "id"),
    Column("query_text", "str", False, "text"),
))
EXPERT_SCHEMA = Schema((
    Column("image", "str", False, "image"),
    Column("query_id", "str", False, "id"),
    *(Column(f"e{i}", "int", False, "target", 1.0, 4.0) for i in (1, 2, 3)),
))
CROWD_SCHEMA = Schema((
    Column("image", "str", False, "image"),
    Column("query_id", "str", False, "id"),
    Column("share_yes", "float", False, "target", 0.0, 1.0),
    Column("n_yes", "int", False, "numeric", 0.0),
    Column("n_no", "int", False, "numeric", 0.0),
))
QUERIES_SCHEMA = Schema((Column("query_id", "str", False, "id"), Column("query_text", "str", False, "text")))
IMAGES_SCHEMA = Schema((Column("image", "str", False, "image"),))


def expert_to_unit(e1: np.ndarray, e2: np.ndarray, e3: np.ndarray) -> np.ndarray:
    """Mean of three 1..4 expert scores mapped to 0..1 (1 -> 0, 4 -> 1)."""
    return (np.mean([e1, e2, e3], axis=0) - 1.0) / 3.0


def blend_target(expert: np.ndarray, crowd: np.ndarray, crowd_weight: float) -> np.ndarray:
    """``(1 - w) * expert + w * crowd`` where the crowd share is known (not NaN), the expert value elsewhere."""
    if not 0.0 <= crowd_weight <= 1.0:
        raise InputError("config", f"data.crowd_weight must be in [0, 1], got {crowd_weight}")
    return np.where(np.isnan(crowd), expert, (1.0 - crowd_weight) * expert + crowd_weight * np.nan_to_num(crowd))


def _image_stems(frame: pd.DataFrame, path: Path) -> pd.Series:
    """The image id (file name without .jpg) of each row; names that could be paths are rejected."""
    names = frame["image"].astype(str)
    for row, name in enumerate(names, start=1):
        stem, dot, suffix = name.rpartition(".")
        if not dot or f".{suffix.lower()}" not in IMAGE_SUFFIXES or not SAFE_ID.match(stem):
            raise InputError(path, f"image {name!r} is not a plain .jpg file name (no folders, letters, digits, "
                                   "'_' or '-')", column="image", row=row)
    return names.str.rpartition(".")[0]


def _pair_index(frame: pd.DataFrame) -> pd.MultiIndex:
    return pd.MultiIndex.from_frame(frame[["image", "query_id"]])


def _check_unique_pairs(frame: pd.DataFrame, path: Path) -> None:
    dup = frame.duplicated(["image", "query_id"]).to_numpy()
    if dup.any():
        row = first_row(dup)
        raise InputError(path, f"pair ({frame['image'].iloc[row - 1]}, {frame['query_id'].iloc[row - 1]}) appears "
                               "twice", column="query_id", row=row)


def _read(path: Path, schema: Schema, separator: str = ",", headerless: bool = False) -> pd.DataFrame:
    raw = read_csv_text(path, separator, names=schema.names if headerless else None)
    return validate(raw, schema, path, separator)


def _test_pairs(input_dir: Path) -> tuple[pd.DataFrame, dict[str, Path]]:
    pairs = input_dir / "test_pairs.csv"
    if pairs.is_file():
        frame = _read(pairs, PAIRS_SCHEMA)
        _check_unique_pairs(frame, pairs)
        return frame[["image", "query_id", "query_text"]], {"test_pairs": pairs}
    queries_path, images_path = input_dir / "test_queries.csv", input_dir / "test_images.csv"
    for path in (queries_path, images_path):
        if not path.is_file():
            raise InputError(path, "file not found (the relevance task needs test_pairs.csv, or test_queries.csv "
                                   "and test_images.csv)")
    queries = _read(queries_path, QUERIES_SCHEMA, separator="|")
    check_unique(queries, "query_id", queries_path)
    images = _read(images_path, IMAGES_SCHEMA).drop_duplicates("image")
    frame = queries[["query_id", "query_text"]].merge(images[["image"]], how="cross")
    return frame[["image", "query_id", "query_text"]], {"test_queries": queries_path, "test_images": images_path}


def load(input_dir: Path | str, store: Store | None = None, options: dict[str, Any] | None = None) -> Dataset:
    """Load and validate a relevance folder (see the module docstring); ``options``: the config's ``[data]``."""
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise InputError(input_dir, "input folder not found")
    crowd_weight = float((options or {}).get("crowd_weight", 0.0))
    train_path, expert_path = input_dir / "train_dataset.csv", input_dir / "ExpertAnnotations.tsv"
    for path in (train_path, expert_path):
        if not path.is_file():
            raise InputError(path, "file not found (the relevance task needs train_dataset.csv and "
                                   "ExpertAnnotations.tsv)")
    train = _read(train_path, PAIRS_SCHEMA)
    _check_unique_pairs(train, train_path)
    expert = _read(expert_path, EXPERT_SCHEMA, separator="\t", headerless=True)
    _check_unique_pairs(expert, expert_path)
    unknown = ~_pair_index(expert).isin(_pair_index(train))
    if unknown.any():
        row = first_row(unknown)
        raise InputError(expert_path, f"pair ({expert['image'].iloc[row - 1]}, {expert['query_id'].iloc[row - 1]}) "
                                      "is not in train_dataset.csv", column="query_id", row=row)
    train = train.merge(expert, on=["image", "query_id"], how="left", validate="one_to_one")
    unscored = train["e1"].isna().to_numpy()
    if unscored.any():
        row = first_row(unscored)
        raise InputError(train_path, f"pair ({train['image'].iloc[row - 1]}, {train['query_id'].iloc[row - 1]}) has "
                                     "no expert scores in ExpertAnnotations.tsv", column="query_id", row=row)
    train["expert"] = expert_to_unit(*(train[f"e{i}"].to_numpy(float) for i in (1, 2, 3)))
    files = {"train": train_path, "expert": expert_path}
    crowd_path = input_dir / "CrowdAnnotations.tsv"
    train["crowd"] = np.nan
    if crowd_path.is_file():
        crowd = _read(crowd_path, CROWD_SCHEMA, separator="\t", headerless=True)
        crowd = crowd.drop_duplicates(["image", "query_id"])
        train = train.drop(columns="crowd").merge(crowd[["image", "query_id", "share_yes"]].rename(
            columns={"share_yes": "crowd"}), on=["image", "query_id"], how="left")
        files["crowd"] = crowd_path
    train[TARGET] = blend_target(train["expert"].to_numpy(float), train["crowd"].to_numpy(float), crowd_weight)
    test, test_files = _test_pairs(input_dir)
    files.update(test_files)
    train["image_id"] = _image_stems(train, train_path)
    test["image_id"] = _image_stems(test, next(iter(test_files.values())))
    limits = ImageLimits.from_options(options)
    images = {"train": ImageSource(_folder(input_dir, "train_images"), limits),
              "test": ImageSource(_folder(input_dir, "test_images"), limits)}
    train["image_split"] = "train"
    # a test pair's image is looked up in test_images/ first, then train_images/
    test["image_split"] = np.where(test["image_id"].map(images["test"].__contains__), "test", "train")
    for name, frame in (("train", train), ("test", test)):
        found = frame.apply(lambda r: r["image_id"] in images[r["image_split"]], axis=1)
        if not found.all():
            log.warning("%s: %d of %d pairs name an image that is not in the image folders (treated as no image)",
                        name, int((~found).sum()), len(frame))
    digests = {name: file_digest(path) for name, path in sorted(files.items())}
    fingerprint = make_key(TASK, LOADER_VERSION, digests, crowd_weight)
    # the expert and crowd scores are labels: they live with the target, out of the tables that blocks read
    train = train[["image", "image_id", "image_split", "query_id", "query_text", TARGET, "expert", "crowd"]]
    log.info("data: %d scored train pairs (%d images, %d queries), %d test pairs (%d images, %d queries)",
             len(train), train["image"].nunique(), train["query_id"].nunique(), len(test), test["image"].nunique(),
             test["query_id"].nunique())
    train = train.reset_index(drop=True)
    train.attrs["source"] = str(train_path)  # named by errors about the rows as a whole
    return Dataset.with_labels(task=TASK, train=train, test=test.reset_index(drop=True),
                               id_col="query_id", fingerprint=fingerprint, input_dir=input_dir, specs=TARGETS,
                               label_columns=("expert", "crowd"), images=images)


def _folder(input_dir: Path, name: str) -> Path | None:
    for candidate in (input_dir / name, input_dir / f"{name}.zip"):
        if candidate.exists():
            return candidate
    return None
