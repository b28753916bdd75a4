"""``kernel-metadata.json`` and ``dataset-metadata.json``: written and checked by the kaggle CLI's rules.

The rules (FACTS.md section 6, kaggle CLI 2.x): a kernel's ``id`` is ``user/slug`` with a slug of at least 5
characters and a ``title`` of at least 5; the booleans are JSON bools or the strings "true"/"false"; sources are
``user/slug`` (datasets, kernels, models) or a slug (competitions). A dataset's ``id`` slug and ``title`` have 6 to
50 characters and it names at least one license. One rule is ours and stricter than the CLI's: ``enable_internet``
must be present and false, because the CLI turns internet *on* when it is left out and code competitions take
only offline kernels. ``kaggle kernels push`` has no dry run, so everything is checked here before it.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..store import write_text

KERNEL_FILE = "kernel-metadata.json"
DATASET_FILE = "dataset-metadata.json"
KERNEL_BOOLEANS = ("is_private", "enable_gpu", "enable_tpu", "enable_internet")
LANGUAGES = ("python", "r", "rmarkdown")
KERNEL_TYPES = ("script", "notebook")
# Kaggle's slugs: lower-case letters, digits and hyphens (the site makes them so; the CLI passes others on and
# the server refuses them after the upload)
SLUG = re.compile(r"^[a-z0-9][a-z0-9-]*$")
USER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


class MetadataError(ConfigError):
    """Metadata the kaggle CLI (or Kaggle) would refuse, or that would turn internet on."""


def slugify(text: str, max_length: int = 50) -> str:
    """``text`` as a Kaggle slug: lower case, runs of other characters as one hyphen."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:max_length].strip("-")


def kernel_metadata(user: str, slug: str, title: str, code_file: str, competition: str | None,
                    datasets: list[str], gpu: bool) -> dict[str, Any]:
    """A script kernel's metadata; internet is always off (written, never left out)."""
    return {
        "id": f"{user}/{slug}",
        "title": title,
        "code_file": code_file,
        "language": "python",
        "kernel_type": "script",
        "is_private": True,
        "enable_gpu": bool(gpu),
        "enable_tpu": False,
        "enable_internet": False,
        "dataset_sources": list(datasets),
        "competition_sources": [competition] if competition else [],
        "kernel_sources": [],
        "model_sources": [],
    }


def dataset_metadata(user: str, slug: str, title: str) -> dict[str, Any]:
    return {"title": title, "id": f"{user}/{slug}", "licenses": [{"name": "CC0-1.0"}]}


def write_metadata(path: Path, meta: dict[str, Any]) -> None:
    write_text(path, json.dumps(meta, indent=2) + "\n")


