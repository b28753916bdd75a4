"""Number masking and restore for descriptions.

Numbers become typed placeholders decided by the word before them (the kit's normaliser,
:func:`mmstack.textnorm.mask_numbers_keeping`: "Цена: 5000" -> "Цена: <PRICE>", "Размер 44" -> "Размер <SIZE>",
anything else <UNK_VAL>), and the listing's title is <TITLE>. The values taken out are kept per placeholder, in
order; after generation :func:`restore` fills each placeholder with the seller's next value of its type (the last
one again when the text asks for more) and removes the placeholders the seller gave no value for.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..textnorm import mask_numbers_keeping

TITLE = "<TITLE>"
TITLE_KEYS = ("название", "заголовок", "наименование", "title", "name")
PLACEHOLDER = re.compile(r"<[A-Z_]+>")
SENTENCE = re.compile(r"[^.!?\n]*(?:[.!?]+|\n|$)")
SHORT_SENTENCE_WORDS = 6  # a sentence this short built around a value the seller did not give is dropped whole
SHORT_LINE_WORDS = 3  # likewise a line ("Тел. <PHONE>"); a longer line loses only its sentences that need it


@dataclass
class Masked:
    """A masked text and the values taken out of it: placeholder -> values in order of appearance."""

    text: str
    values: dict[str, list[str]] = field(default_factory=dict)

    def add(self, token: str, value: str) -> None:
        self.values.setdefault(token, []).append(value)


def title_of(attributes: dict[str, str]) -> str | None:
    """The listing's title: the first attribute whose name says title (Название, Заголовок, title...)."""
    for key, value in attributes.items():
        if key.strip().lower() in TITLE_KEYS and value.strip():
            return value.strip()
    return None


def mask_text(text: str, title: str | None = None) -> Masked:
    """``text`` (case kept) with numbers as typed placeholders and ``title`` (when given and present) as <TITLE>."""
    masked = Masked("")
    if title:
        # the title first: numbers inside it ("2-к квартира") belong to it, not to the number placeholders
        pattern = re.compile(re.escape(title), re.IGNORECASE)
        parts = pattern.split(text)
        for _ in range(len(parts) - 1):
            masked.add(TITLE, title)
        text = TITLE.join(parts)
    pieces = text.split(TITLE)
    out = []
    for i, piece in enumerate(pieces):
        body, values = mask_numbers_keeping(piece, lower=False)
        out.append(body)
        for token, value in values:
            masked.add(token, value)
        if i < len(pieces) - 1:
            out.append(TITLE)
    masked.text = "".join(out)
    return masked


def mask_attributes(attributes: dict[str, str]) -> Masked:
    """The listing's attributes as ``name: value`` lines, masked; the values are what :func:`restore` fills in."""
    title = title_of(attributes)
    text = "\n".join(f"{k}: {v}" for k, v in attributes.items() if v.strip())
    return mask_text(text, title)


def restore(text: str, values: dict[str, list[str]]) -> str:
    """Fill ``text``'s placeholders with ``values`` (per type, in order; the last value again when a type is
    asked for more often than given). Placeholders without any value are removed, with the short sentence
    around them when there is one, so that "Цена <PRICE> руб." disappears rather than reading "Цена руб."."""
    used: dict[str, int] = {}

    def fill(match: re.Match) -> str:
        token = match.group(0)
        given = values.get(token)
        if not given:
            return "\x00"  # removed below
        k = used.get(token, 0)
        used[token] = k + 1
        return given[min(k, len(given) - 1)]

    filled = PLACEHOLDER.sub(fill, text)
    if "\x00" not in filled:
        return filled
    lines = []
    for line in filled.split("\n"):
        if "\x00" in line and _words(line) <= SHORT_LINE_WORDS:
            continue  # a short line about a value the seller did not give ("Тел. <PHONE>")
        lines.append("".join(_without_missing(sentence) for sentence in SENTENCE.findall(line)))
    return tidy("\n".join(lines))


def _words(text: str) -> int:
    return len(re.findall(r"\w+", text))


def _without_missing(sentence: str) -> str:
    if "\x00" not in sentence:
        return sentence
    if _words(sentence) <= SHORT_SENTENCE_WORDS:
        return ""
    return re.sub(r"\s*\x00", "", sentence)


def tidy(text: str) -> str:
    """Spaces and blank lines left by removed words and sentences."""
    text = re.sub(r"[ \t]+([,.!?:;])", r"\1", text)
    text = re.sub(r"[ \t]{2,}", " ", text)
    text = re.sub(r"\n[ \t]+", "\n", text)
    text = re.sub(r"\n{2,}", "\n", text)
    return text.strip()
