"""Undo the obfuscations of Russian comments before scoring: canonical lower-case Cyrillic text.

Real comments hide swear words: digits and symbols for letters (п1зда, х*й, 3.14здец, бл9), Latin look-alikes
or transliteration (xyй, cyka, blyat, ёбaный with a Latin a), separators inside a word (с.у.к.а, х-у-й),
spaced letters (б л я), repeated letters (бляяяя). :func:`normalise` maps them back:

* Unicode is NFKC-folded, lower-cased, ё is written е, zero-width characters are dropped;
* a word that is not plain Cyrillic gets candidate readings (per character: look-alike, transliteration, leet
  digit, masked letter) and takes the first that the lexicon knows; with no such reading, a Cyrillic word with
  stray Latin letters or inner digits takes the look-alike reading, anything else (English, numbers, 10шт)
  stays as written;
* runs of short fragments ("б л я", "пи зда") are joined when, and only when, the joined word is in the lexicon;
* a letter repeated three or more times is written once ("бляяяя" -> "бля", "оооочень" -> "очень").

Because ambiguous readings are settled by the lexicon, ordinary words are never rewritten into swear words
unless they were written with look-alike symbols in a way that only a swear word explains.
"""
from __future__ import annotations

import itertools
import re
import unicodedata
from functools import lru_cache

from .lexicon import Lexicon, default_lexicon

# Options for each non-Cyrillic character, most likely reading first (look-alike before transliteration).
LATIN = {
    "a": "а", "b": "вбь", "c": "скц", "d": "д", "e": "еэ", "f": "ф", "g": "г", "h": "нх", "i": "и", "j": "й",
    "k": "к", "l": "л", "m": "мт", "n": "пн", "o": "о", "p": "рп", "q": "к", "r": "гр", "s": "с", "t": "т",
    "u": "иу", "v": "в", "w": "шв", "x": "х", "y": "уый", "z": "з",
}
# Latin digraphs of transliteration (blyat, zhopa, chmo); tried as a second reading of all-Latin words
DIGRAPHS = (("shch", "щ"), ("sch", "щ"), ("sh", "ш"), ("ch", "ч"), ("zh", "ж"), ("kh", "х"), ("ts", "ц"),
            ("ya", "я"), ("ja", "я"), ("yu", "ю"), ("ju", "ю"), ("yo", "е"), ("jo", "е"), ("ye", "е"))
TRANSLIT = {"a": "а", "b": "б", "c": "ц", "d": "д", "e": "е", "f": "ф", "g": "г", "h": "х", "i": "и", "j": "й",
            "k": "к", "l": "л", "m": "м", "n": "н", "o": "о", "p": "п", "q": "к", "r": "р", "s": "с", "t": "т",
            "u": "у", "v": "в", "w": "в", "x": "х", "y": "ы", "z": "з"}
LEET = {"0": "о", "1": "ил", "3": "зе", "4": "ча", "6": "б", "7": "т", "8": "в", "9": "я", "@": "а", "$": "с",
        "€": "е"}
# a run of mask symbols (х*й, бл#дь, б**дь, п***ц) stands for one of these letters or clusters; the first that
# makes a lexicon word is taken (most frequent hidden letters first)
MASK_CHARS = "*#%@$!?&_"
MASK_LETTERS = tuple("уйиеяаоюылзбхдтсркнпмь")
MASK_CLUSTERS = ("ля", "уй", "зд", "изд", "изде", "ид", "ба", "еба", "ер", "уе", "уи", "ую", "уя", "ук", "оп",
                 "ов", "ан", "уйн", "ляд", "лят", "ят", "яд", "ра", "ен", "ух", "ие", "ед", "ал", "ова")
SEPARATORS = ".-_|/\\'`~"
CYRILLIC = re.compile(r"[а-я]")
LATIN_LETTER = re.compile(r"[a-z]")
PLAIN_WORD = re.compile(r"[а-я]+(?:-[а-я]+)*")
ZERO_WIDTH = re.compile("[\u00ad\u200b\u200c\u200d\u2060\ufeff\u0300-\u036f]")
PI = re.compile(r"3[.,]14(?=[а-яa-z*])")  # 3.14здец = пиздец
REPEAT = re.compile(r"([а-яa-z])\1{2,}")
# a word's core: from its first to its last letter or digit, with symbols inside
CORE = re.compile(r"^(\W*?)([\w*#%@$€|][\w*#%@$€|.\-_/\\'`~,+!?&]*[\w*#%@$€|]|[\w*#%@$€|])(\W*)$")
MASK_RUN = re.compile(r"([*#%@$!?&_]+)")
SEPARATED = re.compile(r"([.\-_|/\\'`~]+)")
MAX_READINGS = 256
MAX_RUN = 8  # longest run of fragments joined into one word


