"""One run end to end: data -> folds -> feature blocks -> level-1 models -> stack -> submission and report."""
from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import parallel
from .budget import Budget, ModelSkipped, process_age
from .config import Config, diff_flat
from .data.dataset import Dataset
from .data.schema import check_rows_for_folds
from .errors import ConfigError
from .features.base import BlockCache, BlockOutput, FeatureBlock, JoinedViews
from .features.registry import make_block
from .folds import auto_strategy, target_data
from .memory import release, worth_collecting
from .models.base import ModelInput, ModelResult, model_matrix, train_model
from .models.registry import make_model
from .own_process import in_own_process
from .report import TargetReport, build_metrics, write_report
from .run_folder import RunFolder
from .runs import load_runs
from .size_defaults import apply_size_defaults
from .stack.stacking import Stacked, stack_predictions
from .store import Store, write_text
from .targets import Target, TargetData
from .tasks import TaskSpec, get_task

log = logging.getLogger(__name__)


@dataclass
class Timer:
    """Seconds spent per pipeline step, in order."""

    seconds: dict[str, float] = field(default_factory=dict)

    def step(self, name: str):
        timer = self

        class _Step:
            def __enter__(self):
                self.start = time.perf_counter()

            def __exit__(self, *exc):  # a step met again (one per target) adds up
                timer.seconds[name] = round(timer.seconds.get(name, 0.0) + time.perf_counter() - self.start, 3)

        return _Step()


def resolve_input(config: Config, input_dir: Path | None) -> Path:
    if input_dir is not None:
        return Path(input_dir)
    configured = config.get("task.input")
    if not configured:
        raise ConfigError("no input folder: pass --input DIR or set task.input in the config")
    return Path(configured)


def prepare(config: Config, input_dir: Path, store: Store, timer: Timer) -> tuple[TaskSpec, Dataset, list[TargetData]]:
    """Load and validate the data, and make (or reuse) the folds of every target."""
    spec = get_task(config.task)
    with timer.step("load"):
        data = spec.load(input_dir, store, config.get("data") or {})
    with timer.step("folds"):
        check_rows_for_folds(data.train, config.get("folds.n_folds", 5))  # an error naming the file
        targets = [make_target_data(config, spec, data, store, t) for t in chosen_targets(config, data)]
    release(collect=worth_collecting(data.n_rows))  # what parsing left in reference cycles
    return spec, data, targets


def chosen_targets(config: Config, data: Dataset) -> list[Target]:
    """The data's targets, or those named in ``task.targets``."""
    wanted = config.get("task.targets")
    if not wanted:
        return list(data.targets)
    known = {t.name: t for t in data.targets}
    missing = [name for name in wanted if name not in known]
    if missing:
        raise ConfigError(f"task.targets: no labels for {missing} in the data; targets with labels: {list(known)}")
    return [known[name] for name in wanted]


def free_raw_data(config: Config, spec: TaskSpec, data: Dataset) -> None:
    """Once the blocks are built, in low-memory mode (``features.hold_in_memory = false``), drop the columns and
    extras that no later step reads (models and stack read the blocks; the submission its keys; the report its
    residual groups). Tasks with their own outputs read the data there, so they keep it."""
    if not config.get("features.hold_in_memory", True) and spec.outputs is None:
        data.keep_only([*spec.key_columns, *config.get("report.residual_groups", [])])
        release(collect=True)


def make_target_data(config: Config, spec: TaskSpec, data: Dataset, store: Store, target: Target) -> TargetData:
    """A target's labelled rows, their labels, and their folds (stratified for classification)."""
    strategy = config.get("folds.strategy", "kfold")
    if strategy == "auto":
        strategy = auto_strategy(data, target, config.get("folds.group_by", spec.group_column))
    return target_data(store, data, target, n_folds=config.get("folds.n_folds", 5), strategy=strategy,
                       seed=int(config.get("folds.seed", config.seed)),
                       group_by=config.get("folds.group_by", spec.group_column) if strategy == "group" else None)


