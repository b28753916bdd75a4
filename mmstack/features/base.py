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
from ..memory import release, worth_collecting
from ..errors import ConfigError
from ..store import Store, atomic_path, make_key, read_json
from ..targets import TargetData

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


class StoredViews(Mapping):
    """A stored block's per-fold training views, read from the store each time a fold asks for its own (at full
    size the five folds' views together are gigabytes; a fold needs one)."""

    def __init__(self, paths: dict[int, Path]):
        self._paths = dict(sorted(paths.items()))

    def __getitem__(self, k: int) -> pd.DataFrame:
        return pd.read_parquet(self._paths[k])

    def __iter__(self):
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)


class JoinedViews(Mapping):
    """Per fold, the training views of several blocks side by side (a model matrix's), joined when asked for."""

    def __init__(self, parts: list[Mapping[int, pd.DataFrame]]):
        self._parts = [p for p in parts if len(p)]

    def __getitem__(self, k: int) -> pd.DataFrame:
        frames = [p[k] for p in self._parts if k in p]
        if not frames:
            raise KeyError(k)
        return frames[0] if len(frames) == 1 else pd.concat(frames, axis=1)

    def __iter__(self):
        return iter(sorted({k for p in self._parts for k in p}))

    def __len__(self) -> int:
        return len({k for p in self._parts for k in p})


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
    train_views: Mapping[int, pd.DataFrame] = field(default_factory=dict)

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
        views = StoredViews({int(p.stem.rsplit("_", 1)[1]): p for p in path.glob("train_view_*.parquet")})
        return cls(dense=dense, categorical=meta["categorical"], sparse=sparse, sparse_names=meta["sparse_names"],
                   non_features=meta.get("non_features", []), extras=extras, train_views=views)

    def features(self) -> pd.DataFrame | None:
        """The dense columns a model may use."""
        if self.dense is None:
            return None
        return self.dense.drop(columns=[c for c in self.non_features if c in self.dense.columns])


@dataclass
class BlockContext:
    """What a block may read: the dataset (label-free unless the block reads the target), the store, the seed,
    its dependencies' outputs, and for a target-reading block the target with its labelled rows and folds."""

    data: Dataset
    store: Store
    seed: int
    inputs: dict[str, BlockOutput] = field(default_factory=dict)
    target: TargetData | None = None

    @property
    def folds(self) -> Folds:
        if self.target is None:
            raise RuntimeError("only blocks that declare reads_target see the folds")
        return self.target.folds


class FeatureBlock:
    """One cached group of features.

    Subclasses set ``name``, ``version`` (bump it when the output changes for the same params),
    ``reads_target`` (then the block gets the target's labels and folds, its key includes the folds key, and it
    must return per-fold training views computed out of fold), ``depends_on`` (names of blocks whose outputs it
    reads) and ``default_params``; and implement :meth:`build`. A block that does not read the target receives
    the data without labels (:meth:`Dataset.label_free`).
    """

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    reads_target: ClassVar[bool] = False
    depends_on: ClassVar[tuple[str, ...]] = ()
    default_params: ClassVar[dict[str, Any]] = {}
    # measured throughput on the 2-core reference machine (BENCHMARKS.md "Feature blocks"), for time planning
    rows_per_second: ClassVar[float | None] = None

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

    def check_folds(self, folds: Folds) -> None:
        """Refuse folds this block cannot be honest on (override; e.g. :meth:`Folds.require_grouped_by`)."""

    def key(self, data: Dataset, target: TargetData | None, input_keys: dict[str, str]) -> str:
        target_part = (target.folds.key, target.target.key()) if self.reads_target and target else None
        return make_key(self.name, self.version, data.fingerprint, self.params, target_part, input_keys)

    def estimate_seconds(self, n_rows: int) -> float:
        """Expected build time for ``n_rows`` rows (0 when the block has no measured throughput)."""
        return n_rows / self.rows_per_second if self.rows_per_second else 0.0

    def is_stored(self, data: Dataset, cache: "BlockCache") -> bool:
        """Is this block already in the store for ``data`` (so building it costs nothing)? Target-free blocks
        only; a target-reading block is assumed to need building."""
        if self.reads_target or any(d not in cache.keys for d in self.depends_on):
            return False
        key = self.key(data, None, {d: cache.keys[d] for d in self.depends_on})
        return (cache.store.path("features", self.name, key) / "meta.json").is_file()

    def build(self, ctx: BlockContext) -> BlockOutput:  # pragma: no cover - abstract
        raise NotImplementedError


