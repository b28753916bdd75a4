"""Screen a folder of photos: one CSV row per image file with its NSFW score, its minors score and a verdict.

``image,nsfw,minor,verdict,reason``, sorted by file name. ``verdict`` is ``ok``, ``flagged`` (NSFW score at or
above its threshold, or the minors filter withholds the photo) or ``unreadable``; ``reason`` says why. Image
files are the folder's own entries (not sub-folders) whose names end in an image suffix. A file that is not a
regular file (a FIFO, a device, a symlink out of the folder), over the byte or pixel limits, or not decodable is
never opened blocking nor decoded unbounded: it gets the verdict ``unreadable`` with the reason and empty scores.
"""
from __future__ import annotations

import csv
import logging
import os
import stat
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from ..data.images import NOT_REGULAR, OUTSIDE, UNREADABLE, decode_image, read_regular_file
from ..errors import InputError
from ..store import atomic_path
from .settings import ImageModerationSettings

log = logging.getLogger(__name__)

COLUMNS = ("image", "nsfw", "minor", "verdict", "reason")
SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp")
OK, FLAGGED, UNREADABLE_VERDICT = "ok", "flagged", "unreadable"


@dataclass
class Row:
    image: str
    nsfw: float | None = None
    minor: float | None = None
    verdict: str = UNREADABLE_VERDICT
    reason: str = ""


def image_files(folder: Path) -> list[tuple[str, str | None]]:
    """``(file name, None)`` for each regular image file directly in ``folder``, ``(file name, why not read)``
    for the others that carry an image suffix; sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "image folder not found")
    root = os.path.realpath(folder)
    out = []
    for entry in os.scandir(folder):
        if not entry.name.lower().endswith(SUFFIXES):
            continue
        real = os.path.realpath(entry.path)
        if os.path.commonpath([root, real]) != root:
            out.append((entry.name, OUTSIDE))
            continue
        try:
            mode = os.stat(real).st_mode
        except OSError:
            out.append((entry.name, "missing"))
            continue
        if stat.S_ISDIR(mode):
            continue  # a folder named like an image is not an image file
        out.append((entry.name, None if stat.S_ISREG(mode) else NOT_REGULAR))
    return sorted(out)


class ImageScreen:
    """The models behind a screen, loaded once: NSFW scorer and minors filter (see :mod:`.nsfw`, :mod:`.minors`)."""

    def __init__(self, settings: ImageModerationSettings, nsfw=None, minors=None):
        from ..legal import MinorFilter
        from .minors import ChildFilter
        from .nsfw import NsfwScorer

        self.settings = settings
        self.nsfw = nsfw or NsfwScorer(settings.num_threads, settings.batch_size)
        faces = MinorFilter(settings.face_age_threshold, upscale_to=settings.face_upscale_to, progress=False) \
            if settings.use_faces else None
        self.minors = minors or ChildFilter(threshold=settings.minor_threshold, face_filter=faces,
                                            num_threads=settings.num_threads, batch_size=settings.batch_size,
                                            limits=settings.limits, progress=False)

    def screen(self, names: list[str], images: list[Image.Image]) -> list[Row]:
        """Rows for decoded photos (upright RGB)."""
        nsfw = self.nsfw.score(images) if images else []
        minors = self.minors.check_images(images)
        rows = []
        for name, score, decision in zip(names, nsfw, minors):
            why = []
            if score >= self.settings.nsfw_threshold:
                why.append(f"nsfw {score:.2f} >= {self.settings.nsfw_threshold:.2f}")
            if decision.withheld:
                why.append(decision.reason)
            rows.append(Row(name, float(score), decision.score, FLAGGED if why else OK,
                            "; ".join(why) if why else f"nsfw {score:.2f}; {decision.reason}"))
        return rows


def screen_images(folder: Path, out_csv: Path, settings: ImageModerationSettings | None = None,
                  screen: ImageScreen | None = None, progress: bool = True) -> dict[str, float]:
    """Screen every image file of ``folder`` into ``out_csv`` (written atomically); returns counts per verdict
    plus ``images``, ``seconds`` and ``images_per_second`` (over the readable photos)."""
    settings = settings or ImageModerationSettings()
    files = image_files(folder)
    if not files:
        raise InputError(folder, f"no image files ({', '.join(SUFFIXES)}) in the folder")
    screen = screen or ImageScreen(settings)
    limits = settings.limits
    rows: dict[str, Row] = {}
    pending: list[tuple[str, Image.Image]] = []
    start = time.perf_counter()
    readable = 0

    def flush() -> None:
        nonlocal readable
        if pending:
            for row in screen.screen([n for n, _ in pending], [im for _, im in pending]):
                rows[row.image] = row
            readable += len(pending)
            pending.clear()

    with tqdm(total=len(files), desc="moderate images", unit="img", disable=not progress) as bar:
        for name, skipped in files:
            if skipped is not None:
                rows[name] = Row(name, reason=skipped)
            else:
                data = read_regular_file(os.path.join(folder, name), limits.max_bytes)
                if isinstance(data, str):  # swapped for a FIFO or grown since listed, or over the byte limit
                    rows[name] = Row(name, reason=data)
                else:
                    decoded, why = decode_image(data, limits, exif=True)
                    if decoded is None:
                        rows[name] = Row(name, reason=why or UNREADABLE)
                    else:
                        pending.append((name, decoded.image))
                        if len(pending) >= settings.batch_size:
                            flush()
            bar.update(1)
        flush()
    seconds = time.perf_counter() - start
    write_rows(out_csv, [rows[name] for name, _ in files])
    counts: dict[str, float] = dict(Counter(row.verdict for row in rows.values()))
    counts.update(images=len(files), seconds=round(seconds, 2),
                  images_per_second=round(readable / seconds, 2) if seconds > 0 else 0.0)
    log.info("moderate: %d image files, %s in %.1f s", len(files),
             ", ".join(f"{counts.get(v, 0)} {v}" for v in (OK, FLAGGED, UNREADABLE_VERDICT)), seconds)
    return counts


def write_rows(path: Path, rows: list[Row]) -> None:
    """The CSV of :data:`COLUMNS`; scores with 4 decimals, empty where the image was not read."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(COLUMNS)
        for r in rows:
            writer.writerow([r.image, "" if r.nsfw is None else f"{r.nsfw:.4f}",
                             "" if r.minor is None else f"{r.minor:.4f}", r.verdict, r.reason])
