"""Batch screening of texts: ``mmstack moderate --texts FILE.csv --out OUT.csv``.

The output holds the input's columns as read plus ``toxicity`` (0..1) and ``toxic`` (0/1 at the threshold), one
row per input row in input order. Settings come from configs/moderation.toml (section [text]).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..config import read_toml
from ..errors import ConfigError, InputError
from ..store import atomic_path
from .toxicity import ToxicityModel, load_default

log = logging.getLogger(__name__)

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "moderation.toml"
OUTPUT_COLUMNS = ("toxicity", "toxic")


@dataclass(frozen=True)
class TextSettings:
    """The [text] section of configs/moderation.toml."""

    threshold: float | None = None  # None: the model's own
    embeddings: bool = True
    model: str = ""
    batch_size: int = 2000


def load_settings(path: Path | None = None) -> TextSettings:
    """Settings from ``path`` (default configs/moderation.toml; built-in defaults when that file is absent)."""
    explicit = path is not None
    path = Path(path) if explicit else DEFAULT_CONFIG
    if not path.is_file():
        if explicit:
            raise ConfigError(f"{path}: no such moderation config")
        log.info("no %s: the model's own threshold and default settings", path)
        return TextSettings()
    section = read_toml(path).get("text", {})
    unknown = set(section) - set(TextSettings.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) in [text]: {', '.join(sorted(unknown))}")
    settings = TextSettings(**section)
    if settings.threshold is not None:
        check_threshold(settings.threshold, f"{path}: [text] threshold")
    if not isinstance(settings.batch_size, int) or settings.batch_size < 1:
        raise ConfigError(f"{path}: [text] batch_size must be a positive integer, got {settings.batch_size!r}")
    return settings


def check_threshold(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{where} must be a number from 0 to 1, got {value!r}")
    return float(value)


def read_texts(path: Path, column: str) -> pd.DataFrame:
    """The input table, every column read as text (so the output repeats the input's values as written)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file" if not path.exists() else "not a file")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError:
        raise InputError(path, "empty file: expected a CSV table with a header row") from None
    except UnicodeDecodeError:
        raise InputError(path, "not UTF-8 text: expected a CSV table") from None
    except (pd.errors.ParserError, OSError) as exc:
        raise InputError(path, f"cannot read as CSV ({str(exc).splitlines()[0]})") from None
    if column not in frame.columns:
        raise InputError(path, f"no such column; columns are: {', '.join(map(str, frame.columns))}", column)
    return frame


def screen(texts: pd.Series, model: ToxicityModel, threshold: float, embeddings: bool,
           batch_size: int = 2000, progress: bool = True) -> pd.DataFrame:
    """toxicity and toxic for each text, in order; empty or missing texts score 0 and are not toxic."""
    values = texts.tolist()
    scores = np.zeros(len(values))
    with tqdm(total=len(values), desc="moderating", unit="text", disable=not progress) as bar:
        for start in range(0, len(values), batch_size):
            chunk = values[start:start + batch_size]
            scores[start:start + len(chunk)] = model.score(chunk, embeddings=embeddings)
            bar.update(len(chunk))
    return pd.DataFrame({"toxicity": scores.round(6), "toxic": (scores >= threshold).astype(int)},
                        index=texts.index)


def moderate_file(texts_path: Path, out_path: Path, column: str = "text", threshold: float | None = None,
                  config: Path | None = None, embeddings: bool | None = None, progress: bool = True) -> dict:
    """Screen the ``column`` of a CSV file and write OUT (input columns + toxicity + toxic); returns a summary."""
    settings = load_settings(config)
    model = ToxicityModel.load(settings.model) if settings.model else load_default()
    if threshold is not None:
        threshold = check_threshold(threshold, "--threshold")
    elif settings.threshold is not None:
        threshold = settings.threshold
    else:
        threshold = model.threshold
    use_embeddings = settings.embeddings if embeddings is None else embeddings
    if use_embeddings and not model.has_embeddings:
        log.warning("the toxicity model has no embedding head: scoring with lexicon and characters only")
        use_embeddings = False
    frame = read_texts(texts_path, column)
    clashing = [c for c in OUTPUT_COLUMNS if c in frame.columns]
    if clashing:
        log.warning("%s: column(s) %s are replaced by the new scores", texts_path, ", ".join(clashing))
        frame = frame.drop(columns=clashing)
    result = pd.concat([frame, screen(frame[column], model, threshold, use_embeddings,
                                      settings.batch_size, progress)], axis=1)
    with atomic_path(Path(out_path)) as tmp:
        result.to_csv(tmp, index=False)
    return {"rows": len(result), "toxic": int(result["toxic"].sum()), "threshold": threshold,
            "embeddings": use_embeddings, "out": str(out_path)}
