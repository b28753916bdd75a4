"""The lexicon of Russian obscene, insulting and hateful roots (lexicon.toml), matched per word.

Words are matched in skeleton form (:func:`skeleton`): lower case, ё as е, repeated letters collapsed, so
"Ссука", "сукааа" and "сука" are one word to the lexicon. The categories feed the classifier as counts.
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

LEXICON_FILE = Path(__file__).with_name("lexicon.toml")
CATEGORIES = ("obscene", "insult", "slur", "rude")
WORD = re.compile(r"[а-яё]+")
REPEATS = re.compile(r"([а-я])\1+")


def skeleton(word: str) -> str:
    """``word`` as the lexicon sees it: lower case, ё -> е, each run of one letter collapsed to one letter."""
    return REPEATS.sub(r"\1", word.lower().replace("ё", "е"))


@dataclass(frozen=True, eq=False)  # hashed by identity: the word cache keys on it
class Lexicon:
    """Compiled patterns per category; ``category(word)`` names the first category a word falls in."""

    patterns: dict[str, re.Pattern]
    vetoes: dict[str, re.Pattern | None]

    @classmethod
    def load(cls, path: Path = LEXICON_FILE) -> "Lexicon":
        return cls.loads(Path(path).read_text(encoding="utf-8"))

    @classmethod
    def loads(cls, text: str) -> "Lexicon":
        """A lexicon from the text of a lexicon TOML file (a trained model carries the one it was trained with)."""
        spec = tomllib.loads(text)
        patterns, vetoes = {}, {}
        for name in CATEGORIES:
            section = spec.get(name, {})
            patterns[name] = re.compile("|".join(f"(?:{p})" for p in section.get("patterns", [])) or "(?!)")
            unless = section.get("unless", [])
            vetoes[name] = re.compile("|".join(f"(?:{p})" for p in unless)) if unless else None
        return cls(patterns, vetoes)

    def category(self, word: str) -> str | None:
        """The category of one word (any case, any repeats), or None when it is not in the lexicon."""
        return _category(self, skeleton(word))

    def hits(self, text: str) -> list[tuple[str, str]]:
        """(word, category) for each lexicon word of a normalised text, in order."""
        out = []
        for word in WORD.findall(text.lower()):
            found = _category(self, skeleton(word))
            if found:
                out.append((word, found))
        return out

    def counts(self, texts: list[str]) -> np.ndarray:
        """(n, len(CATEGORIES)) counts of lexicon words per category in each normalised text."""
        out = np.zeros((len(texts), len(CATEGORIES)), np.float32)
        index = {name: i for i, name in enumerate(CATEGORIES)}
        for row, text in enumerate(texts):
            for _, found in self.hits(text):
                out[row, index[found]] += 1
        return out


@lru_cache(maxsize=200_000)
def _category(lexicon: Lexicon, word: str) -> str | None:
    for name in CATEGORIES:
        if lexicon.patterns[name].search(word):
            veto = lexicon.vetoes[name]
            if veto is None or not veto.search(word):
                return name
    return None


@lru_cache(maxsize=1)
def default_lexicon() -> Lexicon:
    """The lexicon shipped with the package."""
    return Lexicon.load()
