"""text_tokens and image_tokens: layouts, masks, determinism, keys."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from mmstack.features.text_tokens import PAD, SEP, UNK, TextTokensBlock, build_vocab, encode, words


def _ctx(tiny_avito_dir):
    from mmstack.data import avito
    from mmstack.features.base import BlockContext

    data = avito.load(tiny_avito_dir)
    return BlockContext(data=data, store=None, seed=0)


def test_words_mask_numbers_and_lower_case():
    assert words("Продам ДИВАН, цена 1500 руб.") == ["продам", "диван", "цена", "<PRICE>", "руб"]
    assert words(None) == [] and words("") == []


def test_encode_title_sep_description_and_cut():
    vocab = build_vocab(Counter({"a": 3, "b": 2, "c": 1}), size=10, min_count=2)
    assert vocab[3:] == ["a", "b"]
    ids = encode([["a", "c"], ["b"], []], [["b", "b", "b", "b"], [], []], vocab, title_len=1, max_len=4)
    a, b = vocab.index("a"), vocab.index("b")
    assert ids.tolist() == [[a, SEP, b, b], [b, PAD, PAD, PAD], [PAD] * 4]
    assert ids.dtype == np.int32 and UNK == 1


def test_text_tokens_block(tiny_avito_dir):
    ctx = _ctx(tiny_avito_dir)
    out = TextTokensBlock({"max_len": 24, "title_len": 8}).build(ctx)
    n = ctx.data.n_train + ctx.data.n_test
    ids, mask = out.extras["ids"], out.extras["mask"]
    assert ids.shape == (n, 24) and ids.dtype == np.int32 and mask.dtype == bool
    assert (mask == (ids != PAD)).all()
    assert (out.dense["txttok_len"].to_numpy() == mask.sum(1)).all()
    # padding only at the end of each row
    assert (np.diff(mask.astype(int), axis=1) <= 0).all()
    rows = ctx.data.all_rows()
    no_desc = rows["description"].isna().to_numpy()
    assert not (ids[no_desc] == SEP).any() and (ids[~no_desc] == SEP).any(axis=1).all()
    again = TextTokensBlock({"max_len": 24, "title_len": 8}).build(ctx)
    assert np.array_equal(again.extras["ids"], ids) and again.extras["vocab"] == out.extras["vocab"]


def test_image_tokens_block(tiny_avito_dir):
    pytest.importorskip("efficientnet_lite_pytorch")
    from mmstack.features.image_tokens import ImageTokensBlock

    ctx = _ctx(tiny_avito_dir)
    block = ImageTokensBlock({"image_size": 64, "components": 8, "pca_images": 100})
    out = block.build(ctx)
    n = ctx.data.n_train + ctx.data.n_test
    tokens, present = out.extras["tokens"], out.extras["present"]
    assert tokens.shape == (n, 4, 8) and tokens.dtype == np.float16 and present.dtype == bool
    assert (out.dense["imgtok_present"].to_numpy() == present).all()
    rows = ctx.data.all_rows()
    assert not present[rows["image"].isna().to_numpy()].any() and present.mean() > 0.8
    assert (tokens[~present] == 0).all() and np.isfinite(tokens[present].astype(np.float32)).all()
    # whitened on the PCA sample: roughly unit variance per component, and not constant
    var = tokens[present].astype(np.float32).reshape(-1, 8).var(axis=0)
    assert (var > 0.3).all() and (var < 3).all()
    again = block.build(ctx)
    assert np.array_equal(again.extras["tokens"], tokens)
    # the image set and the params are in the key
    key = block.key(ctx.data, None, {})
    assert key != ImageTokensBlock({"image_size": 64, "components": 9, "pca_images": 100}).key(ctx.data, None, {})
