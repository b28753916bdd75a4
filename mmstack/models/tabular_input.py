"""The tabular part every net reads: standardised numbers and embedded category codes.

:class:`TabularScaler` is fitted on a fold's training rows (median-impute, standardise, clip; category codes
shifted so 0 means missing or unseen) and saved with the fold's model; :class:`CategoryEmbeddings` turns the
codes into vectors and concatenates them with the numbers.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn


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


class CategoryEmbeddings(nn.Module):
    """One embedding per categorical column (width min(16, (cardinality + 1) // 2 + 1)), concatenated after the
    numbers."""

    def __init__(self, cardinality: list[int]):
        super().__init__()
        self.embeddings = nn.ModuleList(nn.Embedding(card, min(16, (card + 1) // 2 + 1)) for card in cardinality)
        self.width = sum(e.embedding_dim for e in self.embeddings)

    def forward(self, numeric: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        n = len(numeric)
        return torch.cat([numeric] + [emb(codes[:n, j]) for j, emb in enumerate(self.embeddings)], dim=1)
