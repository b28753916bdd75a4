"""The listing graph: same seller, same normalised title, near-duplicate image, nearest text neighbours.

Nodes are the train and test rows (row ids first) followed by the unlabeled active listings. Edge types:

* ``user`` and ``title``: every listing is linked to the others of its group. Features use exact group sums, so a
  shop with thousands of items costs O(n), not a clique.
* ``image``: perceptual hashes (from ``image_stats``) within ``image_max_bits`` Hamming bits, found by banding
  the 64-bit hash into 4 bands of 16 bits (candidates share a band).
* ``knn``: the k nearest neighbours by cosine in the text-embedding space (from ``text_embed``), found with faiss
  (exact below 50k rows, HNSW above: about n log n).

Per edge type: degree, neighbours' mean log price, and neighbours' mean target computed out of fold on the shared
folds (a training row sees only labelled neighbours outside its own validation fold; test rows see all labelled
neighbours; the fold-k model trains on values nested outside fold k, see ``Folds.out_of_fold``). The graph is also kept as a ``torch_geometric.data.Data`` (``extras['graph']``) for the graph net.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .base import BlockContext, BlockOutput, FeatureBlock
from .registry import register
from .tabular import listing_pool
from .target_encoding import key_coverage, target_statistics

log = logging.getLogger(__name__)
EDGE_TYPES = ("user", "title", "image", "knn")


def group_edges(codes: np.ndarray, max_links: int) -> np.ndarray:
    """Sparse stand-in for a group's clique: each member linked to the next ``max_links`` members (cyclic)."""
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    sizes = np.diff(np.r_[starts, len(codes)])
    src, dst = [], []
    for start, size in zip(starts, sizes):
        if size < 2:
            continue
        members = order[start:start + size]
        for step in range(1, min(max_links, size - 1) + 1):
            src.append(members)
            dst.append(np.roll(members, -step))
    if not src:
        return np.zeros((2, 0), dtype=np.int64)
    src, dst = np.concatenate(src), np.concatenate(dst)
    # both directions, each (src, dst) once, sorted by src then dst: one int64 key per edge (a 2-D unique would
    # sort several copies of the edge list, gigabytes at the full competition's size)
    n = np.int64(len(codes))
    keys = np.unique(np.concatenate([src * n + dst, dst * n + src]))
    return np.vstack([keys // n, keys % n])


def hash_pairs(hashes: np.ndarray, max_bits: int, max_bucket: int = 200) -> np.ndarray:
    """Pairs (i, j), i < j, of valid 64-bit hashes within ``max_bits`` Hamming distance (4 bands of 16 bits)."""
    valid = np.flatnonzero(hashes != 0)
    h = hashes[valid].astype(np.uint64)
    pairs = set()
    for band in range(4):
        keys = (h >> np.uint64(16 * band)) & np.uint64(0xFFFF)
        frame = pd.DataFrame({"key": keys, "pos": np.arange(len(h))})
        for _, members in frame.groupby("key")["pos"]:
            m = members.to_numpy()
            if len(m) < 2 or len(m) > max_bucket:
                continue
            a, b = np.triu_indices(len(m), k=1)
            dist = np.bitwise_count(h[m[a]] ^ h[m[b]])
            for i, j in zip(m[a][dist <= max_bits], m[b][dist <= max_bits]):
                pairs.add((int(valid[i]), int(valid[j])))
    return np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)


def knn_pairs(vectors: np.ndarray, k: int, exact: bool | None = None, num_threads: int = 1) -> np.ndarray:
    """Pairs (i, j): j among the k nearest neighbours of i by cosine (rows with NaN are left out).

    faiss (:mod:`mmstack.ann`): an exact flat scan below ``ann.EXACT_BELOW`` rows, HNSW above (``exact`` forces
    either), so the cost grows about n log n instead of the brute force's n squared."""
    from ..ann import nearest

    ok = np.flatnonzero(np.isfinite(vectors).all(axis=1))
    if len(ok) <= 1:
        return np.zeros((0, 2), dtype=np.int64)
    x = vectors[ok].astype(np.float32)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    k = min(k, len(ok) - 1)
    _, idx = nearest(x, k + 1, exact=exact, num_threads=num_threads)
    src = np.repeat(ok, k + 1)
    found = idx.ravel()
    dst = ok[np.maximum(found, 0)]
    keep = (src != dst) & (found >= 0)
    return np.stack([src[keep], dst[keep]], axis=1)


def adjacency(pairs: np.ndarray, n: int, symmetric: bool) -> sp.csr_matrix:
    if symmetric:
        pairs = np.vstack([pairs, pairs[:, ::-1]])
    a = sp.csr_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    a.data[:] = 1.0  # duplicates count once
    return a


class GroupNeighbours:
    """Neighbours = the other members of one's group (self excluded), via group sums."""

    def __init__(self, codes: np.ndarray):
        self.codes = codes
        self.n_codes = int(codes.max()) + 1

    def sums(self, values: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per node: sum over its neighbours of values*weights, and of weights."""
        s = np.bincount(self.codes, weights=values * weights, minlength=self.n_codes)
        c = np.bincount(self.codes, weights=weights, minlength=self.n_codes)
        return s[self.codes] - values * weights, c[self.codes] - weights


class PairNeighbours:
    """Neighbours given by a sparse adjacency matrix."""

    def __init__(self, matrix: sp.csr_matrix):
        self.matrix = matrix

    def sums(self, values: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.matrix @ (values * weights), self.matrix @ weights


def neighbour_features(name: str, nb, log_price: np.ndarray, ctx: BlockContext, n_nodes: int,
                       statistics: dict[str, np.ndarray]):
    """Degree, neighbour price means, and nested out-of-fold neighbour target means (+ per-fold views).

    ``statistics``: per labelled row, the values whose neighbour means are taken (the target's value or class
    indicators, :func:`~mmstack.features.target_encoding.target_statistics`)."""
    n_rows = ctx.data.n_rows
    target = ctx.target
    ones = np.ones(n_nodes)
    _, degree = nb.sums(np.zeros(n_nodes), ones)
    has_price = np.isfinite(log_price).astype(float)
    price_sum, price_cnt = nb.sums(np.nan_to_num(log_price), has_price)
    stats = list(statistics)
    y = np.zeros((n_nodes, len(stats)))
    for j, stat in enumerate(stats):
        y[target.rows, j] = statistics[stat]

    def fit(train_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        labelled = np.zeros(n_nodes)
        labelled[train_rows] = 1.0
        sums = [nb.sums(y[:, j], labelled) for j in range(len(stats))]
        return np.column_stack([s for s, _ in sums]), sums[0][1]

    def apply(sums: tuple[np.ndarray, np.ndarray], ids: np.ndarray) -> np.ndarray:
        total, count = sums
        mean = total[ids] / np.where(count[ids] > 0, count[ids], np.nan)[:, None]
        return np.column_stack([mean, count[ids]])

    values, value_views = target.folds.out_of_fold(fit, apply, n_rows)
    mean_price = price_sum / np.where(price_cnt > 0, price_cnt, np.nan)
    columns = [f"gr_{name}_nb_target_{s}" for s in stats] + [f"gr_{name}_nb_labelled"]
    features = {
        f"gr_{name}_degree": degree[:n_rows],
        f"gr_{name}_nb_log_price": mean_price[:n_rows],
        f"gr_{name}_nb_price_diff": (log_price - mean_price)[:n_rows],
        **{c: values[:, j] for j, c in enumerate(columns)},
    }
    views = {k: {c: v[:, j] for j, c in enumerate(columns)} for k, v in value_views.items()}
    return features, views


@register
class GraphBlock(FeatureBlock):
    name = "graph"
    rows_per_second = 1300  # measured here at the default params (README), for --time-limit
    version = "6"
    reads_target = True
    default_params = {
        "edges": ["user", "title", "image", "knn"],
        "knn_k": 10,
        "knn_columns": "temb_",  # prefix of the text_embed columns that span the k-NN space
        "image_max_bits": 6,
        "max_group_links": 5,  # per node, in the stored torch_geometric graph only
        "max_classes": 10,  # multiclass targets: neighbour shares of the most frequent classes
    }

    def __init__(self, params=None):
        super().__init__(params)
        unknown = set(self.params["edges"]) - set(EDGE_TYPES)
        if unknown:
            from ..errors import ConfigError

            raise ConfigError(f"features.graph.edges: unknown edge type(s) {sorted(unknown)}; known {EDGE_TYPES}")
        deps = {"image": "image_stats", "knn": "text_embed"}
        self.depends_on = tuple(deps[e] for e in self.params["edges"] if e in deps)

    def build(self, ctx: BlockContext) -> BlockOutput:
        pool = listing_pool(ctx)
        n_nodes, n_rows = len(pool), ctx.data.n_rows
        log_price = pool["log_price"].to_numpy(dtype=float)
        features: dict[str, np.ndarray] = {}
        views: dict[int, dict[str, np.ndarray]] = {k: {} for k in range(ctx.folds.n_folds)}
        # regression: the mean target of the neighbours; classification: their class shares
        statistics = target_statistics(ctx.target.target, ctx.target.y, ["mean"], self.params["max_classes"])
        coverage = {}
        edge_index, edge_type = [], []
        for t, name in enumerate(EDGE_TYPES):
            if name not in self.params["edges"]:
                continue
            if name in ("user", "title"):
                column = "user_id" if name == "user" else "title_key"
                codes = pool[column].astype("string").fillna("").factorize()[0]
                coverage[name] = key_coverage(f"graph {name} edges", codes[:n_rows], ctx.target)
                nb = GroupNeighbours(codes)
                edges = group_edges(codes, self.params["max_group_links"])
            else:
                pairs = self._pairs(name, ctx)
                nb = PairNeighbours(adjacency(pairs, n_nodes, symmetric=(name == "image")))
                edges = nb.matrix.nonzero()
                edges = np.vstack(edges).astype(np.int64)
            feats, fold_views = neighbour_features(name, nb, log_price, ctx, n_nodes, statistics)
            features.update(feats)
            for k, v in fold_views.items():
                views[k].update(v)
            edge_index.append(edges)
            edge_type.append(np.full(edges.shape[1], t, dtype=np.int8))
            log.info("graph: %s edges %d", name, edges.shape[1])
        graph = self._pyg(edge_index, edge_type, n_nodes, n_rows)
        return BlockOutput(dense=pd.DataFrame(features).astype(np.float32), extras={"graph": graph, "coverage": coverage},
                           train_views={k: pd.DataFrame(v).astype(np.float32) for k, v in views.items()})

    def _pairs(self, name: str, ctx: BlockContext) -> np.ndarray:
        if name == "image":
            dense = ctx.inputs["image_stats"].dense
            hashes = dense["phash"].fillna(0).to_numpy().astype(np.int64).view(np.uint64)
            return hash_pairs(hashes, self.params["image_max_bits"])
        dense = ctx.inputs["text_embed"].dense
        cols = [c for c in dense.columns if c.startswith(self.params["knn_columns"])]
        return knn_pairs(dense[cols].to_numpy(dtype=np.float32), self.params["knn_k"])

    @staticmethod
    def _pyg(edge_index: list[np.ndarray], edge_type: list[np.ndarray], n_nodes: int, n_rows: int):
        import torch
        from torch_geometric.data import Data

        ei = np.hstack(edge_index) if edge_index else np.zeros((2, 0), dtype=np.int64)
        et = np.concatenate(edge_type) if edge_type else np.zeros(0, dtype=np.int64)
        # sorted by target node (stable: a node's incoming edges in type order), so the graph net's neighbour
        # sampler reads its CSR without a sorted copy; node ids as int32 and types as int8: 9 bytes an edge, not 24
        order = np.argsort(ei[1], kind="stable")
        ei = ei[:, order].astype(np.int32 if n_nodes < 2**31 else np.int64)
        et = et[order].astype(np.int8)
        return Data(edge_index=torch.from_numpy(ei), edge_type=torch.from_numpy(et), num_nodes=n_nodes,
                    n_rows=n_rows)
