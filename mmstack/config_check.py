"""Validation of a whole config before any work starts: declared keys, types and ranges, one-line errors.

Keys outside the per-family tables are declared in :data:`SETTINGS`. The params of a feature block
(``[features.<block>]``), a model (``[models.<key>]``) and a blender (``[stack.<blender>]``) are checked against
the type of the family's own ``default_params`` value (an int param takes an int, a float param a finite number,
a list param a list of the same kind of items ...), then the family is constructed so that its own range checks
run too. Names in ``features.blocks``, ``models.train``, ``stack.blenders`` and ``ablation.model`` must be
registered. Every failure is a :class:`~mmstack.errors.ConfigError` naming the key.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    from .config import Config

SEED_MAX = 2**31 - 1  # the widest seed every library takes (LightGBM's is a C int)


@dataclass(frozen=True)
class Setting:
    """A declared config key: ``kind`` is int, float, str, bool, names (a list of strings) or table; numbers lie
    in [low, high]; a str may be restricted to ``choices``."""

    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()

    def expected(self) -> str:
        what = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
                "names": "a list of names", "table": "a table { key = value, ... }"}[self.kind]
        if self.choices:
            listed = ", ".join(repr(c) for c in self.choices)
            return f"a list of names from {listed}" if self.kind == "names" else f"one of {listed}"
        if self.low is not None and self.high is not None:
            return f"{what} in [{_number(self.low)}, {_number(self.high)}]"
        if self.low is not None:
            return f"{what} >= {_number(self.low)}"
        return what

    def accepts(self, value: Any) -> bool:
        if self.kind in ("int", "float"):
            if isinstance(value, bool) or not isinstance(value, int if self.kind == "int" else (int, float)):
                return False
            if not math.isfinite(value):
                return False
            return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)
        if self.kind == "str":
            return isinstance(value, str) and (not self.choices or value in self.choices)
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "names":
            return isinstance(value, list) and all(isinstance(v, str) and (not self.choices or v in self.choices)
                                                   for v in value)
        return isinstance(value, dict)


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


# Every key a config may hold outside the per-family tables ([features.<block>], [models.<key>],
# [stack.<blender>], whose params are checked against each family's default_params).
SETTINGS: dict[str, Setting] = {
    "task.name": Setting("str"),
    "task.input": Setting("str"),
    "task.seed": Setting("int", 0, SEED_MAX),
    "task.time_limit": Setting("float", 1.0, 10**7),  # seconds for a whole run (mmstack/budget.py)
    "task.targets": Setting("names"),  # which of the task's targets to train (default: every one with labels)
    "task.size_defaults": Setting("bool"),  # lay the training-size tier of mmstack/size_defaults.py over the config
    "data.rows": Setting("int", 1, 10**9),  # avito: size of the embedded synthetic dataset
    "data.crowd_weight": Setting("float", 0.0, 1.0),  # relevance: weight of the crowd share in the target
    "data.max_image_pixels": Setting("int", 1, 10**10),  # width x height of an image, read from its header
    "data.max_image_bytes": Setting("int", 1, 2**40),
    "folds.n_folds": Setting("int", 2, 100),  # fold ids are stored as 8-bit integers
    "folds.strategy": Setting("str", choices=("kfold", "group", "auto")),
    "folds.group_by": Setting("str"),
    "folds.seed": Setting("int", 0, SEED_MAX),
    "features.blocks": Setting("names"),
    "features.hold_in_memory": Setting("bool"),  # false: blocks are read back from the store when a step needs them
    "features.own_process": Setting("bool"),  # true: the blocks are built in a process of their own (own_process.py)
    "models.train": Setting("names"),
    "stack.blenders": Setting("names"),
    "ablation.enabled": Setting("bool"),
    "ablation.model": Setting("str"),
    "ablation.baseline": Setting("names"),
    "ablation.params": Setting("table"),
    "report.residual_groups": Setting("names"),
    "search.minor_threshold": Setting("float", 0.0, 1.0),  # minors classifier probability that withholds
    "data.price_bins": Setting("int", 2, 100),  # products: quantile bins of the price proxy label
    "proxy.classifiers": Setting("names"),  # products: protocol (a) classifiers, "logreg" and/or "mlp"
    "proxy.logreg_c": Setting("float", 1e-6, 1e6),
    "proxy.mlp_hidden": Setting("int", 1, 100_000),
    "proxy.mlp_alpha": Setting("float", 0.0, 1e3),
    "proxy.supervised": Setting("bool"),  # products: fusion net with label heads, nested for the proxy figures
    "proxy.head_weight": Setting("float", 0.0, 1e3),
    "proxy.class_power": Setting("float", 0.0, 2.0),
    "duplicates.candidates": Setting("int", 1, 1000),  # products: neighbours per listing and source
    "duplicates.max_hamming": Setting("int", 0, 64),
    "duplicates.method": Setting("str", choices=("pairs", "tfidf", "embedding")),
    "duplicates.n_folds": Setting("int", 2, 100),
    "duplicates.recall_k": Setting("int", 1, 1000),
    "duplicates.threshold": Setting("float", -1.0, 1.0),  # embedding cosine when no group is labelled
    "duplicates.examples": Setting("int", 0, 100),
    "duplicates.title_metric": Setting("bool"),  # products: supervised title metric learned on labelled groups
    "duplicates.rescore_min_pool": Setting("int", 0, 10**9),  # products: second stage from this mean pool size
    "duplicates.metric_components": Setting("int", 1, 4096),
    "duplicates.title_encoders": Setting("names", choices=("use", "e5")),  # products: title sentence vectors
    "duplicates.tune_pools": Setting("int", 1, 100),  # products: labelled pools the threshold is tuned on
    "duplicates.closure": Setting("bool"),  # products: may a listing take its sure matches' sure matches
    "duplicates.metric_shrink": Setting("float", 0.0, 1.0),
    "duplicates.metric_dim": Setting("int", 1, 4096),
}



def like_default(value: Any, default: Any) -> str | None:
    """What ``value`` should have been, given the family's default for the param; None when it fits."""
    if default is None:
        return None
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "true or false"
    if isinstance(default, int):
        return None if isinstance(value, int) and not isinstance(value, bool) else "an integer"
    if isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return None if ok else "a finite number"
    if isinstance(default, str):
        return None if isinstance(value, str) else "a string"
    if isinstance(default, dict):
        return None if isinstance(value, dict) else "a table { key = value, ... }"
    if isinstance(default, list):
        if not isinstance(value, list):
            return "a list"
        for kind, name in ((str, "strings"), (list, "lists")):
            if default and all(isinstance(d, kind) for d in default) and not all(isinstance(v, kind) for v in value):
                return f"a list of {name}"
        if default and all(isinstance(d, int) and not isinstance(d, bool) for d in default) and \
                not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return "a list of integers"
    return None


