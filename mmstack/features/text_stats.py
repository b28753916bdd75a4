"""Counts and shares that describe how a listing's text is written."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import polars as pl

from .base import BlockContext, BlockOutput, FeatureBlock
from .registry import register

EMOJI = r"[\U0001F300-\U0001FAFF\u2600-\u27BF]"
PHONE_LIKE = r"(?:\+7|8)[\s\-(]*9\d{2}[\s\-)]*\d{3}[\s\-]*\d{2}[\s\-]*\d{2}"
LINK_LIKE = r"(?:https?://|www\.|\b[\w-]+\.(?:ru|com|рф|net|org)\b)"


def _share(count: pd.Series, length: pd.Series) -> pd.Series:
    return count / length.where(length > 0)


def text_stats(text: pd.Series, prefix: str) -> pd.DataFrame:
    """Length, word count, shares of capitals, digits, punctuation; emoji, '!', phone- and link-like patterns."""
    text = text.fillna("")
    length = text.str.len()
    out = pd.DataFrame({
        f"{prefix}_chars": length,
        f"{prefix}_words": text.str.count(r"\S+"),  # = len(split()), without a list of words per row
        f"{prefix}_lines": text.str.count("\n") + (length > 0),
        f"{prefix}_caps_share": _share(text.str.count(r"[A-ZА-ЯЁ]"), length),
        f"{prefix}_digit_share": _share(text.str.count(r"\d"), length),
        f"{prefix}_punct_share": _share(text.str.count(r"[^\w\s]"), length),
        f"{prefix}_emoji": text.str.count(EMOJI),
        f"{prefix}_exclaims": text.str.count("!"),
        f"{prefix}_has_phone": text.str.contains(PHONE_LIKE, regex=True).astype(float),
        f"{prefix}_has_link": text.str.contains(LINK_LIKE, regex=True, flags=re.I).astype(float),
    })
    out[f"{prefix}_missing"] = (length == 0).astype(float)
    return out


def title_words_in_description(title: pd.Series, description: pd.Series, chunk: int = 50_000) -> np.ndarray:
    """Share of the title's words that also occur in the description (NaN without a description); in polars,
    ``chunk`` rows at a time (the word lists of every row at once took 1 GB at full size)."""
    def word_sets(text: pd.Series) -> pl.Series:
        lower = pl.Series(text.fillna("").tolist(), dtype=pl.String).str.to_lowercase()
        return lower.str.extract_all(r"\w+").list.unique()

    share = pl.col("title").list.set_intersection(pl.col("description")).list.len() / pl.col("title").list.len()
    out = np.full(len(title), np.nan)
    for start in range(0, len(title), chunk):
        part = slice(start, start + chunk)
        words = pl.DataFrame({"title": word_sets(title.iloc[part]), "description": word_sets(description.iloc[part]),
                              "described": description.iloc[part].fillna("").str.len().to_numpy() > 0})
        out[part] = words.select(pl.when((pl.col("title").list.len() > 0) & pl.col("described")).then(share)
                                 ).to_series().to_numpy().astype(float)
    return out


@register
class TextStatsBlock(FeatureBlock):
    name = "text_stats"
    rows_per_second = 30000  # measured here at the default params (README), for --time-limit
    version = "1"
    default_params = {"fields": ["title", "description"]}

    def build(self, ctx: BlockContext) -> BlockOutput:
        rows = ctx.data.all_rows()
        parts = [text_stats(rows[f], f"ts_{f}") for f in self.params["fields"]]
        dense = pd.concat(parts, axis=1)
        if {"title", "description"} <= set(self.params["fields"]):
            dense["ts_title_words_in_desc"] = title_words_in_description(rows["title"], rows["description"])
        return BlockOutput(dense=dense.astype(np.float32).reset_index(drop=True))