def build_features(config: Config, data: Dataset, store: Store, targets: list[TargetData],
                   budget: Budget | None = None) -> dict[str, BlockCache]:
    """Build (or reuse) the configured blocks: target-free ones once, target-reading ones per target. Under a time
    limit, a block whose estimate does not fit is skipped, with the blocks that read it."""
    blocks: dict[str, FeatureBlock] = {}

    def resolve(name: str) -> FeatureBlock:
        if name not in blocks:
            blocks[name] = make_block(name, config.block_params(name))
        return blocks[name]

    for name in config.blocks:  # refuse folds a block cannot be honest on before any block is built
        block = resolve(name)
        if block.reads_target:
            for t in targets:
                block.check_folds(t.folds)
    shared = BlockCache(data, store, config.seed, hold=bool(config.get("features.hold_in_memory", True)))
    caches, skipped = {}, set()
    for t in targets:
        cache = caches[t.target.name] = shared.for_target(t)
        for name in config.blocks:
            if name in skipped or (budget is not None and not _block_fits(resolve(name), resolve, cache, data,
                                                                          budget, skipped)):
                skipped.add(name)
                continue
            cache.get(resolve(name), resolve)
            if budget is not None and not cache.reused.get(name, True):
                budget.block_built(resolve(name).estimate_seconds(data.n_rows), cache.seconds.get(name, 0.0))
    return caches


def features_step(config: Config, spec: TaskSpec, data: Dataset, input_dir: Path, store: Store,
                  targets: list[TargetData], budget: Budget | None = None) -> dict[str, BlockCache]:
    """:func:`build_features` here, or with ``features.own_process = true`` (configs/avito-full.toml) in a fresh
    process of its own (:mod:`mmstack.own_process`) that loads the input again and exits once the blocks are
    stored. This process drops the raw data first, so it goes on to the models with a heap that building the
    blocks never fragmented (hundreds of MB less under every model at 200k rows, BENCHMARKS.md "Scale"). Not
    under a time limit (its plan is kept here) and not on Ray (whose image shards are tasks this process sends)."""
    own = (config.get("features.own_process", False) and not parallel.current().distributed
           and (budget is None or not budget.limited))
    if not own:
        return build_features(config, data, store, targets, budget)
    free_raw_data(config, spec, data)
    built, peak = in_own_process("features", features_elsewhere, config, input_dir, store)
    log.info("features: built in their own process (peak RSS %.0f MB)", peak)
    return {t.target.name: built[t.target.name].with_data(data, t) for t in targets}


def features_elsewhere(config: Config, input_dir: Path, store: Store) -> dict[str, BlockCache]:
    """The blocks built by this process from the input loaded again, without the data (see :func:`features_step`)."""
    _, data, targets = prepare(config, input_dir, store, Timer())
    caches = build_features(config, data, store, targets)
    return {name: cache.with_data(None, None) for name, cache in caches.items()}


def _block_fits(block: FeatureBlock, resolve, cache: BlockCache, data: Dataset, budget: Budget,
                skipped: set[str]) -> bool:
    """Under a time limit: do ``block`` and the dependencies not built yet fit in the features' share?"""
    needed, todo = [], [block]
    while todo:
        b = todo.pop()
        if b.name not in cache.outputs and b.name not in [n.name for n in needed]:
            needed.append(b)
            todo += [resolve(d) for d in b.depends_on]
    missing = [b.name for b in needed if b.name in skipped]
    if missing:
        budget.skip("block", block.name, f"needs skipped block(s) {', '.join(missing)}")
        return False
    stored = [b for b in needed if b.is_stored(data, cache)]
    estimate = sum(b.estimate_seconds(data.n_rows) for b in needed if b not in stored)
    return budget.block_fits(block.name, estimate)


def assemble(cache: BlockCache, names: list[str], kind: str, target: TargetData | int) -> ModelInput:
    """Join the chosen blocks' outputs into one model matrix (dense frame or sparse CSR) for ``target``'s rows
    (or, given an int n_train, rows 0..n_train-1 as the labelled ones)."""
    ids = {"n_train": target} if isinstance(target, (int, np.integer)) else {
        "train_ids": target.rows, "test_ids": target.predict_rows}
    inputs = join_blocks({n: cache.outputs[n] for n in names}, {n: cache.keys[n] for n in names}, kind, **ids)
    release()  # the blocks read back for the matrix
    return inputs


