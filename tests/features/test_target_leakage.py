"""Target-reading blocks are out of fold: own target never used; on a noise target they carry no signal."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mmstack.data import avito
from mmstack.errors import ConfigError
from mmstack.features.base import BlockContext, BlockOutput
from mmstack.features.graph import GraphBlock, group_edges, hash_pairs, knn_pairs
from mmstack.features.target_encoding import TargetEncodingBlock, m_estimate
from mmstack.folds import Folds
from mmstack.models.base import ModelInput, train_model
from mmstack.models.registry import make_model
from mmstack.store import Store
from tests.conftest import relabel, target_data_for


@pytest.fixture(scope="module")
def noise_data(tiny_avito_dir):
    """The tiny dataset with its target replaced by noise, keeping the zero-inflated shape."""
    data = avito.load(tiny_avito_dir)
    rng = np.random.default_rng(0)
    return relabel(data, np.where(rng.random(data.n_train) < 0.6, 0.0, rng.random(data.n_train)),
                   fingerprint="noise")


@pytest.fixture(scope="module")
def binary_noise(tiny_avito_dir):
    """The tiny dataset with a random binary label (30% positives) as its target."""
    data = avito.load(tiny_avito_dir)
    rng = np.random.default_rng(1)
    return relabel(data, (rng.random(data.n_train) < 0.3).astype(int), problem="binary", fingerprint="binary-noise")


def _ctx(data, seed=1, n_folds=5):
    return BlockContext(data=data, store=None, seed=seed, target=target_data_for(data, n_folds=n_folds, seed=seed))


def _cv_on(out: BlockOutput, ctx, tmp_path, nested: bool = True, columns=None) -> float:
    columns = list(out.dense.columns) if columns is None else columns
    views = {k: v[columns] for k, v in out.train_views.items()} if nested else {}
    target = ctx.target
    inputs = ModelInput(X=out.dense[columns], categorical=[], block_keys={"x": str(tmp_path)}, n_train=target.n_train,
                        train_views=views)
    model = make_model("lgb", {"max_rounds": 300, "early_stopping": 30, "num_leaves": 15, "min_data_in_leaf": 10,
                               "learning_rate": 0.05}, target=target.target)
    return train_model(model, inputs, target, Store(tmp_path), "noise").cv


def _prior_cv(ctx) -> float:
    """CV of predicting each fold with the other folds' prior (mean value or class shares)."""
    t = ctx.target
    pred, _ = t.folds.out_of_fold(lambda tr: t.target.prior(t.y[tr]),
                                  lambda m, ids: np.tile(m, (len(ids), 1)), t.n_train)
    return t.target.metric(t.y, pred)


def test_m_estimate_values():
    codes = np.array([0, 0, 1, 1, 1])
    values = np.array([1.0, 0.0, 1.0, 1.0, 1.0])
    table = m_estimate(codes, values, np.arange(5), m=2.0, n_codes=2)
    prior = 0.8
    assert table.tolist() == pytest.approx([(1 + 2 * prior) / 4, (3 + 2 * prior) / 5])


def test_target_encoding_never_uses_own_target(noise_data):
    ctx = _ctx(noise_data)
    before = TargetEncodingBlock().build(ctx).dense
    y = ctx.target.y.copy()
    y[17] = 1.0 - y[17]
    changed = relabel(noise_data, y)
    after = TargetEncodingBlock().build(_ctx(changed)).dense
    assert before.iloc[17].equals(after.iloc[17]), "row 17's encoding does not move with its own target"
    others_in_fold = np.flatnonzero(ctx.folds.fold == ctx.folds.fold[17])
    others_in_fold = others_in_fold[others_in_fold != 17]
    assert before.iloc[others_in_fold].equals(after.iloc[others_in_fold]), "nor do its fold mates'"
    assert not before.iloc[noise_data.n_train:].equals(after.iloc[noise_data.n_train:]), "test rows use all train"


def test_noise_target_encodings_carry_no_signal(noise_data, tmp_path):
    ctx = _ctx(noise_data)
    out = TargetEncodingBlock().build(ctx)
    baseline = _prior_cv(ctx)
    assert _cv_on(out, ctx, tmp_path / "nested") >= baseline * 0.995
    # Plain out-of-fold encodings in training (no nested views) look better than the mean predictor on noise:
    # the leak the nested views close, and proof that this test can fail.
    assert _cv_on(out, ctx, tmp_path / "plain", nested=False) < baseline * 0.99


