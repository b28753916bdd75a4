"""text_stats and text_tfidf on small hand-made text."""
from __future__ import annotations

import numpy as np
import pandas as pd

from mmstack.features.text_stats import text_stats, title_words_in_description
from mmstack.features.text_tfidf import TextTfidfBlock, prepare_texts


def test_text_stats_values():
    texts = pd.Series(["ПРОДАМ!!! тел 8-912-345-67-89", "Коляска почти новая\nсм. www.site.ru", None])
    s = text_stats(texts, "t")
    assert s["t_chars"].tolist() == [len(texts[0]), len(texts[1]), 0]
    assert s["t_words"].tolist() == [3, 5, 0]
    assert s["t_exclaims"].tolist() == [3, 0, 0]
    assert s["t_has_phone"].tolist() == [1, 0, 0] and s["t_has_link"].tolist() == [0, 1, 0]
    assert s["t_lines"].tolist() == [1, 2, 0]
    assert s["t_caps_share"][0] == 6 / len(texts[0]) and np.isnan(s["t_caps_share"][2])
    assert s["t_missing"].tolist() == [0, 0, 1]


def test_title_words_in_description():
    share = title_words_in_description(pd.Series(["Коляска зимняя", "Диван"]), pd.Series(["коляска летняя", None]))
    assert share[0] == 0.5 and np.isnan(share[1])
    titles = pd.Series(["Ёлка НОВАЯ_2 x²", "café-bar 5", None, "", "a a b"])
    descriptions = pd.Series(["ёлка новая_2 и x²", "CAFÉ bar", "x", None, "b c"])
    shares = title_words_in_description(titles, descriptions)
    np.testing.assert_array_equal(shares, [1.0, 2 / 3, np.nan, np.nan, 0.5])
    np.testing.assert_array_equal(title_words_in_description(titles, descriptions, chunk=2), shares)


def test_prepare_texts_masks_and_lemmatises():
    out = prepare_texts(pd.Series(["Продаю коляски, цена 500", None]), lemmas=True)
    assert out == ["продавать коляска, цена <PRICE>", ""]


def test_tfidf_block_sparse_and_svd(tiny_avito_dir):
    from mmstack.data import avito
    from mmstack.features.base import BlockContext

    data = avito.load(tiny_avito_dir)
    ctx = BlockContext(data=data, store=None, seed=0)
    out = TextTfidfBlock({"svd_components": 5}).build(ctx)
    n = data.n_train + data.n_test
    assert out.sparse.shape == (n, len(out.sparse_names)) and out.sparse.nnz > 0
    assert any(name.endswith(":<PRICE>") for name in out.sparse_names), "placeholders are tokens"
    assert any(name.startswith("tfidf_title_c:") for name in out.sparse_names), "char n-grams of titles"
    assert out.dense.shape == (n, 15) and np.isfinite(out.dense.to_numpy()).all()
    # rows without a description have an empty description vector
    no_desc = data.all_rows()["description"].isna().to_numpy()
    desc_cols = np.array([n.startswith("tfidf_description_") for n in out.sparse_names])
    assert out.sparse[no_desc][:, desc_cols].nnz == 0
