"""The nearest-neighbour index: exact search is exact, HNSW finds almost all of it, shapes hold for tiny sets."""
import numpy as np

from mmstack.ann import NeighbourIndex, nearest
from mmstack.projection import unit_rows


def test_exact_search_matches_brute_force_and_ranks_self_first():
    rng = np.random.default_rng(0)
    x = unit_rows(rng.normal(size=(300, 16)).astype(np.float32))
    sims, ids = nearest(x, 5, exact=True)
    brute = np.argsort(-(x @ x.T), axis=1)[:, :5]
    assert (ids == brute).mean() > 0.99  # ties aside
    assert (ids[:, 0] == np.arange(300)).all()
    assert np.allclose(sims[:, 0], 1.0, atol=1e-5)
    assert (np.diff(sims, axis=1) <= 1e-6).all()


def test_hnsw_recall_against_exact():
    rng = np.random.default_rng(1)
    x = unit_rows(rng.normal(size=(2000, 32)).astype(np.float32))
    _, exact = NeighbourIndex(x, exact=True).search(x[:200], 10)
    _, approx = NeighbourIndex(x, exact=False).search(x[:200], 10)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)])
    assert recall > 0.95


def test_fewer_rows_than_k_pads_with_minus_one():
    x = unit_rows(np.eye(3, 4, dtype=np.float32))
    sims, ids = nearest(x, 5)
    assert ids.shape == (3, 5) and (ids[:, 3:] == -1).all() and np.isinf(sims[:, 3:]).all()


def test_hnsw_in_locality_order_maps_rows_and_queries_back():
    """The HNSW path inserts rows cluster by cluster and searches queries in cluster order: the row numbers and
    the query order that come back are the caller's (each row finds itself; reversed queries, reversed answers)."""
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(20, 16))
    x = unit_rows((centres[rng.integers(0, 20, 3000)] + 0.3 * rng.normal(size=(3000, 16))).astype(np.float32))
    index = NeighbourIndex(x, exact=False)
    assert index._clusters is not None  # the locality path ran
    sims, ids = index.search(x, 5)
    assert (ids[:, 0] == np.arange(3000)).mean() > 0.99
    assert np.allclose(sims[:, 0], 1.0, atol=1e-5)
    sims_rev, ids_rev = index.search(x[::-1], 5)
    assert (ids_rev == ids[::-1]).all() and np.allclose(sims_rev, sims[::-1])
    _, exact = NeighbourIndex(x, exact=True).search(x, 5)
    assert np.mean([len(set(a) & set(e)) / 5 for a, e in zip(ids, exact)]) > 0.97