def join_blocks(outputs: dict[str, BlockOutput], keys: dict[str, str], kind: str, **ids) -> ModelInput:
    """One model matrix from block outputs (in the given order): dense blocks side by side with their categorical
    columns, per-fold views and extras, or the sparse blocks stacked. ``ids``: ModelInput's row selection."""
    names = list(outputs)
    if kind == "dense":
        frames, categorical = [], []
        for name, out in outputs.items():
            features = out.features()
            if features is not None and features.shape[1]:
                frames.append(features)
                categorical += [c for c in out.categorical if c in features.columns]
        if not frames:
            raise ConfigError(f"no dense features in blocks {names}")
        X = model_matrix(frames, categorical)
        if X.columns.duplicated().any():
            raise ConfigError(f"feature name clash between blocks {names}: {list(X.columns[X.columns.duplicated()])}")
        views = JoinedViews([o.train_views for o in outputs.values()])  # a fold's own, when it asks
        extras = {n: o.extras for n, o in outputs.items() if o.extras}
        return ModelInput(X=X, categorical=categorical, block_keys=keys, train_views=views, extras=extras, **ids)
    import scipy.sparse as sp

    mats = [o.sparse for o in outputs.values() if o.sparse is not None]
    if not mats:
        raise ConfigError(f"no sparse features in blocks {names}")
    return ModelInput(X=sp.hstack(mats, format="csr"), categorical=[], block_keys=keys, **ids)


def model_blocks(config: Config, key: str, cache: BlockCache) -> tuple[dict[str, Any], list[str]]:
    """A model's params (without ``blocks``) and the blocks it reads (default: all configured blocks that were
    built; a time limit may have skipped some)."""
    params = config.model_params(key)
    block_names = params.pop("blocks", None) or [b for b in config.blocks if b in cache.outputs]
    unknown = [b for b in block_names if b not in cache.outputs]
    if unknown:
        raise ConfigError(f"models.{key}.blocks names block(s) not in [features] blocks: {', '.join(unknown)}")
    return params, block_names


def train_models(config: Config, spec: TaskSpec, target: TargetData, store: Store, cache: BlockCache,
                 only: list[str] | None = None, budget: Budget | None = None) -> list[ModelResult]:
    """Train (or reuse) the configured models. Under a time limit a model stops before a fold that would not fit
    and is left out (never half-trained in the stack); the first model always trains, so there is a submission."""
    results = []
    for key in only or config.models:
        params, block_names = model_blocks(config, key, cache)
        model = make_model(key, params, config.seed, target.target)
        missing = [b for b in model.requires_blocks if b not in block_names]
        if missing and len(missing) == len(model.requires_blocks) and budget is not None and budget.skipped:
            budget.skip("model", key, f"needs block(s) {', '.join(missing)}, skipped for time")
            continue
        inputs = assemble(cache, block_names, model.input_kind, target)
        try:
            results.append(train_model(model, inputs, target, store, spec.name, budget if results else None))
        except ModelSkipped as why:
            budget.skip("model", key, str(why))
        del inputs, model  # a bound model holds the matrix too (the graph net)
        release(collect=worth_collecting(cache.data.n_rows))
    return results


def ablation(config: Config, spec: TaskSpec, target: TargetData, store: Store, cache: BlockCache,
             budget: Budget | None = None, results: list[ModelResult] | None = None) -> dict[str, dict[str, Any]]:
    """CV of one model on the skeleton's blocks, on all blocks, and with each block left out.

    ``delta`` is how much worse the variant is than all blocks, in the direction of the target's metric:
    positive means the left-out block helps. Every variant is an ordinary cached model run, so an unchanged
    ablation costs nothing on the next run.
    """
    if not config.get("ablation.enabled", False):
        return {}
    key = config.get("ablation.model", "lgb")
    params = {**config.model_params(key), **config.get("ablation.params", {})}
    params.pop("blocks", None)
    blocks = [b for b in config.blocks if b in cache.outputs]
    if budget is not None and budget.limited:
        per_fit = next((r.seconds for r in results or [] if r.model == key), None)
        estimate = (len(blocks) + 2) * (per_fit if per_fit is not None else budget.left())
        if not budget.fits("step", "ablation", estimate):
            return {}
    variants = {"all blocks": blocks, "skeleton only": [b for b in config.get("ablation.baseline", ["basic"]) if b in blocks]}
    variants.update({f"without {b}": [x for x in blocks if x != b] for b in blocks if len(blocks) > 1})
    results: dict[str, dict[str, Any]] = {}
    for label, names in variants.items():
        if not names:
            continue
        model = make_model(key, params, config.seed, target.target)
        inputs = assemble(cache, names, model.input_kind, target)
        res = train_model(model, inputs, target, store, spec.name)
        results[label] = {"cv": res.cv, "blocks": names}
    base = results["all blocks"]["cv"]
    for label, r in results.items():
        r["delta"] = target.target.metric.worse_by(r["cv"], base)
    log.info("ablation (%s): %s", key, ", ".join(f"{k} {v['cv']:.5f}" for k, v in results.items()))
    return results


