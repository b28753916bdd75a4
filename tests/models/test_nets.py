"""The two PyTorch nets on hand-made inputs: xattn masks hide missing modalities, the gnn's fold masks keep
validation targets out of training, and both are deterministic on CPU."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("torch_geometric")

from mmstack.folds import Folds, make_fold_ids  # noqa: E402
from mmstack.metrics import METRICS  # noqa: E402
from mmstack.models.base import ModelInput  # noqa: E402
from tests.conftest import train  # noqa: E402
from mmstack.models.gnn import GraphSAGEModel, NeighbourSampler  # noqa: E402
from mmstack.models.heads import Head  # noqa: E402
from mmstack.targets import TargetData, regression_target  # noqa: E402
from mmstack.models.xattn import CrossAttentionModel, CrossAttentionNet  # noqa: E402
from mmstack.store import Store  # noqa: E402

rmse = METRICS["rmse"]


# ---- xattn -------------------------------------------------------------------------------------------------------
def _token_batch(seed=0, batch=6, text_len=10, patches=4, dim=8, vocab=30):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([10, 7, 3, 0, 5, 1])[:batch]  # row 3: no text at all
    mask = torch.arange(text_len).unsqueeze(0) < lengths.unsqueeze(1)
    ids = torch.where(mask, torch.randint(3, vocab, (batch, text_len), generator=g), 0).to(torch.int32)
    ids[0, 4] = 2  # a [SEP]
    tokens = torch.randn(batch, patches, dim, generator=g).half()
    present = torch.tensor([True, False, True, True, False, True])[:batch]  # rows 1 and 4: no image
    numeric = torch.randn(batch, 5, generator=g)
    codes = torch.randint(0, 4, (batch, 2), generator=g)
    return [numeric, codes, ids, mask, tokens, present]


HEAD = Head(regression_target("y", value_range=(0.0, 1.0)), np.array([0.2, 0.4]))


def _net(seed=0):
    torch.manual_seed(seed)
    return CrossAttentionNet(5, [4, 4], vocab_size=30, text_len=10, n_patches=4, token_dim=8, head=HEAD, width=16,
                             heads=2, hidden=32, dropout=0.1).eval()


def test_xattn_masked_image_tokens_do_not_change_the_output():
    net, batch = _net(), _token_batch()
    with torch.no_grad():
        before = net(*batch)
        changed = [t.clone() for t in batch]
        missing = ~changed[5]
        changed[4][missing] = (torch.randn(int(missing.sum()), 4, 8) * 100).half()
        assert not torch.equal(changed[4], batch[4])
        assert torch.equal(net(*changed), before), "a masked (absent) image's tokens leaked into the output"
        # the test can fail: a present image's tokens do matter
        changed[4][0] = torch.randn(4, 8).half()
        after = net(*changed)
    assert not torch.equal(after[0], before[0]) and torch.equal(after[1:], before[1:])


def test_xattn_padded_text_tokens_do_not_change_the_output():
    net, batch = _net(), _token_batch()
    with torch.no_grad():
        before = net(*batch)
        changed = [t.clone() for t in batch]
        padded = ~changed[3]
        changed[2][padded] = torch.randint(1, 30, (int(padded.sum()),), dtype=torch.int32)
        changed[2][3, 0] = 2  # even a [SEP] in the padding of the text-less row
        assert torch.equal(net(*changed), before), "padded words leaked into the output"
        changed[2][1, 0] = (changed[2][1, 0] + 1) % 27 + 3  # a real word does matter
        after = net(*changed)
    assert not torch.equal(after[1], before[1])


def test_xattn_rows_without_any_tokens_are_finite():
    net, batch = _net(), _token_batch()
    batch[3][:] = False  # no text anywhere
    batch[5][:] = False  # no image anywhere
    with torch.no_grad():
        out = HEAD.output(net(*batch))
    assert out.shape == (6, 1) and torch.isfinite(out).all() and ((out > 0) & (out < 1)).all()


def _xattn_inputs(seed=0, n_train=240, n_test=60, text_len=8, patches=4, dim=6):
    """A toy task where the target depends on a word and on the image tokens, with missing images and texts."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    X = pd.DataFrame({"a": rng.normal(size=n).astype(np.float32), "c": rng.integers(0, 3, n).astype(np.int32)})
    lengths = rng.integers(0, text_len + 1, n)
    mask = np.arange(text_len)[None, :] < lengths[:, None]
    ids = np.where(mask, rng.integers(3, 20, (n, text_len)), 0).astype(np.int32)
    tokens = rng.normal(size=(n, patches, dim)).astype(np.float16)
    present = rng.random(n) > 0.3
    tokens[~present] = 0
    signal = 0.3 * (ids == 5).any(1) + 0.2 * np.tanh(tokens[:, :, 0].astype(float).mean(1)) * present
    y = np.clip(0.3 + signal + 0.1 * X["a"].to_numpy() + rng.normal(0, 0.05, n), 0, 1)[:n_train]
    extras = {"text_tokens": {"ids": ids, "mask": mask, "vocab": [f"w{i}" for i in range(20)]},
              "image_tokens": {"tokens": tokens, "present": present}}
    inputs = ModelInput(X=X, categorical=["c"], block_keys={"toy": "1"}, n_train=n_train, extras=extras)
    return inputs, y, Folds(make_fold_ids(n_train, 3, "kfold", 0), 3, "toyfolds")


