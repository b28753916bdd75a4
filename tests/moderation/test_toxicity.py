"""The shipped toxicity model: loads offline, scores batches, sees through obfuscation, spares hard negatives;
and the training function on a tiny made-up set."""
from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmstack.errors import ConfigError, InputError
from mmstack.moderation.distort import KINDS, distort_text, fragment
from mmstack.moderation.toxicity import (MODEL_FILE, ToxicityModel, choose_threshold, load_default,
                                         read_training_data, train)

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
TOXIC = ["Ты реально дебил, тебе уже три раза объяснили", "Иди нахуй со своими советами, автор",
         "Сука, опять сервер лежит", "Какой же ты тупой, просто поразительно", "Эти пидорасы украли мои деньги",
         "Заткнись уже, урод, тебя никто не спрашивал", "Это пиздец, а не ремонт", "Вы все тут долбоебы"]
HARD_NEGATIVES = ["Скорпион заполз в палатку, еле выгнали", "Не рекомендую употреблять этот препарат",
                  "Оскорбление в комментариях карается баном", "Курс рубля опять упал", "Купил свежий хлеб",
                  "Учебник по физике почти новый", "Небо сегодня чистое", "Ткань из сукна, пошито на заказ",
                  "Мудрый совет, спасибо", "Ездили в Херсон летом", "Блин, опять забыл зонт",
                  "Роспись под хохлому, ручная работа", "Жидкое мыло закончилось", "Педиатр сказал, что всё хорошо",
                  "Сучок на доске надо зашкурить", "Страхую квартиру каждый год", "Вебинар начнётся в семь"]


@pytest.fixture(scope="module")
def model() -> ToxicityModel:
    return load_default()


def test_shipped_model_is_small_and_loads_offline(model):
    assert MODEL_FILE.stat().st_size < 2 * 1024 * 1024
    assert model.has_embeddings and 0.05 < model.threshold < 0.95
    assert model.char_coef.shape == model.idf.shape == (2 ** 18,)
    assert model.info["rows"] > 10_000 and model.info["seed"] == 0


def test_config_threshold_is_the_models(model):
    config = tomllib.loads((ROOT / "configs" / "moderation.toml").read_text(encoding="utf-8"))
    assert config["text"]["threshold"] == pytest.approx(model.threshold, abs=0.005)


@pytest.mark.parametrize("embeddings", [False, True])
def test_scores_a_batch(model, embeddings):
    texts = TOXIC + HARD_NEGATIVES + ["", None, float("nan"), "   "]
    scores = model.score(texts, embeddings=embeddings)
    assert scores.shape == (len(texts),) and scores.dtype == np.float64
    assert ((scores >= 0) & (scores <= 1)).all()
    assert (scores[-4:] == 0).all()
    assert (scores[:len(TOXIC)] >= model.threshold).all()
    assert (scores[len(TOXIC):-4] < model.threshold).all()
    # a text's score does not depend on its batch
    assert model.score([TOXIC[0]], embeddings=embeddings)[0] == pytest.approx(scores[0], abs=1e-6)


@pytest.mark.parametrize("kind", KINDS + ("mixed",))
def test_distorted_toxic_texts_stay_toxic(model, kind):
    distorted = [distort_text(t, kind, seed=s) for t in TOXIC for s in range(3)]
    assert sum(d != t for d, t in zip(distorted, np.repeat(TOXIC, 3))) >= len(distorted) // 2 or kind == "case"
    for embeddings in (False, True):
        scores = model.score(distorted, embeddings=embeddings)
        missed = [t for t, s in zip(distorted, scores) if s < model.threshold]
        assert not missed, f"{kind}: {missed}"


def test_distorted_hard_negatives_stay_clean(model):
    distorted = [distort_text(t, "mixed", seed=1, rate=0.5) for t in HARD_NEGATIVES]
    scores = model.score(distorted)
    assert (scores < model.threshold).all(), [t for t, s in zip(distorted, scores) if s >= model.threshold]


def test_hand_written_out_of_domain_comments(model):
    ood = pd.read_csv(HERE / "ood_comments.csv")
    from sklearn.metrics import f1_score, roc_auc_score

    scores = model.score(ood["text"])
    assert roc_auc_score(ood["toxic"], scores) > 0.95
    assert f1_score(ood["toxic"], scores >= model.threshold) > 0.85


