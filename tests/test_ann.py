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
