"""Number masking and restore: typed placeholders by the word before them, and the seller's values back."""
from __future__ import annotations

from mmstack.describe.masking import mask_attributes, mask_text, restore


def test_round_trip_restores_every_value():
    attrs = {"Название": "Куртка зимняя 2 шт", "Цена": "5000", "Размер": "44", "Год": "2019",
             "Телефон": "89161234567", "Вес": "1.5 кг", "Прочее": "арт 777"}
    masked = mask_attributes(attrs)
    assert "5000" not in masked.text and "44" not in masked.text and "2019" not in masked.text
    assert "<PRICE>" in masked.text and "<SIZE>" in masked.text and "<TITLE>" in masked.text
    assert masked.values["<PRICE>"] == ["5000"] and masked.values["<TITLE>"] == ["Куртка зимняя 2 шт"]
    assert restore(masked.text, masked.values) == "\n".join(f"{k}: {v}" for k, v in attrs.items())


def test_unknown_values_are_removed_with_their_short_sentence():
    text = "<TITLE> в отличном состоянии. Цена <PRICE> руб. Размер <SIZE>. Звоните <PHONE>."
    out = restore(text, {"<TITLE>": ["Куртка"], "<PRICE>": ["5000"]})
    assert out == "Куртка в отличном состоянии. Цена 5000 руб."
    assert "<" not in restore("Только <UNK_VAL>\nЦена <PRICE>", {"<PRICE>": ["10"]})


def test_a_value_asked_for_twice_repeats_the_last_one():
    assert restore("<PRICE> и ещё раз <PRICE>", {"<PRICE>": ["700"]}) == "700 и ещё раз 700"
    masked = mask_text("Продаю за 300, отдам за 250", None)
    assert restore(masked.text, masked.values) == "Продаю за 300, отдам за 250"