def _fold(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    # NFKC keeps й and ё composed; strip only stray combining marks left after it
    text = ZERO_WIDTH.sub("", text).lower().replace("ё", "е")
    return PI.sub("пи", text)


def _options(char: str) -> str:
    """Readings of one character: itself for Cyrillic and unknown symbols."""
    return LATIN.get(char) or LEET.get(char) or char


def _slots(base: str) -> list[str | tuple[str, ...]]:
    """Options per position; a run of mask symbols is one position (one letter or a cluster)."""
    slots: list[str | tuple[str, ...]] = []
    for run in MASK_RUN.split(base):
        if not run:
            continue
        if run[0] in MASK_CHARS:
            leet = (LEET[run],) if run in LEET else ()  # a lone @ or $ is usually a letter (з@ебал)
            # a run of k symbols hides at most k + 1 letters (х*й, б**дь, п***ц)
            fills = MASK_LETTERS + MASK_CLUSTERS if len(run) == 1 else MASK_CLUSTERS + MASK_LETTERS
            slots.append(leet + tuple(f for f in fills if len(f) <= len(run) + 1))
        else:
            slots.extend(_options(char) for char in run)
    return slots


def _readings(core: str) -> "itertools.chain[str]":
    """Candidate Cyrillic readings of one word core, most likely first (lazily, capped)."""
    bases = [core]
    # separators inside a word (с.у.к.а, х-у-й, пи.зда) are dropped when they cut it into letters or short
    # pieces; two longer pieces are two words (кто-то, слово.слово)
    parts = [p for p in SEPARATED.split(core) if p and p[0] not in SEPARATORS]
    if len(parts) >= 2 and sum(len(p) > 2 for p in parts) <= 1:
        bases.append("".join(parts))
    streams = []
    for base in bases:
        if LATIN_LETTER.search(base) and not CYRILLIC.search(base):
            # an all-Latin word is more often transliterated (blyat, pizdec) than spelt with look-alikes (cyka)
            translit = base
            for latin, cyr in DIGRAPHS:
                translit = translit.replace(latin, cyr)
            streams.append(iter(["".join(TRANSLIT.get(c, c) for c in translit)]))
        product = itertools.product(*_slots(base))
        streams.append(itertools.islice(("".join(p) for p in product), MAX_READINGS))
    return itertools.chain(*streams)


def _known(lexicon: Lexicon, word: str) -> bool:
    return bool(PLAIN_WORD.fullmatch(word)) and lexicon.category(word) is not None


@lru_cache(maxsize=100_000)
def _deobfuscate(core: str, lexicon: Lexicon) -> str:
    """The reading of a non-Cyrillic word core: a lexicon word if one explains it, else a safe default."""
    if PLAIN_WORD.fullmatch(core) and "-" not in core:
        return core
    masked = sum(c in MASK_CHARS for c in core)
    letters = sum(c.isalpha() for c in core)
    # a masked word needs a letter to anchor it and three characters in all (х**, с*ка), not "*" or "х*"
    if letters >= 1 and letters + masked >= (3 if masked else 2):
        for reading in _readings(core):
            if _known(lexicon, reading):
                return reading
    # default: a part with Cyrillic and Latin look-alikes or inner digits reads as Cyrillic; a Latin part
    # (iphone-чехол), a number with its unit (10шт) and a masked part stay as written
    return "".join(_default_reading(part) for part in SEPARATED.split(core))


def _default_reading(part: str) -> str:
    if not (CYRILLIC.search(part) and (LATIN_LETTER.search(part) or any(c.isdigit() for c in part))):
        return part
    out = []
    for i, char in enumerate(part):
        inner = 0 < i < len(part) - 1 and part[i - 1].isalpha() and part[i + 1].isalpha()
        if char in LATIN or (char.isdigit() and char in LEET and inner):
            out.append((LATIN.get(char) or LEET[char])[0])
        else:
            out.append(char)
    return "".join(out)


def _split(token: str) -> tuple[str, str, str]:
    match = CORE.match(token)
    if not match:
        return token, "", ""
    return match.group(1), match.group(2), match.group(3)


def _join_fragments(words: list[list[str]], lexicon: Lexicon) -> list[list[str]]:
    """Join runs of short fragments ("б л я", "пи зда", "х у й") whose join is a lexicon word."""
    out, i = [], 0
    while i < len(words):
        best = None
        if 0 < len(words[i][1]) <= 3:
            run_end = i
            while run_end < len(words) and 0 < len(words[run_end][1]) <= 3 and run_end - i < MAX_RUN:
                run_end += 1
            for j in range(run_end, i + 1, -1):  # longest join first, at least two fragments
                cores = [w[1] for w in words[i:j]]
                if sum(len(c) > 2 for c in cores) > 1 or any(w[3] for w in words[i:j]):
                    continue
                if not all(any(ch.isalpha() for ch in c) for c in cores):  # "_" or "*" alone is no fragment
                    continue
                # punctuation may only stand before the first fragment and after the last
                if any(w[2].strip(SEPARATORS) for w in words[i:j - 1]) or \
                        any(w[0].strip(SEPARATORS) for w in words[i + 1:j]):
                    continue
                joined = _deobfuscate("".join(cores), lexicon)
                if _known(lexicon, joined):
                    best = (j, [words[i][0], joined, words[j - 1][2], True])
                    break
        if best:
            out.append(best[1])
            i = best[0]
        else:
            out.append(words[i])
            i += 1
    return out


def normalise(text: object, lexicon: Lexicon | None = None) -> str:
    """Canonical lower-case Cyrillic form of a comment ("" for a missing text); see the module docstring."""
    if not isinstance(text, str) or not text.strip():
        return ""
    lexicon = lexicon or default_lexicon()
    words = []
    for token in _fold(text).split():
        lead, core, trail = _split(token)
        reading = _deobfuscate(core, lexicon) if core else ""
        # the fourth field: the word is a lexicon word already (never merged with its neighbours)
        words.append([lead, reading, trail, bool(reading) and _known(lexicon, reading)])
    words = _join_fragments(words, lexicon)
    text = " ".join(f"{lead}{core}{trail}" for lead, core, trail, _ in words)
    return REPEAT.sub(r"\1", text)


def normalise_many(texts) -> list[str]:
    """:func:`normalise` of each text (None/NaN -> "")."""
    lexicon = default_lexicon()
    return [normalise(t, lexicon) for t in texts]
