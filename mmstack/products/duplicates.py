"""Duplicate listings: which rows of a pool are the same product (Shopee's matching task).

Within a pool of listings, candidate pairs come from three sources: the ``k`` nearest neighbours of the product
embedding in an approximate nearest-neighbour index (:mod:`mmstack.ann`), the ``k`` nearest titles by TF-IDF
cosine (word and character n-grams), and images whose 64-bit perceptual hashes are within ``max_hamming`` bits.
Each candidate pair gets similarity features (cosines, ranks both ways, the gap to each side's best neighbour,
hash distance, agreement of the numbers in the titles, shared neighbours, cosines after query expansion, the
cosine of the titles' pretrained sentence vectors and its gap to each side's best candidate), and a
small pair classifier (LightGBM) learned on labelled groups scores it. A listing's matches are itself plus the
candidates whose score clears a threshold, most similar first; a listing left alone keeps its best candidate
when that clears a lower floor, and a listing may also take the near-certain matches of its near-certain matches
(a closure level; all three tuned on held-out labelled pools).

Evaluation (:func:`cross_validate`) is GroupKFold by group over the labelled rows: each validation fold is a pool
searched on its own, its classifier is learned on the pools of the other folds and its threshold on some of them
held out (nested), so no figure reads the groups it scores. Figures: the Shopee score (mean over listings of the
F1 between predicted and true match sets, the listing itself included) and recall@k (over listings with at least
one other true match, the share of those matches among its ``k`` best-ranked candidates). The score falls as the
pool grows, so compare only at equal pool sizes.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..ann import NeighbourIndex

log = logging.getLogger(__name__)

NO_HASH_DISTANCE = 64
NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
# The second stage runs when the labelled pools hold at least ``rescore_min_pool`` listings on average: on Shopee's
# pools of about 3,450 it added 0.004 to the score (5 of 5 folds) for 2.1x the CV time; on small pools the graph
# has little to add and the embedded default's time is short (0: always, a huge number: never).
DEFAULTS = {"candidates": 30, "max_hamming": 8, "method": "pairs", "n_folds": 5, "seed": 42, "recall_k": 10,
            "title_metric": True, "metric_components": 768, "metric_shrink": 0.5, "metric_dim": 384,
            "rescore_min_pool": 1000, "title_encoders": ["use", "e5"], "tune_pools": 2,
            "closure": True}
TITLE_ENCODERS = ("use", "e5")  # pretrained sentence encoders that ship their weights (FACTS.md section 5)
FEATURES = ["emb_cos", "emb_rank", "emb_rank_back", "emb_gap", "emb_gap_back", "word_cos", "word_rank",
            "word_rank_back", "word_gap", "word_gap_back", "char_cos", "hamming", "both_images", "numbers_same",
            "numbers_jaccard", "len_ratio", "shared_neighbours", "emb_qe_cos", "word_qe_cos"]
# pair features of each title sentence encoder's vectors (:func:`title_vectors`), named "<encoder>_<feature>"
SENTENCE_FEATURES = ["cos", "gap", "gap_back"]
# pair features of the supervised title metric (:mod:`mmstack.products.title_metric`), when it is used
METRIC_FEATURES = ["lrn_cos", "lrn_rank", "lrn_rank_back", "lrn_gap", "lrn_gap_back", "lrn_qe_cos"]
# pair features of the second stage (:func:`rescored`): the first stage's scores seen over the whole pool
GRAPH_FEATURES = ["g_score", "g_rank", "g_rank_back", "g_gap", "g_gap_back", "g_strong", "g_strong_back",
                  "g_two_hop", "g_two_hop_strong", "g_two_hop_cos"]
STRONG = 0.5  # a first-stage score from which a pair counts as a likely match in the graph features
EXPAND, SHARED_K = 2, 10
NEGATIVES_PER_POSITIVE = 6  # neighbours added in query expansion; neighbour-list length for shared neighbours


@dataclass
class DuplicateInputs:
    """Per row of a catalogue: unit embedding rows, titles, and each product's image hashes (int64 arrays)."""

    embedding: np.ndarray
    titles: list[str]
    phash: list[np.ndarray]
    word: sp.csr_matrix | None = None  # unit-row TF-IDF of titles, filled by :meth:`fit_text`
    char: sp.csr_matrix | None = None
    numbers: list[frozenset] = field(default_factory=list)
    metric_features: np.ndarray | None = None  # label-free inputs of the supervised title metric
    sentences: dict[str, np.ndarray] = field(default_factory=dict)  # unit title vectors per sentence encoder

    def fit_metric_features(self, components: int, seed: int) -> "DuplicateInputs":
        """Compute the title metric's features (title TF-IDF SVD next to the embedding and the title sentence
        vectors; no labels involved)."""
        from .title_metric import title_features

        dense = np.hstack([np.asarray(self.embedding, np.float32), *self.sentences.values()])
        self.metric_features = title_features(self.titles, dense, components, seed)
        return self

    def embed_titles(self, encoders: list[str], num_threads: int | None = None) -> "DuplicateInputs":
        """Fill :attr:`sentences` with each encoder's unit title vectors (see :func:`title_vectors`)."""
        self.sentences = title_vectors(self.titles, encoders, num_threads)
        return self

    def fit_text(self) -> "DuplicateInputs":
        """Fit the title TF-IDF vectorisers on every row's title (no labels involved)."""
        from sklearn.feature_extraction.text import TfidfVectorizer

        titles = [t.lower() if isinstance(t, str) else "" for t in self.titles]
        self.word = _unit_rows(_fit_or_empty(TfidfVectorizer(token_pattern=r"(?u)\b\w+\b", sublinear_tf=True,
                                                             dtype=np.float32), titles))
        self.char = _unit_rows(_fit_or_empty(TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 4), min_df=2,
                                                             sublinear_tf=True, dtype=np.float32), titles))
        self.numbers = [frozenset(NUMBER.findall(t)) for t in titles]
        return self