def test_noise_binary_label_encodings_and_graph_means_carry_no_signal(binary_noise, tmp_path):
    """Classification: on a random binary label, the target encodings and the graph's neighbour label means give
    a CV logloss no better than the class prior's."""
    ctx = _ctx(binary_noise)
    assert ctx.target.target.problem == "binary" and ctx.target.target.metric.name == "logloss"
    baseline = _prior_cv(ctx)
    te = TargetEncodingBlock().build(ctx)
    assert _cv_on(te, ctx, tmp_path / "te") >= baseline * 0.995
    assert _cv_on(te, ctx, tmp_path / "te-plain", nested=False) < baseline * 0.99, "the leak this test guards"
    graph = GraphBlock({"edges": ["user", "title"]}).build(ctx)
    columns = [c for c in graph.dense.columns if "nb_target" in c]
    assert _cv_on(graph, ctx, tmp_path / "graph", columns=columns) >= baseline * 0.995


def test_multiclass_encodings_are_class_shares(tiny_avito_dir):
    data = avito.load(tiny_avito_dir)
    rng = np.random.default_rng(2)
    ctx = _ctx(relabel(data, rng.choice(["a", "b", "c"], data.n_train, p=[0.6, 0.3, 0.1]), problem="multiclass",
                       fingerprint="three"), n_folds=3)
    out = TargetEncodingBlock({"groups": [["region"]], "max_classes": 2}).build(ctx)
    assert list(out.dense.columns) == ["te_p_a_region", "te_p_b_region"], "the two most frequent classes"
    assert ((out.dense >= 0) & (out.dense <= 1)).all().all() and set(out.train_views) == {0, 1, 2}


def test_nested_views_exclude_both_folds():
    folds = Folds(np.array([0, 0, 1, 1, 2, 2], dtype=np.int8), 3, "t")
    y = np.array([1.0, 2.0, 10.0, 20.0, 100.0, 200.0])
    values, views = folds.out_of_fold(lambda tr: y[tr].sum(), lambda s, ids: np.full(len(ids), s), n_rows=7)
    assert values.tolist() == [330, 330, 303, 303, 33, 33, 333]
    # model of fold 0 trains on rows of folds 1 and 2, each seeing only the fold that is neither its own nor 0
    assert views[0].tolist() == [330, 330, 300, 300, 30, 30]
    assert views[2].tolist() == [30, 30, 3, 3, 33, 33]


def test_nested_values_need_three_folds():
    folds = Folds(np.array([0, 1, 0, 1], dtype=np.int8), 2, "t")
    with pytest.raises(ConfigError, match="n_folds >= 3"):
        folds.out_of_fold(lambda tr: tr.size, lambda s, ids: np.full(len(ids), s), n_rows=4)


def test_graph_target_means_are_out_of_fold(noise_data, tmp_path):
    ctx = _ctx(noise_data)
    out = GraphBlock({"edges": ["user", "title"]}).build(ctx)
    dense = out.dense
    # own target never used: flip row 5's target and its own neighbour means stay put
    y = ctx.target.y.copy()
    y[5] = 1.0 - y[5]
    changed = relabel(noise_data, y)
    again = GraphBlock({"edges": ["user", "title"]}).build(_ctx(changed)).dense
    target_cols = [c for c in dense.columns if c.endswith("nb_target_mean")]
    assert dense.loc[5, target_cols].equals(again.loc[5, target_cols])
    assert set(out.train_views[0].columns) >= set(target_cols)
    baseline = _prior_cv(ctx)
    assert _cv_on(out, ctx, tmp_path / "graph", columns=target_cols) >= baseline * 0.995
    graph = out.extras["graph"]
    assert graph.num_nodes >= noise_data.n_train + noise_data.n_test and graph.edge_index.shape[0] == 2
    # stored compact and sorted by target (stably: a node's user edges before its title edges), the layout the
    # graph net's sampler reads without a sorted copy
    ei, et = graph.edge_index.numpy(), graph.edge_type.numpy()
    assert ei.dtype == np.int32 and et.dtype == np.int8 and set(np.unique(et)) == {0, 1}
    key = ei[1].astype(np.int64) * 2 + et
    assert (np.diff(ei[1]) >= 0).all() and (np.diff(key) >= 0).all() and len(ei[1]) > 100


