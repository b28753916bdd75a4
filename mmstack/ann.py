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

Locality. Past the CPU's last-level cache (a few hundred thousand 64-d rows) an HNSW build in faiss's random
insertion order, and a search in the callers' row order, pay a cache miss on most graph steps, so the time grew
faster than n log n (the graph block: 8.7 s at 50k rows, 50.8 s at 200k, exponent 1.28). The index therefore
coarsely clusters the rows (k-means, ``LOCALITY_CLUSTERS`` centroids trained on a fixed-size sample: linear in
n) and inserts a random ``SKELETON`` share of the rows first (the graph's long links, as random order would
give), then the rest cluster by cluster in chunks, and searches the queries in cluster order. Consecutive
insertions and searches then walk the same part of the graph while it is still in cache. Measured on text
embeddings (benchmarks/scale.py, BENCHMARKS.md "Scale"): the same recall, and the time about linear in n.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

EXACT_BELOW = 50_000  # rows: below this a flat scan is fast enough and exact
HNSW_M = 32
LOCALITY_CLUSTERS = 256  # k-means centroids that order the insertions and the queries
SKELETON = 0.1  # share of the rows inserted first, in random order
CHUNK_CLUSTERS = 8  # clusters inserted per faiss add call (faiss shuffles within one call)


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
        self._clusters = None
        self._stored = None  # the indexed rows' order in the index (HNSW), to map found ids back
        with _threads(self.num_threads):
            if self.exact:
                self._index = faiss.IndexFlatIP(dim)
                self._index.add(self.vectors)
            else:
                self._index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
                self._index.hnsw.efConstruction = 80
                self._index.hnsw.efSearch = self.ef_search
                self._add_in_locality_order()

    def _add_in_locality_order(self) -> None:
        """Insert a random skeleton first, then the rest cluster by cluster (see the module's note)."""
        n, dim = self.vectors.shape
        rng = np.random.default_rng(0)
        n_clusters = min(LOCALITY_CLUSTERS, n // 256)
        if n_clusters < 2:
            self._index.add(self.vectors)
            return
        import faiss

        sample = self.vectors[np.sort(rng.choice(n, min(n, n_clusters * 64), replace=False))]
        kmeans = faiss.Kmeans(dim, n_clusters, niter=10, seed=1, max_points_per_centroid=64)
        kmeans.train(sample)
        self._clusters = kmeans.index
        cluster = self._nearest_cluster(self.vectors)
        key = np.where(rng.random(n) < SKELETON, -1, cluster)
        self._stored = np.argsort(key, kind="stable")
        bounds = np.searchsorted(key[self._stored], np.r_[-1, np.arange(0, n_clusters + CHUNK_CLUSTERS,
                                                                         CHUNK_CLUSTERS)])
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            if hi > lo:
                self._index.add(self.vectors[self._stored[lo:hi]])

    def _nearest_cluster(self, rows: np.ndarray) -> np.ndarray:
        return self._clusters.search(rows, 1)[1].ravel()

    def __len__(self) -> int:
        return len(self.vectors)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most similar indexed rows of each query, best first: ``(similarities, row numbers)``, both
        (queries x k); where fewer than ``k`` rows exist the rest are ``-inf`` and ``-1``."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k_eff = min(k, len(self))
        with _threads(self.num_threads):
            if not k_eff:
                sims, ids = np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
            elif self._clusters is None:
                sims, ids = self._index.search(queries, k_eff)
            else:  # in cluster order, then back to the callers' query order and row numbers
                order = np.argsort(self._nearest_cluster(queries), kind="stable")
                found_sims, found = self._index.search(queries[order], k_eff)
                sims, ids = np.empty_like(found_sims), np.empty_like(found)
                sims[order], ids[order] = found_sims, np.where(found < 0, -1, self._stored[np.maximum(found, 0)])
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