def stack_target(config: Config, spec: TaskSpec, target: TargetData, results: list[ModelResult],
                 store: Store | None) -> Stacked:
    """The configured stack of one target's level-1 models (cached, with the fitted blender)."""
    blenders = config.get("stack.blenders")
    params = {k: v for k, v in (config.get("stack") or {}).items() if isinstance(v, dict)}
    return stack_predictions(results, target, blenders, params, config.seed, store, spec.name)


def features_only(config: Config, input_dir: Path | None = None, workdir: Path | str = ".") -> BlockCache:
    """Build (or reuse) the configured feature blocks; ``mmstack features``. Returns the first target's cache."""
    store = Store(workdir)
    _, data, targets = prepare(config, resolve_input(config, input_dir), store, Timer())
    return next(iter(build_features(config, data, store, targets).values()))


def train_only(config: Config, models: list[str], input_dir: Path | None = None,
               workdir: Path | str = ".") -> list[ModelResult]:
    """Build what the models need and train (or reuse) just ``models`` for every target; ``mmstack train``."""
    store = Store(workdir)
    spec, data, targets = prepare(config, resolve_input(config, input_dir), store, Timer())
    caches = build_features(config, data, store, targets)
    return [r for t in targets for r in train_models(config, spec, t, store, caches[t.target.name], only=models)]


@dataclass
class TargetRun:
    """What a run made for one target: its data and folds, blocks, level-1 results, ablation and stack."""

    data: TargetData
    cache: BlockCache
    results: list[ModelResult]
    stacked: Stacked
    ablation: dict[str, Any] = field(default_factory=dict)

    @property
    def target(self) -> Target:
        return self.data.target


def predicted_labels(data: Dataset, runs: list[TargetRun]) -> dict[str, np.ndarray]:
    """Per target, every row's label as text: the given one, else the stacked prediction (None if neither)."""
    from .targets import class_text

    out = {}
    for r in runs:
        labels = data.labels[r.target.name]
        values = np.full(data.n_rows, None, dtype=object)
        given = labels.notna().to_numpy()
        values[given] = class_text(labels[given]).to_numpy() if r.target.is_classification else labels[given]
        values[r.data.predict_rows] = r.target.decode(r.stacked.test)
        out[r.target.name] = values
    return out


def in_scope(spec: TaskSpec, data: Dataset, runs: list[TargetRun]) -> dict[str, np.ndarray]:
    """Per target, which of its rows to predict it applies to (:attr:`TargetSpec.applies_to`): all of them, or
    those whose ``applies_to`` label (given, else predicted) is a class under which the target has labels.
    E.g. gender, labelled on clothes only, is not predicted for a kettle."""
    specs = {s.name: s for s in spec.targets}
    labels = predicted_labels(data, runs)
    scope = {}
    for r in runs:
        rows = r.data.predict_rows
        parent = getattr(specs.get(r.target.name), "applies_to", None)
        keep = np.ones(len(rows), bool)
        if parent is not None and parent in data.labels.columns:
            if parent in labels:
                of_row = labels[parent]
            else:  # the parent label is not a trained target here: given labels only
                from .targets import class_text

                column = data.labels[parent]
                of_row = np.where(column.notna(), class_text(column.fillna("")), None)
            allowed = set(of_row[r.data.rows]) - {None}
            keep = np.array([of_row[i] in allowed for i in rows], bool)
        scope[r.target.name] = rows[keep]
    return scope