def _fit_or_empty(vectorizer, texts: list[str]) -> sp.csr_matrix:
    try:
        return vectorizer.fit_transform(texts).tocsr()
    except ValueError:  # no vocabulary at all
        return sp.csr_matrix((len(texts), 1), dtype=np.float32)


def _unit_rows(mat: sp.csr_matrix) -> sp.csr_matrix:
    norms = np.sqrt(np.asarray(mat.multiply(mat).sum(axis=1)).ravel())
    return sp.diags(np.where(norms > 0, 1.0 / np.maximum(norms, 1e-12), 0.0)) @ mat


def title_vectors(titles: list[str], encoders: list[str], num_threads: int | None = None) -> dict[str, np.ndarray]:
    """Unit sentence vectors of the titles (float32 rows; a missing title is a zero row) per encoder name of
    :data:`TITLE_ENCODERS`. Pretrained and label-free: on Shopee's titles the USE and e5 cosines (pair features
    and title-metric inputs) lifted the one-stage CV score from 0.861 to 0.867."""
    from ..errors import ConfigError
    from ..features.text_embed import embed_texts, make_encoder
    from ..projection import unit_rows
    from .fusion import title_lines

    unknown = [name for name in encoders if name not in TITLE_ENCODERS]
    if unknown:
        raise ConfigError(f"duplicates.title_encoders: unknown encoder(s) {unknown}; known: {list(TITLE_ENCODERS)}")
    clean = title_lines(titles)
    return {name: unit_rows(np.nan_to_num(embed_texts(make_encoder(name, num_threads=num_threads), clean,
                                                      desc=f"duplicates: {name} title vectors"))).astype(np.float32)
            for name in encoders}