XATTN_FAST = {"epochs": 3, "patience": 2, "batch_size": 64, "hidden": 32, "width": 16}


def test_xattn_model_masks_missing_modalities_end_to_end():
    """Through bind / fit_fold / predict: rows are picked by row id, and a missing image's tokens are ignored."""
    inputs, y, folds = _xattn_inputs()
    model = CrossAttentionModel(XATTN_FAST, seed=1)
    model.bind(inputs)
    _, tr, va = next(folds.split())
    fitted = model.fit_fold(inputs.rows(tr), y[tr], inputs.rows(va), y[va], inputs.categorical)
    X_test = inputs.rows(inputs.test_index)
    before = model.predict(fitted, X_test)
    missing = ~inputs.extras["image_tokens"]["present"]
    model._tokens["tokens"][torch.from_numpy(missing)] = 7.0
    padded = ~inputs.extras["text_tokens"]["mask"]
    model._tokens["ids"][torch.from_numpy(padded)] = 5  # the planted word, but in the padding
    assert np.array_equal(model.predict(fitted, X_test), before)
    # reordering the rows reorders the predictions: tokens follow the row ids, not positions (allclose: a batch in
    # another order may round differently in the matrix products)
    assert np.allclose(model.predict(fitted, X_test.iloc[::-1]), before[::-1], rtol=0, atol=1e-6)


def test_xattn_is_deterministic_on_cpu_and_learns(tmp_path):
    inputs, y, folds = _xattn_inputs()
    runs = [train(CrossAttentionModel({**XATTN_FAST, "epochs": 8, "lr": 5e-3}, seed=2), inputs, y, folds,
                        Store(tmp_path / name), "toy") for name in ("a", "b")]
    assert np.array_equal(runs[0].oof, runs[1].oof) and np.array_equal(runs[0].test, runs[1].test)
    assert runs[0].cv < 0.9 * np.std(y)


