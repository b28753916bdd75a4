"""Run configuration: one commented TOML per task, ``--set key=value`` overrides, stable section hashes.

The whole config is validated when it is loaded, before any work starts (:mod:`mmstack.config_check`): a bad
value is one :class:`ConfigError` line naming the key (and the ``--set`` it came from).
"""
from __future__ import annotations

import copy
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .store import make_key


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML config file's contents; a missing file or bad TOML is a one-line ConfigError."""
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


@dataclass
class Config:
    """A task's settings as loaded from TOML, after overrides.

    Sections: ``task`` (name, input, seed), ``folds`` (n_folds, strategy), ``features`` (``blocks`` list plus one
    table of params per block), ``models`` (``train`` list plus one table of params per model), ``stack``.
    """

    raw: dict[str, Any]
    path: Path | None = None
    overrides: list[str] = field(default_factory=list)
    _set_by: dict[str, str] = field(default_factory=dict, repr=False, compare=False)  # dotted key -> its --set

    @classmethod
    def load(cls, path: Path | str, overrides: list[str] | None = None) -> "Config":
        path = Path(path)
        cfg = cls(raw=read_toml(path), path=path, overrides=list(overrides or []))
        for item in cfg.overrides:
            cfg.set(item)
        cfg.validate()
        return cfg

    def set(self, item: str) -> None:
        """Apply one ``dotted.key=value`` override; the value is read as a TOML literal, else as a string."""
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. models.lgb.num_leaves=255")
        key, _, text = item.partition("=")
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ConfigError(f"--set {item!r}: empty key")
        try:
            value = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError as exc:
            if text.strip()[:1] in ("[", "{", '"', "'"):  # meant as a list, table or quoted string: not a word
                raise ConfigError(f"--set {item!r}: not a valid TOML value ({exc})") from None
            value = text.strip()
        node = self.raw
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: '{part}' is a value, not a table")
            node = child
        node[parts[-1]] = value
        self._set_by[".".join(parts)] = item

    def set_by_user(self, dotted: str) -> bool:
        """Was ``dotted`` (or a table above it) given by ``--set``?"""
        return any(dotted == key or dotted.startswith(key + ".") for key in self._set_by)

    def put(self, dotted: str, value: Any) -> None:
        """Set ``dotted`` to ``value`` from code (not a user's ``--set``), making the tables on the way."""
        node = self.raw
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value

    def get(self, dotted: str, default: Any = None) -> Any:
        node: Any = self.raw
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    def validate(self) -> None:
        """Check every key against :data:`SETTINGS` and the families' params; raise one ConfigError line."""
        for section in ("task", "folds", "features", "models"):
            if not isinstance(self.raw.get(section), dict):
                raise ConfigError(f"{self.path}: missing table [{section}]")
        if "name" not in self.raw["task"]:
            raise ConfigError(f"{self.path}: [task] needs a name")
        for listing, section in (("blocks", "features"), ("train", "models")):
            value = self.raw[section].get(listing)
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{self.path}: [{section}] {listing} must be a list of names")
        from .config_check import check_config

        check_config(self)

    def where(self, dotted: str) -> str:
        """How an error names a key: ``folds.n_folds (--set folds.n_folds=abc)`` or ``folds.n_folds in FILE``."""
        for key, item in self._set_by.items():
            if dotted == key or dotted.startswith(key + "."):
                return f"{dotted} (--set {item})"
        return f"{dotted} in {self.path}" if self.path else dotted

    # -- typed accessors -------------------------------------------------------------------------------
    @property
    def task(self) -> str:
        return str(self.raw["task"]["name"])

    @property
    def seed(self) -> int:
        return int(self.raw["task"].get("seed", 42))

    @property
    def blocks(self) -> list[str]:
        return list(self.raw["features"]["blocks"])

    @property
    def models(self) -> list[str]:
        return list(self.raw["models"]["train"])

    def block_params(self, name: str) -> dict[str, Any]:
        params = self.raw["features"].get(name, {})
        return copy.deepcopy(params) if isinstance(params, dict) else {}

    def model_params(self, name: str) -> dict[str, Any]:
        params = self.raw["models"].get(name, {})
        return copy.deepcopy(params) if isinstance(params, dict) else {}

    def section_hash(self, dotted: str) -> str:
        return make_key(self.get(dotted))

    def flat(self) -> dict[str, Any]:
        """The config as ``{dotted.key: value}``, for diffs between runs."""
        out: dict[str, Any] = {}

        def walk(node: Any, prefix: str) -> None:
            if isinstance(node, dict):
                for k, v in node.items():
                    walk(v, f"{prefix}.{k}" if prefix else str(k))
            else:
                out[prefix] = node

        walk(self.raw, "")
        return out


def diff_flat(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable changes between two flattened configs, e.g. ``models.lgb.num_leaves: 63 -> 255``."""
    changes = []
    for key in sorted(set(old) | set(new)):
        if key not in old:
            changes.append(f"{key}: (new) {new[key]!r}")
        elif key not in new:
            changes.append(f"{key}: {old[key]!r} -> (removed)")
        elif old[key] != new[key]:
            changes.append(f"{key}: {old[key]!r} -> {new[key]!r}")
    return changes
