"""Where a kernel's inputs are: competition files and our datasets under /kaggle/input, found by name.

Kaggle mounts a competition at ``/kaggle/input/<slug>/`` or, in newer layouts, ``/kaggle/input/competitions/<slug>/``
and a dataset at ``/kaggle/input/<slug>/`` or ``/kaggle/input/datasets/<owner>/<slug>/``; files may sit in a sub
folder, and a table may come zipped (``train.csv.zip``). So files are looked up by name, not by a fixed path, and
laid out (as links) in the one input folder the task's loader reads.
"""
from __future__ import annotations

import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..store import file_digest

log = logging.getLogger(__name__)

CODE_MARKER = "mmstack-code.json"
ARTIFACTS_MARKER = "mmstack-artifacts.json"
SEARCH_DEPTH = 4  # folders below a competition's mount that are searched


@dataclass(frozen=True)
class CompetitionFiles:
    """The files a task's loader reads: tables (required or optional) and image sets (a folder or a .zip)."""

    slug: str
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    images: tuple[str, ...] = ()

    @property
    def tables(self) -> tuple[str, ...]:
        return self.required + self.optional


COMPETITIONS = {
    "avito": CompetitionFiles(
        slug="avito-demand-prediction", required=("train.csv", "test.csv"),
        optional=("train_active.csv", "test_active.csv", "periods_train.csv", "periods_test.csv"),
        images=("train_jpg", "test_jpg")),
}


def competition_for(task: str) -> CompetitionFiles:
    if task not in COMPETITIONS:
        raise InputError(task, f"no Kaggle competition layout for the task {task!r}; "
                               f"kaggle package supports: {', '.join(sorted(COMPETITIONS))}")
    return COMPETITIONS[task]


def competition_roots(root: Path, slug: str) -> list[Path]:
    """The mounts of the competition ``slug`` under ``root``/input, in either layout."""
    base = Path(root) / "input"
    return [p for p in (base / "competitions" / slug, base / slug) if p.is_dir()]


def _walk(base: Path, image_names: tuple[str, ...]):
    """Files and image folders under ``base``, at most SEARCH_DEPTH deep; image folders are not entered."""
    base_depth = len(base.parts)
    for dirpath, dirnames, filenames in os.walk(base, followlinks=True):
        here = Path(dirpath)
        keep = []
        for d in dirnames:
            if d in image_names:
                yield here / d
            elif len(here.parts) - base_depth < SEARCH_DEPTH and not (here / d / CODE_MARKER).exists() \
                    and not (here / d / ARTIFACTS_MARKER).exists():
                keep.append(d)
        dirnames[:] = sorted(keep)
        for name in filenames:
            yield here / name


def find_competition_files(root: Path, files: CompetitionFiles) -> dict[str, Path]:
    """``{file name: path}`` of the competition's tables (``name`` or ``name.zip``) and image sets (``<set>`` folder
    or ``<set>.zip``), found by name under its mount (either layout), else anywhere under ``root``/input."""
    bases = competition_roots(root, files.slug) or [Path(root) / "input"]
    wanted = {**{t: t for t in files.tables}, **{t + ".zip": t for t in files.tables},
              **{i: i for i in files.images}, **{i + ".zip": i for i in files.images}}
    found: dict[str, Path] = {}
    for base in bases:
        for path in _walk(base, files.images):
            name = wanted.get(path.name)
            # the shortest path wins (the competition's own file before a copy in a sub folder); an unzipped
            # file before its zip
            if name is not None and (name not in found or (len(path.parts), path.suffix == ".zip")
                                     < (len(found[name].parts), found[name].suffix == ".zip")):
                found[name] = path
        if all(t in found for t in files.required):
            break
    missing = [t for t in files.required if t not in found]
    if missing:
        raise InputError(bases[0], f"competition file(s) {', '.join(missing)} not found (looked for them by name "
                                   f"under {', '.join(str(b) for b in bases)}); is the competition "
                                   f"{files.slug!r} among the kernel's inputs?")
    return found


def lay_out(found: dict[str, Path], dest: Path) -> Path:
    """One input folder for the loader: links to the found files, a zipped table unpacked, an image zip linked
    as ``<set>.zip`` (the loader reads image zips directly)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name, path in found.items():
        is_image_set = not name.endswith(".csv")
        target = dest / (name + ".zip" if is_image_set and path.suffix == ".zip" else name)
        if target.is_symlink() or target.exists():
            target.unlink()
        if path.suffix == ".zip" and not is_image_set:
            with zipfile.ZipFile(path) as zf:
                members = [m for m in zf.namelist() if Path(m).name == name]
                if not members:
                    raise InputError(path, f"the zip holds no {name}")
                with zf.open(members[0]) as src, open(target, "wb") as out:
                    while chunk := src.read(1 << 20):
                        out.write(chunk)
        else:
            target.symlink_to(path.resolve())
    return dest


def table_digests(input_dir: Path, files: CompetitionFiles) -> dict[str, str]:
    """sha256 of each of the competition's tables present in ``input_dir``."""
    return {name: file_digest(input_dir / name) for name in files.tables if (input_dir / name).is_file()}


def find_dataset(root: Path, marker: str, slug: str) -> Path:
    """The folder of our dataset holding ``marker``: ``input/<slug>/`` or ``input/datasets/<owner>/<slug>/``; the
    one named ``slug`` when several hold the marker."""
    base = Path(root) / "input"
    found = sorted({*base.glob(f"*/{marker}"), *base.glob(f"*/*/{marker}"), *base.glob(f"datasets/*/*/{marker}")})
    if not found:
        raise InputError(base, f"no dataset holding {marker} (add the dataset {slug!r} to the kernel's inputs)")
    named = [p for p in found if p.parent.name == slug]
    return (named or found)[0].parent
