"""pair_match's relative features: a query's scores are compared with a fixed reference set of training images,
so a pair's features depend on its query and image only, never on the other candidates beside it."""
from __future__ import annotations

import numpy as np

from mmstack.features.pair_match import (RELATIVE, bridge_scores, pair_frame, reference_images,
                                         reference_stats)
from mmstack.projection import unit_rows as normalise

PARAMS = {"top_k": 5, "label_components": 4}


def _world(seed=0, n_images=30, n_queries=6, dim=16):
    rng = np.random.default_rng(seed)
    labels = {"use": normalise(rng.normal(size=(1000, dim)))}
    queries = {"use": normalise(rng.normal(size=(n_queries, dim)))}
    probs = rng.dirichlet(np.full(1000, 0.05), size=n_images).astype(np.float32)
    pooled = rng.normal(size=(n_images, 1280)).astype(np.float32)
    return labels, queries, probs, pooled


def test_reference_stats_are_the_bridge_scores_of_every_query_reference_pair():
    labels, queries, probs, _ = _world()
    ref = probs[:11].astype(np.float16)
    stats = reference_stats(queries["use"], ref, labels["use"], 5, chunk=4)
    q_rows, r_rows = np.repeat(np.arange(6), 11), np.tile(np.arange(11), 6)
    pairs = bridge_scores(queries["use"][q_rows], ref.astype(np.float64)[r_rows], labels["use"], 5)
    for key in RELATIVE:
        values = pairs[key].reshape(6, 11)
        np.testing.assert_allclose(stats[key][0], values.mean(axis=1), atol=1e-12)
        np.testing.assert_allclose(stats[key][1], values.std(axis=1), atol=1e-12)


def test_a_pairs_features_do_not_depend_on_the_other_candidates():
    labels, queries, probs, pooled = _world()
    ok = np.ones(len(probs), bool)
    ok[7] = False  # an unreadable candidate beside the others
    ref = probs[20:].astype(np.float16)

    def row_of(image: int, candidates: list[int]):
        query_codes = np.zeros(len(candidates), int)
        frame = pair_frame(query_codes, queries, np.array(candidates), pooled, probs, ok, labels, PARAMS, None, ref)
        return frame.iloc[candidates.index(image)]

    alone = row_of(3, [3])
    for candidates in ([0, 1, 2, 3, 4], [3, 7], list(range(20))):
        np.testing.assert_array_equal(row_of(3, candidates).to_numpy(), alone.to_numpy())
    relative = [c for c in alone.index if c.endswith(("_vs_ref_mean", "_ref_z"))]
    assert len(relative) == 2 * len(RELATIVE) and np.isfinite(alone[relative]).all()


def test_reference_images_are_readable_training_images_in_a_fixed_sample():
    image_codes = np.array([0, 1, 1, 2, 3, 4, 5, 6, 9, 9])  # 8 training rows, then 2 test rows (image 9)
    ok = np.array([True, True, False, True, True, True, True, True, True, True])
    assert reference_images(image_codes, ok, 8, 100).tolist() == [0, 1, 3, 4, 5, 6]
    sample = reference_images(image_codes, ok, 8, 3)
    assert len(sample) == 3 and set(sample) <= {0, 1, 3, 4, 5, 6}
    assert sample.tolist() == reference_images(image_codes, ok, 8, 3).tolist()
    labels, queries, probs, _ = _world()
    empty = reference_stats(queries["use"], probs[:0], labels["use"], 5)
    assert all((m == 0).all() and (s == 0).all() for m, s in empty.values())
