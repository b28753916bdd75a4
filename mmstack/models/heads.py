"""The output head of every PyTorch net, from the target's problem type: one builder, one loss, one output map.

A net ends in ``head.layer(width)`` and returns its logits (rows x outputs); the training loop scores them with
:meth:`Head.loss` and predictions are :meth:`Head.output` of them:

| problem | outputs | output map | loss | bias at start |
|---|---|---|---|---|
| regression with a value range | 1 | lo + (hi - lo) * sigmoid | MSE (or BCE on the scaled value) | logit of the scaled mean |
| regression without a range | 1 | identity | MSE | the mean |
| binary | 1 | sigmoid = P(positive) | BCE (optionally class-weighted) | logit of the positive share |
| multiclass | classes | softmax | cross-entropy (optionally class-weighted) | log class shares |

Starting at the prior matters: a sigmoid's 0.5 is far from Avito's mean 0.15, and a uniform softmax over a hundred
classes far from the real shares.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..targets import Target


class Head:
    """Output layer, output map and loss of a net for ``target``, initialised at the prior of ``y_train``.

    ``loss``: "mse" or "bce" (bounded regression only; BCE on the value scaled into 0..1); classification always
    uses (binary) cross-entropy. ``class_weight``: "balanced" weights classes by their inverse frequency.
    """

    def __init__(self, target: Target, y_train: np.ndarray, loss: str = "mse", class_weight: str | None = None):
        self.problem = target.problem
        self.n_outputs = target.n_outputs
        self.range = target.value_range if target.problem == "regression" else None
        if loss not in ("mse", "bce"):
            raise ConfigError(f"loss must be \"mse\" or \"bce\", got {loss!r}")
        if loss == "bce" and target.problem == "regression" and self.range is None:
            raise ConfigError("loss \"bce\" needs a regression target with a value range (e.g. 0..1)")
        self.loss_name = loss
        y = np.asarray(y_train)
        if target.problem == "regression":
            lo, hi = self.range or (0.0, 1.0)
            mean = float(np.mean(y)) if len(y) else 0.0
            self.bias = [_logit(np.clip((mean - lo) / (hi - lo), 0.01, 0.99))] if self.range else [mean]
        else:
            prior = target.prior(y)
            self.bias = [_logit(float(prior[0]))] if target.problem == "binary" else list(np.log(prior))
        self.weights = None
        if class_weight and target.is_classification:
            counts = np.bincount(y.astype(np.int64), minlength=target.n_classes).astype(np.float64)
            w = len(y) / (target.n_classes * np.maximum(counts, 1.0))
            self.weights = torch.as_tensor(w, dtype=torch.float32)

    def layer(self, width: int) -> nn.Linear:
        """The final linear layer, its bias at the prior."""
        linear = nn.Linear(width, self.n_outputs)
        self.init_(linear)
        return linear

    def init_(self, linear: nn.Linear) -> None:
        with torch.no_grad():
            linear.bias.copy_(torch.as_tensor(self.bias, dtype=linear.bias.dtype))

    def output(self, logits: torch.Tensor) -> torch.Tensor:
        """Predictions (rows x outputs) from logits."""
        if self.problem == "multiclass":
            return torch.softmax(logits.float(), dim=1)
        if self.problem == "binary":
            return torch.sigmoid(logits)
        if self.range is not None:
            lo, hi = self.range
            return lo + (hi - lo) * torch.sigmoid(logits)
        return logits

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Training loss of a batch: ``y`` holds values (regression) or class codes."""
        logits = logits.float()
        if self.problem == "multiclass":
            weight = None if self.weights is None else self.weights.to(logits.device)
            return nn.functional.cross_entropy(logits, y.long(), weight=weight)
        if self.problem == "binary":
            target = y.float()
            weight = None if self.weights is None else self.weights.to(logits.device)[y.long()]
            return nn.functional.binary_cross_entropy_with_logits(logits[:, 0], target, weight=weight)
        pred = self.output(logits)[:, 0]
        if self.loss_name == "bce":
            lo, hi = self.range
            return nn.functional.binary_cross_entropy(((pred - lo) / (hi - lo)).clamp(0, 1),
                                                      ((y.float() - lo) / (hi - lo)).clamp(0, 1))
        return nn.functional.mse_loss(pred, y.float())

    def label_tensor(self, y: np.ndarray) -> torch.Tensor:
        """Labels as the loss wants them (float values or int64 class codes)."""
        return torch.as_tensor(y, dtype=torch.float32 if self.problem == "regression" else torch.int64)


def _logit(p: float) -> float:
    return float(np.log(p / (1.0 - p)))
