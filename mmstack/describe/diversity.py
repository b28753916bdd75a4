"""One item or many: ``<SINGLE>`` / ``<VARIATIVE>`` with a diversity score 0..1.

A logistic regression over text cues and image evidence (:func:`listing_features`):

- text: words that announce several different things (набор, комплект, лот, пакетом, разные, ассортимент...;
  not "разное", which Avito uses as a category name: "Вид: Разное"),
  words that announce many identical ones (N шт., оптом, одинаковые: one kind, so <SINGLE>), list commas in the
  title; English equivalents (set of, pack of, combo...);
- photos: object regions per photo (:func:`mmstack.describe.encode.region_stats`: how many, how different in
  colour and size), and how much the photos differ from each other (EfficientNet features).

Many identical items count as one kind (<SINGLE>): the description speaks of one item and a quantity. A set of
one kind in different colours and a lot of different things are <VARIATIVE>. The labelled set it is trained and
measured on is described in :mod:`mmstack.describe.train` and in BENCHMARKS.md.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from .encode import REGION_NAMES, Encoded

SINGLE, VARIATIVE = "<SINGLE>", "<VARIATIVE>"
MANY_DIFFERENT = re.compile(r"набор|комплект|\bлот(?:ом)?\b|пакетом|\bразн(?:ые|ых)\b|ассортимент|"
                            r"распродаж|вс[её] вместе|и другое|и др\.|\bset of\b|\bcombo\b|\bkit\b|\bassorted\b",
                            re.IGNORECASE)
MANY_IDENTICAL = re.compile(r"\d+\s*(?:шт\b|штук)|оптом|одинаков|количеств|\bмного\b|\bpack of\b|\bpcs\b",
                            re.IGNORECASE)
FEATURES = ("cue_many", "cue_identical", "title_commas", "n_photos", "log_regions_max", "regions_mean",
            "spread_max", "spread_mean", "colour_max", "size_cv_max", "colour_groups_max", "foreground_mean",
            "photo_distance_mean", "photo_distance_max", "spread_x_regions")


def regex_label(text: str) -> str:
    """The text-only rule: <VARIATIVE> when the text announces several different things, else <SINGLE>."""
    return VARIATIVE if MANY_DIFFERENT.search(text or "") and not MANY_IDENTICAL.search(text or "") else SINGLE


def listing_features(enc: Encoded, title: str = "") -> np.ndarray:
    """The :data:`FEATURES` of one encoded listing."""
    text = enc.text or ""
    r = enc.regions
    col = {name: r[:, i] if len(r) else np.zeros(1) for i, name in enumerate(REGION_NAMES)}
    if enc.n_photos >= 2:
        unit = enc.pooled / np.maximum(np.linalg.norm(enc.pooled, axis=1, keepdims=True), 1e-9)
        dist = 1 - unit @ unit.T
        pairs = dist[np.triu_indices(enc.n_photos, 1)]
        d_mean, d_max = float(pairs.mean()), float(pairs.max())
    else:
        d_mean = d_max = 0.0
    regions_max = float(col["regions"].max())
    return np.array([
        len(MANY_DIFFERENT.findall(text)), len(MANY_IDENTICAL.findall(text)), title.count(","),
        enc.n_photos, np.log1p(regions_max), float(col["regions"].mean()),
        float(col["colour_spread"].max()), float(col["colour_spread"].mean()), float(col["colour_max"].max()),
        float(col["size_cv"].max()), float(col["colour_groups"].max()), float(col["foreground"].mean()),
        d_mean, d_max, float(col["colour_spread"].max()) * np.log1p(regions_max),
    ], np.float64)


@dataclass
class DiversityModel:
    """Standardised logistic regression over :data:`FEATURES`; arrays only (no pickle)."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    threshold: float = 0.5

    @classmethod
    def fit(cls, X: np.ndarray, y: np.ndarray, C: float = 1.0, seed: int = 0) -> "DiversityModel":
        from sklearn.linear_model import LogisticRegression

        mean, scale = X.mean(axis=0), X.std(axis=0)
        scale[scale < 1e-9] = 1.0
        lr = LogisticRegression(C=C, max_iter=2000, random_state=seed).fit((X - mean) / scale, y)
        return cls(mean, scale, lr.coef_[0], float(lr.intercept_[0]))

    def score(self, X: np.ndarray) -> np.ndarray:
        """Diversity score 0..1 per row: the probability of several different items."""
        z = ((np.atleast_2d(X) - self.mean) / self.scale) @ self.coef + self.intercept
        return 1 / (1 + np.exp(-z))

    def token(self, score: float) -> str:
        return VARIATIVE if score >= self.threshold else SINGLE

    def to_arrays(self, prefix: str = "diversity_") -> dict[str, np.ndarray]:
        return {f"{prefix}mean": self.mean, f"{prefix}scale": self.scale, f"{prefix}coef": self.coef,
                f"{prefix}intercept": np.array(self.intercept), f"{prefix}threshold": np.array(self.threshold),
                f"{prefix}features": np.array(FEATURES)}

    @classmethod
    def from_arrays(cls, arrays, prefix: str = "diversity_", where: str | Path = "model") -> "DiversityModel":
        if list(arrays[f"{prefix}features"]) != list(FEATURES):
            raise ConfigError(f"{where}: the diversity model was trained on other features; retrain it "
                              "(python -m mmstack.describe.train)")
        return cls(arrays[f"{prefix}mean"], arrays[f"{prefix}scale"], arrays[f"{prefix}coef"],
                   float(arrays[f"{prefix}intercept"]), float(arrays[f"{prefix}threshold"]))