class StoredOutputs(Mapping):
    """Block outputs by name: a block held in memory is returned as is, a stored one (a path) is read back from
    the store on each access, so that a run holds only the blocks the current step reads (a model's matrix, a
    block's inputs) instead of every block at once."""

    def __init__(self, *sources: dict[str, "BlockOutput | Path"]):
        self._items = {k: v for source in sources for k, v in source.items()}

    def __getitem__(self, name: str) -> BlockOutput:
        item = self._items[name]
        return BlockOutput.load(item) if isinstance(item, Path) else item

    def __iter__(self):
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class _Built:
    keys: dict[str, str] = field(default_factory=dict)
    # a BlockOutput, or the store folder it is read back from (BlockCache(hold=False))
    outputs: dict[str, "BlockOutput | Path"] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    reused: dict[str, bool] = field(default_factory=dict)


class BlockCache:
    """Builds blocks in dependency order, reusing any whose key is already stored.

    One cache per target (:meth:`for_target`): blocks that neither read the target nor depend on a block that does
    are built once and shared by the caches of all targets; the others are built per target, on its folds.
    ``hold=False``: a block's output is not kept in memory once stored; :attr:`outputs` reads it back when asked
    (the full-size run's memory: only the blocks one step reads are loaded at a time).
    """

    def __init__(self, data: Dataset, store: Store, seed: int, target: TargetData | None = None,
                 _shared: _Built | None = None, hold: bool = True):
        self.data, self.store, self.seed, self.target, self.hold = data, store, seed, target, hold
        self._shared = _shared if _shared is not None else _Built()
        self._own = _Built()

    def for_target(self, target: TargetData) -> "BlockCache":
        """A cache for ``target`` that shares this cache's target-free blocks."""
        return BlockCache(self.data, self.store, self.seed, target, self._shared, self.hold)

    def with_data(self, data: Dataset | None, target: TargetData | None) -> "BlockCache":
        """This cache's blocks over another copy of the same dataset and target: None to send the built blocks
        to another process without the data (``hold=False``: only their store folders travel), the run's own
        copy to use them there. Caches made from one cache keep sharing its target-free blocks."""
        cache = BlockCache(data, self.store, self.seed, target, self._shared, self.hold)
        cache._own = self._own
        return cache

    def _merged(self, attr: str) -> dict:
        return {**getattr(self._shared, attr), **getattr(self._own, attr)}

    @property
    def keys(self) -> dict[str, str]:
        return self._merged("keys")

    @property
    def outputs(self) -> StoredOutputs:
        return StoredOutputs(self._shared.outputs, self._own.outputs)

    @property
    def seconds(self) -> dict[str, float]:
        return self._merged("seconds")

    @property
    def reused(self) -> dict[str, bool]:
        return self._merged("reused")

    def _target_specific(self, block: FeatureBlock, resolve) -> bool:
        return block.reads_target or any(self._target_specific(resolve(d), resolve) for d in block.depends_on)

    def get(self, block: FeatureBlock, resolve) -> BlockOutput:
        """The output of ``block``; ``resolve(name)`` returns the configured block a dependency names."""
        built = self._own if self._target_specific(block, resolve) else self._shared
        if block.name in built.outputs:
            return StoredOutputs(built.outputs)[block.name]
        inputs = {dep: self.get(resolve(dep), resolve) for dep in block.depends_on}
        if block.reads_target:
            if self.target is None:
                raise ConfigError(f"features.{block.name} reads the target: it needs a task target with labels")
            block.check_folds(self.target.folds)
        keys = self.keys
        key = block.key(self.data, self.target, {d: keys[d] for d in block.depends_on})
        path = self.store.path("features", block.name, key)
        start = time.perf_counter()
        if (path / "meta.json").is_file():
            output = BlockOutput.load(path)
            built.reused[block.name] = True
            log.info("features: %s reused %s", block.name, key)
        else:
            ctx = BlockContext(data=self.data if block.reads_target else self.data.label_free(), store=self.store,
                               seed=self.seed, inputs=inputs, target=self.target if block.reads_target else None)
            output = block.build(ctx)
            if output.n_rows != self.data.n_rows:
                raise RuntimeError(f"block {block.name} returned {output.n_rows} rows, expected {self.data.n_rows}")
            if block.reads_target and not output.train_views:
                raise RuntimeError(f"block {block.name} reads the target but returned no per-fold training views: "
                                   "its training rows would carry values fitted on their own labels")
            output.save(path)
            built.reused[block.name] = False
            log.info("features: %s built %s in %.1fs", block.name, key, time.perf_counter() - start)
        built.seconds[block.name] = time.perf_counter() - start
        built.keys[block.name] = key
        built.outputs[block.name] = output if self.hold else path
        release(collect=worth_collecting(self.data.n_rows))
        return output


def category_codes(values: pd.Series) -> np.ndarray:
    """Integer codes of a categorical column (-1 for missing), stable for the same set of values."""
    cat = pd.Categorical(values.astype("string"), categories=sorted(values.dropna().astype(str).unique()))
    return cat.codes.astype(np.int32)
