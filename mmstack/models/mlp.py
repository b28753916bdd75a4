"""A plain MLP on the dense blocks: standardised numbers plus embeddings of the categorical codes."""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from .base import Level1Model
from .registry import register
from .torch_training import predict_batches, seed_everything, train_net


@dataclass
class TabularScaler:
    """Median-impute, standardise and clip numeric columns; shift category codes so 0 means missing/unseen."""

    numeric: list[str]
    categorical: list[str]
    median: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    cardinality: list[int]

    @classmethod
    def fit(cls, X: pd.DataFrame, categorical: list[str]) -> "TabularScaler":
        cats = [c for c in categorical if c in X.columns]
        num = [c for c in X.columns if c not in cats]
        values = X[num].to_numpy(dtype=np.float64)
        with warnings.catch_warnings():  # all-NaN columns get median 0
            warnings.simplefilter("ignore", RuntimeWarning)
            median = np.nan_to_num(np.nanmedian(values, axis=0)) if len(values) else np.zeros(len(num))
        filled = np.where(np.isnan(values), median, values)
        std = filled.std(axis=0)
        cards = [int(np.nanmax(X[c].to_numpy(dtype=float), initial=-1)) + 2 for c in cats]
        return cls(num, cats, median, filled.mean(axis=0), np.where(std > 0, std, 1.0), cards)

    def transform(self, X: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor]:
        values = X[self.numeric].to_numpy(dtype=np.float64)
        values = np.clip((np.where(np.isnan(values), self.median, values) - self.mean) / self.std, -5, 5)
        codes = np.zeros((len(X), len(self.categorical)), dtype=np.int64)
        for j, (c, card) in enumerate(zip(self.categorical, self.cardinality)):
            col = np.nan_to_num(X[c].to_numpy(dtype=float), nan=-1).astype(np.int64) + 1
            codes[:, j] = np.where((col >= 0) & (col < card), col, 0)
        return torch.as_tensor(values, dtype=torch.float32), torch.as_tensor(codes)


class MLPNet(nn.Module):
    def __init__(self, n_numeric: int, cardinality: list[int], hidden: list[int], dropout: float,
                 target_mean: float = 0.5):
        super().__init__()
        self.embeddings = nn.ModuleList(nn.Embedding(card, min(16, (card + 1) // 2 + 1)) for card in cardinality)
        width = n_numeric + sum(e.embedding_dim for e in self.embeddings)
        layers: list[nn.Module] = []
        for h in hidden:
            layers += [nn.Linear(width, h), nn.BatchNorm1d(h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        head = nn.Linear(width, 1)
        with torch.no_grad():  # start at the mean target: the sigmoid's 0.5 is far from Avito's 0.15
            head.bias.fill_(float(np.log(target_mean / (1 - target_mean))))
        layers.append(head)
        self.body = nn.Sequential(*layers)

    def forward(self, numeric: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        parts = [numeric] + [emb(codes[:, j]) for j, emb in enumerate(self.embeddings)]
        return torch.sigmoid(self.body(torch.cat(parts, dim=1))).squeeze(1)


@register
class MLPModel(Level1Model):
    key = "mlp"
    version = "1"
    default_params = {
        "hidden": [256, 64],
        "dropout": 0.2,
        "epochs": 30,
        "batch_size": 256,
        "lr": 2e-3,
        "weight_decay": 1e-4,
        "patience": 5,
        "loss": "mse",  # or "bce" on the 0..1 target
        "num_threads": 2,
    }

    def fit_fold(self, X_train, y_train, X_valid, y_valid, categorical):
        scaler = TabularScaler.fit(X_train, categorical)
        seed_everything(self.seed)  # before the weights are initialised
        net = MLPNet(len(scaler.numeric), scaler.cardinality, self.params["hidden"], self.params["dropout"],
                     target_mean=float(np.clip(np.mean(y_train), 0.01, 0.99)))
        p = self.params
        net = train_net(net, scaler.transform(X_train), y_train, scaler.transform(X_valid), y_valid,
                        epochs=p["epochs"], batch_size=p["batch_size"], lr=p["lr"], weight_decay=p["weight_decay"],
                        patience=p["patience"], seed=self.seed, loss=p["loss"], desc="mlp",
                        num_threads=p["num_threads"])
        return scaler, net

    def predict(self, fitted, X) -> np.ndarray:
        scaler, net = fitted
        return predict_batches(net, scaler.transform(X), 2048, torch.device("cpu"))