def submission_frame(spec: TaskSpec, data: Dataset, runs: list[TargetRun]) -> pd.DataFrame:
    """The rows to predict (of any target, within its scope: :func:`in_scope`) with the task's key columns and,
    per target, the predicted value or class (and the class probabilities when the task asks for them); empty
    where a row is labelled for that target or outside its scope."""
    scope = in_scope(spec, data, runs)
    predict = np.unique(np.concatenate([scope[r.target.name] for r in runs]))
    frame = data.all_rows(spec.key_columns).iloc[predict][list(spec.key_columns)].reset_index(drop=True)
    for r in runs:
        t = r.target
        full = np.full((data.n_rows, t.n_outputs), np.nan)
        rows = np.searchsorted(r.data.predict_rows, scope[t.name])
        full[scope[t.name]] = r.stacked.test[rows]
        pred = full[predict]
        has = ~np.isnan(pred).any(axis=1)
        values = np.full(len(predict), None, dtype=object) if t.is_classification else np.full(len(predict), np.nan)
        values[has] = t.decode(pred[has])
        frame[t.name] = values
        if spec.probabilities and t.is_classification:
            for j, column in enumerate(t.output_names):
                frame[column] = pred[:, j]
    return frame


@dataclass
class RunContext:
    """What a task's own outputs (:attr:`TaskSpec.outputs`) may read: the run's config, data (with labels), each
    target's run, the shared feature blocks, the store and the run folder being written."""

    config: Config
    spec: TaskSpec
    data: Dataset
    runs: list[TargetRun]
    cache: BlockCache
    store: Store
    folder: Path
    predictions: pd.DataFrame


@dataclass
class TaskOutputs:
    """A task's additions to a run: metrics.json entries, and report HTML with its plots (caption, png name)."""

    metrics: dict[str, Any] = field(default_factory=dict)
    html: list[str] = field(default_factory=list)
    images: list[tuple[str, str]] = field(default_factory=list)


def run(config: Config, input_dir: Path | None = None, workdir: Path | str = ".",
        time_limit: float | None = None, from_process_start: bool = False) -> Path:
    """Run the whole pipeline; returns the run's folder under ``submissions/``. ``time_limit`` (or
    ``task.time_limit``): seconds for the whole run (:mod:`mmstack.budget`), counted from the process's start
    with ``from_process_start`` (the CLI: start-up and imports count, as the user's clock sees them)."""
    limit = time_limit if time_limit is not None else config.get("task.time_limit")
    budget = Budget(float(limit) if limit else None)
    if from_process_start:
        budget.started -= process_age()
    store = Store(workdir)
    timer = Timer()
    input_dir = resolve_input(config, input_dir)
    spec, data, targets = prepare(config, input_dir, store, timer)
    sized = apply_size_defaults(config, len(targets[0].rows) if targets else data.n_train)
    with timer.step("features"):
        caches = features_step(config, spec, data, input_dir, store, targets, budget)
    free_raw_data(config, spec, data)
    if not targets:
        return outputs_only(config, spec, data, store, timer)
    runs = []
    for i, t in enumerate(targets):
        cache = caches[t.target.name]
        with timer.step("models"):
            results = train_models(config, spec, t, store, cache, budget=budget)
        with timer.step("ablation"):  # the primary target's only: a block's worth is judged once
            ablation_cv = ablation(config, spec, t, store, cache, budget, results) if i == 0 else {}
        with timer.step("stack"):
            stacked = stack_target(config, spec, t, results, store)
        runs.append(TargetRun(t, cache, results, stacked, ablation_cv))
    folder = RunFolder.begin(store, config.raw, data.fingerprint)  # visible as run_dir once complete
    run_id, run_dir = folder.run_id, folder.final
    primary = runs[0]
    with folder, timer.step("report"):
        predictions = submission_frame(spec, data, runs)
        write_text(folder.path / spec.submission_file, predictions.to_csv(index=False))
        extra = TaskOutputs()
        if spec.outputs is not None:
            extra = spec.outputs(RunContext(config, spec, data, runs, primary.cache, store, folder.path, predictions))
        previous = load_runs(store, spec.name)
        changes = diff_flat(previous[-1]["config"], config.flat()) if previous else ["(first run)"]
        groups = [c for c in config.get("report.residual_groups", []) if c in data.train.columns]
        frame = data.all_rows(groups)
        reports = [TargetReport(r.target, r.data.y, r.results, r.stacked, r.ablation,
                                {c: frame[c].astype(str).to_numpy()[r.data.rows] for c in groups}) for r in runs]
        metrics = build_metrics(spec.name, reports, primary.data.folds.n_folds, extra={
            "run_id": run_id, "n_train": data.n_train, "n_test": data.n_test, "data_fingerprint": data.fingerprint,
            "folds_key": primary.data.folds.key,
            "features": {n: {"key": primary.cache.keys[n], "reused": primary.cache.reused[n],
                             "seconds": round(primary.cache.seconds[n], 3)} for n in primary.cache.keys},
        })
        metrics.update(extra.metrics)
        metrics["seconds"] = dict(timer.seconds)
        if budget.limited:
            metrics["budget"] = budget.summary()
        if sized:
            metrics["size_defaults"] = sized
        write_report(folder.path, metrics, reports, timer.seconds, changes, extra.html, extra.images)
        folder.publish({"run_id": run_id, "task": spec.name, "time": dt.datetime.now().isoformat(timespec="seconds"),
                        "config_path": str(config.path), "overrides": config.overrides, "config": config.flat(),
                        "changes": changes, "models": {r.model: r.cv for r in primary.results},
                        "stack": primary.stacked.summary["cv"], "metric": primary.target.metric.name,
                        "greater_is_better": primary.target.metric.greater_is_better,
                        **({"targets": {r.target.name: r.stacked.summary["cv"] for r in runs}}
                           if len(runs) > 1 else {}),
                        "submission": str(run_dir / spec.submission_file)})
    reused = [r.model for r in primary.results if r.reused] + [n for n, v in primary.cache.reused.items() if v]
    log.info("run %s: stack %s=%.5f; reused %s; wrote %s", run_id, primary.target.metric.name,
             primary.stacked.summary["cv"], ", ".join(reused) or "nothing", run_dir / spec.submission_file)
    return run_dir


