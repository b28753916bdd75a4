"""Out-of-fold target encodings of categoricals and their interactions (m-estimate smoothing).

A labelled row in fold k is encoded with statistics of the labelled rows outside fold k; rows to predict with all
labelled rows; and the fold-k model trains on encodings nested outside fold k too (``Folds.out_of_fold``). The
folds are the target's shared ones, so level 1 and level 2 agree on them. What is encoded follows the target's
problem type (:func:`target_statistics`).
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..targets import Target
from .base import BlockContext, BlockOutput, FeatureBlock
from .registry import register
from .tabular import group_name

log = logging.getLogger(__name__)

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


def target_statistics(target: Target, y: np.ndarray, stats: list[str], max_classes: int) -> dict[str, np.ndarray]:
    """Per labelled row, the values whose group means are the target statistics, by the target's problem type:
    regression: the value (``mean``) and whether it is above zero (``nonzero``, as asked by ``stats``); binary:
    the positive-class indicator; multiclass: one indicator per class, for the ``max_classes`` most frequent."""
    if target.problem == "regression":
        return {s: {"mean": y, "nonzero": (y > 0).astype(float)}[s] for s in stats}
    if target.problem == "binary":
        return {"mean": y.astype(float)}
    counts = np.bincount(y, minlength=target.n_classes)
    top = np.argsort(-counts, kind="stable")[:max_classes]
    return {f"p_{target.classes[c]}": (y == c).astype(float) for c in sorted(top)}


def key_coverage(name: str, codes: np.ndarray, target) -> dict[str, float]:
    """How often a key's target statistic has something to say, in CV and at prediction time.

    ``train``: share of labelled rows whose key has another labelled row in another fold (what CV measures);
    ``predict``: share of rows to predict whose key has a labelled row. The one rule for every target statistic
    keyed by a column (encodings, the graph's neighbour means): it is computed nested out of fold, and when
    ``predict`` is far below ``train`` (e.g. sellers seen in training but new in the test period) the CV
    overstates its worth, which is logged as a warning rather than guessed away by a list of forbidden columns.
    """
    labelled, predict = target.rows, target.predict_rows
    n_codes, n_folds = int(codes.max()) + 1, target.folds.n_folds
    per_key = np.bincount(codes[labelled], minlength=n_codes)
    key_fold = codes[labelled].astype(np.int64) * n_folds + target.folds.fold
    per_key_fold = np.bincount(key_fold, minlength=n_codes * n_folds)
    outside = per_key[codes[labelled]] - per_key_fold[key_fold]
    train = float((outside > 0).mean()) if len(labelled) else 0.0
    predicted = float((per_key[codes[predict]] > 0).mean()) if len(predict) else train
    if len(predict) and predicted < 0.5 * train:
        log.warning("target statistics by %s: %.0f%% of labelled rows share a key with other folds' rows, but only "
                    "%.0f%% of the rows to predict have a labelled key: the CV overstates these features",
                    name, 100 * train, 100 * predicted)
    return {"train": train, "predict": predicted}


@register
class TargetEncodingBlock(FeatureBlock):
    name = "target_encoding"
    rows_per_second = 40000  # measured here at the default params (README), for --time-limit
    version = "3"
    reads_target = True
    default_params = {
        "groups": DEFAULT_GROUPS,
        "m": 20.0,
        # regression: "mean" (smoothed mean target) and "nonzero" (smoothed share of listings with any deal: 63%
        # are zero); classification encodes the class shares instead (binary: one, multiclass: max_classes)
        "stats": ["mean", "nonzero"],
        "max_classes": 10,
    }

    def __init__(self, params=None):
        super().__init__(params)

    def build(self, ctx: BlockContext) -> BlockOutput:
        rows = ctx.data.all_rows()
        target = ctx.target
        groups = self.params["groups"]
        unknown = sorted({c for cols in groups for c in cols} - set(rows.columns))
        if unknown:
            raise ConfigError(f"features.target_encoding.groups: column(s) {unknown} are not in the data")
        ids = [cols for cols in groups if ctx.data.id_col in cols]
        if ids:
            raise ConfigError(f"features.target_encoding.groups: {ids[0]} holds the row id column "
                              f"{ctx.data.id_col!r}: every row is its own group, so the encoding is the prior")
        coverage = {}
        statistics = target_statistics(target.target, target.y, self.params["stats"], self.params["max_classes"])
        m = float(self.params["m"])
        out, views = {}, {k: {} for k in range(target.folds.n_folds)}
        for cols in groups:
            codes = group_codes(rows, cols)
            n_codes = int(codes.max()) + 1
            coverage[group_name(cols)] = key_coverage(group_name(cols), codes, target)
            for stat, labelled_values in statistics.items():
                values = np.zeros(len(rows))
                values[target.rows] = labelled_values
                encoded, fold_views = target.folds.out_of_fold(
                    fit=lambda train, v=values, c=codes, n=n_codes: m_estimate(c, v, train, m, n),
                    apply=lambda table, ids, c=codes: table[c[ids]],
                    n_rows=len(rows))
                name = f"te_{stat}_{group_name(cols)}"
                out[name] = encoded.astype(np.float32)
                for k, view in fold_views.items():
                    views[k][name] = view.astype(np.float32)
        return BlockOutput(dense=pd.DataFrame(out), train_views={k: pd.DataFrame(v) for k, v in views.items()},
                           extras={"coverage": coverage})
