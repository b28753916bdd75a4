"""Registry of level-1 model families by short key (``lgb``, ...), as named in ``[models] train``."""
from __future__ import annotations

from ..errors import ConfigError
from ..targets import Target
from .base import Level1Model

MODELS: dict[str, type[Level1Model]] = {}


def register(cls: type[Level1Model]) -> type[Level1Model]:
    if cls.key in MODELS:
        raise ValueError(f"model {cls.key!r} registered twice")
    MODELS[cls.key] = cls
    return cls


def make_model(key: str, params: dict | None = None, seed: int = 42, target: Target | None = None) -> Level1Model:
    """A model of family ``key`` for ``target`` (default: a plain regression target)."""
    _load_all()
    if key not in MODELS:
        raise ConfigError(f"unknown model {key!r}; known: {', '.join(sorted(MODELS))}")
    return MODELS[key](params, seed, target)


def _load_all() -> None:
    from . import gbdt, gnn, linear, mlp, twotower, xattn  # noqa: F401  (register on import)
