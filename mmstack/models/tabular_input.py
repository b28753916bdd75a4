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

PASS_VALUES = 2**22  # values per float64 pass of TabularScaler.fit and .transform (32 MB, whatever the shape)


def numbers_dtype(params: dict, model: str) -> np.dtype:
    """A net's ``numbers_dtype`` param: how it holds its scaled numbers (it computes in float32). float16 halves
    the largest array a net holds per row, at a rounding of at most 2^-11 of the clip bound 5. Fold models saved
    before the param existed held float32."""
    value = params.get("numbers_dtype", "float32")
    if value not in ("float16", "float32"):
        from ..errors import ConfigError

        raise ConfigError(f'models.{model}.numbers_dtype must be "float16" or "float32", got {value!r}')
    return np.dtype(value)


def _per_pass(other_side: int) -> int:
    """Columns (fit) or rows (transform) per float64 pass of ``PASS_VALUES`` values, at least one."""
    return max(1, PASS_VALUES // max(1, other_side))


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
        median, mean, std = (np.zeros(len(num)) for _ in range(3))
        # a few columns at a time in float64: the same figures as on the whole matrix, without its float64 copies
        step = _per_pass(len(X))
        for start in range(0, len(num), step):
            part = slice(start, start + step)
            values = X[num[part]].to_numpy(dtype=np.float64)
            with warnings.catch_warnings():  # all-NaN columns get median 0
                warnings.simplefilter("ignore", RuntimeWarning)
                median[part] = np.nan_to_num(np.nanmedian(values, axis=0)) if len(values) else 0.0
            filled = np.where(np.isnan(values), median[part], values)
            mean[part], std[part] = filled.mean(axis=0), filled.std(axis=0)
        cards = [int(np.nanmax(X[c].to_numpy(dtype=float), initial=-1)) + 2 for c in cats]
        return cls(num, cats, median, mean, np.where(std > 0, std, 1.0), cards)

    def transform(self, X: pd.DataFrame, out: tuple[np.ndarray, np.ndarray] | None = None,
                  rows: np.ndarray | None = None, dtype=np.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """Standardised numbers (``dtype``) and shifted codes (int64), computed in float64 a block of rows at a
        time, in place (float64 temporaries of the whole matrix would be several times its size); ``out``: arrays
        (rows x numbers, rows x codes int64) to write them into, X's i-th row into their row ``rows[i]`` when
        ``rows`` is given (else row i)."""
        values, codes = out if out is not None else (
            np.empty((len(X), len(self.numeric)), dtype=dtype),
            np.zeros((len(X), len(self.categorical)), dtype=np.int64))
        step = _per_pass(len(self.numeric))
        for start in range(0, len(X), step):
            part = X.iloc[start:start + step][self.numeric].to_numpy(dtype=np.float64)
            # in place: one float64 block alive, not one per operation
            np.copyto(part, np.broadcast_to(self.median, part.shape), where=np.isnan(part))
            part -= self.mean
            part /= self.std
            block = slice(start, start + len(part))
            values[block if rows is None else rows[block]] = np.clip(part, -5, 5, out=part)
        for j, (c, card) in enumerate(zip(self.categorical, self.cardinality)):
            col = np.nan_to_num(X[c].to_numpy(dtype=float), nan=-1).astype(np.int64) + 1
            codes[slice(None) if rows is None else rows, j] = np.where((col >= 0) & (col < card), col, 0)
        return torch.from_numpy(values), torch.as_tensor(codes)


class CategoryEmbeddings(nn.Module):
    """One embedding per categorical column (width min(16, (cardinality + 1) // 2 + 1)), concatenated after the
    numbers."""

    def __init__(self, cardinality: list[int]):
        super().__init__()
        self.embeddings = nn.ModuleList(nn.Embedding(card, min(16, (card + 1) // 2 + 1)) for card in cardinality)
        self.width = sum(e.embedding_dim for e in self.embeddings)

    def forward(self, numeric: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        n = len(numeric)
        # numbers held as float16 are computed in float32
        return torch.cat([numeric.float()] + [emb(codes[:n, j]) for j, emb in enumerate(self.embeddings)], dim=1)
