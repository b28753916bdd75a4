"""Duplicate finding on a hand-made pool: candidates, Shopee score, recall@k, the nested CV protocol."""
import numpy as np
import pandas as pd
import pytest

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
    # the closure (a decision rule) also follows chains: off here, so that the stages alone are compared
    params = {"n_folds": 4, "candidates": 10, "title_metric": False, "rescore_min_pool": 0, "closure": False}
    once = dup.cross_validate(inputs, rows, groups, {**params, "rescore_min_pool": 10**9})
    twice = dup.cross_validate(inputs, rows, groups, params)
    assert twice.metrics["rescored"] and twice.rescorer is not None and once.rescorer is None
    assert twice.metrics["score"] > once.metrics["score"] + 0.01
    # the closure alone follows the chains too (0.897 -> 0.914 here), tuned on the training pools
    closed = dup.cross_validate(inputs, rows, groups, {**params, "rescore_min_pool": 10**9, "closure": True})
    assert closed.metrics["score"] > once.metrics["score"] + 0.01 and closed.closure < 1
    # the default leaves pools this small (about 130 listings) to one stage
    assert not dup.cross_validate(inputs, rows, groups, {**params, "rescore_min_pool": 1000}).metrics["rescored"]
    noise = np.random.default_rng(1).permutation(groups)
    alone = np.mean([dup.shopee_score([np.array([i]) for i in range(len(pool))], noise[pool])
                     for pool in dup.fold_pools(inputs, rows, noise, params).pools])
    assert dup.cross_validate(inputs, rows, noise, params).metrics["score"] < alone + 0.03
    matches = dup.match_pool(inputs, rows[:25], twice, params)
    assert [m[0] for m in matches] == list(range(25))


def _titles_say_nothing(n_groups=120, seed=11):
    """Groups that a title sentence encoder sees best: their titles are random words and their product embedding
    is loud (good enough for candidates, not for a decision); the sentence vectors share each group's direction
    closely. Sentence vectors are given, not encoded."""
    rng = np.random.default_rng(seed)
    emb, titles, sent, groups = [], [], [], []
    words = [f"w{i}" for i in range(300)]
    for g in range(n_groups):
        centre, loud = rng.normal(size=16), rng.normal(size=12)
        for _ in range(int(rng.integers(2, 4))):
            emb.append(loud + 0.8 * rng.normal(size=12))
            titles.append(" ".join(rng.choice(words, 3)))
            sent.append(centre + 0.3 * rng.normal(size=16))
            groups.append(f"g{g}")
    inputs = dup.DuplicateInputs(unit_rows(np.asarray(emb, np.float32)), titles, [np.zeros(0, np.int64)] * len(emb))
    return inputs.fit_text(), unit_rows(np.asarray(sent, np.float32)), np.asarray(groups)


def test_title_sentence_vectors_are_pair_features_and_metric_inputs():
    inputs, sent, groups = _titles_say_nothing()
    pool = np.arange(len(groups))[::-1]  # pool positions differ from row ids
    bare = dup.candidates(inputs, pool, {**dup.DEFAULTS, "candidates": 10})
    inputs.sentences = {"use": sent}
    c = dup.candidates(inputs, pool, {**dup.DEFAULTS, "candidates": 10})
    assert list(c.features.columns) == dup.FEATURES + ["use_cos", "use_gap", "use_gap_back"]
    assert np.array_equal(c.i, bare.i) and np.array_equal(c.j, bare.j)  # the same pairs, more features
    x = sent[pool]
    cos = np.einsum("ij,ij->i", x[c.i], x[c.j])
    assert np.allclose(c.features["use_cos"], cos, atol=1e-6)
    best = pd.Series(cos).groupby(c.i).max().to_numpy()
    assert np.allclose(c.features["use_gap"], best[c.i] - cos, atol=1e-6)
    assert np.allclose(c.features["use_gap_back"], best[c.j] - cos, atol=1e-6)
    width = inputs.fit_metric_features(8, 0).metric_features.shape[1]
    inputs.sentences = {}
    assert width == inputs.fit_metric_features(8, 0).metric_features.shape[1] + sent.shape[1]


