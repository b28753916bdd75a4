"""``mmstack kaggle package``: the kernel, the code dataset and (predict mode) the artifacts dataset of a config.

``DIR/kernel/`` holds ``kernel-metadata.json`` and the one script the kernel runs; ``DIR/code/`` the kit's wheel
and every dependency wheel the Kaggle image lacks (at the top level: ``kaggle datasets create`` skips
sub-folders), with ``requirements.txt`` and ``mmstack-code.json``; ``DIR/artifacts/`` (predict mode) what a
finished local run needs to predict. ``DIR/mmstack-package.json`` tells ``kaggle check`` how it was made.
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Config, diff_flat
from ..errors import ConfigError
from ..size_defaults import apply_size_defaults
from ..store import Store, read_json, write_json, write_text
from .inputs import CODE_MARKER, competition_for, table_digests
from .kernel_script import CODE_FILE, render
from .metadata import (DATASET_FILE, KERNEL_FILE, USER, check_dataset_folder, check_kernel_folder,
                       dataset_metadata, kernel_metadata, slugify, write_metadata)
from .wheels import ImageSpec, build_kit_wheel, cache_root, canonical, find_python, place, resolve, wheel_requirements

log = logging.getLogger(__name__)

PACKAGE_FILE = "mmstack-package.json"
REFERENCE_FILE = "reference-submission.csv"
MODES = ("train", "predict")
ON_MISMATCH = ("train", "fail")
# what the kernel never needs: the ablation trains extra models and changes no prediction
KERNEL_OVERRIDES = ["ablation.enabled=false"]


@dataclass
class PackageResult:
    out: Path
    mode: str
    sizes: dict[str, int] = field(default_factory=dict)  # dataset -> bytes
    counts: dict[str, int] = field(default_factory=dict)  # dataset -> files
    excluded: dict[str, str] = field(default_factory=dict)  # image packages not shipped -> version
    assumed: dict[str, str] = field(default_factory=dict)  # the image packages kaggle_image.txt lists
    run_id: str | None = None


def dataset_slug(competition: str, suffix: str) -> str:
    """``mmstack-<competition>-<suffix>``, cut to Kaggle's 50 characters without losing the suffix."""
    head = slugify(f"mmstack-{competition}", 50 - len(suffix) - 1)
    return f"{head}-{suffix}"


def title(text: str) -> str:
    return text if len(text) <= 50 else text[:47] + "..."


def pick_run(workdir: Path, task: str, run_id: str | None) -> tuple[str, Path, dict]:
    """The run to package: ``run_id`` or the task's latest in ``workdir``; its folder and its log record."""
    from ..runs import load_runs

    runs = load_runs(Store(workdir), task)
    if not runs:
        raise ConfigError(f"--mode predict packages a finished run, but {workdir / 'submissions'} has no {task} run; "
                          "run `mmstack run CONFIG` first (or use --mode train)")
    by_id = {r["run_id"]: r for r in runs}
    if run_id is not None and run_id not in by_id:
        raise ConfigError(f"--run {run_id}: no such {task} run in {workdir}; see `mmstack runs --workdir {workdir}`")
    record = by_id[run_id] if run_id else runs[-1]
    folder = Path(workdir) / "submissions" / record["run_id"]
    if not (folder / "metrics.json").is_file():
        raise ConfigError(f"{folder}: the run's folder has no metrics.json")
    return record["run_id"], folder, record