# -- candidates ----------------------------------------------------------------------------------------------
def _sparse_top(mat: sp.csr_matrix, k: int, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` cosine neighbours (self excluded) of each row among the rows of a unit-row sparse matrix."""
    n = mat.shape[0]
    k = min(k, n - 1)
    ids = np.zeros((n, k), np.int64)
    sims = np.zeros((n, k), np.float32)
    if k <= 0:
        return sims, ids
    T = mat.T.tocsr()
    for s in range(0, n, chunk):
        block = (mat[s:s + chunk] @ T).toarray()
        block[np.arange(len(block)), np.arange(s, s + len(block))] = -1.0
        part = np.argpartition(-block, k - 1, axis=1)[:, :k]
        vals = np.take_along_axis(block, part, 1)
        order = np.argsort(-vals, axis=1, kind="stable")
        ids[s:s + chunk] = np.take_along_axis(part, order, 1)
        sims[s:s + chunk] = np.take_along_axis(vals, order, 1)
    return sims, ids


def _dense_top(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` inner-product neighbours (self excluded) of each row, from the ANN index."""
    n = len(x)
    k = min(k, n - 1)
    if k <= 0:
        return np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64)
    sims, ids = NeighbourIndex(x).search(x, k + 1)
    out_ids, out_sims = np.zeros((n, k), np.int64), np.zeros((n, k), np.float32)
    for i in range(n):  # drop self (usually first; exact ties may put it elsewhere)
        keep = ids[i] != i
        row_ids, row_sims = ids[i][keep][:k], sims[i][keep][:k]
        out_ids[i, :len(row_ids)], out_sims[i, :len(row_ids)] = row_ids, row_sims
    return out_sims, out_ids


def _hash_pairs(phash: list[np.ndarray], max_hamming: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of rows (i != j, both ways) with any two images within ``max_hamming`` bits."""
    owner = np.concatenate([np.full(len(h), i) for i, h in enumerate(phash)]) if phash else np.zeros(0, int)
    hashes = np.concatenate([np.asarray(h, np.int64) for h in phash]) if phash else np.zeros(0, np.int64)
    keep = hashes != 0
    owner, hashes = owner[keep], hashes[keep].view(np.uint64)
    pairs_i, pairs_j = [], []
    for s in range(0, len(hashes), 2048):
        dist = np.bitwise_count(hashes[s:s + 2048, None] ^ hashes[None, :])
        a, b = np.nonzero(dist <= max_hamming)
        a = owner[s + a]
        b = owner[b]
        other = a != b
        pairs_i.append(a[other])
        pairs_j.append(b[other])
    if not pairs_i:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(pairs_i).astype(np.int64), np.concatenate(pairs_j).astype(np.int64)


def _min_hamming(phash: list[np.ndarray], i: np.ndarray, j: np.ndarray) -> np.ndarray:
    out = np.full(len(i), NO_HASH_DISTANCE, np.float32)
    for p, (a, b) in enumerate(zip(i, j)):
        ha, hb = phash[a], phash[b]
        if len(ha) and len(hb):
            out[p] = np.bitwise_count(ha.view(np.uint64)[:, None] ^ hb.view(np.uint64)[None, :]).min()
    return out


def _rank_lookup(ids: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted pair keys i * n + j of a neighbour table and the rank of each."""
    k = ids.shape[1]
    keys = (np.repeat(np.arange(len(ids)), k) * n + ids.ravel())
    ranks = np.tile(np.arange(k), len(ids))
    order = np.argsort(keys, kind="stable")
    return keys[order], ranks[order]


def _ranks(table: tuple[np.ndarray, np.ndarray], i: np.ndarray, j: np.ndarray, n: int, missing: int) -> np.ndarray:
    keys, ranks = table
    q = i * n + j
    pos = np.clip(np.searchsorted(keys, q), 0, max(0, len(keys) - 1))
    found = (len(keys) > 0) & (keys[pos] == q) if len(keys) else np.zeros(len(q), bool)
    return np.where(found, ranks[pos] if len(keys) else 0, missing).astype(np.float32)


def _neighbour_matrix(ids: np.ndarray, sims: np.ndarray, n: int, m: int, self_weight: float | None) -> sp.csr_matrix:
    """Sparse n x n matrix of each row's first ``m`` neighbours (their similarity as weight, or 1 when
    ``self_weight`` is None) plus the row itself with ``self_weight``."""
    m = min(m, ids.shape[1])
    r = np.repeat(np.arange(n), m)
    c = ids[:, :m].ravel()
    w = np.clip(sims[:, :m].ravel(), 0, None) if self_weight is not None else np.ones(len(c), np.float32)
    mat = sp.csr_matrix((w, (r, c)), shape=(n, n), dtype=np.float32)
    if self_weight is not None:
        mat = mat + sp.identity(n, dtype=np.float32, format="csr") * self_weight
    return mat


def _expanded_cos(x, table: tuple[np.ndarray, np.ndarray], i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Cosine of pair rows after query expansion: each row plus its best :data:`EXPAND` neighbours weighted by
    similarity (a listing borrows the words of its nearest listings, so reworded titles meet)."""
    sims, ids = table
    n = x.shape[0]
    if ids.shape[1] == 0:
        return np.zeros(len(i), np.float32)
    expanded = _neighbour_matrix(ids, sims, n, EXPAND, 1.0) @ x
    if sp.issparse(expanded):
        expanded = _unit_rows(sp.csr_matrix(expanded))
        return np.asarray(expanded[i].multiply(expanded[j]).sum(axis=1)).ravel()
    expanded = expanded / np.maximum(np.linalg.norm(expanded, axis=1, keepdims=True), 1e-12)
    return np.einsum("ij,ij->i", expanded[i], expanded[j])


@dataclass
class Candidates:
    """Directed candidate pairs (pool positions) with their features."""

    i: np.ndarray
    j: np.ndarray
    features: pd.DataFrame


def _neighbour_features(feats: dict, name: str, cos: np.ndarray, ids: np.ndarray, sims: np.ndarray,
                        i: np.ndarray, j: np.ndarray, n: int, k: int) -> None:
    """One source's pair features: the pair's cosine, each side's rank of the other among its neighbours, and
    how far the pair falls short of each side's best neighbour."""
    table = _rank_lookup(ids, n)
    best = sims[:, 0] if sims.shape[1] else np.zeros(n, np.float32)
    feats[f"{name}_cos"] = cos
    feats[f"{name}_rank"] = _ranks(table, i, j, n, k)
    feats[f"{name}_rank_back"] = _ranks(table, j, i, n, k)
    feats[f"{name}_gap"] = best[i] - cos
    feats[f"{name}_gap_back"] = best[j] - cos


def _gaps_to_best(i: np.ndarray, j: np.ndarray, values: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """How far each pair's ``values`` fall short of the best over each side's own candidate pairs, both ways."""
    best = np.full(n, -np.inf, np.float32)
    np.maximum.at(best, i, values.astype(np.float32))
    return best[i] - values, best[j] - values


def candidates(inputs: DuplicateInputs, pool: np.ndarray, params: dict[str, Any],
               learned: np.ndarray | None = None) -> Candidates:
    """Candidate pairs among the rows ``pool`` (row ids), both directions, with :data:`FEATURES` (and
    :data:`SENTENCE_FEATURES` per title sentence encoder of ``inputs``); with ``learned`` (the pool's rows
    embedded by a title metric fitted on other pools' groups) also its ``k`` nearest neighbours and
    :data:`METRIC_FEATURES`."""
    k = params["candidates"]
    n = len(pool)
    emb = np.ascontiguousarray(inputs.embedding[pool], np.float32)
    word, char = inputs.word[pool], inputs.char[pool]
    phash = [inputs.phash[r] for r in pool]
    e_sims, e_ids = _dense_top(emb, k)
    w_sims, w_ids = _sparse_top(word, k)
    h_i, h_j = _hash_pairs(phash, params["max_hamming"])
    l_sims, l_ids = _dense_top(np.ascontiguousarray(learned, np.float32), k) if learned is not None else (
        np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64))
    i = np.concatenate([np.repeat(np.arange(n), e_ids.shape[1]), np.repeat(np.arange(n), w_ids.shape[1]),
                        np.repeat(np.arange(n), l_ids.shape[1]), h_i])
    j = np.concatenate([e_ids.ravel(), w_ids.ravel(), l_ids.ravel(), h_j])
    # both directions: a pair found from either side is scored from both
    keys = np.unique(np.concatenate([i * n + j, j * n + i]))
    i, j = keys // n, keys % n
    feats = {}
    _neighbour_features(feats, "emb", np.einsum("ij,ij->i", emb[i], emb[j]), e_ids, e_sims, i, j, n, k)
    _neighbour_features(feats, "word", np.asarray(word[i].multiply(word[j]).sum(axis=1)).ravel(), w_ids, w_sims,
                        i, j, n, k)
    feats["char_cos"] = np.asarray(char[i].multiply(char[j]).sum(axis=1)).ravel()
    feats["hamming"] = _min_hamming(phash, i, j)
    has = np.array([len(h) > 0 for h in phash])
    feats["both_images"] = (has[i] & has[j]).astype(np.float32)
    numbers = [inputs.numbers[r] for r in pool] if inputs.numbers else [frozenset()] * n
    same, jac = np.zeros(len(i), np.float32), np.zeros(len(i), np.float32)
    for p, (a, b) in enumerate(zip(i, j)):
        na, nb = numbers[a], numbers[b]
        if na or nb:
            union = len(na | nb)
            jac[p] = len(na & nb) / union
            same[p] = float(na == nb)
        else:
            same[p], jac[p] = 1.0, 1.0
    feats["numbers_same"], feats["numbers_jaccard"] = same, jac
    lengths = np.array([len(inputs.titles[r] or "") if isinstance(inputs.titles[r], str) else 0 for r in pool], float)
    feats["len_ratio"] = (np.minimum(lengths[i], lengths[j]) + 1) / (np.maximum(lengths[i], lengths[j]) + 1)
    # neighbour lists that overlap: two listings of one product tend to share their other matches too
    lists = _neighbour_matrix(e_ids, e_sims, n, SHARED_K, None) + _neighbour_matrix(w_ids, w_sims, n, SHARED_K, None)
    lists.data[:] = 1.0
    feats["shared_neighbours"] = np.asarray(lists[i].multiply(lists[j]).sum(axis=1)).ravel()
    feats["emb_qe_cos"] = _expanded_cos(emb, (e_sims, e_ids), i, j)
    feats["word_qe_cos"] = _expanded_cos(word, (w_sims, w_ids), i, j)
    names = list(FEATURES)
    for name, vectors in inputs.sentences.items():  # each side's best is over its own candidates
        x = vectors[pool]
        cos = np.einsum("ij,ij->i", x[i], x[j])
        feats[f"{name}_cos"] = cos
        feats[f"{name}_gap"], feats[f"{name}_gap_back"] = _gaps_to_best(i, j, cos, n)
        names += [f"{name}_{f}" for f in SENTENCE_FEATURES]
    if learned is not None:
        _neighbour_features(feats, "lrn", np.einsum("ij,ij->i", learned[i], learned[j]), l_ids, l_sims, i, j, n, k)
        feats["lrn_qe_cos"] = _expanded_cos(learned, (l_sims, l_ids), i, j)
        names += METRIC_FEATURES
    frame = pd.DataFrame({name: np.asarray(feats[name], np.float32) for name in names})
    return Candidates(i.astype(np.int64), j.astype(np.int64), frame)


# -- scoring pairs and making match lists --------------------------------------------------------------------
def _pair_labels(c: Candidates, groups: np.ndarray) -> np.ndarray:
    return (groups[c.i] == groups[c.j]).astype(np.int64)


def fit_pairs(cands: list[Candidates], groups: list[np.ndarray], seed: int):
    """A gradient-boosted pair classifier (LightGBM, one thread) on labelled pools' candidate pairs."""
    import lightgbm as lgb

    X = pd.concat([c.features for c in cands], ignore_index=True)
    y = np.concatenate([_pair_labels(c, g) for c, g in zip(cands, groups)])
    if len(np.unique(y)) < 2:
        return None
    # most candidate pairs are negatives: keep at most NEGATIVES_PER_POSITIVE of them per positive (the
    # threshold is tuned on the scores afterwards, so the shifted base rate does not matter; it is 5x faster)
    negatives, positives = np.flatnonzero(y == 0), int(y.sum())
    if len(negatives) > NEGATIVES_PER_POSITIVE * positives:
        drop = np.random.default_rng(seed).choice(negatives, len(negatives) - NEGATIVES_PER_POSITIVE * positives,
                                                  replace=False)
        keep = np.setdiff1d(np.arange(len(y)), drop)
        X, y = X.iloc[keep], y[keep]
    # one thread: OpenMP threads spin when the machine is shared; one thread degrades gently
    # 500 trees at 0.05 over 200 at 0.1: +0.0016 on Shopee with two stages (better on all 5 folds)
    model = lgb.LGBMClassifier(n_estimators=500, learning_rate=0.05, num_leaves=31, min_child_samples=40,
                               reg_lambda=1.0, subsample=0.8, subsample_freq=1, random_state=seed, n_jobs=1,
                               verbose=-1)
    return model.fit(X, y)


def pair_scores(model, c: Candidates, method: str) -> np.ndarray:
    """Score of each directed candidate pair, symmetrised (mean of both directions: both are always present)."""
    if method == "tfidf":
        raw = c.features["word_cos"].to_numpy(np.float64)
    elif model is None:
        raw = c.features["emb_cos"].to_numpy(np.float64)
    else:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):  # columns as fitted (a pool without the title metric gives NaN there)
            raw = model.predict_proba(c.features.reindex(columns=model.feature_name_))[:, 1]
    n = int(max(c.i.max(initial=-1), c.j.max(initial=-1))) + 1
    keys = c.i * n + c.j
    back = np.searchsorted(keys, c.j * n + c.i)  # keys are sorted (np.unique) and both directions exist
    return 0.5 * (raw + raw[back])


