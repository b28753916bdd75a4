"""Russian listing text normalisation: typed number placeholders and title keys.

Numbers are masked by the word before them (FACTS.md section 4): "цена 1500" -> "цена <PRICE>",
"размер 44-46" -> "размер <SIZE>", anything else -> <UNK_VAL>. A phone number is <PHONE> wherever it stands.
"""
from __future__ import annotations

import re

# stem of the preceding word -> placeholder (checked with startswith on the lower-cased word)
CUE_STEMS: tuple[tuple[str, str], ...] = (
    ("цен", "<PRICE>"), ("стоимост", "<PRICE>"), ("стоит", "<PRICE>"), ("отда", "<PRICE>"), ("продам", "<PRICE>"),
    ("руб", "<PRICE>"),
    ("размер", "<SIZE>"), ("рост", "<SIZE>"), ("р-р", "<SIZE>"),
    ("тел", "<PHONE>"), ("звон", "<PHONE>"),
    ("пробег", "<MILEAGE>"), ("год", "<YEAR>"), ("возраст", "<AGE>"), ("вес", "<WEIGHT>"),
    ("площад", "<AREA>"), ("этаж", "<FLOOR>"),
)
# short words matched whole (as stems they would catch too much: "за" vs "заказ")
CUE_WORDS = {"за": "<PRICE>", "р": "<SIZE>"}
PHONE = re.compile(r"(?<!\w)(?:\+7|8)[\s\-(]*9\d{2}[\s\-)]*\d{3}[\s\-]*\d{2}[\s\-]*\d{2}(?!\w)")
# a number: "1500", "2 500" (thousands), "1,5", "44-46", "120х200"
NUMBER = re.compile(r"(?<![\w<])(?:\d{1,3}(?:[ \u00a0]\d{3})+(?!\d)|\d+(?:[.,]\d+)?)(?:\s?[-–хx×/]\s?\d+(?:[.,]\d+)?)*")
WORD_BEFORE = re.compile(r"([^\W\d]+(?:-[^\W\d]+)?)[\s.:=-]*$")
PLACEHOLDER_TOKEN = r"<[A-Z_]+>"


def _placeholder(before: str) -> str:
    cue = WORD_BEFORE.search(before[-40:])
    if not cue:
        return "<UNK_VAL>"
    word = cue.group(1)
    if word in CUE_WORDS:
        return CUE_WORDS[word]
    for stem, token in CUE_STEMS:
        if word.startswith(stem):
            return token
    return "<UNK_VAL>"


def mask_numbers(text: str) -> str:
    """Lower-case ``text`` and replace each number by a placeholder typed by the word before it."""
    return mask_numbers_keeping(text)[0]


def mask_numbers_keeping(text: str, lower: bool = True) -> tuple[str, list[tuple[str, str]]]:
    """:func:`mask_numbers` and the values it took out: ``(masked text, [(placeholder, value as written)])`` in
    the order the placeholders stand in the masked text. ``lower=False`` keeps the text's case (the placeholder
    types are decided on the lower-cased text either way), so that a masked text can be filled back."""
    low = text.lower()
    if lower:
        text = low
    # phones first, wherever they stand; the numbers are then read on the text with phones masked
    phones = [(m.start(), m.end(), m.group(0)) for m in PHONE.finditer(low)]
    masked_low, masked = _splice(low, phones, "<PHONE>"), _splice(text, phones, "<PHONE>")
    found, shift = [], 0  # (position in the phone-masked text, placeholder, value)
    for start, end, _ in phones:
        found.append((start + shift, "<PHONE>", text[start:end]))
        shift += len("<PHONE>") - (end - start)
    out, last = [], 0
    for match in NUMBER.finditer(masked_low):
        token = _placeholder(masked_low[:match.start()])
        out += [masked[last:match.start()], token]
        found.append((match.start(), token, masked[match.start():match.end()]))
        last = match.end()
    out.append(masked[last:])
    return "".join(out), [(token, value) for _, token, value in sorted(found)]


def _splice(text: str, spans: list[tuple[int, int, str]], token: str) -> str:
    out, last = [], 0
    for start, end, _ in spans:
        out += [text[last:start], token]
        last = end
    return "".join(out + [text[last:]])


def title_key(title: str | None) -> str:
    """Normalised title for grouping: lower case, numbers masked, punctuation and extra spaces removed."""
    if not isinstance(title, str):
        return ""
    text = re.sub(r"[^\w<>]+", " ", mask_numbers(title))
    return " ".join(text.split())
