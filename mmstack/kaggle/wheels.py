"""The code dataset's wheels: the kit's own wheel and every dependency the Kaggle image lacks, fetched for the
target (CPython 3.12, manylinux x86_64, binary only) and cached outside the repository.

Resolution runs pip for the target, not the host (``--python-version 3.12 --platform manylinux...
--only-binary=:all:``), under a Python 3.12 interpreter so that ``Requires-Python`` is judged as on Kaggle:

1. the image's packages (``kaggle_image.txt``) are downloaded into the wheel cache and their whole dependency
   closure is resolved offline from it (``pip install --dry-run --report``), pinned to the kit's versions;
2. the kit's requirements that the image does not provide are downloaded with the image's closure as
   constraints, and the closure of both is resolved offline;
3. what the second closure holds beyond the first is shipped.

The result is remembered per requirement set (``sets/<key>.json`` in the cache), so a repeated ``kaggle package``
with unchanged requirements makes no pip call and needs no network. The first fetch downloads the simulated
image's wheels too (about 3.3 GB, torch with its CUDA libraries: a few minutes); the check installs them once
into a cached folder to stand in for the image.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import MmstackError
from ..store import atomic_path, make_key, write_json

log = logging.getLogger(__name__)

TARGET_PYTHON = "3.12"
# Kaggle's image is Ubuntu 22.04 (glibc 2.35): every manylinux tag up to 2.35 runs there
PLATFORMS = ("manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64",
             *(f"manylinux_2_{minor}_x86_64" for minor in range(5, 36)))
IMAGE_FILE = Path(__file__).with_name("kaggle_image.txt")
CACHE_ENV = "MMSTACK_KAGGLE_CACHE"
# pip settings that would add wheel sources beside the code dataset (or take them away)
PIP_SOURCE_VARS = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX", "PIP_CONSTRAINT",
                   "PIP_REQUIREMENT", "PIP_TARGET", "PIP_PREFIX", "PIP_USER")


class WheelError(MmstackError):
    """The wheel set cannot be resolved, fetched or built."""


def canonical(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if not match:
        raise WheelError(f"cannot read the package name of the requirement {requirement!r}")
    return canonical(match.group(1))


def cache_root() -> Path:
    """Where wheels, resolved sets and the simulated image live (``MMSTACK_KAGGLE_CACHE`` moves it)."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "mmstack-kaggle-wheels")


@dataclass(frozen=True)
class ImageSpec:
    """What the Kaggle image is relied on to have: pip requirements, and which kit requirement each stands for."""

    requirements: tuple[str, ...]
    provides: dict[str, str]  # kit requirement name -> image package name (e.g. xgboost-cpu -> xgboost)

    @classmethod
    def read(cls, path: Path = IMAGE_FILE) -> "ImageSpec":
        requirements, provides = [], {}
        for line in path.read_text().splitlines():
            text, _, comment = line.partition("#")
            if not text.strip():
                continue
            requirements.append(text.strip())
            found = re.search(r"provides:\s*([A-Za-z0-9._-]+)", comment)
            if found:
                provides[canonical(found.group(1))] = requirement_name(text)
        return cls(tuple(requirements), provides)

    def without(self, names: set[str]) -> "ImageSpec":
        """The image minus ``names`` (packages to ship even though the image has them)."""
        keep = tuple(r for r in self.requirements if requirement_name(r) not in names)
        return ImageSpec(keep, {k: v for k, v in self.provides.items() if v not in names})


@dataclass
class WheelSet:
    """A resolved wheel set: the image's closure (not shipped), the shipped wheels, the kernel's requirements."""

    image: dict[str, str]  # canonical name -> version
    shipped: dict[str, tuple[str, str]]  # canonical name -> (version, wheel file name in the cache)
    requirements: list[str]  # the kit's requirements the kernel installs (those the image does not provide)
    image_requirements: list[str]

    def image_pins(self) -> list[str]:
        return [f"{name}=={version}" for name, version in sorted(self.image.items())]

    def to_json(self) -> dict:
        return {"image": self.image, "shipped": {k: list(v) for k, v in self.shipped.items()},
                "requirements": self.requirements, "image_requirements": self.image_requirements}

    @classmethod
    def from_json(cls, obj: dict) -> "WheelSet":
        return cls(obj["image"], {k: tuple(v) for k, v in obj["shipped"].items()}, obj["requirements"],
                   obj["image_requirements"])


def target_args() -> list[str]:
    args = ["--only-binary=:all:", "--python-version", TARGET_PYTHON, "--implementation", "cp"]
    for platform in PLATFORMS:
        args += ["--platform", platform]
    return args