def rescored(c: Candidates, scores: np.ndarray, n: int) -> Candidates:
    """The same pairs with the first stage's (symmetric) scores read as a graph over the pool, next to their own
    features: the pair's score, where each side ranks the other, how far it falls short of each side's best,
    how many likely matches (score >= :data:`STRONG`) each side has, and what the two sides' other matches share
    (sum of score products over common candidates, the same over likely matches, and the cosine of the two score
    rows). Listings of one product tend to agree on a third; a look-alike is usually a better match elsewhere."""
    i, j = c.i, c.j
    graph = sp.csr_matrix((scores.astype(np.float32), (i, j)), shape=(n, n))
    strong = (graph >= STRONG).astype(np.float32)
    order = np.lexsort((-scores, i))
    first = np.searchsorted(i[order], i[order])
    rank = np.empty(len(i), np.float32)
    rank[order] = np.arange(len(i)) - first
    back = np.searchsorted(i * n + j, j * n + i)  # keys are sorted (np.unique) and both directions exist
    gap, gap_back = _gaps_to_best(i, j, scores, n)
    n_strong = np.bincount(i, weights=scores >= STRONG, minlength=n).astype(np.float32)
    two_hop = np.asarray(graph[i].multiply(graph[j]).sum(axis=1)).ravel()
    norms = np.sqrt(np.asarray(graph.multiply(graph).sum(axis=1)).ravel())
    feats = {"g_score": scores, "g_rank": rank, "g_rank_back": rank[back], "g_gap": gap,
             "g_gap_back": gap_back, "g_strong": n_strong[i], "g_strong_back": n_strong[j],
             "g_two_hop": two_hop, "g_two_hop_strong": np.asarray(strong[i].multiply(strong[j]).sum(axis=1)).ravel(),
             "g_two_hop_cos": two_hop / np.maximum(norms[i] * norms[j], 1e-12)}
    graph_frame = pd.DataFrame({name: np.asarray(feats[name], np.float32) for name in GRAPH_FEATURES})
    return Candidates(i, j, pd.concat([c.features.reset_index(drop=True), graph_frame], axis=1))


