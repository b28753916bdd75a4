"""Word-id sequences of title and description for the cross-attention net.

Text is lower-cased with numbers masked into typed placeholders (:func:`mmstack.textnorm.mask_numbers`), split into
words (a placeholder is one word), and mapped to ids in a vocabulary of the ``vocab_size`` most frequent words over
train and test rows (no target is read, so fitting on all rows leaks nothing). Each row is
``title words (at most title_len) + [SEP] + description words``, cut at ``max_len`` and right-padded.

``extras`` (saved with the block)::

    {"ids":   (N, max_len) int32   # 0 = padding, 1 = unknown word, 2 = [SEP] between title and description
     "mask":  (N, max_len) bool    # True where ids holds a real token (ids != 0)
     "vocab": list[str]}           # vocab[i] is the word of id i (ids 0..2 are the special tokens)

N = train rows then test rows, in row-id order. A row with neither title nor description has an all-False mask.
Bytes per listing: 5 * max_len (240 at the default 48). The dense output is one column, ``txttok_len`` (tokens kept).
"""
from __future__ import annotations

import logging
import re
from collections import Counter

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..textnorm import PLACEHOLDER_TOKEN, mask_numbers
from .base import BlockContext, BlockOutput, FeatureBlock
from .registry import register

log = logging.getLogger(__name__)

PAD, UNK, SEP = 0, 1, 2
SPECIALS = ["<pad>", "<unk>", "<sep>"]
WORDS = re.compile(rf"{PLACEHOLDER_TOKEN}|[^\W\d_]+")


def words(text: object) -> list[str]:
    """Lower-cased words of ``text`` with numbers masked (a placeholder such as ``<PRICE>`` is one word)."""
    if not isinstance(text, str) or not text:
        return []
    return WORDS.findall(mask_numbers(text))


def build_vocab(counts: Counter, size: int, min_count: int) -> list[str]:
    """Special tokens, then the ``size`` most frequent words seen at least ``min_count`` times (ties by word)."""
    frequent = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    return SPECIALS + frequent[:size]


def encode(title_words: list[list[str]], desc_words: list[list[str]], vocab: list[str], title_len: int,
           max_len: int) -> np.ndarray:
    """(N, max_len) int32 ids: title (cut at ``title_len``), [SEP] when a description follows, description."""
    index = {w: i for i, w in enumerate(vocab)}
    ids = np.zeros((len(title_words), max_len), dtype=np.int32)
    for r, (title, desc) in enumerate(zip(title_words, desc_words)):
        seq = [index.get(w, UNK) for w in title[:title_len]]
        if desc:
            seq.append(SEP)
            seq += [index.get(w, UNK) for w in desc[:max_len - len(seq)]]
        seq = seq[:max_len]
        ids[r, :len(seq)] = seq
    return ids


@register
class TextTokensBlock(FeatureBlock):
    """Title + description as padded word-id sequences with a mask, for nets with trainable embeddings."""

    name = "text_tokens"
    rows_per_second = 20000  # measured here at the default params (README), for --time-limit
    version = "1"
    default_params = {"vocab_size": 20_000, "min_count": 2, "title_len": 16, "max_len": 48}

    def __init__(self, params=None):
        super().__init__(params)
        p = self.params
        self.require_ints({"vocab_size": 1, "min_count": 1, "title_len": 1, "max_len": 2})
        if p["title_len"] >= p["max_len"]:
            raise ConfigError("features.text_tokens: title_len must be below max_len (room for the description)")

    def build(self, ctx: BlockContext) -> BlockOutput:
        p = self.params
        rows = ctx.data.all_rows()
        # many listings repeat a title or description: tokenise each distinct text once
        tokenised = {}
        for column in ("title", "description"):
            unique = pd.unique(rows[column].fillna(""))
            memo = {t: words(t) for t in unique}
            tokenised[column] = [memo[t] for t in rows[column].fillna("")]
        counts: Counter = Counter()
        for column in ("title", "description"):
            for seq in tokenised[column]:
                counts.update(seq)
        vocab = build_vocab(counts, p["vocab_size"], p["min_count"])
        ids = encode(tokenised["title"], tokenised["description"], vocab, p["title_len"], p["max_len"])
        mask = ids != PAD
        lengths = mask.sum(axis=1)
        unknown = float((ids == UNK).sum()) / max(1, int(lengths.sum()))
        log.info("text_tokens: vocabulary %d words, mean length %.1f of %d, %.1f%% unknown, %d rows empty",
                 len(vocab), lengths.mean() if len(lengths) else 0.0, p["max_len"], 100 * unknown,
                 int((lengths == 0).sum()))
        dense = pd.DataFrame({"txttok_len": lengths.astype(np.float32)})
        return BlockOutput(dense=dense, extras={"ids": ids, "mask": mask, "vocab": vocab})