def test_title_sentence_vectors_lift_matching_when_they_carry_the_groups():
    inputs, sent, groups = _titles_say_nothing()
    rows = np.arange(len(groups))
    params = {"n_folds": 3, "candidates": 10, "title_metric": False}
    without = dup.cross_validate(inputs, rows, groups, params).metrics["score"]
    inputs.sentences = {"use": sent}
    result = dup.cross_validate(inputs, rows, groups, params)
    assert result.metrics["score"] > without + 0.2 and result.metrics["score"] > 0.9
    matches = dup.match_pool(inputs, rows, result, params)  # new pools read the same features
    assert np.mean([groups[m[1]] == groups[m[0]] for m in matches if len(m) > 1]) > 0.9


def test_title_vectors_are_unit_rows_of_the_shipped_encoders_and_reject_unknown_ones():
    from mmstack.errors import ConfigError

    vectors = dup.title_vectors(["Красная футболка  женская", None, "Красная футболка женская", "Ноутбук 15 дюймов"],
                                ["use"])
    x = vectors["use"]
    assert x.shape == (4, 512) and x.dtype == np.float32
    assert np.allclose(np.linalg.norm(x[[0, 2, 3]], axis=1), 1, atol=1e-5) and not x[1].any()
    assert np.allclose(x[0], x[2]) and x[0] @ x[3] < 0.9  # whitespace collapsed; another product differs
    with pytest.raises(ConfigError, match="title_encoders"):
        dup.title_vectors(["a"], ["bert"])


def test_the_threshold_is_tuned_jointly_on_held_out_training_pools(monkeypatch):
    inputs, groups = _pool(150, seed=4)
    rows = np.arange(len(groups))
    folds = dup.fold_pools(inputs, rows, groups, {"n_folds": 3, "candidates": 8})
    tuned = [(c, dup.pair_scores(None, c, "embedding"), groups[pool]) for c, pool in zip(folds.cands, folds.pools)]
    t = dup.best_threshold(tuned)

    def pooled(threshold):  # every listing of every pool counts once
        return sum(dup.shopee_score(dup.match_lists(c, s, len(g), threshold), g) * len(g)
                   for c, s, g in tuned) / len(groups)

    assert all(pooled(t) >= pooled(other) - 1e-9 for other in np.linspace(0.05, 0.95, 19))
    alone = dup.best_threshold(tuned[:1])
    assert pooled(t) >= pooled(alone) and alone == dup.best_threshold([tuned[0]])
    # in the CV, each outer fold tunes on min(tune_pools, its training pools - 1) of its training pools
    seen = []
    real = dup.best_threshold
    monkeypatch.setattr(dup, "best_threshold", lambda pools: seen.append(len(pools)) or real(pools))
    dup.cross_validate(inputs, rows, groups, {"n_folds": 5, "candidates": 8, "tune_pools": 2, "title_metric": False})
    assert seen == [2] * 5
    seen.clear()
    dup.cross_validate(inputs, rows, groups, {"n_folds": 3, "candidates": 8, "tune_pools": 2, "title_metric": False})
    assert seen == [1] * 3


def test_closure_adds_the_sure_matches_of_sure_matches_only_when_it_pays():
    pairs = [(0, 1, 0.99), (1, 2, 0.97), (0, 3, 0.2)]  # 0-2 is no candidate: only the chain through 1 links them
    both = sorted([(a, b, s) for a, b, s in pairs] + [(b, a, s) for a, b, s in pairs])
    c = dup.Candidates(np.array([p[0] for p in both]), np.array([p[1] for p in both]), pd.DataFrame(index=range(6)))
    scores = np.array([p[2] for p in both])
    plain = dup.match_lists(c, scores, 4, 0.5)
    assert [m.tolist() for m in plain] == [[0, 1], [1, 0, 2], [2, 1], [3]]
    closed = dup.match_lists(c, scores, 4, 0.5, closure=0.9)
    assert [m.tolist() for m in closed] == [[0, 1, 2], [1, 0, 2], [2, 1, 0], [3]]
    assert [m.tolist() for m in dup.match_lists(c, scores, 4, 0.5, closure=0.98)] == [m.tolist() for m in plain]
    chain = np.array(["a", "a", "a", "b"])
    assert np.isfinite(dup.best_closure([(c, scores, chain)], 0.5, np.inf))
    assert dup.shopee_score(closed, chain) == 1.0 > dup.shopee_score(plain, chain)
    # when the chain's far end is another product, closing it costs: the tuning leaves it off
    assert dup.best_closure([(c, scores, np.array(["a", "a", "b", "c"]))], 0.5, np.inf) == np.inf
