"""``mmstack kaggle check DIR``: a packaged kernel run here as Kaggle would run it, offline.

1. Both metadata files (and the artifacts dataset's) are checked by the kaggle CLI's rules.
2. A fresh Python 3.12 virtual environment stands in for the kernel's interpreter. The Kaggle image's packages
   (``kaggle_image.txt`` and their dependencies, torch with its CUDA libraries included) are installed once into
   a cached folder and put on the environment's path with a ``.pth`` file, as the image's site-packages would be.
3. A fake ``/kaggle`` is laid out in a temporary folder: the competition's files under ``input/competitions/<slug>``
   (or ``input/<slug>``, ``--layout old``) with the image folders zipped as Kaggle ships them, and the code and
   artifacts datasets under ``input/datasets/<user>/<slug>`` (or ``input/<slug>``).
4. The kernel script runs in the environment with the network cut off: ``unshare -rn`` puts it in a new network
   namespace that has only a loopback interface, which is down, so any connection fails at once. It runs with
   ``HF_HUB_OFFLINE`` unset and no pip config or wheel source but the code dataset: its own
   ``pip install --no-index`` proves the wheel set complete (a missing wheel fails, named), and a download at
   import time fails instead of being hidden.
5. The submission is checked: columns, one row per row to predict, finite values in the target's range, and in
   predict mode the local run's submission reproduced (max abs difference at most 1e-6).
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import MmstackError
from ..store import read_json
from .inputs import ARTIFACTS_MARKER, CODE_MARKER, competition_for
from .metadata import KERNEL_FILE, check_dataset_folder, check_kernel_folder
from .package import PACKAGE_FILE
from .wheels import WheelSet, find_python, image_folder

log = logging.getLogger(__name__)

NETWORK_CUT = ["unshare", "-rn"]
TOLERANCE = 1e-6
# variables the kernel must not inherit: they would turn the offline switches on for it, point pip at other wheel
# sources, or put this checkout's mmstack on its path instead of the installed wheel
DROPPED_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "PYTHONPATH", "PYTHONHOME",
               "VIRTUAL_ENV", "PYTHONSTARTUP", "PYTHONUSERBASE")


class CheckError(MmstackError):
    """The packaged kernel would not work on Kaggle."""


@dataclass
class CheckResult:
    submission: Path
    rows: int
    python: str
    network: str
    log_path: Path
    seconds: dict[str, float] = field(default_factory=dict)
    stages: list[str] = field(default_factory=list)  # the kernel's stage and peak-memory lines
    max_abs_diff: float | None = None


def network_cut() -> list[str]:
    """The command prefix that runs a program without network, checked to work here."""
    if shutil.which(NETWORK_CUT[0]) is None:
        raise CheckError("cannot cut the network: `unshare` (util-linux) is not installed; the check does not run "
                         "a kernel with the network on")
    done = subprocess.run([*NETWORK_CUT, "true"], capture_output=True, text=True)
    if done.returncode != 0:
        raise CheckError(f"cannot cut the network: `unshare -rn` failed ({done.stderr.strip()[-200:]}); allow "
                         "unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1 or "
                         "user.max_user_namespaces > 0) or run the check as root; the check does not run a kernel "
                         "with the network on")
    return list(NETWORK_CUT)


def zip_folder(folder: Path, dest: Path, inner: str) -> None:
    """``folder``'s files in a zip under ``inner/`` (stored: JPEGs do not compress), as Kaggle's image zips."""
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_STORED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, f"{inner}/{path.relative_to(folder).as_posix()}")


def link_files(source: Path, dest: Path) -> None:
    """``dest`` holding links to the top-level files of ``source`` (a mounted dataset's files)."""
    dest.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.is_file():
            (dest / path.name).symlink_to(path.resolve())


def fake_kaggle(root: Path, package_dir: Path, info: dict, data_dir: Path, layout: str) -> None:
    """``root`` laid out like /kaggle: competition files (image folders zipped), our datasets, ``working/``."""
    files = competition_for(info["task"])
    base = root / "input"
    comp = base / "competitions" / info["competition"] if layout == "new" else base / info["competition"]
    comp.mkdir(parents=True)
    for path in sorted(data_dir.iterdir()):
        if path.name in files.images and path.is_dir():
            zip_folder(path, comp / f"{path.name}.zip", f"data/competition_files/{path.name}")
        elif path.is_file():
            (comp / path.name).symlink_to(path.resolve())
    for kind in ("code", "artifacts"):
        if (package_dir / kind).is_dir():
            slug = info["slugs"][kind]
            link_files(package_dir / kind,
                       base / "datasets" / info["user"] / slug if layout == "new" else base / slug)
    (root / "working").mkdir()


def make_venv(python: str, image: Path, where: Path) -> Path:
    """A fresh virtual environment of ``python`` that sees the image's packages after its own."""
    subprocess.run([python, "-m", "venv", str(where)], check=True, capture_output=True)
    (site,) = where.glob("lib/python3*/site-packages")
    # an import line, so that the image folder's own .pth files are processed as a site-packages' are
    (site / "zz_kaggle_image.pth").write_text(f"import site; site.addsitedir({str(image)!r})\n")
    return where / "bin" / "python"


def kernel_env(root: Path, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in DROPPED_ENV and not k.startswith("PIP_") and not k.startswith("MMSTACK_KAGGLE")}
    env.update(MMSTACK_KAGGLE_ROOT=str(root), HOME=str(home), PYTHONNOUSERSITE="1")
    return env


def kernel_failure(log_text: str) -> str:
    lines = [line for line in log_text.splitlines() if "[mmstack-kernel] FAILED" in line or
             "[mmstack-kernel] error" in line]
    if lines:
        return lines[0].split("] ", 1)[1].removeprefix("FAILED: ")
    tail = [line for line in log_text.strip().splitlines()[-5:]]
    return "the kernel failed: " + " | ".join(tail)


def check_submission(path: Path, info: dict, data_dir: Path, reference: Path | None) -> tuple[int, float | None]:
    """Rows, columns and values of the kernel's submission; its largest difference to the reference, if any."""
    from ..tasks import get_task

    if not path.is_file():
        raise CheckError(f"the kernel wrote no {path.name} in /kaggle/working")
    sub = pd.read_csv(path)
    spec = get_task(info["task"])
    data = spec.load(data_dir, None, {})
    names = [t.name for t in data.targets]
    missing = [c for c in [*spec.key_columns, *names] if c not in sub.columns]
    if missing:
        raise CheckError(f"{path}: missing column(s) {', '.join(missing)}")
    predict = np.flatnonzero(data.labels[names].isna().any(axis=1).to_numpy())
    keys = data.all_rows().iloc[predict][list(spec.key_columns)].astype(str)
    if len(sub) != len(keys):
        raise CheckError(f"{path}: {len(sub)} rows, expected one per row to predict ({len(keys)})")
    if set(map(tuple, sub[list(spec.key_columns)].astype(str).to_numpy())) != set(map(tuple, keys.to_numpy())):
        raise CheckError(f"{path}: its {', '.join(spec.key_columns)} values are not the rows to predict")
    for target in data.targets:
        if target.is_classification:
            continue
        values = pd.to_numeric(sub[target.name], errors="coerce").to_numpy()
        if not np.isfinite(values).all():
            raise CheckError(f"{path}, column '{target.name}': {int((~np.isfinite(values)).sum())} non-finite value(s)")
        if target.value_range and not ((values >= target.value_range[0]) & (values <= target.value_range[1])).all():
            raise CheckError(f"{path}, column '{target.name}': values outside {target.value_range}")
    if reference is None:
        return len(sub), None
    ref = pd.read_csv(reference)
    merged = ref.merge(sub, on=list(spec.key_columns), suffixes=("_local", "_kernel"), how="outer", indicator=True)
    if (merged["_merge"] != "both").any():
        raise CheckError(f"{path}: its rows differ from the local run's submission")
    diffs = [np.abs(pd.to_numeric(merged[f"{n}_local"]) - pd.to_numeric(merged[f"{n}_kernel"])).max()
             for n in names if not data.target(n).is_classification]
    biggest = float(max(diffs)) if diffs else 0.0
    if biggest > TOLERANCE:
        raise CheckError(f"{path}: differs from the local run's submission by up to {biggest:.3g} (allowed "
                         f"{TOLERANCE:g})")
    return len(sub), biggest


def default_data(info: dict, work: Path) -> Path:
    """The package's input folder; where it is gone, the task's embedded default data generated afresh."""
    data_dir = Path(info["input_dir"])
    if (data_dir / "train.csv").is_file():
        return data_dir
    if info["mode"] == "predict":
        raise CheckError(f"{data_dir}: the data the artifacts were made from is gone; pass --data DIR")
    from ..tasks import get_task

    log.info("kaggle check: %s not found; generating the embedded default data", data_dir)
    get_task(info["task"]).make_data(work / "data", rows=10_000, seed=42, images=True)
    return work / "data"


def check(package_dir: Path, python: str | None = None, data_dir: Path | None = None, layout: str = "new",
          timeout: float = 4 * 3600, work: Path | None = None, keep: bool = False) -> CheckResult:
    """Run the checks above on the package in ``package_dir``; raises :class:`CheckError` on the first failure."""
    package_dir = Path(package_dir)
    if layout not in ("new", "old"):
        raise CheckError(f"--layout {layout!r}: expected new or old")
    if not (package_dir / PACKAGE_FILE).is_file():
        raise CheckError(f"{package_dir}: no {PACKAGE_FILE}; make the folder with `mmstack kaggle package`")
    info = read_json(package_dir / PACKAGE_FILE)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    meta = check_kernel_folder(package_dir / "kernel")
    check_dataset_folder(package_dir / "code")
    wanted = [f"{info['user']}/{info['slugs']['code']}"]
    if info["mode"] == "predict":
        check_dataset_folder(package_dir / "artifacts")
        if not (package_dir / "artifacts" / ARTIFACTS_MARKER).is_file():
            raise CheckError(f"{package_dir / 'artifacts'}: no {ARTIFACTS_MARKER}")
        wanted.append(f"{info['user']}/{info['slugs']['artifacts']}")
    lacking = [d for d in wanted if d not in meta.get("dataset_sources", [])]
    if lacking:
        raise CheckError(f"{package_dir / 'kernel' / KERNEL_FILE}: dataset_sources lacks {', '.join(lacking)}")
    cut = network_cut()
    packaged = info.get("python")  # the interpreter `package` used, when it is on this machine too
    python = find_python(python or (packaged if packaged and Path(packaged).is_file() else None))
    wheels = WheelSet.from_json(read_json(package_dir / "code" / CODE_MARKER))
    image = image_folder(python, wheels)
    seconds["image"] = round(time.perf_counter() - start, 1)

    work = Path(work) if work else Path(tempfile.mkdtemp(prefix="mmstack-kaggle-check-"))
    work.mkdir(parents=True, exist_ok=True)
    generated = data_dir is None and not (Path(info["input_dir"]) / "train.csv").is_file()
    try:
        data_dir = Path(data_dir) if data_dir else default_data(info, work)
        root = work / "kaggle"
        shutil.rmtree(root, ignore_errors=True)
        step = time.perf_counter()
        fake_kaggle(root, package_dir, info, data_dir, layout)
        shutil.rmtree(work / "venv", ignore_errors=True)
        venv_python = make_venv(python, image, work / "venv")
        (work / "home").mkdir(exist_ok=True)
        seconds["lay out"] = round(time.perf_counter() - step, 1)
        step = time.perf_counter()
        log_path = work / "kernel.log"
        script = package_dir / "kernel" / meta["code_file"]
        with open(log_path, "w") as out:
            proc = subprocess.Popen([*cut, str(venv_python), str(script.resolve())], cwd=root / "working",
                                    env=kernel_env(root, work / "home"), stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise CheckError(f"the kernel ran longer than {timeout:.0f} s (log: {log_path})") from None
        seconds["kernel"] = round(time.perf_counter() - step, 1)
        text = log_path.read_text(errors="replace")
        if code != 0:
            raise CheckError(f"{kernel_failure(text)} (log: {log_path})")
        reference = package_dir / info["reference"] if info.get("reference") else None
        submission = work / "submission.csv"
        shutil.copyfile(root / "working" / "submission.csv", submission) if (
            root / "working" / "submission.csv").is_file() else None
        rows, diff = check_submission(submission, info, data_dir, reference)
        stages = [line.split("] ", 1)[1] for line in text.splitlines()
                  if re.match(r"\[mmstack-kernel\] (stage times|peak memory|total|wrote|WARNING)", line)]
        return CheckResult(submission, rows, python, " ".join(cut) + " (a new network namespace: no interface up)",
                           log_path, seconds, stages, diff)
    finally:
        if not keep:
            shutil.rmtree(work / "kaggle", ignore_errors=True)
            shutil.rmtree(work / "venv", ignore_errors=True)
            if generated:
                shutil.rmtree(work / "data", ignore_errors=True)