def read_metadata(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise MetadataError(f"{path}: not found (kaggle CLI needs it in the folder it uploads)")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise MetadataError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise MetadataError(f"{path}: expected a JSON object")
    return meta


def _as_bool(meta: dict, key: str, where: str) -> bool | None:
    """The CLI's reading of a boolean: a JSON bool or "true"/"false" (any case); None when absent."""
    if key not in meta:
        return None
    value = meta[key]
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise MetadataError(f"{where}: {key} must be true or false (a JSON bool or the string \"true\"/\"false\"), "
                        f"got {value!r}")


def _check_ref(ref: Any, key: str, where: str, min_slug: int, max_slug: int | None = None) -> None:
    """``user/slug`` with the slug's length in range."""
    if not isinstance(ref, str) or ref.count("/") != 1:
        raise MetadataError(f"{where}: {key} must be \"user/slug\", got {ref!r}")
    user, slug = ref.split("/")
    if not user or not USER.match(user):
        raise MetadataError(f"{where}: {key} {ref!r}: the user name before '/' is empty or has characters "
                            "other than letters, digits, '-' and '_'")
    if len(slug) < min_slug or (max_slug is not None and len(slug) > max_slug):
        bound = f"at least {min_slug}" if max_slug is None else f"{min_slug} to {max_slug}"
        raise MetadataError(f"{where}: {key} {ref!r}: the slug must have {bound} characters, it has {len(slug)}")
    if not SLUG.match(slug):
        raise MetadataError(f"{where}: {key} {ref!r}: the slug may hold lower-case letters, digits and '-' only")


def _check_list(meta: dict, key: str, where: str) -> list:
    value = meta.get(key, [])
    if not isinstance(value, list):
        raise MetadataError(f"{where}: {key} must be a list, got {value!r}")
    return value


def validate_kernel(meta: dict[str, Any], where: str | Path, folder: Path | None = None) -> None:
    """Raise :class:`MetadataError` naming the first field the CLI would reject, or that leaves internet on."""
    where = str(where)
    if "id" not in meta and "id_no" not in meta:
        raise MetadataError(f"{where}: id is missing (\"user/slug\")")
    if "id" in meta:
        _check_ref(meta["id"], "id", where, min_slug=5)
    title = meta.get("title")
    if not isinstance(title, str) or len(title) < 5:
        raise MetadataError(f"{where}: title must have at least 5 characters, got {title!r}")
    code_file = meta.get("code_file")
    if not isinstance(code_file, str) or not code_file:
        raise MetadataError(f"{where}: code_file is missing (the script the kernel runs)")
    if folder is not None and not (Path(folder) / code_file).is_file():
        raise MetadataError(f"{where}: code_file {code_file!r} is not in {folder}")
    if meta.get("language") not in LANGUAGES:
        raise MetadataError(f"{where}: language must be one of {', '.join(LANGUAGES)}, got {meta.get('language')!r}")
    if meta.get("kernel_type") not in KERNEL_TYPES:
        raise MetadataError(f"{where}: kernel_type must be script or notebook, got {meta.get('kernel_type')!r}")
    values = {key: _as_bool(meta, key, where) for key in KERNEL_BOOLEANS}
    if values["enable_internet"] is None:
        raise MetadataError(f"{where}: enable_internet is missing: the kaggle CLI then turns internet ON; "
                            "write \"enable_internet\": false")
    if values["enable_internet"]:
        raise MetadataError(f"{where}: enable_internet is true: the kernel must run offline (code competitions "
                            "take only kernels with internet off); write false")
    for key in ("dataset_sources", "kernel_sources", "model_sources"):
        for ref in _check_list(meta, key, where):
            _check_ref(ref, key, where, min_slug=1 if key != "kernel_sources" else 5)
    for slug in _check_list(meta, "competition_sources", where):
        if not isinstance(slug, str) or not SLUG.match(slug):
            raise MetadataError(f"{where}: competition_sources holds {slug!r}; expected a competition slug "
                                "such as \"avito-demand-prediction\"")


def validate_dataset(meta: dict[str, Any], where: str | Path) -> None:
    """Raise :class:`MetadataError` naming the first field ``kaggle datasets create`` would reject."""
    where = str(where)
    if "id" not in meta:
        raise MetadataError(f"{where}: id is missing (\"user/slug\")")
    _check_ref(meta["id"], "id", where, min_slug=6, max_slug=50)
    if meta["id"].endswith("/INSERT_SLUG_HERE"):
        raise MetadataError(f"{where}: id still holds the template's INSERT_SLUG_HERE")
    title = meta.get("title")
    if not isinstance(title, str) or not 6 <= len(title) <= 50:
        raise MetadataError(f"{where}: title must have 6 to 50 characters, got {title!r}")
    licenses = meta.get("licenses")
    if not isinstance(licenses, list) or not licenses or not all(
            isinstance(x, dict) and isinstance(x.get("name"), str) and x["name"] for x in licenses):
        raise MetadataError(f"{where}: licenses must be a non-empty list like [{{\"name\": \"CC0-1.0\"}}]")


def check_kernel_folder(folder: Path) -> dict[str, Any]:
    meta = read_metadata(folder / KERNEL_FILE)
    validate_kernel(meta, folder / KERNEL_FILE, folder)
    return meta


def check_dataset_folder(folder: Path) -> dict[str, Any]:
    meta = read_metadata(folder / DATASET_FILE)
    validate_dataset(meta, folder / DATASET_FILE)
    return meta