def test_components_are_probabilities(model):
    parts = model.components(["ты дебил", "привет", ""], embeddings=True)
    assert set(parts) == {"lexicon", "chars", "use", "fast", "full"}
    assert parts["lexicon"].tolist() == [1.0, 0.0, 0.0]
    for values in parts.values():
        assert values.shape == (3,) and values[2] == 0 and ((values >= 0) & (values <= 1)).all()


def test_load_errors_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="no toxicity model"):
        ToxicityModel.load(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="not a toxicity model"):
        ToxicityModel.load(bad)


def _made_up_comments(n: int, seed: int) -> pd.DataFrame:
    """Toxic comments and their neutral rewrites sharing pair_id, from small word lists."""
    rng = np.random.default_rng(seed)
    subjects = ["сосед", "автор", "продавец", "водитель", "депутат", "админ", "тренер", "курьер"]
    actions = ["опять опоздал", "написал статью", "продал телефон", "поставил машину", "сказал речь",
               "удалил пост", "проиграл матч", "привез заказ"]
    insults = ["дебил", "урод", "мудак", "придурок", "идиот", "тупица"]
    swears = ["блять", "сука", "нахуй", "пиздец"]
    rows = []
    for i in range(n):
        subject, action = rng.choice(subjects), rng.choice(actions)
        neutral = f"{subject} {action}"
        if rng.random() < 0.5:
            toxic = f"{subject} {rng.choice(insults)} {action}"
        else:
            toxic = f"{rng.choice(swears)}, {subject} {action}"
        rows += [(toxic, 1, f"p{seed}-{i}"), (neutral, 0, f"p{seed}-{i}")]
    return pd.DataFrame(rows, columns=["text", "toxic", "pair_id"])


def test_training_on_a_tiny_set_beats_chance_and_is_reproducible(tmp_path):
    from sklearn.metrics import roc_auc_score

    frame = _made_up_comments(60, seed=0)
    model = train(frame, seed=3, embeddings=False, n_folds=3)
    assert not model.has_embeddings and 0.1 <= model.threshold <= 0.9
    test = _made_up_comments(30, seed=1)
    scores = model.score(test["text"])
    assert roc_auc_score(test["toxic"], scores) > 0.9
    assert ((scores >= model.threshold) == test["toxic"]).mean() > 0.8
    with pytest.raises(ConfigError, match="without embeddings"):
        model.score(["текст"], embeddings=True)
    # same data, same seed: the same model; and it survives a save/load round trip
    again = train(frame, seed=3, embeddings=False, n_folds=3)
    assert np.array_equal(again.char_coef, model.char_coef) and np.array_equal(again.meta_fast, model.meta_fast)
    model.save(tmp_path / "tiny.npz")
    loaded = ToxicityModel.load(tmp_path / "tiny.npz")
    assert np.allclose(loaded.score(test["text"]), scores, atol=1e-3)
    assert loaded.threshold == model.threshold


def test_read_training_data_checks_columns(tmp_path):
    good = tmp_path / "toxic.csv"
    good.write_text("text,toxic\nты дебил,1\nпривет,0\n", encoding="utf-8")
    frame = read_training_data(tmp_path)
    assert frame["pair_id"].nunique() == 2 and frame["toxic"].tolist() == [1, 0]
    (tmp_path / "bad.csv").write_text("text,label\nx,1\n", encoding="utf-8")
    with pytest.raises(InputError, match="column 'toxic'"):
        read_training_data(tmp_path / "bad.csv")
    (tmp_path / "bad2.csv").write_text("text,toxic\nx,1\ny,maybe\n", encoding="utf-8")
    with pytest.raises(InputError, match="column 'toxic', row 2: expected 0 or 1, got 'maybe'"):
        read_training_data(tmp_path / "bad2.csv")


def test_choose_threshold_ignores_the_dev_set_toxic_share():
    rng = np.random.default_rng(0)
    y = (rng.random(4000) < 0.4).astype(int)
    p = np.clip(y * 0.35 + rng.random(4000) * 0.65, 0, 1)
    threshold, f1 = choose_threshold([(y, p)], prior=1 / 3)
    # re-weighting the negatives to a 1/3 toxic share (fewer of them) would not move it much; a 5% share must
    high, _ = choose_threshold([(y, p)], prior=0.05)
    assert 0.1 <= threshold <= 0.9 and 0 < f1 <= 1 and high > threshold


def test_fragment_keeps_the_word_it_is_around():
    text = "раз два три четыре пять шесть семь восемь девять десять одиннадцать двенадцать"
    for seed in range(10):
        window = fragment(text, seed, around=10).split()
        assert 3 <= len(window) <= 8 and "одиннадцать" in window
