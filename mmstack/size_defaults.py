"""Defaults that follow the data size: one table of model, block and blender settings by training rows.

The task's config is written for its embedded default (Avito: 10,000 training rows). With ``task.size_defaults =
true`` a run looks up the tier of its number of labelled rows and lays that tier's settings over the config before
any feature or model is built; a ``--set`` on the same key always wins (the table never overrides the user). The
tiers were chosen with the peer benchmark (``benchmarks/peers.py``, BENCHMARKS.md "peers") and the embedded default:

- **small** (up to 3,000 rows): few rows per leaf, so shallow, strongly regularised trees learning slowly with more
  rounds, on one thread each; fewer projected columns per block (weak columns cost more than they give on few rows); the nets that need
  data (cross-attention, graph) are left out; the stack blends linearly (a LightGBM blender overfits a few hundred
  out-of-fold rows).
- **default** (up to 30,000 rows): the config as written.
- **large** (more): deeper trees at a lower learning rate; the nets stay.

metrics.json (``size_defaults``) and the log say which tier ran and what it changed.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import Config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SizeTier:
    """Settings (dotted config key -> value) for runs with at most ``up_to`` labelled rows (None: no bound);
    ``leave_out`` lists models removed from ``models.train`` at this size."""

    name: str
    up_to: int | None
    settings: dict[str, Any] = field(default_factory=dict)
    leave_out: tuple[str, ...] = ()


SIZE_TIERS: tuple[SizeTier, ...] = (
    SizeTier("small", 3_000, {
        "models.lgb.learning_rate": 0.03, "models.lgb.num_leaves": 7, "models.lgb.min_data_in_leaf": 15,
        "models.lgb.feature_fraction": 0.3, "models.lgb.lambda_l2": 10.0, "models.lgb.max_rounds": 3000,
        "models.lgb.early_stopping": 150,
        "models.cat.learning_rate": 0.05, "models.cat.depth": 4, "models.cat.l2_leaf_reg": 10.0,
        "models.cat.max_rounds": 2000, "models.cat.early_stopping": 150,
        "models.xgb.learning_rate": 0.03, "models.xgb.max_depth": 3, "models.xgb.min_child_weight": 10.0,
        "models.xgb.reg_lambda": 10.0, "models.xgb.colsample_bytree": 0.3, "models.xgb.max_rounds": 3000,
        "models.xgb.early_stopping": 150,
        "models.ridge.alpha": 10.0,
        "models.mlp.hidden": [64, 16], "models.mlp.dropout": 0.3, "models.mlp.weight_decay": 1e-3,
        "features.text_tfidf.svd_components": 10,
        "features.image_embed.pca_components": 8,
        "stack.blenders": ["weights", "caruana", "ridge"],
        # one thread: on a few hundred rows a second thread costs more in synchronisation than it saves, and two
        # OpenMP threads degrade 10-50x whenever another process competes for a core
        "models.lgb.num_threads": 1, "models.cat.num_threads": 1, "models.xgb.num_threads": 1,
        "models.mlp.num_threads": 1,
    }, leave_out=("xattn", "gnn")),
    SizeTier("default", 30_000),
    SizeTier("large", None, {
        "models.lgb.learning_rate": 0.05, "models.lgb.num_leaves": 63, "models.lgb.min_data_in_leaf": 50,
        "models.lgb.max_rounds": 3000, "models.lgb.early_stopping": 100,
        "models.cat.learning_rate": 0.1, "models.cat.depth": 7,
        "models.xgb.learning_rate": 0.05, "models.xgb.max_depth": 7,
    }),
)


def tier_for(n_rows: int, tiers: tuple[SizeTier, ...] = SIZE_TIERS) -> SizeTier:
    """The first tier whose bound holds ``n_rows``."""
    for tier in tiers:
        if tier.up_to is None or n_rows <= tier.up_to:
            return tier
    return tiers[-1]


def apply_size_defaults(config: "Config", n_rows: int, tiers: tuple[SizeTier, ...] = SIZE_TIERS) -> dict[str, Any]:
    """Lay the tier of ``n_rows`` over ``config`` (in place, then re-validated) unless the config turns it off.

    Keys set by ``--set`` keep the user's value; a setting of a block or model the config does not use is left
    out. Returns ``{"tier", "rows", "changed": ["key: old -> new", ...]}`` (empty when off).
    """
    if not config.get("task.size_defaults", False):
        return {}
    tier = tier_for(n_rows, tiers)
    used = {"features": set(config.blocks), "models": set(config.models)}
    changed = []
    for key, value in tier.settings.items():
        section, name, *_ = key.split(".")
        if config.set_by_user(key) or (section in used and key.count(".") >= 2 and name not in used[section]):
            continue
        old = config.get(key)
        if old != value:
            config.put(key, value)
            changed.append(f"{key}: {old!r} -> {value!r}")
    dropped = [m for m in tier.leave_out if m in config.models]
    if dropped and not config.set_by_user("models.train"):
        config.put("models.train", [m for m in config.models if m not in dropped])
        changed.append(f"models.train: left out {', '.join(dropped)}")
    config.validate()
    if changed:
        log.info("size defaults (%s, %d rows): %s", tier.name, n_rows, "; ".join(changed))
    return {"tier": tier.name, "rows": int(n_rows), "changed": changed}
