"""Nearest neighbours of dense vectors by inner product (cosine on unit rows), behind one small interface.

The library is faiss-cpu (Meta's similarity search; pinned in pyproject.toml). Why faiss rather than hnswlib or
usearch: it is maintained with wheels for every current Python, and one API holds both an exact index (a flat
inner-product scan, BLAS-fast and deterministic) and approximate ones (HNSW), so small catalogues and tests get
exact neighbours while large ones switch to HNSW by size alone, and the approximate recall can be checked
against the exact answer with the same code. hnswlib's last release is from 2023 (source builds on new Pythons);
usearch is small and fast but has no exact BLAS scan. The duplicates finder and the graph block's k-NN use
:func:`nearest` / :class:`NeighbourIndex`.

faiss runs OpenMP threads; they are set per call (default 1: on a shared 2-core machine one thread degrades
gently when others compete, two spin).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

EXACT_BELOW = 50_000  # rows: below this a flat scan is fast enough and exact
HNSW_M = 32


@dataclass
class NeighbourIndex:
    """An inner-product index over ``vectors`` (float32 rows; give unit rows for cosine similarity)."""

    vectors: np.ndarray
    exact: bool | None = None  # None: exact below EXACT_BELOW rows, HNSW above
    num_threads: int = 1
    ef_search: int = 128

    def __post_init__(self):
        import faiss

        self.vectors = np.ascontiguousarray(self.vectors, dtype=np.float32)
        n, dim = self.vectors.shape
        if self.exact is None:
            self.exact = n < EXACT_BELOW
        if self.exact:
            self._index = faiss.IndexFlatIP(dim)
        else:
            self._index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            self._index.hnsw.efConstruction = 80
            self._index.hnsw.efSearch = self.ef_search
        with _threads(self.num_threads):
            self._index.add(self.vectors)

    def __len__(self) -> int:
        return len(self.vectors)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most similar indexed rows of each query, best first: ``(similarities, row numbers)``, both
        (queries x k); where fewer than ``k`` rows exist the rest are ``-inf`` and ``-1``."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k_eff = min(k, len(self))
        with _threads(self.num_threads):
            sims, ids = self._index.search(queries, k_eff) if k_eff else (
                np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64))
        if k_eff < k:
            sims = np.hstack([sims, np.full((len(queries), k - k_eff), -np.inf, np.float32)])
            ids = np.hstack([ids, np.full((len(queries), k - k_eff), -1, np.int64)])
        sims = np.where(ids < 0, -np.inf, sims)
        return sims, ids.astype(np.int64)


def nearest(vectors: np.ndarray, k: int, exact: bool | None = None,
            num_threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest rows of every row of ``vectors`` among the same rows (itself usually first)."""
    return NeighbourIndex(vectors, exact, num_threads).search(vectors, k)


class _threads:
    """faiss's OpenMP thread count for a block of calls, restored after."""

    def __init__(self, n: int):
        self.n = n

    def __enter__(self):
        import faiss

        self.saved = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(max(1, int(self.n)))

    def __exit__(self, *exc):
        import faiss

        faiss.omp_set_num_threads(self.saved)
