"""Duplicate finding on a hand-made pool: candidates, Shopee score, recall@k, the nested CV protocol."""
import numpy as np
import pandas as pd

from mmstack.products import duplicates as dup
from mmstack.projection import unit_rows


def _pool(n_groups=60, seed=0):
    """Groups of 1-3 listings: a group shares a direction in the embedding and title words."""
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(400)]
    emb, titles, groups = [], [], []
    for g in range(n_groups):
        centre = rng.normal(size=24)
        name = " ".join(rng.choice(words, 4, replace=False))
        for _ in range(int(rng.integers(1, 4))):
            emb.append(centre + 0.35 * rng.normal(size=24))
            titles.append(name + " " + str(rng.choice(words)))
            groups.append(f"g{g}")
    emb = unit_rows(np.asarray(emb, np.float32))
    phash = [np.zeros(0, np.int64)] * len(emb)
    return dup.DuplicateInputs(emb, titles, phash).fit_text(), np.asarray(groups)


def test_shopee_score_and_recall_by_hand():
    groups = np.array(["a", "a", "b", "c"])
    assert dup.shopee_score([np.array([0, 1]), np.array([1, 0]), np.array([2]), np.array([3])], groups) == 1.0
    # listing 0 predicts itself only: F1 = 2*1/(2+1); listing 1 also matches 2 wrongly: 2*2/(2+3)
    score = dup.shopee_score([np.array([0]), np.array([1, 0, 2]), np.array([2]), np.array([3])], groups)
    assert np.isclose(score, (2 / 3 + 0.8 + 1 + 1) / 4)
    ranked = [(np.array([2, 1]), None), (np.array([0]), None), (np.array([0]), None), (np.array([1]), None)]
    assert dup.recall_at(ranked, groups, 1) == 0.5 and dup.recall_at(ranked, groups, 2) == 1.0


def test_candidates_are_symmetric_and_hold_the_true_pairs():
    inputs, groups = _pool()
    pool = np.arange(len(groups))
    c = dup.candidates(inputs, pool, {**dup.DEFAULTS, "candidates": 10})
    pairs = set(zip(c.i.tolist(), c.j.tolist()))
    assert all((j, i) in pairs for i, j in pairs) and all(i != j for i, j in pairs)
    assert dup._candidate_recall(c, groups) > 0.95
    assert list(c.features.columns) == dup.FEATURES


def test_cross_validated_matching_finds_the_groups_and_beats_chance():
    inputs, groups = _pool(120)
    rows = np.arange(len(groups))
    result = dup.cross_validate(inputs, rows, groups, {"n_folds": 3, "candidates": 10})
    m = result.metrics
    assert m["score"] > 0.85 and m["recall@10"] > 0.9 and m["n_folds"] == 3
    # the same protocol on shuffled groups: matching cannot be learned
    shuffled = dup.cross_validate(inputs, rows, np.random.default_rng(0).permutation(groups),
                                  {"n_folds": 3, "candidates": 10})
    assert shuffled.metrics["score"] < m["score"] - 0.2
    matches = dup.match_pool(inputs, rows[:30], result, {"candidates": 10})
    assert [ms[0] for ms in matches] == list(range(30))  # each listing first in its own list


def test_threshold_scores_match_the_listwise_score_and_the_floor_helps_only_lonely_listings():
    inputs, groups = _pool(80, seed=3)
    c = dup.candidates(inputs, np.arange(len(groups)), {**dup.DEFAULTS, "candidates": 8})
    scores = dup.pair_scores(None, c, "embedding")
    grid = np.array([0.2, 0.5, 0.8])
    vectorised = dup.threshold_scores(c, scores, groups, grid)
    by_hand = [dup.shopee_score(dup.match_lists(c, scores, len(groups), t), groups) for t in grid]
    assert np.allclose(vectorised, by_hand)
    t = 0.99  # almost nothing clears it: the floor's best candidate rescues listings that have a twin
    floor = dup.best_floor(c, scores, groups, t)
    assert np.isfinite(floor)
    with_floor = dup.shopee_score(dup.match_lists(c, scores, len(groups), t, floor), groups)
    assert with_floor > dup.shopee_score(dup.match_lists(c, scores, len(groups), t), groups) + 0.05
    single = dup.match_lists(c, scores, len(groups), t, floor)
    assert all(len(m) <= 2 or (scores[(c.i == m[0])] >= t).sum() == len(m) - 1 for m in single)


