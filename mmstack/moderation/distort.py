"""Obfuscations of Russian text as people write them, to test that the classifier sees through them.

Each kind rewrites one word: ``leet`` (п1зда, ж0па), ``mask`` (х*й, б**дь), ``spaced`` (б л я), ``dotted``
(с.у.к.а), ``latin`` (Latin look-alikes: cyka, xyй), ``translit`` (blyat, pizdec), ``repeat`` (бляяяя), ``case``
(СуКа). :func:`distort_text` applies them to every lexicon word of a text (people hide the swear words) and to a
share of the other words (so that clean texts are distorted alike and distortion itself is no signal); a clean
word is never masked (х*й is read as a swear word by people too), it gets repeated letters instead.
Written independently of :mod:`normalise`: a distortion that the normaliser cannot undo shows up as a miss.
"""
from __future__ import annotations

import random
import re

import pandas as pd

from .lexicon import Lexicon, default_lexicon

KINDS = ("leet", "mask", "spaced", "dotted", "latin", "translit", "repeat", "case")
LEET = {"о": "0", "з": "3", "ч": "4", "б": "6", "и": "1", "а": "@", "я": "9", "е": "3", "с": "$"}
LOOKALIKE = {"а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x", "к": "k", "м": "m",
             "т": "t", "в": "b", "н": "h"}
TRANSLIT = {"а": "a", "б": "b", "в": "v", "г": "g", "д": "d", "е": "e", "ё": "yo", "ж": "zh", "з": "z", "и": "i",
            "й": "y", "к": "k", "л": "l", "м": "m", "н": "n", "о": "o", "п": "p", "р": "r", "с": "s", "т": "t",
            "у": "u", "ф": "f", "х": "h", "ц": "c", "ч": "ch", "ш": "sh", "щ": "sch", "ъ": "", "ы": "y", "ь": "",
            "э": "e", "ю": "yu", "я": "ya"}
VOWELS = "аеёиоуыэюя"
WORD = re.compile(r"[А-Яа-яЁё]{3,}")


def distort_word(word: str, kind: str, rng: random.Random) -> str:
    """One word written with obfuscation ``kind`` (see the module docstring)."""
    lower = word.lower()
    if kind == "leet":
        spots = [i for i, c in enumerate(lower) if c in LEET]
        if not spots:
            return word
        picked = set(rng.sample(spots, k=max(1, len(spots) // 2)))
        return "".join(LEET[c] if i in picked else c for i, c in enumerate(lower))
    if kind == "mask":
        inner = [i for i in range(1, len(lower) - 1)]
        vowels = [i for i in inner if lower[i] in VOWELS] or inner
        start = rng.choice(vowels)
        width = 1 if len(lower) <= 4 else rng.choice((1, 1, 2))
        symbol = rng.choice("**#")
        return lower[:start] + symbol * width + lower[start + width:]
    if kind == "spaced":
        return " ".join(lower)
    if kind == "dotted":
        return rng.choice(".-").join(lower)
    if kind == "latin":
        return "".join(LOOKALIKE.get(c, c) if rng.random() < 0.7 else c for c in lower)
    if kind == "translit":
        return "".join(TRANSLIT.get(c, c) for c in lower)
    if kind == "repeat":
        spots = [i for i, c in enumerate(lower) if c in VOWELS] or [len(lower) - 1]
        i = rng.choice(spots)
        return lower[:i + 1] + lower[i] * rng.randint(2, 5) + lower[i + 1:]
    if kind == "case":
        return "".join(c.upper() if rng.random() < 0.5 else c for c in lower)
    raise ValueError(f"unknown distortion {kind!r}; known: {', '.join(KINDS)}")


def distort_text(text: str, kind: str, seed: int, rate: float = 0.2, lexicon: Lexicon | None = None) -> str:
    """``text`` with every lexicon word and a ``rate`` share of the other words (3+ letters) distorted.

    ``kind`` is one of KINDS or "mixed" (a random kind per word). The same seed gives the same text.
    """
    lexicon = lexicon or default_lexicon()
    rng = random.Random(f"{seed}:{text}")

    def rewrite(match: re.Match) -> str:
        word = match.group(0)
        known = lexicon.category(word) is not None
        if not known and rng.random() >= rate:
            return word
        chosen = rng.choice(KINDS) if kind == "mixed" else kind
        if chosen == "mask" and not known:  # masks hide swear words; a masked clean word reads as one
            chosen = "case" if kind == "mixed" else "repeat"
        return distort_word(word, chosen, rng)

    return WORD.sub(rewrite, text)


def fragment(text: str, seed: int, low: int = 3, high: int = 8, around: int = 0) -> str:
    """A window of ``low``..``high`` words of ``text`` that holds word number ``around`` (0: the first words).

    Short comments are hard (little context); ``around`` keeps the word that makes a text toxic in the window.
    """
    words = text.split()
    rng = random.Random(f"{seed}:{text}")
    size = rng.randint(low, high)
    start = max(0, min(around - rng.randint(0, size - 1), len(words) - size))
    return " ".join(words[start:start + size])


def _first_toxic_word(text: str, rewrites: list[str]) -> int:
    """Index of the first word of a toxic ``text`` that none of its neutral rewrites uses (0 if none)."""
    kept = {w for r in rewrites for w in re.findall(r"\w+", r.lower())}
    for i, word in enumerate(text.split()):
        found = re.findall(r"\w+", word.lower())
        if found and any(w not in kept for w in found):
            return i
    return 0


def fragments(frame: pd.DataFrame, seed: int) -> pd.Series:
    """A 3-8 word window of each text of ``frame`` (text, toxic, pair_id): around the word that its neutral
    rewrites dropped for a toxic text (so the window stays toxic), from the start for a neutral one."""
    out = pd.Series("", index=frame.index, dtype=object)
    for _, group in frame.groupby("pair_id", sort=False):
        rewrites = group.loc[group["toxic"] == 0, "text"].tolist()
        for idx, text, toxic in zip(group.index, group["text"], group["toxic"]):
            around = _first_toxic_word(text, rewrites) if toxic == 1 and rewrites else 0
            out[idx] = fragment(text, seed, around=around)
    return out
