"""GraphSAGE over the listing graph (``graph`` block), trained per fold with node masks.

Nodes are the train and test rows (row ids 0..n_rows-1) and the unlabeled active listings after them; edges are
the graph block's (same user, same title, near-duplicate image, text k-NN; ``edges`` picks the types). The net has
two streams into one head (:class:`GraphSAGENet`): the node's own features through an MLP layer, and a graph
stream of ``layers`` relational SAGE layers (per edge type a mean ``SAGEConv``, summed with a linear map of the
node itself) whose every layer output also feeds the head, so the net can fall back to what the MLP sees.

Node features are the model's dense matrix, standardised and NaN-imputed by the MLP's :class:`TabularScaler` fitted
on the fold's training rows and held as ``numbers_dtype`` (float16: half the memory of the largest per-row array;
the net computes in float32); category codes are embedded (own stream). Active listings have no features in the
blocks and are never a net's own input: they hold no numbers or codes, send the message of an all-zero row with an
``active`` flag of 1, and relay messages between a seller's rows. What travels along edges is a whitened PCA
(``message_components``) of the numeric columns **minus the target-reading ones**: a test node's target encodings
are computed from all training rows, the validation fold's included, so sending them along edges would hand a
validation node its own target through its test neighbours (the first version did, and its CV was 0.002 too good).

No target crosses folds: targets are never node features, and in fold k the loss is taken on the fold's training
rows only; validation and test nodes are just predicted (early stopping watches the validation nodes). The fold's
training rows carry their nested target-encoding values (``ModelInput.training_rows``), the others the ordinary
out-of-fold ones, exactly as the row models see them.

The model is transductive: :meth:`GraphSAGEModel.fit_fold` predicts every row node once at the best epoch and
:meth:`~GraphSAGEModel.predict` looks rows up by row id (the frames' index).

Training steps are mini-batches of ``batch_size`` training nodes on sampled neighbourhoods (``fanouts`` incoming
edges per node and layer), or full-batch steps with ``batch_size`` 0 (one step per epoch: on the embedded default
CV 0.2189 in 150 s against 0.2142 in ~55 s for mini-batches). Predictions use the whole graph at once up to
``full_batch_max_nodes`` nodes (exact neighbour means), sampled neighbourhoods beyond. PyG's ``NeighborLoader``
needs pyg-lib or torch-sparse, which are not installed here (it raises ImportError), so :class:`NeighbourSampler`
does the same in numpy: CSR by target node, every incoming edge of a node with at most ``fanout`` of them, else
``fanout`` drawn with replacement; layer l then updates only the nodes the output needs.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from ..errors import ConfigError
from ..targets import Target
from ..metrics import Metric
from ..projection import whitened
from ..threads import torch_threads
from .base import Level1Model, ModelInput
from .heads import Head
from .registry import register
from .tabular_input import CategoryEmbeddings, TabularScaler, numbers_dtype
from .torch_training import device_for, seed_everything

log = logging.getLogger(__name__)


class NeighbourSampler:
    """GraphSAGE neighbourhood sampling on a CSR of incoming edges, in numpy (no pyg-lib / torch-sparse)."""

    def __init__(self, edge_index: np.ndarray, edge_type: np.ndarray, num_nodes: int):
        """``edge_type`` < 0: an edge not to sample. Edges already sorted by target (the graph block stores them so)
        are read without a sorted copy."""
        keep = edge_type >= 0
        every = bool(keep.all())
        targets = edge_index[1] if every else edge_index[1][keep]
        sources = edge_index[0] if every else edge_index[0][keep]
        types = edge_type if every else edge_type[keep]
        # sources as int32 and types as given (int8 from the model), sorted by target; the targets themselves are
        # not kept (an edge's target is the CSR row it sits in): 5 bytes an edge
        if (targets[1:] >= targets[:-1]).all():
            self.src, self.type = sources.astype(np.int32, copy=False), types
        else:
            order = np.argsort(targets, kind="stable")
            self.src, self.type = sources.astype(np.int32)[order], types[order]
        self.ptr = np.r_[0, np.cumsum(np.bincount(targets, minlength=num_nodes))].astype(np.int64)
        self.num_nodes = num_nodes
        self._local = np.full(num_nodes, -1, dtype=np.int64)

    def _target(self, positions: np.ndarray) -> np.ndarray:
        """The target node of the edges at CSR ``positions``."""
        return np.searchsorted(self.ptr, positions, side="right") - 1

    def _edges_of(self, nodes: np.ndarray, fanout: int, rng: np.random.Generator) -> np.ndarray:
        """Positions (in the CSR) of the sampled incoming edges of ``nodes``."""
        start, deg = self.ptr[nodes], self.ptr[nodes + 1] - self.ptr[nodes]
        small = deg <= fanout
        # every edge of low-degree nodes: concatenated ranges start..start+deg
        s, d = start[small], deg[small]
        offsets = np.arange(d.sum()) - np.repeat(np.cumsum(d) - d, d)
        everything = np.repeat(s, d) + offsets
        s, d = start[~small], deg[~small]
        drawn = np.repeat(s, fanout) + (rng.random(len(s) * fanout) * np.repeat(d, fanout)).astype(np.int64)
        return np.unique(np.concatenate([everything, drawn]))

    def sample(self, seeds: np.ndarray, fanouts: list[int], rng: np.random.Generator):
        """Nodes (seeds first, then each hop's new nodes), local edge_index (2, E), edge types, and the cumulative
        node counts per hop ([seeds, seeds + hop 1, ...]) of the sampled subgraph."""
        seeds = np.asarray(seeds, np.int64)
        nodes, frontier, edges = [seeds], seeds, []
        self._local[seeds] = np.arange(len(seeds))
        count = len(seeds)
        for fanout in fanouts:
            picked = self._edges_of(frontier, fanout, rng)
            edges.append(picked)
            new = np.unique(self.src[picked])
            new = new[self._local[new] < 0]
            self._local[new] = np.arange(count, count + len(new))
            count += len(new)
            nodes.append(new)
            frontier = new
        picked = np.unique(np.concatenate(edges))
        all_nodes = np.concatenate(nodes)
        local_edges = np.stack([self._local[self.src[picked]], self._local[self._target(picked)]])
        self._local[all_nodes] = -1
        return all_nodes, local_edges, self.type[picked], list(np.cumsum([len(n) for n in nodes]))


class GraphSAGENet(nn.Module):
    """Two streams into one head: the node's own features (an MLP layer) and a graph stream.

    The graph stream encodes only ``message_columns`` of the numbers (plus codes and the active flag), then runs
    ``layers`` relational SAGE layers (per edge type a mean ``SAGEConv``, summed with a linear map of the node
    itself, residual + LayerNorm). Target-reading columns stay out of it: a test node's target encodings are
    computed from all training rows, the fold's validation rows included, so passing them along edges would hand a
    validation node its own target via its test neighbours.
    """

    def __init__(self, n_numeric: int, n_message: int, cardinality: list[int], n_edge_types: int, head: Head,
                 hidden: int = 64, layers: int = 2, dropout: float = 0.2):
        super().__init__()
        from torch_geometric.nn import SAGEConv

        self.inputs = CategoryEmbeddings(cardinality)
        self.own = nn.Sequential(nn.Linear(n_numeric + self.inputs.width, 2 * hidden), nn.BatchNorm1d(2 * hidden),
                                 nn.ReLU(),
                                 nn.Dropout(dropout))
        # the graph stream sees no category embeddings: their backward over every sampled node cost more than
        # they added (categories enter through the own stream and, summarised, through the numbers)
        self.encoder = nn.Sequential(nn.Linear(n_message + 1, hidden), nn.LayerNorm(hidden), nn.ReLU())
        self.self_maps = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers))
        self.convs = nn.ModuleList(
            nn.ModuleList(SAGEConv(hidden, hidden, aggr="mean", root_weight=False) for _ in range(n_edge_types))
            for _ in range(layers))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(layers))
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Sequential(nn.Linear(hidden * (layers + 3), hidden), nn.ReLU(), nn.Dropout(dropout),
                                  head.layer(hidden))

    def forward(self, own: torch.Tensor, message: torch.Tensor, codes: torch.Tensor, active: torch.Tensor,
                edges: list[torch.Tensor], hops: list[int] | None = None) -> torch.Tensor:
        """Predictions for the first ``len(own)`` nodes.

        ``own``, ``codes``: all numbers and the category codes of those nodes (``codes`` may hold more rows);
        ``message``, ``active``: the message features and active flags of every node; ``edges[t]``: the (2, E_t)
        edge_index (source, target) of edge type t.
        ``hops`` (sampled subgraphs, nodes ordered by hop): cumulative node counts [seeds, seeds + hop 1, ...]; layer
        l then updates only the nodes within ``layers - l`` hops of the seeds, the only ones the output needs.
        """
        n_out = len(own)
        h = self.encoder(torch.cat([message, active.unsqueeze(1)], dim=1))
        outputs = [h[:n_out]]
        n_layers = len(self.convs)
        for layer, (self_map, convs, norm) in enumerate(zip(self.self_maps, self.convs, self.norms)):
            n_dst = len(h) if hops is None else hops[n_layers - 1 - layer]
            target = h[:n_dst]
            update = self_map(target)
            for conv, edge_index in zip(convs, edges):
                if hops is not None:
                    edge_index = edge_index[:, edge_index[1] < n_dst]
                if edge_index.shape[1]:
                    update = update + conv((h, target), edge_index)
            h = norm(target + self.dropout(torch.relu(update)))
            outputs.append(h[:n_out])
        mine = self.own(self.inputs(own, codes))
        return self.head(torch.cat([mine] + outputs, dim=1))


def project(numeric: torch.Tensor, columns: list[int], n_nodes: int, k: int) -> torch.Tensor:
    """The message features of every node: the row nodes' numbers (``numeric``, one row per row node) in
    ``columns``, or with ``k`` fewer than those their whitened PCA to ``k`` columns (fitted on the row nodes; no
    target involved) clipped to [-5, 5]. The nodes after the rows (active listings) have no numbers: theirs is the
    message of an all-zero row. No copy of the columns is made: the graph stream's input width, and so its cost
    per sampled node, drops ~10x."""
    n_rows = len(numeric)
    if not k or len(columns) <= k:
        out = torch.zeros(n_nodes, len(columns))
        out[:n_rows] = numeric[:, columns]
        return out
    x = whitened(numeric.numpy(), np.arange(n_rows), k, columns=np.asarray(columns), n_out=n_nodes,
                 dtype=np.float32)
    return torch.from_numpy(np.clip(x, -5, 5, out=x))


def split_edges(edge_index: torch.Tensor, edge_type: torch.Tensor, n_types: int) -> list[torch.Tensor]:
    """The (2, E_t) int64 edge_index of each edge type 0..n_types-1 (edges of type -1 are in none)."""
    return [edge_index[:, edge_type == t].long() for t in range(n_types)]


@dataclass
class NodeFeatures:
    """A fold's node features: ``numeric`` and ``codes`` of the row nodes (scaled by ``scaler``), ``message``
    and ``active`` of every node."""

    scaler: TabularScaler
    numeric: torch.Tensor
    message: torch.Tensor
    codes: torch.Tensor
    active: torch.Tensor

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return self.numeric, self.message, self.codes, self.active


@register
class GraphSAGEModel(Level1Model):
    """``gnn``: GraphSAGE on the listing graph with the dense blocks as node features."""

    key = "gnn"
    version = "2"
    row_tables = ("_graph", "_X", "_edge_index", "_edge_type")
    requires_blocks = ("graph",)
    default_params = {
        # edge types of the graph block to pass messages along; image edges (near-duplicate hashes, the densest
        # type on the embedded data) cost a third of the time and scored no better in CV
        "edges": ["user", "title", "knn"],
        "hidden": 64,
        "layers": 2,
        "dropout": 0.2,
        "epochs": 30,  # passes over the training nodes (one step each with batch_size 0)
        "lr": 2e-3,
        "weight_decay": 0.05,  # AdamW's decoupled decay: the nets overfit 8k rows within a few epochs
        "patience": 5,
        "loss": "mse",  # regression: or "bce" on a 0..1 target; classification uses cross-entropy
        "class_weight": "",  # classification: "balanced" weighs classes by inverse frequency
        "batch_size": 256,  # training nodes per step, with sampled neighbourhoods; 0 = full-batch steps
        "fanouts": [10, 5],  # incoming edges sampled per node and layer (mini-batch steps, large graphs)
        "full_batch_max_nodes": 200_000,  # larger graphs are also predicted on sampled neighbourhoods
        "message_components": 32,  # whitened PCA width of the features sent along edges (0: all columns)
        "numbers_dtype": "float16",  # how the row nodes' numbers are held (tabular_input.numbers_dtype)
        # CPU threads while fitting (restored after): one, as for xattn (two ran 50x slower on busy shared cores)
        "num_threads": 1,
    }

    def __init__(self, params: dict[str, Any] | None = None, seed: int = 42, target: Target | None = None):
        super().__init__(params, seed, target)
        p = self.params
        if p["layers"] < 1 or len(p["fanouts"]) != p["layers"]:
            raise ConfigError("models.gnn: layers must be >= 1 and fanouts must have one entry per layer")
        numbers_dtype(p, self.key)  # a bad value fails here, before any fold
        self._graph = None
        self._target_columns: set[str] = set()

    def bind(self, inputs: ModelInput) -> None:
        graph = inputs.extras.get("graph", {}).get("graph")
        if graph is None:
            raise ConfigError("models.gnn needs the graph block in its blocks (features.graph)")
        if not isinstance(inputs.X, pd.DataFrame):
            raise ConfigError("models.gnn takes dense inputs")
        n_rows = int(getattr(graph, "n_rows", inputs.X.shape[0]))
        if n_rows != inputs.X.shape[0]:
            raise ConfigError(f"models.gnn: graph has {n_rows} row nodes, the matrix {inputs.X.shape[0]} rows")
        self._graph = graph
        self._X = inputs.X
        # target-reading columns are exactly those with per-fold training views (ModelInput.train_views)
        self._target_columns = {c for view in inputs.train_views.values() for c in view.columns}
        from ..features.graph import EDGE_TYPES

        unknown = set(self.params["edges"]) - set(EDGE_TYPES)
        if unknown:
            raise ConfigError(f"models.gnn.edges: unknown edge type(s) {sorted(unknown)}; known {EDGE_TYPES}")
        wanted = [EDGE_TYPES.index(e) for e in self.params["edges"]]
        # edge types renumbered 0..T-1 in the order of the edges param (-1: not used), one byte an edge; types
        # the graph lacks stay empty
        remap = np.full(len(EDGE_TYPES), -1, dtype=np.int8)
        remap[wanted] = np.arange(len(wanted))
        # the graph's edges are used as stored (no filtered copy): an unused type is -1, which no step reads
        self._edge_index = graph.edge_index
        self._edge_type = torch.from_numpy(remap[graph.edge_type.numpy()])
        self._n_types = max(1, len(wanted))

    # ---- fold loop -------------------------------------------------------------------------------------------
    def fit_fold(self, X_train, y_train, X_valid, y_valid, categorical):
        train_ids = X_train.index.to_numpy(dtype=np.int64)
        valid_ids = X_valid.index.to_numpy(dtype=np.int64)
        nodes = self.node_features(X_train, X_valid, categorical)
        del X_train  # now in the node features: the fold's copy of its rows goes (Level1Model.fit_bag)
        return self.fit_nodes(nodes, train_ids, y_train, valid_ids, y_valid)

    def node_features(self, X_train: pd.DataFrame, X_valid: pd.DataFrame, categorical: list[str]) -> NodeFeatures:
        """The fold's node features: the bound matrix scaled by a :class:`TabularScaler` fitted on ``X_train``,
        with the fold's training and validation rows replaced by the frames given (training rows hold their
        nested target-encoding values), and the message features of every node."""
        if self._graph is None:
            raise RuntimeError("gnn: bind(inputs) must be called before fitting")
        scaler = TabularScaler.fit(X_train, categorical)
        n_rows = len(self._X)
        out = (np.empty((n_rows, len(scaler.numeric)), numbers_dtype(self.params, self.key)),
               np.zeros((n_rows, len(scaler.categorical)), np.int64))
        scaler.transform(self._X, out=out)
        for frame in (X_train, X_valid):  # the fold's own view of its rows (nested target encodings), written
            # in place (no scaled copy of the whole fold)
            scaler.transform(frame, out=out, rows=frame.index.to_numpy(dtype=np.int64))
        numeric, codes = (torch.from_numpy(a) for a in out)
        allowed = self._message_columns(scaler.numeric)
        n_nodes = int(self._graph.num_nodes)
        message = project(numeric, [j for j, c in enumerate(scaler.numeric) if c in allowed], n_nodes,
                          self.params["message_components"])
        # active listings have no features in the blocks: no numbers or codes (only row nodes are ever a net's
        # "own" input), the message of an all-zero row and an ``active`` flag of 1
        active = torch.cat([torch.zeros(n_rows), torch.ones(n_nodes - n_rows)])
        return NodeFeatures(scaler, numeric, message, codes, active)

    def fit_nodes(self, nodes: NodeFeatures, loss_ids: np.ndarray, y_loss: np.ndarray, valid_ids: np.ndarray,
                  y_valid: np.ndarray) -> dict[str, Any]:
        """Fit with the loss on nodes ``loss_ids`` (the fold's training rows) and early stopping on ``valid_ids``.
        Returns the scaler, the net (on CPU) and the prediction of every row node at the best epoch."""
        p = self.params
        head = Head(self.target, y_loss, p["loss"], p["class_weight"])
        seed_everything(self.seed)  # before the weights are initialised
        net = GraphSAGENet(nodes.numeric.shape[1], nodes.message.shape[1], nodes.scaler.cardinality, self._n_types,
                           head, p["hidden"], p["layers"], p["dropout"])
        device = device_for()
        with torch_threads(p["num_threads"]):
            pred = _train_graph(net, head, self.target.metric, nodes.tensors(), self._edge_index, self._edge_type,
                                self._n_types, loss_ids, y_loss, valid_ids, y_valid, p, self.seed, device,
                                len(nodes.numeric), self.out_of_time)
        return {"scaler": nodes.scaler, "head": head, "net": net.cpu(), "pred": pred.astype(np.float32)}

    def _message_columns(self, numeric: list[str]) -> set[str]:
        """Numeric columns that may travel along edges: all but the target-reading ones."""
        return set(numeric) - self._target_columns

    def predict(self, fitted, X) -> np.ndarray:
        ids = X.index.to_numpy(dtype=np.int64)
        pred = fitted["pred"]
        if len(ids) and (ids.min() < 0 or ids.max() >= len(pred)):
            raise ValueError("gnn predicts only the graph's row nodes (row ids 0..n_rows-1)")
        return pred[ids].astype(np.float64)


def _train_graph(net: GraphSAGENet, head: Head, metric: Metric, features, edge_index: torch.Tensor,
                 edge_type: torch.Tensor, n_types: int,
                 loss_ids: np.ndarray, y_loss: np.ndarray, valid_ids: np.ndarray, y_valid: np.ndarray,
                 p: dict[str, Any], seed: int, device: torch.device, n_rows: int,
                 out_of_time=lambda: False) -> np.ndarray:
    """Train ``net``; returns the row nodes' predictions at the best validation epoch.

    Steps: full batch (``batch_size`` 0, one step per epoch) or mini-batches of ``batch_size`` loss nodes with
    sampled neighbourhoods. Predictions: the whole graph at once when it has at most ``full_batch_max_nodes``
    nodes (exact neighbour means), else sampled neighbourhoods with a fixed seed (the same at every evaluation).
    """
    seed_everything(seed)
    net.to(device)
    n_nodes = len(features[1])
    small = n_nodes <= p["full_batch_max_nodes"]
    full_steps = p["batch_size"] == 0
    if full_steps and not small:
        raise ConfigError(f"models.gnn: the graph has {n_nodes} nodes, more than full_batch_max_nodes="
                          f"{p['full_batch_max_nodes']}; set batch_size > 0 for sampled mini-batches")
    optimiser = torch.optim.AdamW(net.parameters(), lr=p["lr"], weight_decay=p["weight_decay"])
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(1, p["epochs"]))
    use_amp = device.type == "cuda"
    y_loss_t = head.label_tensor(y_loss).to(device)
    if small:
        x = [t.to(device) for t in features]
        edges = [e.to(device) for e in split_edges(edge_index, edge_type, n_types)]
    sampler = None if full_steps and small else NeighbourSampler(edge_index.numpy(), edge_type.numpy(), n_nodes)
    rng = np.random.default_rng(seed)
    infer_batch = 4 * max(1, p["batch_size"])

    def predict_all() -> np.ndarray:
        net.eval()
        with torch.inference_mode():
            if small:
                return head.output(net(x[0][:n_rows], *x[1:], edges)).float().cpu().numpy()
            out = np.zeros((n_rows, head.n_outputs), dtype=np.float32)
            infer_rng = np.random.default_rng(seed + 1)
            for start in range(0, n_rows, infer_batch):
                seeds = np.arange(start, min(n_rows, start + infer_batch))
                out[seeds] = head.output(_subgraph_forward(net, sampler, features, seeds, p["fanouts"],
                                                           infer_rng, n_types, device)).float().cpu().numpy()
            return out

    best, best_state, best_pred, waited = np.inf, copy.deepcopy(net.state_dict()), None, 0
    bar = tqdm(range(p["epochs"]), desc="gnn", unit="epoch", leave=False)
    for epoch in bar:
        net.train()
        if full_steps:
            batches = [None]
        else:
            order = rng.permutation(len(loss_ids))
            batches = [order[i:i + p["batch_size"]] for i in range(0, len(order), p["batch_size"])]
        for batch in batches:
            optimiser.zero_grad(set_to_none=True)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                if full_steps:
                    pred = net(x[0][:n_rows], *x[1:], edges)[torch.as_tensor(loss_ids, device=device)]
                    target = y_loss_t
                else:
                    pred = _subgraph_forward(net, sampler, features, loss_ids[batch], p["fanouts"], rng, n_types,
                                             device, grad=True)
                    target = y_loss_t[torch.from_numpy(batch).to(device)]
            loss = head.loss(pred, target)
            loss.backward()
            optimiser.step()
        scheduler.step()
        all_pred = predict_all()
        score = metric(y_valid, all_pred[valid_ids])
        bar.set_postfix({f"valid_{metric.name}": f"{score:.5f}"})
        log.debug("gnn epoch %d valid %s %.5f", epoch + 1, metric.name, score)
        if metric.loss(score) < best - 1e-6:
            best, best_state, best_pred, waited = metric.loss(score), copy.deepcopy(net.state_dict()), all_pred, 0
        else:
            waited += 1
            if waited >= p["patience"]:
                break
        if out_of_time():  # a time limit's fold deadline: keep the best epoch so far
            break
    net.load_state_dict(best_state)
    return best_pred if best_pred is not None else predict_all()


def _subgraph_forward(net, sampler: NeighbourSampler, features, seeds: np.ndarray, fanouts: list[int],
                      rng: np.random.Generator, n_types: int, device: torch.device, grad: bool = False):
    """Predictions for ``seeds`` on a sampled neighbourhood (own numbers gathered for the seeds only)."""
    numeric, message, codes, active = features
    nodes, local_edges, types, hops = sampler.sample(seeds, fanouts, rng)
    idx, own = torch.from_numpy(nodes), torch.from_numpy(np.asarray(seeds, np.int64))
    x = [numeric[own], message[idx], codes[own], active[idx]]
    edges = [e.to(device) for e in split_edges(torch.from_numpy(local_edges), torch.from_numpy(types), n_types)]
    out = net(*(t.to(device) for t in x), edges, hops=hops)
    return out if grad else out.detach()
