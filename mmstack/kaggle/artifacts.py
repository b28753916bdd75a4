"""The artifacts dataset of a predict-mode kernel: what a finished local run needs to predict, and no more.

A run's predictions need, per target: each level-1 run's json (its blocks by key, its folds), its fold models
(``models/<task>/<name>/fold<k>.joblib``), the blocks it reads (``features/<block>/<key>/``, without the per-fold
training views, which only training reads) and the stack with its fitted blender. Blocks are fitted on train and
test together (TF-IDF vocabularies, PCA, group statistics over all rows), so the stored blocks hold the
competition's own test rows: the kernel predicts them only when the competition's files are the ones the run
was made from (same data fingerprint), and otherwise trains (or stops, as packaged).

``kaggle datasets create`` skips sub-folders, so the store's files are laid flat (``features--basic--<key>--
dense.parquet``) with a manifest that puts them back.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from ..models.base import fold_path
from ..stack.stacking import stack_path
from ..store import Store, read_json, write_json
from .inputs import ARTIFACTS_MARKER
from .wheels import place


def target_sections(metrics: dict) -> dict[str, dict]:
    """``{target name: its metrics section}`` (one per target; the primary's figures sit at the top level)."""
    return dict(metrics["targets"]) if "targets" in metrics else {metrics["target"]: metrics}


def run_files(store: Store, task: str, metrics: dict) -> list[Path]:
    """The store's files (relative to its root) that :func:`mmstack.predict.run_predictions` reads for the run
    ``metrics``, each checked to exist."""
    root = store.workdir
    files: set[Path] = set()
    for section in target_sections(metrics).values():
        files.add(stack_path(store, task, section["stack"]["key"]))
        for model, m in section["models"].items():
            name = f"{model}__{m['key']}"
            info_path = store.path("oof", task, name, ".json")
            if not info_path.is_file():
                raise ConfigError(f"{info_path}: missing; the run's level-1 model {name} is not in the store "
                                  f"{root} (was it cleaned?)")
            info = read_json(info_path)
            files.add(info_path)
            files.update(fold_path(store, task, name, k) for k in range(len(info["folds"])))
            for block, key in info["blocks"].items():
                folder = store.path("features", block, key)
                files.update(p for p in folder.iterdir() if not p.name.startswith("train_view_"))
    missing = sorted(str(p) for p in files if not p.is_file())
    if missing:
        raise ConfigError(f"the run's store {root} lacks {len(missing)} file(s) predicting needs, e.g. {missing[0]}")
    return sorted(p.relative_to(root) for p in files)


def flat_name(relative: Path) -> str:
    return "--".join(relative.parts)


def write_artifacts(store: Store, task: str, metrics: dict, dest: Path, extra: dict) -> int:
    """Lay the run's files flat in ``dest`` with the manifest (``extra`` added to it); returns the bytes written."""
    files = run_files(store, task, metrics)
    names = {flat_name(rel): rel.as_posix() for rel in files}
    if len(names) != len(files):
        raise ConfigError("two store files map to one flat name; rename the artifacts")
    dest.mkdir(parents=True, exist_ok=True)
    total = 0
    for flat, rel in names.items():
        place(store.workdir / rel, dest / flat)
        total += (dest / flat).stat().st_size
    write_json(dest / ARTIFACTS_MARKER, {**extra, "task": task, "metrics": metrics, "files": names})
    return total


def restore(folder: Path, workdir: Path) -> dict:
    """Put the artifacts of ``folder`` back as a store under ``workdir`` (links to the read-only dataset);
    returns the manifest."""
    manifest = read_json(folder / ARTIFACTS_MARKER)
    for flat, rel in manifest["files"].items():
        target = workdir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink() or target.exists():
            target.unlink()
        source = folder / flat
        if not source.is_file():
            raise ConfigError(f"{source}: missing from the artifacts dataset (upload the whole folder)")
        target.symlink_to(source.resolve())
    return manifest