def package(config_path: Path, out: Path, user: str, overrides: list[str] | None = None,
            competition: str | None = None, mode: str = "train", gpu: bool = False, workdir: Path = Path("."),
            run_id: str | None = None, input_dir: Path | None = None, python: str | None = None,
            on_mismatch: str = "train", ship: list[str] | None = None) -> PackageResult:
    from ..pipeline import resolve_input
    from ..tasks import get_task
    from .artifacts import write_artifacts

    if mode not in MODES:
        raise ConfigError(f"--mode {mode!r}: expected train or predict")
    if on_mismatch not in ON_MISMATCH:
        raise ConfigError(f"--on-mismatch {on_mismatch!r}: expected train or fail")
    if not USER.match(user or ""):
        raise ConfigError(f"--user {user!r}: expected your Kaggle user name (letters, digits, '-', '_')")
    config = Config.load(config_path, overrides or [])
    files = competition_for(config.task)
    competition = competition or files.slug
    if slugify(competition) != competition:
        raise ConfigError(f"--competition {competition!r}: expected a competition slug such as {files.slug!r}")
    input_dir = resolve_input(config, input_dir).resolve()
    python = find_python(python)
    out = Path(out)
    for sub in ("kernel", "code", "artifacts"):
        shutil.rmtree(out / sub, ignore_errors=True)
    (out / PACKAGE_FILE).unlink(missing_ok=True)
    result = PackageResult(out, mode)
    slugs = {"code": dataset_slug(competition, "code"), "artifacts": dataset_slug(competition, "artifacts")}
    package_info = {"mode": mode, "task": config.task, "competition": competition, "user": user,
                    "input_dir": str(input_dir), "python": python, "slugs": slugs}

    if mode == "predict":  # first: it fails fast when the run or its store is not usable
        run_id, run_dir, record = pick_run(Path(workdir), config.task, run_id)
        metrics = read_json(run_dir / "metrics.json")
        sized = metrics.get("size_defaults") or {}
        if sized.get("rows") is not None:  # the run laid its data size's defaults over the config: do the same
            apply_size_defaults(config, int(sized["rows"]))
        changes = diff_flat(record.get("config", {}), config.flat())
        if changes:
            raise ConfigError(f"run {run_id} was made with another config than {config_path} "
                              f"{' '.join('--set ' + o for o in config.overrides)}: {'; '.join(changes[:5])}; "
                              "pass the run's --set options (see `mmstack runs`) or pick another --run")
        store = Store(workdir)
        data = get_task(config.task).load(input_dir, store, config.get("data") or {})
        if data.fingerprint != metrics["data_fingerprint"]:
            raise ConfigError(f"{input_dir} is not the data run {run_id} was made from (fingerprint "
                              f"{data.fingerprint}, the run's {metrics['data_fingerprint']}); pass --input")
        digests = table_digests(input_dir, files)
        result.sizes["artifacts"] = write_artifacts(store, config.task, metrics, out / "artifacts", {
            "run_id": run_id, "data_fingerprint": data.fingerprint, "input_files": digests})
        write_metadata(out / "artifacts" / DATASET_FILE, dataset_metadata(
            user, slugs["artifacts"], title(f"mmstack {competition} artifacts")))
        result.counts["artifacts"] = len(list((out / "artifacts").iterdir()))
        shutil.copyfile(run_dir / "submission.csv", out / REFERENCE_FILE)
        result.run_id = run_id
        package_info.update(run_id=run_id, reference=REFERENCE_FILE)

    code = out / "code"
    kit_wheel = build_kit_wheel(code)
    image = ImageSpec.read()
    if ship:
        image = image.without({canonical(name) for name in ship})
    wheels = resolve(python, wheel_requirements(kit_wheel), image)
    for version, name in wheels.shipped.values():
        place(cache_root() / "files" / name, code / name)
    write_text(code / "requirements.txt", "\n".join(wheels.requirements) + "\n")
    assumed = {req.split("==")[0].strip(): req.split("==")[1].split()[0] for req in image.requirements if "==" in req}
    write_json(code / CODE_MARKER, {"kit_wheel": kit_wheel.name, "python": "3.12", **wheels.to_json(),
                                    "assumed_image": assumed})
    write_metadata(code / DATASET_FILE, dataset_metadata(user, slugs["code"], title(f"mmstack {competition} code")))
    result.sizes["code"] = sum(p.stat().st_size for p in code.iterdir())
    result.counts["code"] = len(wheels.shipped) + 1
    result.excluded = {n: v for n, v in sorted(wheels.image.items())}
    result.assumed = assumed

    kernel = out / "kernel"
    settings = {"mode": mode, "task": config.task, "competition": competition, "code_dataset": slugs["code"],
                "artifacts_dataset": slugs["artifacts"] if mode == "predict" else None,
                "config_text": Path(config_path).read_text(), "overrides": config.overrides + KERNEL_OVERRIDES,
                "on_mismatch": on_mismatch, "image": assumed}
    write_text(kernel / CODE_FILE, render(settings))
    datasets = [f"{user}/{slugs['code']}"] + ([f"{user}/{slugs['artifacts']}"] if mode == "predict" else [])
    write_metadata(kernel / KERNEL_FILE, kernel_metadata(
        user, dataset_slug(competition, mode), title(f"mmstack {competition} {mode}"), CODE_FILE,
        competition, datasets, gpu))
    check_kernel_folder(kernel)
    check_dataset_folder(code)
    if mode == "predict":
        check_dataset_folder(out / "artifacts")
    write_json(out / PACKAGE_FILE, package_info)
    return result
