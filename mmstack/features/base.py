"""Feature blocks: declared inputs and params, cached by content key, composable into model matrices."""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import joblib
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..data.dataset import Dataset
from ..folds import Folds
from ..store import Store, atomic_path, make_key, read_json

log = logging.getLogger(__name__)


class LazyExtras(Mapping):
    """A block's stored extras, unpickled on first access (a torch_geometric graph costs seconds to import)."""

    def __init__(self, path: Path, keys: list[str]):
        self._path, self._keys, self._loaded = path, list(keys), None

    def _data(self) -> dict[str, Any]:
        if self._loaded is None:
            self._loaded = joblib.load(self._path)
        return self._loaded

    def __getitem__(self, key: str) -> Any:
        return self._data()[key]

    def __iter__(self):
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


@dataclass
class BlockOutput:
    """A block's features for all rows (train then test, in row-id order).

    ``dense`` holds float32 columns; the names in ``categorical`` are integer codes (-1 = missing) that tree
    models may treat natively. ``sparse`` is a CSR matrix for linear models, with ``sparse_names``.
    """

    dense: pd.DataFrame | None = None
    categorical: list[str] = field(default_factory=list)
    sparse: sp.csr_matrix | None = None
    sparse_names: list[str] = field(default_factory=list)
    # dense columns that other blocks read but models must not (e.g. an image hash)
    non_features: list[str] = field(default_factory=list)
    # other artifacts (e.g. a torch_geometric graph), saved with joblib
    extras: Mapping[str, Any] = field(default_factory=dict)
    # target-reading blocks: training rows as the model of fold k must see them in training (see
    # Folds.out_of_fold); columns are a subset of ``dense``, rows the training rows
    train_views: dict[int, pd.DataFrame] = field(default_factory=dict)

    @property
    def n_rows(self) -> int:
        if self.dense is not None:
            return len(self.dense)
        return self.sparse.shape[0] if self.sparse is not None else 0

    def save(self, path: Path) -> None:
        """Write the block as one folder, atomically (dense.parquet, sparse.npz, meta.json)."""
        with atomic_path(path) as tmp:
            tmp.mkdir()
            if self.dense is not None:
                self.dense.to_parquet(tmp / "dense.parquet", index=False)
            if self.sparse is not None:
                sp.save_npz(tmp / "sparse.npz", self.sparse.tocsr())
            if self.extras:
                joblib.dump(dict(self.extras), tmp / "extras.joblib")
            for k, view in self.train_views.items():
                view.to_parquet(tmp / f"train_view_{k}.parquet", index=False)
            meta = {"categorical": self.categorical, "sparse_names": self.sparse_names, "n_rows": self.n_rows,
                    "non_features": self.non_features, "extras": list(self.extras)}
            (tmp / "meta.json").write_text(json.dumps(meta, ensure_ascii=False))

    @classmethod
    def load(cls, path: Path) -> "BlockOutput":
        meta = read_json(path / "meta.json")
        dense = pd.read_parquet(path / "dense.parquet") if (path / "dense.parquet").exists() else None
        sparse = sp.load_npz(path / "sparse.npz").tocsr() if (path / "sparse.npz").exists() else None
        extras = LazyExtras(path / "extras.joblib", meta.get("extras", [])) if (path / "extras.joblib").exists() else {}
        views = {int(p.stem.rsplit("_", 1)[1]): pd.read_parquet(p) for p in path.glob("train_view_*.parquet")}
        return cls(dense=dense, categorical=meta["categorical"], sparse=sparse, sparse_names=meta["sparse_names"],
                   non_features=meta.get("non_features", []), extras=extras, train_views=views)

    def features(self) -> pd.DataFrame | None:
        """The dense columns a model may use."""
        if self.dense is None:
            return None
        return self.dense.drop(columns=[c for c in self.non_features if c in self.dense.columns])


@dataclass
class BlockContext:
    """What a block may read: the dataset, the shared folds, the store and its dependencies' outputs."""

    data: Dataset
    folds: Folds
    store: Store
    seed: int
    inputs: dict[str, BlockOutput] = field(default_factory=dict)


class FeatureBlock:
    """One cached group of features.

    Subclasses set ``name``, ``version`` (bump it when the output changes for the same params),
    ``reads_target`` (then the key includes the folds key, and the block must compute training rows out of fold),
    ``depends_on`` (names of blocks whose outputs it reads) and ``default_params``; and implement :meth:`build`.
    """

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    reads_target: ClassVar[bool] = False
    depends_on: ClassVar[tuple[str, ...]] = ()
    default_params: ClassVar[dict[str, Any]] = {}

    def __init__(self, params: dict[str, Any] | None = None):
        unknown = set(params or {}) - set(self.default_params)
        if unknown:
            from ..errors import ConfigError

            raise ConfigError(f"features.{self.name}: unknown param(s) {', '.join(sorted(unknown))}; "
                              f"known: {', '.join(sorted(self.default_params)) or 'none'}")
        self.params = {**self.default_params, **(params or {})}

    def require_ints(self, lows: dict[str, int]) -> None:
        """Check that each named param is an integer at least its low bound (a clear ConfigError if not)."""
        from ..errors import ConfigError

        for key, low in lows.items():
            value = self.params[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"features.{self.name}.{key} must be an integer >= {low}, got {value!r}")

    def key(self, data: Dataset, folds: Folds, input_keys: dict[str, str]) -> str:
        return make_key(self.name, self.version, data.fingerprint, self.params,
                        folds.key if self.reads_target else None, input_keys)

    def build(self, ctx: BlockContext) -> BlockOutput:  # pragma: no cover - abstract
        raise NotImplementedError


class BlockCache:
    """Builds blocks in dependency order, reusing any whose key is already stored."""

    def __init__(self, data: Dataset, folds: Folds, store: Store, seed: int):
        self.ctx = BlockContext(data=data, folds=folds, store=store, seed=seed)
        self.keys: dict[str, str] = {}
        self.outputs: dict[str, BlockOutput] = {}
        self.seconds: dict[str, float] = {}
        self.reused: dict[str, bool] = {}

    def get(self, block: FeatureBlock, resolve) -> BlockOutput:
        """The output of ``block``; ``resolve(name)`` returns the configured block a dependency names."""
        if block.name in self.outputs:
            return self.outputs[block.name]
        for dep in block.depends_on:
            self.get(resolve(dep), resolve)
        key = block.key(self.ctx.data, self.ctx.folds, {d: self.keys[d] for d in block.depends_on})
        path = self.ctx.store.path("features", block.name, key)
        start = time.perf_counter()
        if (path / "meta.json").is_file():
            output = BlockOutput.load(path)
            self.reused[block.name] = True
            log.info("features: %s reused %s", block.name, key)
        else:
            self.ctx.inputs = {d: self.outputs[d] for d in block.depends_on}
            output = block.build(self.ctx)
            expected = self.ctx.data.n_train + self.ctx.data.n_test
            if output.n_rows != expected:
                raise RuntimeError(f"block {block.name} returned {output.n_rows} rows, expected {expected}")
            output.save(path)
            self.reused[block.name] = False
            log.info("features: %s built %s in %.1fs", block.name, key, time.perf_counter() - start)
        self.seconds[block.name] = time.perf_counter() - start
        self.keys[block.name] = key
        self.outputs[block.name] = output
        return output


def category_codes(values: pd.Series) -> np.ndarray:
    """Integer codes of a categorical column (-1 for missing), stable for the same set of values."""
    cat = pd.Categorical(values.astype("string"), categories=sorted(values.dropna().astype(str).unique()))
    return cat.codes.astype(np.int32)