def test_group_edges_small_frame():
    codes = np.array([0, 0, 1, 0, 2])
    edges = group_edges(codes, max_links=5)
    pairs = {tuple(e) for e in edges.T}
    assert pairs == {(0, 1), (1, 0), (0, 3), (3, 0), (1, 3), (3, 1)}


def test_group_edges_are_each_pair_once_both_ways_sorted():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 40, 500)
    edges = group_edges(codes, max_links=3)
    assert edges.dtype == np.int64 and edges.shape[0] == 2
    # sorted by source then destination, no duplicate, no self loop, every edge also reversed
    keys = edges[0] * len(codes) + edges[1]
    assert (np.diff(keys) > 0).all() and (edges[0] != edges[1]).all()
    pairs = set(map(tuple, edges.T))
    assert pairs == {(b, a) for a, b in pairs}
    assert all(codes[a] == codes[b] for a, b in pairs)
    # each member of a group of size s links to min(3, s - 1) next members, so has 3..6 distinct neighbours
    degree = np.bincount(edges[0], minlength=len(codes))
    sizes = np.bincount(codes)[codes]
    assert (degree >= np.minimum(3, sizes - 1)).all() and (degree <= 6).all()


def test_hash_pairs_finds_near_duplicates_only():
    base = np.uint64(0x0123456789ABCDEF)
    near = base ^ np.uint64(0b101)  # two bits off
    far = ~base
    hashes = np.array([base, near, far, 0], dtype=np.uint64)  # 0 = no image
    assert hash_pairs(hashes, max_bits=4).tolist() == [[0, 1]]
    assert hash_pairs(hashes, max_bits=1).tolist() == []


def test_knn_pairs():
    v = np.array([[1, 0], [0.99, 0.1], [0, 1], [np.nan, np.nan]], dtype=np.float32)
    pairs = {tuple(p) for p in knn_pairs(v, k=1)}
    assert pairs == {(0, 1), (1, 0), (2, 1)}


def test_early_stopping_on_the_validation_fold_is_only_slightly_optimistic(noise_data, tmp_path):
    """LightGBM picks its best iteration on the validation fold, which flatters the CV a little: on features that
    carry no signal and 160-row validation folds it scores about 0.7% better than the mean predictor. Bound it."""
    ctx = _ctx(noise_data)
    rng = np.random.default_rng(3)
    n = noise_data.n_train + noise_data.n_test
    noise = BlockOutput(dense=pd.DataFrame(rng.normal(size=(n, 30)), columns=[f"r{i}" for i in range(30)]))
    assert _cv_on(noise, ctx, tmp_path) >= _prior_cv(ctx) * 0.985


def test_key_coverage_says_when_cv_overstates_a_key(noise_data, caplog):
    """One rule for every target statistic by a key: nested out of fold, and a warning when the rows to predict
    rarely have a labelled key (the CV would then overstate the feature)."""
    from mmstack.features.target_encoding import key_coverage

    target = _ctx(noise_data).target
    n = noise_data.n_rows
    shared = np.arange(n) % 7  # every key in every fold and in the rows to predict
    assert key_coverage("shared", shared, target) == {"train": 1.0, "predict": 1.0}
    new_at_test = np.where(np.arange(n) < noise_data.n_train, np.arange(n) % 7, 10_000 + np.arange(n))
    with caplog.at_level("WARNING"):
        cov = key_coverage("sellers", new_at_test, target)
    assert cov == {"train": 1.0, "predict": 0.0} and "CV overstates" in caplog.text
    TargetEncodingBlock({"groups": [["user_id"]]})  # allowed: the same statistic as the graph's user edges
    with pytest.raises(ConfigError, match="row id column"):
        TargetEncodingBlock({"groups": [["item_id"]]}).build(_ctx(noise_data))


def test_knn_pairs_approximate_matches_exact():
    """HNSW (used above 50k rows) finds nearly the same neighbours as the exact scan on clustered vectors."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(50, 16))
    v = (centres[rng.integers(0, 50, 3000)] + 0.3 * rng.normal(size=(3000, 16))).astype(np.float32)
    exact = {tuple(p) for p in knn_pairs(v, k=5, exact=True)}
    approx = {tuple(p) for p in knn_pairs(v, k=5, exact=False)}
    assert len(exact) == 3000 * 5
    assert len(exact & approx) / len(exact) > 0.95
