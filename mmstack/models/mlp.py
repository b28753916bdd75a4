"""A plain MLP on the dense blocks: standardised numbers plus embeddings of the categorical codes."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .base import Level1Model
from .heads import Head
from .registry import register
from .tabular_input import CategoryEmbeddings, TabularScaler, numbers_dtype
from .torch_training import fit_with_params, predict_on_device, seed_everything


class MLPNet(nn.Module):
    """Numbers and category embeddings through ``hidden`` layers (BatchNorm, ReLU, dropout) into the head."""

    def __init__(self, n_numeric: int, cardinality: list[int], hidden: list[int], dropout: float, head: Head):
        super().__init__()
        self.inputs = CategoryEmbeddings(cardinality)
        width = n_numeric + self.inputs.width
        layers: list[nn.Module] = []
        for h in hidden:
            layers += [nn.Linear(width, h), nn.BatchNorm1d(h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        layers.append(head.layer(width))
        self.body = nn.Sequential(*layers)

    def forward(self, numeric: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        return self.body(self.inputs(numeric, codes))


@register
class MLPModel(Level1Model):
    key = "mlp"
    version = "2"
    default_params = {
        "hidden": [256, 64],
        "dropout": 0.2,
        "epochs": 30,
        "batch_size": 256,
        "lr": 2e-3,
        "weight_decay": 1e-4,
        "patience": 5,
        "loss": "mse",  # regression: or "bce" on a 0..1 target; classification uses cross-entropy
        "class_weight": "",  # classification: "balanced" weighs classes by inverse frequency
        "num_threads": 2,
        "numbers_dtype": "float16",  # how the scaled numbers are held (tabular_input.numbers_dtype)
    }

    def __init__(self, params=None, seed: int = 42, target=None):
        super().__init__(params, seed, target)
        numbers_dtype(self.params, self.key)  # a bad value fails here, before any fold

    def fit_fold(self, X_train, y_train, X_valid, y_valid, categorical):
        p = self.params
        scaler = TabularScaler.fit(X_train, categorical)
        head = Head(self.target, y_train, p["loss"], p["class_weight"])
        seed_everything(self.seed)  # before the weights are initialised
        net = MLPNet(len(scaler.numeric), scaler.cardinality, p["hidden"], p["dropout"], head)
        dtype = numbers_dtype(p, self.key)
        train = scaler.transform(X_train, dtype=dtype)
        del X_train  # scaled: the fold's copy of its rows goes before training (Level1Model.fit_bag)
        net = fit_with_params(net, head, self.target.metric, p, self.seed, train, y_train,
                              scaler.transform(X_valid, dtype=dtype), y_valid, desc="mlp",
                              out_of_time=self.out_of_time)
        return scaler, head, net

    def predict(self, fitted, X) -> np.ndarray:
        scaler, head, net = fitted
        return predict_on_device(net, head, scaler.transform(X, dtype=numbers_dtype(self.params, self.key)),
                                 self.params["num_threads"], 2048)