def outputs_only(config: Config, spec: TaskSpec, data: Dataset, store: Store, timer: Timer) -> Path:
    """A run of data without any labelled target (e.g. a catalogue with duplicate groups only): the feature blocks
    and the task's own outputs, no models. The run's figure in runs.jsonl is NaN."""
    if spec.outputs is None:
        raise ConfigError(f"no target of task {spec.name} has labels in the data: nothing to train")
    resolve = lambda name: make_block(name, config.block_params(name))  # noqa: E731
    shared = BlockCache(data, store, config.seed)
    with timer.step("features"):
        for name in config.blocks:
            shared.get(resolve(name), resolve)
    folder = RunFolder.begin(store, config.raw, data.fingerprint)
    run_id, run_dir = folder.run_id, folder.final
    with folder, timer.step("report"):
        predictions = data.all_rows()[list(spec.key_columns)].iloc[:0]
        write_text(folder.path / spec.submission_file, predictions.to_csv(index=False))
        extra = spec.outputs(RunContext(config, spec, data, [], shared, store, folder.path, predictions))
        previous = load_runs(store, spec.name)
        changes = diff_flat(previous[-1]["config"], config.flat()) if previous else ["(first run)"]
        metrics = {"task": spec.name, "targets": {}, "n_folds": config.get("folds.n_folds", 5), "run_id": run_id,
                   "n_train": data.n_train, "n_test": data.n_test, "data_fingerprint": data.fingerprint,
                   "features": {n: {"key": shared.keys[n], "reused": shared.reused[n],
                                    "seconds": round(shared.seconds[n], 3)} for n in shared.keys},
                   **extra.metrics, "seconds": dict(timer.seconds)}
        write_report(folder.path, metrics, [], timer.seconds, changes, extra.html, extra.images)
        folder.publish({"run_id": run_id, "task": spec.name, "time": dt.datetime.now().isoformat(timespec="seconds"),
                        "config_path": str(config.path), "overrides": config.overrides, "config": config.flat(),
                        "changes": changes, "models": {}, "stack": float("nan"), "metric": "none",
                        "greater_is_better": True, "submission": str(run_dir / spec.submission_file)})
    log.info("run %s: no labelled target; wrote the task's outputs to %s", run_id, run_dir)
    return run_dir
