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

Ambiguous readings are settled by the lexicon, so an ordinary word becomes a swear word only when it was
written with symbols in a way that only a swear word explains.
"""
from __future__ import annotations

import itertools
import re
import unicodedata
from functools import lru_cache
from typing import Iterable, Iterator

from .lexicon import Lexicon, default_lexicon

# Options for each non-Cyrillic character, most likely reading first (look-alike before transliteration).
LATIN = {
    "a": "а", "b": "вбь", "c": "скц", "d": "д", "e": "еэ", "f": "ф", "g": "г", "h": "нх", "i": "и", "j": "й",
    "k": "к", "l": "л", "m": "мт", "n": "пн", "o": "о", "p": "рп", "q": "к", "r": "гр", "s": "с", "t": "т",
    "u": "иу", "v": "в", "w": "шв", "x": "х", "y": "уый", "z": "з",
}
# Latin digraphs of transliteration (blyat, zhopa, chmo), tried first for all-Latin words
DIGRAPHS = (("shch", "щ"), ("sch", "щ"), ("sh", "ш"), ("ch", "ч"), ("zh", "ж"), ("kh", "х"), ("ts", "ц"),
            ("ya", "я"), ("ja", "я"), ("yu", "ю"), ("ju", "ю"), ("yo", "е"), ("jo", "е"), ("ye", "е"))
TRANSLIT = {"a": "а", "b": "б", "c": "ц", "d": "д", "e": "е", "f": "ф", "g": "г", "h": "х", "i": "и", "j": "й",
            "k": "к", "l": "л", "m": "м", "n": "н", "o": "о", "p": "п", "q": "к", "r": "р", "s": "с", "t": "т",
            "u": "у", "v": "в", "w": "в", "x": "х", "y": "ы", "z": "з"}
LEET = {"0": "о", "1": "ил", "3": "зе", "4": "ча", "6": "б", "7": "т", "8": "в", "9": "я", "@": "ая", "$": "с",
        "€": "е"}
# A run of mask symbols (х*й, бл#дь, б**дь, п***ц) hides as many letters (a run of three or more: three or
# four); the first fill that makes a lexicon word is taken, most often hidden letters first.
MASK_CHARS = "*#%&"
MASK_LETTERS = tuple("уйиеяаоюылзбхдтсркнпмь")
MASK_CLUSTERS = ("ля", "уй", "зд", "ид", "ба", "ер", "уе", "уи", "ую", "уя", "ук", "оп", "ов", "ан", "ят", "яд",
                 "ра", "ен", "ух", "ие", "ед", "ал", "изд", "еба", "уйн", "ляд", "лят", "ова", "изде", "здец")
# fills by run length: one letter; two (frequent clusters first, then any pair); three or four
MASK_FILLS = {1: MASK_LETTERS,
              2: tuple(dict.fromkeys([c for c in MASK_CLUSTERS if len(c) == 2]
                                     + [x + y for x in MASK_LETTERS for y in MASK_LETTERS])),
              3: tuple(c for c in MASK_CLUSTERS if len(c) == 4) + tuple(c for c in MASK_CLUSTERS if len(c) == 3)}
SEPARATORS = ".-_|/\\'`~"
# a word: letters, digits and mask/leet symbols, possibly cut by separators (с.у.к.а, мда...ж*па, кто-то)
WORD_CHARS = r"[^\W_]|[*#%&@$€]"
TOKEN = re.compile(rf"(?:{WORD_CHARS})+(?:[.\-_|/\\'`~]+(?:{WORD_CHARS})+)*")
SEPARATED = re.compile(r"([.\-_|/\\'`~]+)")
MASK_RUN = re.compile(r"([*#%&]+)")
CYRILLIC = re.compile(r"[а-я]")
LATIN_LETTER = re.compile(r"[a-z]")
PLAIN_WORD = re.compile(r"[а-я]+")
ZERO_WIDTH = re.compile("[\u00ad\u200b\u200c\u200d\u2060\ufeff\u0300-\u036f]")
PI = re.compile(r"3[.,]14(?=[а-яa-z*])")  # 3.14здец = пиздец
REPEAT = re.compile(r"([а-яa-z])\1{2,}")
MAX_READINGS = 1024
MAX_RUN = 12  # longest run of fragments joined into one swear word
MAX_SCAN = 24  # fragments looked at for one
ONE_LETTER_WORDS = set("аивкосуя")


def _fold(text: str) -> str:
    # NFKC folds full-width and styled letters; the combining marks it leaves (stray accents) are dropped
    text = ZERO_WIDTH.sub("", unicodedata.normalize("NFKC", text)).lower().replace("ё", "е")
    return PI.sub("пи", text)


def _slots(word: str) -> list[str | tuple[str, ...]]:
    """Options per position of a word; a run of mask symbols is one position (one letter or a cluster)."""
    slots: list[str | tuple[str, ...]] = []
    for run in MASK_RUN.split(word):
        if not run:
            continue
        if run[0] in MASK_CHARS:
            slots.append(MASK_FILLS.get(len(run)) or MASK_FILLS[3])
        else:
            slots.extend(LATIN.get(c) or LEET.get(c) or c for c in run)
    return slots


def _readings(word: str) -> Iterator[str]:
    """Candidate Cyrillic readings of a word without separators, most likely first (lazily, capped)."""
    if LATIN_LETTER.search(word) and not CYRILLIC.search(word):
        # an all-Latin word is more often transliterated (blyat, pizdec) than spelt with look-alikes (cyka)
        translit = word
        for latin, cyr in DIGRAPHS:
            translit = translit.replace(latin, cyr)
        yield "".join(TRANSLIT.get(c, c) for c in translit)
    product = itertools.product(*_slots(word))
    yield from itertools.islice(("".join(p) for p in product), MAX_READINGS)


def _known(lexicon: Lexicon, word: str) -> bool:
    return bool(PLAIN_WORD.fullmatch(word)) and lexicon.category(word) is not None


def _default_reading(word: str) -> str:
    """A word no lexicon reading explains: Cyrillic with stray Latin look-alikes or inner digits reads as
    Cyrillic (ёбaный, пр1вет); English, numbers with units (10шт) and masked words stay as written."""
    if not (CYRILLIC.search(word) and any(c in LATIN or c in LEET for c in word)):
        return word
    out = []
    for i, char in enumerate(word):
        inner = 0 < i < len(word) - 1 and word[i - 1].isalpha() and word[i + 1].isalpha()
        if char in LATIN or (char in LEET and (inner or not char.isdigit())):
            out.append((LATIN.get(char) or LEET[char])[0])
        else:
            out.append(char)
    return "".join(out)


def _read_word(word: str, lexicon: Lexicon) -> str:
    if PLAIN_WORD.fullmatch(word):
        return word
    masked = sum(c in MASK_CHARS for c in word)
    letters = sum(c.isalpha() for c in word)
    # a masked word needs a letter to anchor it and three characters in all (х**, с*ка), not "*" or "х*"
    if letters >= 1 and letters + masked >= (3 if masked else 2):
        for reading in _readings(word):
            if _known(lexicon, reading):
                return reading
    return _default_reading(word)


@lru_cache(maxsize=100_000)
def read_token(token: str, lexicon: Lexicon) -> str:
    """The reading of one token (a word, possibly cut by separators): a lexicon word if one explains it."""
    if PLAIN_WORD.fullmatch(token):
        return token
    pieces = SEPARATED.split(token)
    parts = pieces[0::2]
    # separators inside a word (с.у.к.а, х-у-й, пи.зда) are dropped when they cut it into letters or short
    # pieces; longer pieces are words of their own (кто-то, мда...ж*па)
    if len(parts) >= 2 and sum(len(p) > 2 for p in parts) <= 1:
        joined = _read_word("".join(parts), lexicon)
        # a word spelt out letter by letter (р.е.к.о.м.е.н.д.у.ю) is a word whatever it is; т.е. stays
        if _known(lexicon, joined) or (len(parts) >= 3 and all(len(p) == 1 for p in parts)):
            return joined
    return "".join(p if i % 2 else _read_word(p, lexicon) for i, p in enumerate(pieces))


def _is_fragment(word: str, known: bool) -> bool:
    return 0 < len(word) <= 3 and not known and any(ch.isalpha() for ch in word)


def _splits_a_word(left: str, right: str) -> bool:
    """Whether a join that starts or stops between these two fragments cuts a spaced word ("т е б я"): two
    single letters of which neither is a one-letter word ("и с у к а" may leave the "и" out)."""
    return len(left) == 1 and len(right) == 1 and left not in ONE_LETTER_WORDS and right not in ONE_LETTER_WORDS


def _best_join(words: list[str], gaps: list[str], known: list[bool], i: int, lexicon: Lexicon):
    """(start, end, joined) of the join of fragments starting from position ``i`` on, or None.

    The longest run of single letters is preferred, then the fewest pieces (пи зда), then (two spaced words in a
    row, "б л я т ь с у к а") the longest join of four or more letters that cuts a spaced word.
    """
    end = i
    while end < len(words) and _is_fragment(words[end], known[end]) and end - i < MAX_SCAN:
        end += 1
    letters, pieces, cutting = [], [], []
    for a in range(i, end):
        for b in range(a + 2, min(end, a + MAX_RUN) + 1):
            run = words[a:b]
            if sum(len(w) > 2 for w in run) > 1 or any(g.strip() for g in gaps[a + 1:b]):
                continue  # at most one longer piece; only spaces between the pieces
            cuts = (a > 0 and _splits_a_word(words[a - 1], run[0])) or \
                (b < len(words) and _splits_a_word(run[-1], words[b]))
            if cuts:
                cutting.append((a, b))
            else:
                (letters if all(len(w) == 1 for w in run) else pieces).append((a, b))
    order = (sorted(letters, key=lambda ab: ab[0] - ab[1]) + sorted(pieces, key=lambda ab: ab[1] - ab[0])
             + sorted(cutting, key=lambda ab: ab[0] - ab[1]))
    for a, b in order:
        joined = read_token("".join(words[a:b]), lexicon)
        if _known(lexicon, joined) and ((a, b) not in cutting or len(joined) >= 4):
            if a > i:  # a spaced word before it ("к а к о й б л я т ь") is joined first, on its own
                return _plain_join(words, gaps, i, a, lexicon) or (a, b, joined)
            return a, b, joined
    return _plain_join(words, gaps, i, len(words), lexicon)


def _plain_join(words: list[str], gaps: list[str], i: int, limit: int, lexicon: Lexicon):
    """A spaced-out word without a swear word ("р е к о м е н д у ю") is still one word: the run of single
    letters from ``i`` (before ``limit``), unless they are all one-letter words ("а я и в с ним")."""
    singles = i
    while singles < limit and len(words[singles]) == 1 and words[singles].isalpha():
        singles += 1
    run = words[i:singles]
    if len(run) >= 3 and any(w not in ONE_LETTER_WORDS for w in run) and \
            not any(g.strip() for g in gaps[i + 1:singles]):
        return i, singles, read_token("".join(run), lexicon)
    return None


def normalise(text: object, lexicon: Lexicon | None = None) -> str:
    """Canonical lower-case Cyrillic form of a comment ("" for a missing text); see the module docstring."""
    if not isinstance(text, str) or not text.strip():
        return ""
    lexicon = lexicon or default_lexicon()
    text = _fold(text)
    tokens = list(TOKEN.finditer(text))
    # gaps[k] is the text before word k; gaps[-1] the text after the last word
    gaps = [text[(tokens[k - 1].end() if k else 0):m.start()] for k, m in enumerate(tokens)]
    gaps.append(text[tokens[-1].end():] if tokens else text)
    words = [read_token(m.group(0), lexicon) for m in tokens]
    known = [_known(lexicon, w) for w in words]
    out, k = [], 0
    while k < len(words):
        join = _best_join(words, gaps, known, k, lexicon) if _is_fragment(words[k], known[k]) else None
        if join:
            a, b, joined = join
            for j in range(k, a):
                out.extend((gaps[j], words[j]))
            out.extend((gaps[a], joined))
            k = b
        else:
            out.extend((gaps[k], words[k]))
            k += 1
    out.append(gaps[-1])
    text = " ".join("".join(out).split())
    return REPEAT.sub(r"\1", text)


def normalise_many(texts: Iterable[object]) -> list[str]:
    """:func:`normalise` of each text (None/NaN -> "")."""
    lexicon = default_lexicon()
    return [normalise(t, lexicon) for t in texts]