def offline_pip_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """An environment in which pip reads no config file and no wheel source but the ones on its command line."""
    env = dict(os.environ if base is None else base)
    for var in PIP_SOURCE_VARS:
        env.pop(var, None)
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def run_pip(python: str, args: list[str], what: str, offline: bool) -> subprocess.CompletedProcess:
    """``python -m pip ARGS``; a failure is a :class:`WheelError` with pip's last error lines."""
    env = offline_pip_env() if offline else None
    done = subprocess.run([python, "-m", "pip", *args], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        errors = [line for line in (done.stderr + done.stdout).splitlines() if line.startswith("ERROR")]
        raise WheelError(f"{what}: pip failed: {' | '.join(errors[-3:]) or done.stderr.strip()[-500:]}")
    return done


def _requirement_files(tmp: Path, requirements: list[str], constraints: list[str]) -> list[str]:
    (tmp / "requirements.txt").write_text("\n".join(requirements) + "\n")
    (tmp / "constraints.txt").write_text("\n".join(constraints) + "\n")
    return ["-r", str(tmp / "requirements.txt"), "-c", str(tmp / "constraints.txt")]


def download(python: str, requirements: list[str], constraints: list[str], files: Path, what: str) -> None:
    """Fetch ``requirements`` and their dependencies for the target into ``files`` (kept files are reused)."""
    files.mkdir(parents=True, exist_ok=True)
    log.info("kaggle: fetching %s for CPython %s manylinux x86_64 into %s (the first time can take minutes)",
             what, TARGET_PYTHON, files)
    with tempfile.TemporaryDirectory() as tmp:
        run_pip(python, ["download", "--quiet", "-d", str(files), *target_args(),
                         *_requirement_files(Path(tmp), requirements, constraints)], f"fetching {what}", offline=False)


def closure(python: str, requirements: list[str], constraints: list[str], files: Path,
            what: str) -> dict[str, tuple[str, str]]:
    """The dependency closure of ``requirements`` for the target, resolved offline from ``files`` alone:
    ``{canonical name: (version, wheel file name)}``."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        run_pip(python, ["install", "--dry-run", "--ignore-installed", "--quiet", "--no-index", "--find-links",
                         str(files), "--target", str(Path(tmp) / "target"), "--report", str(report), *target_args(),
                         *_requirement_files(Path(tmp), requirements, constraints)], f"resolving {what}", offline=True)
        installs = json.loads(report.read_text())["install"]
    found = {}
    for item in installs:
        url = item["download_info"]["url"]
        found[canonical(item["metadata"]["name"])] = (item["metadata"]["version"],
                                                      os.path.basename(urllib.parse.unquote(url)))
    return found


def resolve(python: str, kit_requirements: list[str], image: ImageSpec, files: Path | None = None) -> WheelSet:
    """The wheel set for ``kit_requirements`` on the Kaggle image (cached per requirement set)."""
    files = files or cache_root() / "files"
    key = make_key("wheelset-v1", sorted(kit_requirements), image.requirements, image.provides, PLATFORMS,
                   TARGET_PYTHON)
    remembered = cache_root() / "sets" / f"{key}.json"
    if remembered.is_file():
        wheels = WheelSet.from_json(json.loads(remembered.read_text()))
        if all((files / name).is_file() for _, name in wheels.shipped.values()):
            log.info("kaggle: reused the resolved wheel set %s (%d wheels)", key, len(wheels.shipped))
            return wheels
    image_reqs = list(image.requirements)
    download(python, image_reqs, kit_requirements, files, "the Kaggle image's packages")
    image_set = closure(python, image_reqs, kit_requirements, files, "the Kaggle image's packages")
    provided = {kit for kit, image_name in image.provides.items() if image_name in image_set}
    kernel_reqs = [r for r in kit_requirements if requirement_name(r) not in image_set and requirement_name(r)
                   not in provided]
    image_pins = [f"{name}=={version}" for name, (version, _) in sorted(image_set.items())]
    download(python, kernel_reqs, image_pins, files, "the kit's dependencies")
    full = closure(python, kernel_reqs + image_pins, [], files, "the kit's dependencies on the image")
    wheels = WheelSet(image={name: version for name, (version, _) in image_set.items()},
                      shipped={name: found for name, found in full.items() if name not in image_set},
                      requirements=kernel_reqs, image_requirements=image_reqs)
    write_json(remembered, wheels.to_json())
    return wheels


def kit_source() -> Path:
    """The kit's source folder (with pyproject.toml), from which its wheel is built."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file():
        raise WheelError(f"kaggle package builds the kit's wheel from its source folder, but {root} has no "
                         "pyproject.toml (install the kit from a clone: pip install -e .)")
    return root


def build_kit_wheel(out: Path) -> Path:
    """The kit's own wheel (pure Python), built from a clean copy of its source into ``out``."""
    src = kit_source()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "src"
        copy.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(src / name, copy / name)
        shutil.copytree(src / "mmstack", copy / "mmstack", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        built = Path(tmp) / "wheel"
        try:  # the running environment's setuptools: no download
            import setuptools  # noqa: F401
            import wheel  # noqa: F401
            isolation = ["--no-build-isolation"]
        except ImportError:
            isolation = []
        run_pip(sys.executable, ["wheel", "--quiet", "--no-deps", *isolation, "-w", str(built), str(copy)],
                "building the kit's wheel", offline=False)
        (wheel_file,) = built.glob("mmstack-*.whl")
        target = out / wheel_file.name
        shutil.move(str(wheel_file), target)
    return target


def wheel_requirements(wheel_file: Path) -> list[str]:
    """A wheel's unconditional ``Requires-Dist`` lines (extras left out)."""
    with zipfile.ZipFile(wheel_file) as zf:
        (meta_name,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        meta = zf.read(meta_name).decode()
    reqs = [line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    return [r for r in reqs if "extra ==" not in r]


def place(source: Path, dest: Path) -> None:
    """``source`` at ``dest``: a hard link where the file system allows (wheels never change), else a copy."""
    if dest.exists():
        dest.unlink()
    try:
        os.link(source, dest)
    except OSError:
        shutil.copy2(source, dest)


def python_version(python: str) -> str:
    done = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise WheelError(f"cannot run the Python interpreter {python!r}: {done.stderr.strip()[-300:]}")
    return done.stdout.strip()


def find_python(python: str | None = None) -> str:
    """A CPython 3.12 interpreter (Kaggle's version): ``python`` if given, else ``MMSTACK_KAGGLE_PYTHON``, else
    ``python3.12`` on PATH, else one that ``uv python find 3.12`` or pyenv knows."""
    candidates = [python] if python else []
    if not python:
        candidates += [os.environ.get("MMSTACK_KAGGLE_PYTHON"), shutil.which("python3.12")]
        if shutil.which("uv"):
            found = subprocess.run(["uv", "python", "find", TARGET_PYTHON], capture_output=True, text=True)
            candidates.append(found.stdout.strip() if found.returncode == 0 else None)
        candidates += sorted(str(p) for p in (Path.home() / ".pyenv" / "versions").glob("3.12*/bin/python3.12"))
    for candidate in filter(None, candidates):
        path = shutil.which(candidate) or candidate
        try:  # a pyenv shim without a version selected fails to run: try the next
            version = python_version(path) if Path(path).is_file() else "not an interpreter"
        except WheelError as exc:
            if python:
                raise
            log.debug("kaggle: skipping %s: %s", path, exc)
            continue
        if version == TARGET_PYTHON:
            return path
        if python:
            raise WheelError(f"--python {python}: Kaggle runs Python {TARGET_PYTHON}, this is {version}")
    raise WheelError(f"no Python {TARGET_PYTHON} interpreter found (Kaggle runs {TARGET_PYTHON}): install one with "
                     f"`uv python install {TARGET_PYTHON}`, `apt-get install python{TARGET_PYTHON} "
                     f"python{TARGET_PYTHON}-venv` or `pyenv install {TARGET_PYTHON}`, then pass --python PATH")


def image_folder(python: str, wheels: WheelSet, files: Path | None = None) -> Path:
    """A folder with the image's packages installed for ``python`` (built once per image set, then reused): the
    stand-in for the Kaggle image's site-packages in the check."""
    files = files or cache_root() / "files"
    folder = cache_root() / f"image-{make_key(wheels.image_pins(), python_version(python))}"
    if (folder / ".complete").is_file():
        return folder
    log.info("kaggle: installing the simulated Kaggle image (%d packages) into %s, once", len(wheels.image), folder)
    args = ["install", "--quiet", "--no-deps", "--no-index", "--find-links", str(files)]
    with tempfile.TemporaryDirectory() as tmp, atomic_path(folder) as target:
        pins = Path(tmp) / "image.txt"
        pins.write_text("\n".join(wheels.image_pins()) + "\n")
        try:
            run_pip(python, [*args, "--target", str(target), "-r", str(pins)], "installing the image", offline=True)
        except WheelError:  # wheels not in this machine's cache (packaged elsewhere): fetch them, then retry
            download(python, wheels.image_pins(), [], files, "the Kaggle image's packages")
            shutil.rmtree(target, ignore_errors=True)
            run_pip(python, [*args, "--target", str(target), "-r", str(pins)], "installing the image", offline=True)
        (target / ".complete").write_text("\n".join(wheels.image_pins()) + "\n")
    return folder