def final_scores(result: "MatchResult", c: Candidates, n: int, method: str,
                 first: np.ndarray | None = None) -> np.ndarray:
    """The decision's pair scores: the pair classifier's (``first``, when already computed), rescored by the
    second stage when there is one."""
    first = pair_scores(result.model, c, method) if first is None else first
    return first if result.rescorer is None else pair_scores(result.rescorer, rescored(c, first, n), method)


def match_lists(c: Candidates, scores: np.ndarray, n: int, threshold: float,
                floor: float = np.inf, closure: float = np.inf) -> list[np.ndarray]:
    """Per pool position: itself, then candidates scoring at least ``threshold``, best first; a listing with no
    such candidate keeps its best one when that scores at least ``floor`` (np.inf: never). With ``closure``, a
    listing also matches the near-certain matches (score at least ``closure``) of its own near-certain matches,
    after its own: listings of one product that its own candidates missed (np.inf: never)."""
    ranked = ranked_lists(c, scores, n)
    sure = [cand[s >= closure] for cand, s in ranked] if np.isfinite(closure) else None
    out = []
    for i, (cand, s) in enumerate(ranked):
        chosen = cand[s >= threshold]
        if not len(chosen) and len(s) and s[0] >= floor:
            chosen = cand[:1]
        if sure is not None and len(sure[i]):
            extra = pd.unique(np.concatenate([sure[b] for b in sure[i]]))
            chosen = np.r_[chosen, extra[(extra != i) & ~np.isin(extra, chosen)]]
        out.append(np.r_[i, chosen])
    return out


