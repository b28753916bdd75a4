"""Registry of feature blocks by short name, as named in a config's ``[features] blocks`` list."""
from __future__ import annotations

from ..errors import ConfigError
from .base import FeatureBlock

BLOCKS: dict[str, type[FeatureBlock]] = {}


def register(cls: type[FeatureBlock]) -> type[FeatureBlock]:
    if cls.name in BLOCKS:
        raise ValueError(f"feature block {cls.name!r} registered twice")
    BLOCKS[cls.name] = cls
    return cls


def make_block(name: str, params: dict | None = None) -> FeatureBlock:
    _load_all()
    if name not in BLOCKS:
        raise ConfigError(f"unknown feature block {name!r}; known: {', '.join(sorted(BLOCKS))}")
    return BLOCKS[name](params)


# modules that register blocks on import
BLOCK_MODULES = ("basic", "text_stats", "text_tfidf", "text_embed", "image_stats", "image_embed", "tabular",
                 "target_encoding", "graph", "image_tokens", "text_tokens", "pair_match",
                 "caption_bridge", "product_images", "product_embed")


def _load_all() -> None:
    import importlib

    for module in BLOCK_MODULES:
        importlib.import_module(f"{__package__}.{module}")
