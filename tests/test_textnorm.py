"""Number masking: typed placeholders decided by the preceding word."""
from __future__ import annotations

import pytest

from mmstack.textnorm import mask_numbers, title_key

CASES = [
    ("Цена 1500 руб.", "цена <PRICE> руб."),
    ("Цена: 2 500", "цена: <PRICE>"),
    ("Стоимость - 1,5 млн", "стоимость - <PRICE> млн"),
    ("Отдам за 300", "отдам за <PRICE>"),
    ("Размер 44-46, рост 116", "размер <SIZE>, рост <SIZE>"),
    ("Размеры 120х200 см", "размеры <SIZE> см"),
    ("р. 42", "р. <SIZE>"),
    ("Тел. 8-920-195-18-16", "тел. <PHONE>"),
    ("звоните +7 (912) 345-67-89", "звоните <PHONE>"),
    ("Пробег 120000 км", "пробег <MILEAGE> км"),
    ("Площадь 45.5 м2, этаж 3/9", "площадь <AREA> м2, этаж <FLOOR>"),
    ("Куплю 3 шт", "куплю <UNK_VAL> шт"),
    ("Заказ 15 штук", "заказ <UNK_VAL> штук"),
    ("без чисел", "без чисел"),
]


@pytest.mark.parametrize("text,masked", CASES)
def test_mask_numbers(text, masked):
    assert mask_numbers(text) == masked


def test_title_key_groups_spellings_of_one_title():
    assert title_key("СРОЧНО! Коляска, 2 в 1") == title_key("срочно коляска 3 в 1 ") == "срочно коляска <UNK_VAL> в <UNK_VAL>"
    assert title_key(None) == ""