def ranked_lists(c: Candidates, scores: np.ndarray, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per pool position: its candidates and their scores, best first."""
    order = np.lexsort((-scores, c.i))
    i, j, s = c.i[order], c.j[order], scores[order]
    bounds = np.searchsorted(i, np.arange(n + 1))
    return [(j[bounds[r]:bounds[r + 1]], s[bounds[r]:bounds[r + 1]]) for r in range(n)]


def shopee_score(matches: list[np.ndarray], groups: np.ndarray) -> float:
    """Mean over listings of the F1 between predicted matches and the listings of its group (itself included)."""
    members: dict[Any, set] = {}
    for pos, g in enumerate(groups):
        members.setdefault(g, set()).add(pos)
    f1 = []
    for pos, pred in enumerate(matches):
        truth, got = members[groups[pos]], set(int(x) for x in pred)
        hit = len(truth & got)
        f1.append(2 * hit / (len(truth) + len(got)))
    return float(np.mean(f1)) if f1 else float("nan")


def recall_at(ranked: list[tuple[np.ndarray, np.ndarray]], groups: np.ndarray, k: int) -> float:
    """Over listings with another listing of the same group: share of those among its ``k`` best candidates."""
    size = pd.Series(groups).map(pd.Series(groups).value_counts()).to_numpy()
    out = []
    for pos, (cand, _) in enumerate(ranked):
        if size[pos] < 2:
            continue
        top = cand[:k]
        out.append(float((groups[top] == groups[pos]).sum()) / (size[pos] - 1))
    return float(np.mean(out)) if out else float("nan")


def threshold_scores(c: Candidates, scores: np.ndarray, groups: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """The Shopee score of one labelled pool at each threshold of ``grid`` (vectorised over pairs: a listing's
    matches at threshold t are itself and its candidates scoring at least t)."""
    n = len(groups)
    codes = pd.factorize(pd.Series(groups))[0]
    truth = np.bincount(codes, minlength=codes.max(initial=-1) + 1)[codes].astype(np.float64)  # itself included
    same = codes[c.i] == codes[c.j]
    out = np.zeros(len(grid))
    for g, t in enumerate(grid):
        keep = scores >= t
        got = 1.0 + np.bincount(c.i[keep], minlength=n)
        hit = 1.0 + np.bincount(c.i[keep & same], minlength=n)
        out[g] = float(np.mean(2 * hit / (truth + got))) if n else float("nan")
    return out


def best_floor(c: Candidates, scores: np.ndarray, groups: np.ndarray, threshold: float) -> float:
    """The floor (see :func:`match_lists`) that maximises the Shopee score of one labelled pool at ``threshold``:
    how good a listing's best candidate must be to count as its match when nothing clears the threshold."""
    n = len(groups)
    codes = pd.factorize(pd.Series(groups))[0]
    truth = np.bincount(codes)[codes].astype(np.float64)
    order = np.lexsort((-scores, c.i))
    first = order[np.unique(c.i[order], return_index=True)[1]]  # each listing's best candidate
    rows, best, same = c.i[first], scores[first], codes[c.i[first]] == codes[c.j[first]]
    got = 1.0 + np.bincount(c.i[scores >= threshold], minlength=n)
    hit = 1.0 + np.bincount(c.i[(scores >= threshold) & (codes[c.i] == codes[c.j])], minlength=n)
    base = 2 * hit / (truth + got)
    alone = got[rows] == 1  # listings with nothing above the threshold
    with_best = 2 * (1.0 + same) / (truth[rows] + 2)
    grid = np.r_[np.inf, np.unique(np.quantile(best[alone], np.linspace(0, 1, 41)))] if alone.any() else [np.inf]
    gains = [float(np.sum((with_best - base[rows])[alone & (best >= f)])) for f in grid]
    return float(grid[int(np.argmax(gains))])


def best_threshold(pools: list[tuple[Candidates, np.ndarray, np.ndarray]]) -> float:
    """The threshold on pair scores that maximises the Shopee score over labelled pools (candidates, scores,
    groups), each listing counting once."""
    scores = np.concatenate([s for _, s, _ in pools])
    grid = np.unique(np.r_[np.quantile(scores, np.linspace(0.0, 1.0, 101)) if len(scores) else [],
                           np.linspace(0.02, 0.98, 49)])
    results = sum(threshold_scores(c, s, g, grid) * len(g) for c, s, g in pools) / sum(len(g) for *_, g in pools)
    # the middle of the best plateau: a small pool often scores the same over a range of thresholds
    best = np.flatnonzero(results >= results.max() - 1e-9)
    return float(np.median(grid[best]))


def best_closure(pools: list[tuple[Candidates, np.ndarray, np.ndarray]], threshold: float, floor: float) -> float:
    """The closure (see :func:`match_lists`) that maximises the Shopee score over labelled pools at ``threshold``
    and ``floor``; np.inf (off) unless a closure does better."""
    grid = np.r_[np.inf, np.linspace(max(threshold, 0.5), 0.95, 10)]
    pooled = [sum(shopee_score(match_lists(c, s, len(g), threshold, floor, closure), g) * len(g) for c, s, g in pools)
              for closure in grid]
    return float(grid[int(np.argmax(pooled))])


# -- the protocol --------------------------------------------------------------------------------------------
def group_folds(groups: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    from sklearn.model_selection import GroupKFold

    fold = np.zeros(len(groups), np.int64)
    for k, (_, valid) in enumerate(GroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
                                   .split(groups, groups=groups)):
        fold[valid] = k
    return fold


@dataclass
class MatchResult:
    """The CV figures, per-fold thresholds, and the fitted decision for new pools."""

    metrics: dict[str, Any]
    model: Any
    threshold: float
    examples: list[tuple[int, list[int]]] = field(default_factory=list)  # (row id, matched row ids) from CV
    floor: float = np.inf  # a listing with no match keeps its best candidate scoring at least this
    metric: Any = None  # the title metric fitted on every labelled group (GroupMetric), or None
    rescorer: Any = None  # the second stage over the pair classifier's scores (see :func:`rescored`), or None
    closure: float = np.inf  # a listing also matches its sure matches' sure matches (scores >= this)


@dataclass
class FoldPools:
    """The validation pools of a GroupKFold over labelled rows (positions into them) and their candidates."""

    pools: list[np.ndarray]
    cands: list[Candidates]


def uses_metric(inputs: DuplicateInputs, params: dict[str, Any]) -> bool:
    """Whether the pair classifier reads the supervised title metric (see :mod:`mmstack.products.title_metric`)."""
    return bool(params["method"] == "pairs" and params["title_metric"] and inputs.metric_features is not None)


def _learned(inputs: DuplicateInputs, rows: np.ndarray, groups: np.ndarray, fit_on: np.ndarray, embed: np.ndarray,
             params: dict[str, Any]) -> np.ndarray | None:
    """The rows ``rows[embed]`` embedded by the title metric fitted on the groups of ``rows[fit_on]``."""
    from .title_metric import fit_group_metric

    metric = fit_group_metric(inputs.metric_features[rows[fit_on]], groups[fit_on], params["metric_shrink"],
                              params["metric_dim"])
    return None if metric is None else metric.transform(inputs.metric_features[rows[embed]])


def fold_pools(inputs: DuplicateInputs, rows: np.ndarray, groups: np.ndarray,
               params: dict[str, Any] | None = None) -> FoldPools:
    """Split the labelled ``rows`` into GroupKFold pools and find each pool's candidates (no group is read but
    for the split, and, with the title metric, by the metric fitted on the other pools' groups). Reusable across
    decision methods with the same candidate settings."""
    p = {**DEFAULTS, **(params or {})}
    groups = np.asarray(groups).astype(str)
    n_folds = min(p["n_folds"], len(np.unique(groups)))
    fold = group_folds(groups, n_folds, p["seed"])
    pools = [np.flatnonzero(fold == k) for k in range(n_folds)]
    metric = uses_metric(inputs, p)
    cands = []
    for k, pool in enumerate(pools):
        learned = _learned(inputs, rows, groups, np.flatnonzero(fold != k), pool, p) if metric else None
        cands.append(candidates(inputs, rows[pool], p, learned))
    return FoldPools(pools, cands)


def _fit_decision(train: dict[int, Candidates], groups: dict[int, np.ndarray], p: dict[str, Any],
                  rescore: bool) -> MatchResult:
    """A decision learned on labelled training pools alone (at least two): the pair classifier on all of them,
    with ``rescore`` a second stage learned on each pool's first-stage scores from a classifier fitted on the
    other pools, and the threshold, floor and closure tuned on the last ``tune_pools`` pools, each scored by a
    decision fitted on the other training pools."""
    others = list(train)

    def fit(cands: dict[int, Candidates], pools: list[int]):
        return fit_pairs([cands[j] for j in pools], [groups[j] for j in pools], p["seed"])

    def apart(cands: dict[int, Candidates], j: int) -> np.ndarray:  # pool j scored by the other pools' classifier
        return pair_scores(fit(cands, [o for o in others if o != j]), cands[j], "pairs")

    source, rescorer = train, None
    if rescore:
        source = {j: rescored(train[j], apart(train, j), len(groups[j])) for j in others}
        rescorer = fit(source, others)
    tuned = [(source[j], apart(source, j), groups[j]) for j in others[-min(p["tune_pools"], len(others) - 1):]]
    threshold = best_threshold(tuned)
    floor = float(np.median([best_floor(c, s, g, threshold) for c, s, g in tuned]))
    return MatchResult({}, fit(train, others), threshold, floor=floor, rescorer=rescorer,
                       closure=best_closure(tuned, threshold, floor) if p["closure"] else np.inf)


def cross_validate(inputs: DuplicateInputs, rows: np.ndarray, groups: np.ndarray,
                   params: dict[str, Any] | None = None, prepared: FoldPools | None = None) -> MatchResult:
    """GroupKFold CV of matching among ``rows`` (row ids with a group), and the decision fitted on all of them.
    ``prepared``: the pools and candidates of :func:`fold_pools` with the same rows and params, to reuse."""
    import time

    p = {**DEFAULTS, **(params or {})}
    start = time.perf_counter()
    groups = np.asarray(groups).astype(str)
    prepared = prepared or fold_pools(inputs, rows, groups, p)
    pools, cands = prepared.pools, prepared.cands
    n_folds = len(pools)
    pool_groups = [groups[pool] for pool in pools]
    method = p["method"]
    metric = uses_metric(inputs, p)
    rescore = method == "pairs" and n_folds >= 3 and np.mean([len(pl) for pl in pools]) >= p["rescore_min_pool"]
    fold_scores, fold_recalls, thresholds, floors, closures, examples = [], [], [], [], [], []
    pair_recall = []
    first_stage = {}  # each pool's pair-classifier scores, out of fold: the final second stage learns from them
    for k in range(n_folds):
        others = [j for j in range(n_folds) if j != k]
        decision = MatchResult({}, None, 0.0)
        if method == "pairs" and len(others) >= 2:
            train = {j: cands[j] for j in others}
            if metric:  # nested: each training pool embedded by a metric fitted neither on it nor on pool k
                train = {j: candidates(inputs, rows[pools[j]], p, _learned(
                    inputs, rows, groups, np.concatenate([pools[i] for i in others if i != j]), pools[j], p))
                    for j in others}
            decision = _fit_decision(train, {j: pool_groups[j] for j in others}, p, rescore)
            del train
            t, floor, closure = decision.threshold, decision.floor, decision.closure
        else:
            ts = [best_threshold([(cands[j], pair_scores(None, cands[j], method), pool_groups[j])]) for j in others]
            t, floor, closure = float(np.median(ts)), np.inf, np.inf
        first_stage[k] = pair_scores(decision.model, cands[k], method)
        scores = final_scores(decision, cands[k], len(pools[k]), method, first_stage[k])
        n = len(pools[k])
        matches = match_lists(cands[k], scores, n, t, floor, closure)
        fold_scores.append(shopee_score(matches, pool_groups[k]))
        fold_recalls.append(recall_at(ranked_lists(cands[k], scores, n), pool_groups[k], p["recall_k"]))
        pair_recall.append(float(_candidate_recall(cands[k], pool_groups[k])))
        thresholds.append(t)
        floors.append(floor)
        closures.append(closure)
        if k == 0:
            grouped = [pos for pos in range(n) if len(matches[pos]) > 1][:50]
            examples = [(int(rows[pools[k][pos]]), [int(rows[pools[k][m]]) for m in matches[pos]]) for pos in grouped]
        log.info("duplicates fold %d/%d: score %.4f, recall@%d %.4f (pool %d, threshold %.3f)", k + 1, n_folds,
                 fold_scores[-1], p["recall_k"], fold_recalls[-1], n, t)
    final = fit_pairs(cands, pool_groups, p["seed"]) if method == "pairs" else None
    final_rescorer = None
    if rescore:  # each pool's first-stage scores came out of fold
        final_rescorer = fit_pairs([rescored(cands[k], first_stage[k], len(pools[k])) for k in range(n_folds)],
                                   pool_groups, p["seed"])
    final_metric = None
    if metric:
        from .title_metric import fit_group_metric

        final_metric = fit_group_metric(inputs.metric_features[rows], groups, p["metric_shrink"], p["metric_dim"])
    metrics = {"score": float(np.mean(fold_scores)), f"recall@{p['recall_k']}": float(np.mean(fold_recalls)),
               "folds": [round(s, 5) for s in fold_scores], "method": method, "n_folds": n_folds,
               "n_rows": int(len(rows)), "n_groups": int(len(np.unique(groups))),
               "pool_size": int(np.mean([len(pl) for pl in pools])), "candidate_recall": float(np.mean(pair_recall)),
               "thresholds": [round(t, 4) for t in thresholds], "seconds": round(time.perf_counter() - start, 2)}
    metrics["floors"] = [round(f, 4) if np.isfinite(f) else None for f in floors]
    metrics["closures"] = [round(f, 4) if np.isfinite(f) else None for f in closures]
    metrics["title_metric"] = bool(metric)
    metrics["rescored"] = final_rescorer is not None
    return MatchResult(metrics, final, float(np.median(thresholds)), examples, float(np.median(floors)),
                       final_metric, final_rescorer, float(np.median(closures)))


def _candidate_recall(c: Candidates, groups: np.ndarray) -> float:
    """Share of true same-group pairs (other than self) that the candidates hold."""
    counts = pd.Series(groups).value_counts()
    total = int((counts * (counts - 1)).sum())
    return float(_pair_labels(c, groups).sum() / total) if total else 1.0


def match_pool(inputs: DuplicateInputs, rows: np.ndarray, result: MatchResult,
               params: dict[str, Any] | None = None) -> list[list[int]]:
    """Matches (row ids, itself first, best first) of every row of the pool ``rows`` with the fitted decision."""
    p = {**DEFAULTS, **(params or {})}
    if len(rows) == 0:
        return []
    learned = (result.metric.transform(inputs.metric_features[rows])
               if result.metric is not None and inputs.metric_features is not None else None)
    c = candidates(inputs, rows, p, learned)
    scores = final_scores(result, c, len(rows), p["method"])
    return [[int(rows[m]) for m in ms]
            for ms in match_lists(c, scores, len(rows), result.threshold, result.floor, result.closure)]