def _bad(config: "Config", dotted: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(f"{config.where(dotted)}: expected {expected}, got {value!r}")


def _check_params(config: "Config", prefix: str, params: Any, defaults: dict[str, Any],
                  extra: dict[str, Setting] | None = None) -> None:
    if not isinstance(params, dict):
        raise _bad(config, prefix, "a table of params", params)
    extra = extra or {}
    for key, value in params.items():
        dotted = f"{prefix}.{key}"
        if key in extra:
            if not extra[key].accepts(value):
                raise _bad(config, dotted, extra[key].expected(), value)
            continue
        if key not in defaults:
            known = ", ".join(sorted([*defaults, *extra])) or "none"
            raise ConfigError(f"{config.where(dotted)}: unknown param; known: {known}")
        expected = like_default(value, defaults[key])
        if expected:
            raise _bad(config, dotted, expected, value)


def _any_target(problem: str):
    """A stand-in target of ``problem``, to construct a blender for its param checks."""
    from .metrics import FOR_PROBLEM, METRICS
    from .targets import Target

    classes = {"regression": (), "binary": ("0", "1"), "multiclass": ("0", "1", "2")}[problem]
    return Target("target", problem, METRICS[FOR_PROBLEM[problem][0]], classes)


def check_config(config: "Config") -> None:
    """Raise a one-line ConfigError for the first key of ``config`` that is unknown or out of its type or range."""
    from .features.registry import BLOCKS, _load_all as load_blocks, make_block
    from .models.registry import MODELS, _load_all as load_models, make_model
    from .stack.blenders import BLENDERS, make_blender
    from .tasks import get_task

    load_blocks()
    load_models()
    family_tables = {"features": ("block", BLOCKS), "models": ("model", MODELS), "stack": ("blender", BLENDERS)}
    for section, table in config.raw.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{config.where(section)}: expected a table [{section}], got {table!r}")
        if not any(k.startswith(section + ".") for k in SETTINGS):
            raise ConfigError(f"{config.where(section)}: unknown section; known: "
                              f"{', '.join(sorted({k.split('.')[0] for k in SETTINGS}))}")
        for key, value in table.items():
            dotted = f"{section}.{key}"
            if dotted in SETTINGS:
                if not SETTINGS[dotted].accepts(value):
                    raise _bad(config, dotted, SETTINGS[dotted].expected(), value)
            elif section in family_tables and isinstance(value, dict):
                kind, registry = family_tables[section]
                if key not in registry:
                    raise ConfigError(f"{config.where(dotted)}: no {kind} {key!r}; known: "
                                      f"{', '.join(sorted(registry))}")
                extra = {"blocks": Setting("names"), "seeds": Setting("int", 1, 100)} if section == "models" else None
                _check_params(config, dotted, value, registry[key].default_params, extra)
            else:
                raise ConfigError(f"{config.where(dotted)}: unknown setting")
    get_task(config.task)
    if config.get("features.own_process", False) and config.get("features.hold_in_memory", True):
        raise ConfigError(f"{config.where('features.own_process')}: true needs features.hold_in_memory = false "
                          "(blocks built in another process are read back from the store)")
    for dotted, registry, kind in (("features.blocks", BLOCKS, "block"), ("models.train", MODELS, "model"),
                                   ("stack.blenders", BLENDERS, "blender")):
        for name in config.get(dotted) or []:
            if name not in registry:
                raise ConfigError(f"{config.where(dotted)}: no {kind} {name!r}; known: {', '.join(sorted(registry))}")
    # the families' own checks (ranges, choices) run in their constructors, which do no work
    for name in config.blocks:
        make_block(name, config.block_params(name))
    for key in config.models:
        params = config.model_params(key)
        blocks = params.pop("blocks", None) or []
        unknown = [b for b in blocks if b not in config.blocks]
        if unknown:
            raise ConfigError(f"{config.where(f'models.{key}.blocks')}: names block(s) not in features.blocks: "
                              f"{', '.join(unknown)}")
        make_model(key, params, config.seed)
    for key in config.get("stack.blenders") or []:
        make_blender(key, config.get(f"stack.{key}", {}), config.seed, _any_target(BLENDERS[key].problems[0]))
    if config.get("ablation.enabled", False):
        model = config.get("ablation.model", "lgb")
        if model not in MODELS:
            raise ConfigError(f"{config.where('ablation.model')}: no model {model!r}; known: {', '.join(sorted(MODELS))}")
        params = {**config.model_params(model), **config.get("ablation.params", {})}
        params.pop("blocks", None)
        _check_params(config, "ablation.params", config.get("ablation.params", {}), MODELS[model].default_params)
        make_model(model, params, config.seed)
