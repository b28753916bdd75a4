"""twotower: a query tower and an image tower on the raw embeddings of the pair_match block, fused with its
pair features.

Query tower: the sentence embedding(s) of the query. Image tower: EfficientNet-Lite0 pooled features and the
log class probabilities. Both map to ``width`` dims; their element-wise product (a learned bilinear match) and the
pair features' MLP feed a small head (:mod:`mmstack.models.heads`). Embeddings are looked up by row id from the block's
extras, so the test matrix (every query against every image) is never materialised as raw vectors.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..targets import Target
from .base import Level1Model, ModelInput
from .heads import Head
from .registry import register
from .tabular_input import TabularScaler
from .torch_training import fit_with_params, predict_on_device, seed_everything


def _tower(n_in: int, hidden: int, width: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(n_in), nn.Dropout(dropout), nn.Linear(n_in, hidden), nn.ReLU(),
                         nn.Linear(hidden, width))


class TwoTowerNet(nn.Module):
    def __init__(self, n_numeric: int, query_dim: int, image_dim: int, width: int, hidden: int, dropout: float,
                 head: Head):
        super().__init__()
        self.query = _tower(query_dim, hidden, width, dropout)
        self.image = _tower(image_dim, hidden, width, dropout)
        self.pair = nn.Sequential(nn.Linear(n_numeric, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(dropout))
        self.head = nn.Sequential(nn.Linear(hidden + width + 1, hidden // 2), nn.ReLU(), head.layer(hidden // 2))

    def forward(self, numeric: torch.Tensor, query: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        q, v = self.query(query.float()), self.image(image.float())
        match = q * v
        cosine = nn.functional.cosine_similarity(q, v, dim=1).unsqueeze(1)
        return self.head(torch.cat([self.pair(numeric), match, cosine], dim=1))


@register
class TwoTowerModel(Level1Model):
    key = "twotower"
    version = "2"
    row_tables = ("_tables",)
    requires_blocks = ("pair_match",)
    default_params = {
        "width": 64,
        "hidden": 128,
        "dropout": 0.2,
        "epochs": 30,
        "batch_size": 128,
        "lr": 2e-3,
        "weight_decay": 1e-3,
        "patience": 5,
        "loss": "mse",  # regression: or "bce" on a 0..1 target; classification uses cross-entropy
        "class_weight": "",  # classification: "balanced" weighs classes by inverse frequency
        "num_threads": 1,
    }

    def __init__(self, params: dict[str, Any] | None = None, seed: int = 42, target: Target | None = None):
        super().__init__(params, seed, target)
        self._tables: dict[str, torch.Tensor] | None = None

    def bind(self, inputs: ModelInput) -> None:
        pm = inputs.extras.get("pair_match")
        if pm is None:
            raise ConfigError("models.twotower needs the pair_match block in its blocks")
        query = np.concatenate([np.asarray(pm[k], np.float32) for k in sorted(pm) if k.startswith("qvec_")], axis=1)
        probs = np.asarray(pm["image_probs"], np.float32)
        image = np.concatenate([np.asarray(pm["image_pooled"], np.float32),
                                np.log(np.clip(probs, 1e-6, 1.0)) * np.asarray(pm["image_ok"])[:, None]], axis=1)
        self._tables = {"query": torch.from_numpy(query), "image": torch.from_numpy(image),
                        "query_index": torch.from_numpy(np.asarray(pm["query_index"], np.int64)),
                        "image_index": torch.from_numpy(np.asarray(pm["image_index"], np.int64))}

    def _tensors(self, scaler: TabularScaler, X) -> list[torch.Tensor]:
        if self._tables is None:
            raise RuntimeError("twotower: bind(inputs) must be called before fitting or predicting")
        rows = torch.from_numpy(np.ascontiguousarray(X.index.to_numpy(dtype=np.int64)))
        t = self._tables
        numeric, _ = scaler.transform(X)
        return [numeric, t["query"][t["query_index"][rows]], t["image"][t["image_index"][rows]]]

    def fit_fold(self, X_train, y_train, X_valid, y_valid, categorical):
        p = self.params
        scaler = TabularScaler.fit(X_train, [])
        head = Head(self.target, y_train, p["loss"], p["class_weight"])
        seed_everything(self.seed)
        net = TwoTowerNet(len(scaler.numeric), self._tables["query"].shape[1], self._tables["image"].shape[1],
                          p["width"], p["hidden"], p["dropout"], head)
        net = fit_with_params(net, head, self.target.metric, p, self.seed, self._tensors(scaler, X_train), y_train,
                              self._tensors(scaler, X_valid), y_valid, desc="twotower", out_of_time=self.out_of_time)
        return scaler, head, net

    def predict(self, fitted, X) -> np.ndarray:
        scaler, head, net = fitted
        return predict_on_device(net, head, self._tensors(scaler, X), self.params["num_threads"], 2048)