def _noisy_pool(n_groups=150, seed=5):
    """Groups whose listings share only a few informative embedding axes; the other axes are loud noise that an
    unsupervised cosine cannot tell from the signal."""
    rng = np.random.default_rng(seed)
    emb, titles, groups = [], [], []
    for g in range(n_groups):
        centre = np.r_[rng.normal(size=6), np.zeros(18)]
        for _ in range(int(rng.integers(2, 4))):
            emb.append(centre + np.r_[0.1 * rng.normal(size=6), 1.0 * rng.normal(size=18)])
            titles.append(f"item {rng.integers(1000)}")
            groups.append(f"g{g}")
    emb = unit_rows(np.asarray(emb, np.float32))
    inputs = dup.DuplicateInputs(emb, titles, [np.zeros(0, np.int64)] * len(emb)).fit_text()
    return inputs.fit_metric_features(8, 0), np.asarray(groups)


def test_title_metric_learns_the_group_axes_and_is_nested(monkeypatch):
    from mmstack.products.title_metric import fit_group_metric

    inputs, groups = _noisy_pool()
    half = np.isin(groups, np.unique(groups)[::2])
    metric = fit_group_metric(inputs.metric_features[half], groups[half], 0.1, 16)
    other = np.flatnonzero(~half)  # groups the metric never saw

    def mean_same_minus_other(z):
        s = z @ z.T
        same = groups[other][:, None] == groups[other][None, :]
        np.fill_diagonal(same, False)
        return s[same].mean() - s[~same & ~np.eye(len(other), dtype=bool)].mean()

    assert mean_same_minus_other(metric.transform(inputs.metric_features[other])) > \
        mean_same_minus_other(inputs.embedding[other]) + 0.1
    # in the CV, the metric that embeds a pool is never fitted on it (nor, for training pools, on the scored pool)
    seen = []
    real = dup._learned

    def spy(inputs_, rows, groups_, fit_on, embed, params):
        assert not set(fit_on) & set(embed)
        seen.append((frozenset(groups_[fit_on]), frozenset(groups_[embed])))
        return real(inputs_, rows, groups_, fit_on, embed, params)

    monkeypatch.setattr(dup, "_learned", spy)
    rows = np.arange(len(groups))
    params = {"n_folds": 3, "candidates": 10, "metric_shrink": 0.1}
    with_metric = dup.cross_validate(inputs, rows, groups, params)
    assert len(seen) == 3 + 3 * 2 and all(not fit & emb for fit, emb in seen)
    assert with_metric.metrics["title_metric"] and with_metric.metric is not None
    without = dup.cross_validate(inputs, rows, groups, {**params, "title_metric": False})
    assert with_metric.metrics["score"] > without.metrics["score"] + 0.1
    # shuffled groups: neither the metric nor the pair classifier can learn anything that carries over
    noise = np.random.default_rng(1).permutation(groups)
    shuffled = dup.cross_validate(inputs, rows, noise, params)
    alone = np.mean([dup.shopee_score([np.array([i]) for i in range(len(pool))], noise[pool])
                     for pool in dup.fold_pools(inputs, rows, noise, {**params, "title_metric": False}).pools])
    assert shuffled.metrics["score"] < alone + 0.03 < with_metric.metrics["score"] - 0.1
    matches = dup.match_pool(inputs, rows[:20], with_metric, params)
    assert [m[0] for m in matches] == list(range(20))


