"""The lexicon: roots of obscene, insulting and hateful words match in any form; innocent look-alikes do not."""
from __future__ import annotations

import pytest

from mmstack.moderation.lexicon import CATEGORIES, Lexicon, default_lexicon, skeleton

MATCH = {
    "obscene": ["хуй", "нахуй", "охуеть", "нихуя", "пиздец", "спиздил", "ебать", "заебал", "уебок", "долбоеб",
                "выебываться", "блядь", "бля", "выблядок", "сука", "ссука", "сучка", "мудак", "пидор",
                "пидорасы", "брипидор", "гондон", "шлюха", "жопа", "хохложопый", "говно", "херня", "обосрался"],
    "insult": ["дебил", "идиоты", "тупой", "дура", "лох", "чмо", "быдло", "урод", "уроды", "ублюдок", "мразь",
               "тварь", "придурок", "дегенерат", "нищеброд"],
    "slur": ["хохлы", "хохол", "жиды", "чурка", "хачи", "пиндосы", "ватники", "москали", "нигеры"],
    "rude": ["хрен", "заткнись", "сдохни", "козлы", "рожа", "трахать"],
}
INNOCENT = ["страхуй", "плохую", "тихую", "психуй", "рубля", "корабля", "употреблять", "истреблять", "бляха",
            "небо", "хлеб", "учебник", "себе", "тебя", "ребенок", "вебинар", "сукно", "сучок", "барсука",
            "мудрый", "гондола", "херсон", "херувим", "трахея", "хохлома", "нахохлился", "жидкий", "жидкость",
            "нигерия", "хачапури", "скорпион", "оскорбление", "тупик", "лохматый", "чмок", "урожай",
            "уродился", "недоумение", "скипидар", "межоперационный", "дегенеративный", "автогидроочистка",
            "мандарин", "мандат", "педиатр", "педикюр", "блин", "фиг", "капец", "пипец"]


@pytest.mark.parametrize("category,word", [(c, w) for c, words in MATCH.items() for w in words])
def test_roots_match_in_their_category(category, word):
    assert default_lexicon().category(word) == category


@pytest.mark.parametrize("word", INNOCENT)
def test_innocent_words_do_not_match(word):
    assert default_lexicon().category(word) is None


def test_skeleton_and_counts():
    assert skeleton("СССУУУКА") == "сука" and skeleton("ёбаный") == "ебаный"
    counts = default_lexicon().counts(["ты дебил и мудак, хрен", "скорпион", ""])
    assert counts.shape == (3, len(CATEGORIES))
    assert counts[0].tolist() == [1, 1, 0, 1] and counts[1:].sum() == 0


def test_unless_vetoes_a_match_and_lexicon_loads_from_text():
    lexicon = Lexicon.loads('[insult]\npatterns = ["^дур"]\nunless = ["^дуршлаг"]\n')
    assert lexicon.category("дурак") == "insult" and lexicon.category("дуршлаг") is None
