"""Out-of-fold target encodings of categoricals and their interactions (m-estimate smoothing).

A training row in fold k is encoded with statistics of the training rows outside fold k; test rows with all
training rows; and the fold-k model trains on encodings nested outside fold k too (``Folds.out_of_fold``). The folds are the shared ones (``Folds.out_of_fold``), so level 1 and level 2 agree on them.
Never by user_id: top Avito teams saw a user encoding leak under K-fold.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import ConfigError
from .base import BlockContext, BlockOutput, FeatureBlock
from .registry import register
from .tabular import group_name

FORBIDDEN = {"user_id", "item_id"}
DEFAULT_GROUPS = [
    ["region"], ["city"], ["parent_category_name"], ["category_name"], ["param_1"], ["param_2"], ["param_3"],
    ["user_type"], ["image_top_1"],
    ["category_name", "city"], ["param_1", "region"], ["category_name", "param_1"], ["category_name", "region"],
    ["parent_category_name", "user_type"], ["category_name", "image_top_1"],
]


def group_codes(frame: pd.DataFrame, cols: list[str]) -> np.ndarray:
    """One integer code per distinct combination of ``cols`` (missing is a value of its own)."""
    keys = [frame[c].astype("string").fillna("<NA>") for c in cols]
    return pd.MultiIndex.from_arrays(keys).factorize()[0] if len(cols) > 1 else keys[0].factorize()[0]


def m_estimate(codes: np.ndarray, values: np.ndarray, train_rows: np.ndarray, m: float, n_codes: int) -> np.ndarray:
    """Per code: (sum of values + m * prior) / (count + m), from ``train_rows`` only."""
    prior = values[train_rows].mean()
    sums = np.bincount(codes[train_rows], weights=values[train_rows], minlength=n_codes)
    cnts = np.bincount(codes[train_rows], minlength=n_codes)
    return (sums + m * prior) / (cnts + m)


@register
class TargetEncodingBlock(FeatureBlock):
    name = "target_encoding"
    version = "2"
    reads_target = True
    default_params = {
        "groups": DEFAULT_GROUPS,
        "m": 20.0,
        # "mean": smoothed mean target; "nonzero": smoothed share of listings with any deal (63% are zero)
        "stats": ["mean", "nonzero"],
    }

    def __init__(self, params=None):
        super().__init__(params)
        for cols in self.params["groups"]:
            if FORBIDDEN & set(cols):
                raise ConfigError(f"features.target_encoding: never encode by {sorted(FORBIDDEN & set(cols))} "
                                  "(it leaks under K-fold); use the graph block's out-of-fold neighbour means")

    def build(self, ctx: BlockContext) -> BlockOutput:
        rows = ctx.data.all_rows()
        y = ctx.data.y
        targets = {"mean": y, "nonzero": (y > 0).astype(float)}
        m = float(self.params["m"])
        out, views = {}, {k: {} for k in range(ctx.folds.n_folds)}
        for cols in self.params["groups"]:
            codes = group_codes(rows, cols)
            n_codes = int(codes.max()) + 1
            for stat in self.params["stats"]:
                values = np.r_[targets[stat], np.zeros(ctx.data.n_test)]
                encoded, fold_views = ctx.folds.out_of_fold(
                    fit=lambda train, v=values, c=codes, n=n_codes: m_estimate(c, v, train, m, n),
                    apply=lambda table, ids, c=codes: table[c[ids]],
                    n_test=ctx.data.n_test)
                name = f"te_{stat}_{group_name(cols)}"
                out[name] = encoded.astype(np.float32)
                for k, view in fold_views.items():
                    views[k][name] = view.astype(np.float32)
        return BlockOutput(dense=pd.DataFrame(out), train_views={k: pd.DataFrame(v) for k, v in views.items()})
