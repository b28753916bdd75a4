"""TF-IDF of title and description (word 1-2-grams, char 2-5-grams) kept sparse, plus an SVD projection."""
from __future__ import annotations

import logging
import re
from functools import lru_cache

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from tqdm import tqdm

from ..textnorm import PLACEHOLDER_TOKEN, mask_numbers
from .base import BlockContext, BlockOutput, FeatureBlock
from .registry import register

log = logging.getLogger(__name__)
WORD_TOKENS = rf"(?u){PLACEHOLDER_TOKEN}|\b\w\w+\b"
LEMMA_WORD = re.compile(r"(?<!<)\b[^\W\d_]+\b(?!>)")


@lru_cache(maxsize=1)
def _morph():
    import pymorphy3

    return pymorphy3.MorphAnalyzer()


def lemmatize(text: str, cache: dict[str, str]) -> str:
    """Replace each word by its normal form (pymorphy3), memoised per word; punctuation and placeholders stay."""
    morph = _morph()

    def normal(match: re.Match) -> str:
        word = match.group(0)
        if word not in cache:
            cache[word] = morph.parse(word)[0].normal_form
        return cache[word]

    return LEMMA_WORD.sub(normal, text)


def prepare_texts(texts: pd.Series, lemmas: bool) -> list[str]:
    """Lower-case, mask numbers into typed placeholders, optionally lemmatise; missing text becomes ''."""
    cache: dict[str, str] = {}
    unique = pd.unique(texts.fillna(""))
    prepared = {}
    for text in tqdm(unique, desc="text_tfidf: normalising", unit="text", leave=False, disable=len(unique) < 5000):
        masked = mask_numbers(text)
        prepared[text] = lemmatize(masked, cache) if lemmas else masked
    return [prepared[t] for t in texts.fillna("")]


@register
class TextTfidfBlock(FeatureBlock):
    """Sparse TF-IDF for linear models (``sparse``) and its TruncatedSVD projection for trees (``dense``).

    Vectorisers are fitted on train and test text together: unsupervised, as the Avito winners did.
    """

    name = "text_tfidf"
    rows_per_second = 6000  # measured here at the default params (README), for --time-limit
    version = "1"
    default_params = {
        "fields": ["title", "description"],
        "word_ngrams": [1, 2],
        "word_max_features": 50_000,
        "char_ngrams": [2, 5],
        "char_fields": ["title"],  # char n-grams of long descriptions cost a lot for little gain
        "char_max_features": 30_000,
        "min_df": 2,
        "lemmas": False,
        "svd_components": 20,
    }

    def build(self, ctx: BlockContext) -> BlockOutput:
        p = self.params
        rows = ctx.data.all_rows()
        mats, names, dense = [], [], {}
        for field in p["fields"]:
            texts = prepare_texts(rows[field], p["lemmas"])
            vectorizers = [("w", TfidfVectorizer(ngram_range=tuple(p["word_ngrams"]), token_pattern=WORD_TOKENS,
                                                 lowercase=False, min_df=p["min_df"],
                                                 max_features=p["word_max_features"], sublinear_tf=True,
                                                 dtype=np.float32))]
            if field in p["char_fields"]:
                vectorizers.append(("c", TfidfVectorizer(analyzer="char_wb", ngram_range=tuple(p["char_ngrams"]),
                                                         lowercase=False, min_df=p["min_df"],
                                                         max_features=p["char_max_features"], sublinear_tf=True,
                                                         dtype=np.float32)))
            for kind, vec in vectorizers:
                try:
                    mat = vec.fit_transform(texts).tocsr()
                except ValueError:  # empty vocabulary (e.g. no descriptions at all)
                    log.warning("text_tfidf: no %s vocabulary for %s", kind, field)
                    continue
                mats.append(mat)
                names += [f"tfidf_{field}_{kind}:{t}" for t in vec.get_feature_names_out()]
                k = min(p["svd_components"], mat.shape[1] - 1)
                if k >= 1:
                    svd = TruncatedSVD(n_components=k, random_state=ctx.seed)
                    proj = svd.fit_transform(mat).astype(np.float32)
                    for j in range(k):
                        dense[f"tfidf_{field}_{kind}_svd{j}"] = proj[:, j]
        sparse = sp.hstack(mats, format="csr", dtype=np.float32) if mats else None
        log.info("text_tfidf: %d sparse columns, %d SVD columns", 0 if sparse is None else sparse.shape[1], len(dense))
        return BlockOutput(dense=pd.DataFrame(dense), sparse=sparse, sparse_names=names)
