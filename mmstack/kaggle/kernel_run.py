"""The kernel's work once the kit is installed (``python -m mmstack.kaggle.kernel_run SETTINGS.json``).

Finds the competition files under ``<root>/input`` by name (either mount layout, zipped tables and images too),
lays them out as the loader's input folder in ``<root>/working``, then

- train mode: runs the whole pipeline with its work folder in ``<root>/working/mmstack``;
- predict mode: puts the artifacts dataset back as a store, loads the competition's files and, when their data
  fingerprint is the one the artifacts were made from, predicts the rows to predict with the saved fold models
  and blender (:mod:`mmstack.predict`, no training). Otherwise the stored blocks do not cover these rows (they
  were fitted on the local run's train + test), and the kernel trains from scratch (``on_mismatch = "train"``,
  the default) or stops with the reason (``"fail"``).

Writes ``<root>/working/submission.csv`` and prints the stage times and peak memory.
"""
from __future__ import annotations

import json
import logging
import resource
import shutil
import sys
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from ..errors import MmstackError
from .inputs import ARTIFACTS_MARKER, CompetitionFiles, find_competition_files, find_dataset, lay_out, table_digests

log = logging.getLogger(__name__)
# packages whose version decides whether saved fold models load and predict alike
MODEL_PACKAGES = ("scikit-learn", "lightgbm", "xgboost", "catboost", "torch", "numpy")


def say(message: str) -> None:
    print(f"[mmstack-kernel] {message}", flush=True)


class Stages:
    """Wall seconds per stage, printed at the end."""

    def __init__(self, seconds: dict[str, float] | None = None):
        self.seconds: dict[str, float] = dict(seconds or {})

    @contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        yield
        self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - start, 1)
        say(f"stage {name}: {self.seconds[name]:.1f} s")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def image_versions(assumed: dict[str, str], mode: str) -> None:
    """Print the image's versions of the packages the code dataset relies on; warn about each difference."""
    for name, version in sorted(assumed.items()):
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            say(f"WARNING: the image has no {name} (packaged for {name}=={version}); repackage with "
                f"`mmstack kaggle package --ship {name}`")
            continue
        if have != version:
            risk = " (saved fold models may not load or may predict differently)" if (
                mode == "predict" and name in MODEL_PACKAGES) else ""
            say(f"WARNING: the image has {name} {have}, packaged against {version}{risk}")


def predict_frame(spec, data, store, metrics: dict):
    """The submission from the stored run: the rows to predict of every target, predicted by its saved fold
    models and blended by its saved blender."""
    from ..pipeline import TargetRun, submission_frame
    from ..predict import run_predictions
    from ..targets import TargetData
    from .artifacts import target_sections

    sections = target_sections(metrics)
    runs = []
    for name in sections:
        target = data.target(name)
        rows, y = data.labelled(target)
        predict_rows = np.setdiff1d(np.arange(data.n_rows), rows)
        pred = run_predictions(store, spec.name, metrics, predict_rows, name if "targets" in metrics else None)
        say(f"predicted {len(predict_rows)} rows of {name} with {len(sections[name]['models'])} level-1 models "
            f"and the {sections[name]['stack'].get('method', 'saved')} blender")
        runs.append(TargetRun(TargetData(target, rows, y, None, predict_rows), None, [], SimpleNamespace(test=pred)))
    return submission_frame(spec, data, runs)


def mismatch_reason(manifest: dict, input_dir: Path, files: CompetitionFiles, fingerprint: str) -> str:
    here = table_digests(input_dir, files)
    packaged = manifest.get("input_files", {})
    differ = sorted(n for n in set(here) | set(packaged) if here.get(n) != packaged.get(n))
    return (f"the competition's files differ from those the artifacts were made from (data fingerprint {fingerprint}"
            f", packaged {manifest['data_fingerprint']}; differing: {', '.join(differ) or 'none by digest'})")


def run(settings: dict) -> Path:
    from ..config import Config
    from ..pipeline import run as run_pipeline
    from ..store import Store, read_json
    from ..tasks import get_task
    from .artifacts import restore
    from .inputs import competition_for

    root = Path(settings["root"])
    working = root / "working"
    workdir = working / "mmstack"
    stages = Stages({"install": settings.get("install_seconds", 0.0)})
    mode = settings["mode"]
    image_versions(settings.get("image", {}), mode)
    files = competition_for(settings["task"])
    files = CompetitionFiles(settings.get("competition") or files.slug, files.required, files.optional, files.images)
    with stages.stage("find inputs"):
        found = find_competition_files(root, files)
        for name, path in sorted(found.items()):
            say(f"input {name}: {path}")
        input_dir = lay_out(found, working / "mmstack-input")
    config_path = working / "mmstack-config.toml"
    config_path.write_text(settings["config_text"])
    config = Config.load(config_path, settings.get("overrides", []))
    spec = get_task(config.task)
    store = Store(workdir)
    frame = None
    if mode == "predict":
        with stages.stage("restore artifacts"):
            artifacts = find_dataset(root, ARTIFACTS_MARKER, settings["artifacts_dataset"])
            manifest = restore(artifacts, workdir)
            say(f"artifacts: {artifacts} (run {manifest['run_id']}, {len(manifest['files'])} files)")
        with stages.stage("load"):
            data = spec.load(input_dir, store, config.get("data") or {})
        if data.fingerprint == manifest["data_fingerprint"]:
            with stages.stage("predict"):
                frame = predict_frame(spec, data, store, manifest["metrics"])
        else:
            reason = mismatch_reason(manifest, input_dir, files, data.fingerprint)
            if settings.get("on_mismatch", "train") == "fail":
                raise MmstackError(f"{reason}; the kernel was packaged with --on-mismatch fail, so it stops. "
                                   "Package in train mode for a competition whose test set is hidden.")
            say(f"WARNING: {reason}. The stored features hold other rows: TRAINING FROM SCRATCH instead "
                "(train mode's time and memory, see the README).")
            mode = "train (fallback)"
    if frame is None:
        with stages.stage("pipeline"):
            run_dir = run_pipeline(config, input_dir, workdir)
        for step, seconds in read_json(run_dir / "metrics.json").get("seconds", {}).items():
            say(f"  pipeline step {step}: {seconds:.1f} s")
        shutil.copyfile(run_dir / "submission.csv", working / "submission.csv")
    else:
        frame.to_csv(working / "submission.csv", index=False)
    n_rows = sum(1 for _ in open(working / "submission.csv")) - 1
    say(f"wrote {working / 'submission.csv'} ({n_rows} rows, {mode} mode)")
    say("stage times: " + ", ".join(f"{k} {v:.1f} s" for k, v in stages.seconds.items()))
    say(f"peak memory: {peak_mb():.0f} MB")
    return working / "submission.csv"


def main(argv: list[str] | None = None) -> int:
    from ..cli import _setup_logging

    argv = sys.argv[1:] if argv is None else argv
    _setup_logging(False)
    settings = json.loads(Path(argv[0]).read_text())
    try:
        run(settings)
    except MmstackError as exc:
        say(f"error: {exc}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