def test_rescored_reads_the_first_stage_scores_as_a_graph():
    # pool of 4: pairs (0,1), (0,2), (1,2), (2,3) in both directions, keys sorted as candidates() makes them
    edges = {(0, 1): 0.9, (0, 2): 0.6, (1, 2): 0.8, (2, 3): 0.3}
    keys = np.unique([i * 4 + j for a, b in edges for i, j in ((a, b), (b, a))])
    i, j = keys // 4, keys % 4
    score = np.array([edges[min(a, b), max(a, b)] for a, b in zip(i, j)])
    c = dup.Candidates(i, j, pd.DataFrame({"emb_cos": np.zeros(len(i), np.float32)}))
    g = dup.rescored(c, score, 4).features
    assert list(g.columns) == ["emb_cos", *dup.GRAPH_FEATURES]
    row = {(a, b): r for r, (a, b) in enumerate(zip(i, j))}
    r = g.iloc[row[0, 2]]
    assert r["g_score"] == np.float32(0.6) and r["g_rank"] == 1 and r["g_rank_back"] == 1  # 2's best is 1 (0.8)
    assert np.isclose(r["g_gap"], 0.3) and np.isclose(r["g_gap_back"], 0.2)
    assert r["g_strong"] == 2 and r["g_strong_back"] == 2  # 0: 1 and 2; 2: 0 and 1 (0.3 is not >= 0.5)
    assert np.isclose(r["g_two_hop"], 0.9 * 0.8) and r["g_two_hop_strong"] == 1  # through 1
    assert np.isclose(r["g_two_hop_cos"], 0.9 * 0.8 / np.sqrt((0.81 + 0.36) * (0.36 + 0.64 + 0.09)))
    r = g.iloc[row[3, 2]]
    assert r["g_rank"] == 0 and r["g_rank_back"] == 2 and r["g_two_hop"] == 0 and r["g_strong"] == 0


def _chained_pool(n_groups=150, seed=7):
    """Groups of 3-4 listings along a chain: neighbours in a group are close, its ends far apart, so a
    listing's far group members are best told by the matches its matches have (seeds 7-10: +0.016 to +0.034)."""
    rng = np.random.default_rng(seed)
    emb, groups = [], []
    for g in range(n_groups):
        start, step = rng.normal(size=16), rng.normal(size=16)
        step *= 2.5 / np.linalg.norm(step)
        for m in range(int(rng.integers(3, 5))):
            emb.append(start + m * step + 0.4 * rng.normal(size=16))
            groups.append(f"g{g}")
    emb = unit_rows(np.asarray(emb, np.float32))
    inputs = dup.DuplicateInputs(emb, [""] * len(emb), [np.zeros(0, np.int64)] * len(emb)).fit_text()
    return inputs, np.asarray(groups)


def test_second_stage_lifts_chained_groups_and_stays_out_of_fold():
    inputs, groups = _chained_pool()
    rows = np.arange(len(groups))
    params = {"n_folds": 4, "candidates": 10, "title_metric": False, "rescore_min_pool": 0}
    once = dup.cross_validate(inputs, rows, groups, {**params, "rescore_min_pool": 10**9})
    twice = dup.cross_validate(inputs, rows, groups, params)
    assert twice.metrics["rescored"] and twice.rescorer is not None and once.rescorer is None
    assert twice.metrics["score"] > once.metrics["score"] + 0.01
    # the default leaves pools this small (about 130 listings) to one stage
    assert not dup.cross_validate(inputs, rows, groups, {**params, "rescore_min_pool": 1000}).metrics["rescored"]
    noise = np.random.default_rng(1).permutation(groups)
    alone = np.mean([dup.shopee_score([np.array([i]) for i in range(len(pool))], noise[pool])
                     for pool in dup.fold_pools(inputs, rows, noise, params).pools])
    assert dup.cross_validate(inputs, rows, noise, params).metrics["score"] < alone + 0.03
    matches = dup.match_pool(inputs, rows[:25], twice, params)
    assert [m[0] for m in matches] == list(range(25))