# ---- gnn ---------------------------------------------------------------------------------------------------------
def _graph(edges: np.ndarray, n_nodes: int, n_rows: int, types: np.ndarray | None = None):
    from torch_geometric.data import Data

    edges = np.hstack([edges, edges[::-1]])
    types = np.zeros(edges.shape[1] // 2, np.int64) if types is None else types
    return Data(edge_index=torch.from_numpy(edges.astype(np.int64)),
                edge_type=torch.from_numpy(np.concatenate([types, types])), num_nodes=n_nodes, n_rows=n_rows)


def _ring_edges(n: int, rng: np.random.Generator, links: int = 3) -> np.ndarray:
    src = np.repeat(np.arange(n), links)
    dst = rng.integers(0, n, n * links)
    keep = src != dst
    return np.vstack([src[keep], dst[keep]])


GNN_FAST = {"epochs": 25, "patience": 25, "lr": 1e-2, "hidden": 32, "batch_size": 64, "fanouts": [5, 3],
            "edges": ["user"], "dropout": 0.0, "weight_decay": 1e-4}


class LeakyLossGNN(GraphSAGEModel):
    """Deliberately wrong: takes the loss on the validation nodes too (their targets cross the fold)."""

    key = "gnn_leaky_loss"

    def fit_fold(self, X_train, y_train, X_valid, y_valid, categorical):
        ids = np.r_[X_train.index.to_numpy(), X_valid.index.to_numpy()]
        return self.fit_nodes(self.node_features(X_train, X_valid, categorical), ids, np.r_[y_train, y_valid],
                              X_valid.index.to_numpy(), y_valid)


class LeakyMessageGNN(GraphSAGEModel):
    """Deliberately wrong: passes target-reading columns (a test node's encodings) along edges."""

    key = "gnn_leaky_message"

    def _message_columns(self, numeric):
        return set(numeric)


def _planted_inputs(seed=0, n_train=450, n_test=90, n_active=60):
    """Validation-only signal: fold-0 rows live at f in [1, 3] where their target follows f; every other row has
    f in [-3, 1] and a flat target. Only a model that trains on fold 0's targets can learn the slope."""
    rng = np.random.default_rng(seed)
    folds = Folds(make_fold_ids(n_train, 3, "kfold", seed), 3, "planted")
    n = n_train + n_test
    in_fold0 = np.r_[folds.fold == 0, np.zeros(n_test, bool)]
    f = np.where(in_fold0, rng.uniform(1, 3, n), rng.uniform(-3, 1, n))
    X = pd.DataFrame({"f": f, "z": rng.normal(size=n), "c": rng.integers(0, 3, n)}).astype(
        {"f": np.float32, "z": np.float32, "c": np.int32})
    y_all = np.where(in_fold0, 0.5 + 0.4 * np.tanh(2 * (f - 2)), 0.5) + rng.normal(0, 0.02, n)
    graph = _graph(_ring_edges(n + n_active, rng), n + n_active, n)
    inputs = ModelInput(X=X, categorical=["c"], block_keys={"toy": "1"}, n_train=n_train,
                        extras={"graph": {"graph": graph}})
    return inputs, np.clip(y_all[:n_train], 0, 1), folds


def test_gnn_validation_targets_stay_out_of_training(tmp_path):
    inputs, y, folds = _planted_inputs()
    honest = train(GraphSAGEModel(GNN_FAST, seed=0), inputs, y, folds, Store(tmp_path / "h"), "toy")
    leaky = train(LeakyLossGNN(GNN_FAST, seed=0), inputs, y, folds, Store(tmp_path / "l"), "toy")
    fold0 = folds.fold == 0
    spread = np.std(y[fold0])
    honest_score, leaky_score = rmse(y[fold0], honest.oof[fold0]), rmse(y[fold0], leaky.oof[fold0])
    assert honest_score > 0.8 * spread, "the honest gnn learned a slope only validation targets show"
    assert leaky_score < 0.5 * spread, "the leaky variant should see it, or this test proves nothing"


def test_gnn_fold_predictions_ignore_validation_targets():
    """One epoch (no early-stopping choice): scrambling the validation targets changes nothing."""
    inputs, y, folds = _planted_inputs()
    _, tr, va = next(folds.split())
    params = {**GNN_FAST, "epochs": 1}
    preds = []
    for cls, y_valid in ((GraphSAGEModel, y[va]), (GraphSAGEModel, y[va][::-1] * 0.3),
                         (LeakyLossGNN, y[va]), (LeakyLossGNN, y[va][::-1] * 0.3)):
        model = cls(params, seed=0)
        model.bind(inputs)
        fitted = model.fit_fold(inputs.rows(tr), y[tr], inputs.rows(va), y_valid, inputs.categorical)
        preds.append(fitted["pred"])
    assert np.array_equal(preds[0], preds[1])
    assert not np.array_equal(preds[2], preds[3]), "the leaky variant must depend on them"


def test_gnn_does_not_pass_test_nodes_target_encodings_along_edges(tmp_path):
    """A test node's target encoding is computed from all training rows, the validation fold's included. Here
    each training row is linked to one test row whose encoding column is that training row's target: sent along
    the edge it would hand every validation node its own target."""
    rng = np.random.default_rng(3)
    n_train, n_test = 400, 400
    folds = Folds(make_fold_ids(n_train, 3, "kfold", 0), 3, "te")
    y = rng.uniform(0.1, 0.9, n_train)
    te = np.r_[rng.uniform(0, 1, n_train), y]  # test row n_train + i carries y[i]
    X = pd.DataFrame({"noise": rng.normal(size=n_train + n_test), "te": te}).astype(np.float32)
    pairs = np.vstack([np.arange(n_train), n_train + np.arange(n_train)])
    views = {k: pd.DataFrame({"te": rng.uniform(0, 1, n_train).astype(np.float32)}) for k in range(3)}
    inputs = ModelInput(X=X, categorical=[], block_keys={"toy": "1"}, n_train=n_train, train_views=views,
                        extras={"graph": {"graph": _graph(pairs, n_train + n_test, n_train + n_test)}})
    honest = train(GraphSAGEModel(GNN_FAST, seed=0), inputs, y, folds, Store(tmp_path / "h"), "toy")
    leaky = train(LeakyMessageGNN(GNN_FAST, seed=0), inputs, y, folds, Store(tmp_path / "l"), "toy")
    assert honest.cv > 0.85 * np.std(y), "the gnn read its own target through a test neighbour"
    assert leaky.cv < 0.6 * np.std(y), "the leaky variant should find it, or this test proves nothing"


@pytest.mark.parametrize("variant", [{}, {"batch_size": 0, "epochs": 10}, {"full_batch_max_nodes": 10}])
def test_gnn_is_deterministic_on_cpu(tmp_path, variant):
    """Mini-batch steps (default), full-batch steps, and sampled inference (a 'large' graph)."""
    inputs, y, folds = _planted_inputs(seed=1, n_train=240, n_test=60, n_active=30)
    params = {**GNN_FAST, "epochs": 4, **variant}
    runs = [train(GraphSAGEModel(params, seed=5), inputs, y, folds, Store(tmp_path / name), "toy")
            for name in ("a", "b")]
    assert np.array_equal(runs[0].oof, runs[1].oof) and np.array_equal(runs[0].test, runs[1].test)
    assert np.isfinite(runs[0].oof).all() and np.isfinite(runs[0].test).all()


def test_neighbour_sampler_layout():
    rng = np.random.default_rng(0)
    edges = np.hstack([_ring_edges(50, rng), _ring_edges(50, rng)[::-1]])
    types = rng.integers(0, 2, edges.shape[1])
    sampler = NeighbourSampler(edges, types, 50)
    seeds = np.array([7, 3, 11])
    nodes, local, local_types, hops = sampler.sample(seeds, [100, 2], np.random.default_rng(1))
    assert np.array_equal(nodes[:3], seeds) and len(np.unique(nodes)) == len(nodes) and hops[-1] == len(nodes)
    assert local.min() >= 0 and local.max() < len(nodes)
    # fanout above the degree: every incoming edge of each seed, with its type
    for s in range(3):
        want = sorted(zip(edges[0][edges[1] == seeds[s]], types[edges[1] == seeds[s]]))
        got = sorted(zip(nodes[local[0][local[1] == s]], local_types[local[1] == s]))
        assert got == want
    # second hop: at most 2 sampled edges into each first-hop node
    first_hop = np.arange(hops[0], hops[1])
    counts = np.bincount(local[1], minlength=len(nodes))[first_hop]
    assert counts.max() <= 2
    assert (sampler._local == -1).all(), "the sampler's scratch index is reset"


def test_neighbour_sampler_reads_sorted_edges_in_place_and_skips_unused_types():
    """Edges stored sorted by target (the graph block's layout, int32 ids) are sampled without a copy, and edges of
    type -1 (not in the model's ``edges``) are never sampled: the samples equal those of the unsorted int64 edge
    list with the unused edges left out."""
    rng = np.random.default_rng(3)
    edges = np.hstack([_ring_edges(60, rng), _ring_edges(60, rng)[::-1], rng.integers(0, 60, (2, 200))])
    types = rng.integers(-1, 3, edges.shape[1]).astype(np.int8)
    order = np.argsort(edges[1], kind="stable")
    stored, stored_types = edges[:, order].astype(np.int32), types[order]
    in_place = NeighbourSampler(stored, stored_types, 60)
    used = types >= 0
    reference = NeighbourSampler(edges[:, used], types[used], 60)
    every_type_used = stored[:, stored_types >= 0]
    assert np.shares_memory(NeighbourSampler(every_type_used, stored_types[stored_types >= 0], 60).src,
                            every_type_used), "sorted int32 sources are read in place"
    for draw in range(5):
        a = in_place.sample(np.array([4, 17, 31]), [3, 2], np.random.default_rng(draw))
        b = reference.sample(np.array([4, 17, 31]), [3, 2], np.random.default_rng(draw))
        assert all(np.array_equal(x, y) for x, y in zip(a, b))
        assert (a[2] >= 0).all()


def test_gnn_holds_its_numbers_as_float16_within_rounding():
    """The node features' numbers are held as float16 by default: the float32 scaling rounded (at most 2^-11 of
    the clip bound 5 off), the codes and messages of the same fold untouched in kind."""
    from mmstack.errors import ConfigError

    inputs, _, folds = _planted_inputs(n_train=240, n_test=60, n_active=30)
    k, tr, va = next(folds.split())
    features = []
    for dtype in ("float16", "float32"):
        model = GraphSAGEModel({**GNN_FAST, "numbers_dtype": dtype})
        model.bind(inputs)
        features.append(model.node_features(inputs.training_rows(k, tr), inputs.rows(inputs.train_ids[va]),
                                            inputs.categorical))
    half, full = features
    assert half.numeric.dtype == torch.float16 and full.numeric.dtype == torch.float32
    assert half.numeric.shape == full.numeric.shape == (300, full.numeric.shape[1])
    difference = (half.numeric.float() - full.numeric).abs()
    assert 0 < difference.max().item() <= 5 * 2**-11
    assert torch.equal(half.codes, full.codes) and half.message.dtype == full.message.dtype == torch.float32
    with pytest.raises(ConfigError, match="numbers_dtype"):
        GraphSAGEModel({"numbers_dtype": "int8"})


def test_gnn_needs_the_graph_block():
    from mmstack.errors import ConfigError

    inputs, _, _ = _xattn_inputs()
    with pytest.raises(ConfigError, match="graph"):
        GraphSAGEModel({}).bind(inputs)
    with pytest.raises(ConfigError, match="edge type"):
        GraphSAGEModel({"edges": ["friends"]}).bind(_planted_inputs()[0])


# ---- twotower as a classifier ------------------------------------------------------------------------------------
def _pair_inputs(problem: str, seed: int = 0, n_queries: int = 60, n_images: int = 40, n_pairs: int = 900):
    """Synthetic pair_match extras: queries and images in 5 topics; the label says how well a pair's topics match
    (binary: same topic; multiclass: the topic distance 0..4, the largest class rare)."""
    from mmstack.metrics import METRICS
    from mmstack.targets import Target

    rng = np.random.default_rng(seed)
    q_topic, i_topic = rng.integers(0, 5, n_queries), rng.integers(0, 5, n_images)
    centres = rng.normal(size=(5, 16))
    qvec = (centres[q_topic] + 0.3 * rng.normal(size=(n_queries, 16))).astype(np.float32)
    pooled = (centres[i_topic] @ rng.normal(size=(16, 24)) + 0.3 * rng.normal(size=(n_images, 24))).astype(np.float32)
    qi, ii = rng.integers(0, n_queries, n_pairs), rng.integers(0, n_images, n_pairs)
    distance = np.abs(q_topic[qi] - i_topic[ii])
    if problem == "binary":
        y, target = (distance == 0).astype(int), Target("y", "binary", METRICS["logloss"], ("0", "1"))
    else:
        y, target = distance, Target("y", "multiclass", METRICS["logloss"], tuple("01234"))
    extras = {"pair_match": {"qvec_use": qvec, "image_pooled": pooled, "image_ok": np.ones(n_images, bool),
                             "image_probs": np.full((n_images, 3), 1 / 3, np.float32),
                             "query_index": qi, "image_index": ii}}
    n_train = 750
    X = pd.DataFrame({"noise": rng.normal(size=n_pairs).astype(np.float32)})
    inputs = ModelInput(X=X, categorical=[], block_keys={"toy": problem}, n_train=n_train, extras=extras)
    folds = Folds(make_fold_ids(n_train, 3, "kfold", 0, stratify=y[:n_train]), 3, f"pairs-{problem}")
    return inputs, TargetData(target, np.arange(n_train), y[:n_train], folds), target


@pytest.mark.parametrize("problem", ["binary", "multiclass"])
def test_twotower_contract_classification(problem, tmp_path):
    from mmstack.models.base import train_model
    from mmstack.models.twotower import TwoTowerModel

    inputs, data, target = _pair_inputs(problem)
    params = {"epochs": 15, "patience": 4}
    result = train_model(TwoTowerModel(params, seed=1, target=target), inputs, data, Store(tmp_path / "a"), "toy")
    assert result.oof.shape == (750, target.n_outputs) and result.test.shape == (150, target.n_outputs)
    assert ((result.oof > 0) & (result.oof < 1)).all()
    if problem == "multiclass":
        np.testing.assert_allclose(result.oof.sum(axis=1), 1.0, atol=1e-6)
    prior = np.tile(target.prior(data.y), (len(data.y), 1))
    assert result.cv < 0.9 * target.metric(data.y, prior), "learns the topic match"
    again = train_model(TwoTowerModel(params, seed=1, target=target), inputs, data, Store(tmp_path / "b"), "toy")
    assert np.array_equal(again.oof, result.oof) and np.array_equal(again.test, result.test)
