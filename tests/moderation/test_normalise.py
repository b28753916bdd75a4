"""Obfuscation normalisation: digits, symbols, Latin look-alikes, spaces, dots and repeats -> Cyrillic."""
from __future__ import annotations

import pytest

from mmstack.moderation.normalise import normalise, normalise_many

CASES = [
    # digits and symbols for letters
    ("п1зда", "пизда"), ("3.14здец", "пиздец"), ("бл9", "бля"), ("6ля", "бля"), ("ж0па", "жопа"),
    ("з@ебал", "заебал"), ("бл@дь", "блядь"), ("x3p", "хер"), ("4mo", "чмо"),
    # masks: one symbol per hidden letter, a long run one more
    ("х*й", "хуй"), ("с*ка", "сука"), ("п#здец", "пиздец"), ("б**дь", "блядь"), ("е**ть", "ебать"),
    ("п***ц", "пиздец"), ("ху*ня", "хуйня"), ("на х** уже", "на хуй уже"),
    # Latin look-alikes and transliteration
    ("xyй", "хуй"), ("cyka", "сука"), ("сyкa", "сука"), ("ёбaный", "ебаный"), ("мудаk", "мудак"),
    ("blyat", "блят"), ("pizdec", "пиздец"), ("suka blyat", "сука блят"), ("pidor", "пидор"),
    # separators inside a word, spaced letters
    ("с.у.к.а", "сука"), ("е.б.а.т.ь", "ебать"), ("с_у_к_а", "сука"), ("ну и х-у-й с ним", "ну и хуй с ним"),
    ("б л я", "бля"), ("б л я т ь, опять", "блять, опять"), ("ну и пи зда", "ну и пизда"),
    ("и с у к а", "и сука"), ("ноготь,с*ки боль", "ноготь,суки боль"), ("мда...ж*па.", "мда...жопа."),
    # a word spelt out without a swear word in it is still one word
    ("т е б я", "тебя"), ("с е б е", "себе"), ("р е к о м е н д у ю всем", "рекомендую всем"),
    ("у-п-о-т-р-е-б-л-я-т-ь", "употреблять"), ("к а к о й б л я т ь", "какой блять"),
    # repeats, case, ё
    ("бляяяя", "бля"), ("оооочень длинный", "очень длинный"), ("Ну ты и ДЕБИЛ!!!", "ну ты и дебил!!!"),
    ("Ёлка", "елка"),
]

UNCHANGED = [
    "скорпион употреблять оскорбление рубля", "куплю 10шт iphone-чехол за 500р", "т.е. все ок",
    "кто-то сказал", "hello world, how are you", ":-( =((( :)", "email@mail.ru", "а я и в с ним", "цена 5$",
    "***", "1 2 3 4",
]


@pytest.mark.parametrize("text,expected", CASES)
def test_obfuscations_become_canonical_cyrillic(text, expected):
    assert normalise(text) == expected


@pytest.mark.parametrize("text", UNCHANGED)
def test_ordinary_text_is_not_rewritten(text):
    assert normalise(text) == text


def test_missing_and_empty_texts_normalise_to_empty():
    assert normalise_many([None, float("nan"), "", "   ", 5]) == ["", "", "", "", ""]


def test_whitespace_is_collapsed_and_unicode_folded():
    # full-width letters, a zero-width space and a soft hyphen inside a word
    assert normalise("ｔｅｓｔ  сло\u200bво\u00adво\n\nещё") == "test словово еще"
