"""Cheap per-listing image statistics: size, exposure, colour, sharpness, dominant colours and a perceptual hash.

Every column is prefixed ``imgst_`` except ``phash``: a 64-bit DCT perceptual hash stored as int64 (0 = no
hash). The graph block links near-duplicate images by it. It is an identifier, not a quantity, so it is listed in
:data:`NON_FEATURE_COLUMNS` and in the output's ``non_features``: models never see it.

A listing without an image, or whose image is missing or unreadable, gets NaN features, ``imgst_has_image`` 0 and
``phash`` 0; missing and unreadable images (and images over the limits of ``ImageLimits``) are counted in the
split's ``ImageSource.problems``. Images larger than ``max_side`` are measured shrunk to it (JPEGs decoded at
reduced scale), so one huge photo costs neither memory nor minutes; width, height and file size are the original's.

Images are streamed: the main process reads the raw bytes of one chunk at a time and joblib workers decode and
measure it, so at most a few chunks of encoded bytes (never all decoded images) are in memory at once.
"""
from __future__ import annotations

import logging
from typing import Iterator

import numpy as np
import pandas as pd
import scipy.fft
import scipy.ndimage
from joblib import Parallel, delayed
from PIL import Image
from tqdm.auto import tqdm

from ..data.images import DEFAULT_LIMITS, ImageLimits, counted_problems, decode_image
from ..errors import ConfigError
from ..store import make_key
from .base import BlockContext, BlockOutput, FeatureBlock
from .registry import register

log = logging.getLogger(__name__)

# dense columns other blocks read but models must not (an identifier; nearness is Hamming, not numeric)
NON_FEATURE_COLUMNS = ("phash",)
N_DOMINANT = 3
# 4 levels per channel: a 64-colour palette is coarse enough that one object or background is one bin
PALETTE_LEVELS = 4
# dominant colours are counted on a small thumbnail: shares barely change and it is ~50x cheaper on big photos
PALETTE_THUMB = 64

STAT_COLUMNS = (
    ["imgst_width", "imgst_height", "imgst_aspect", "imgst_file_size", "imgst_brightness", "imgst_contrast",
     "imgst_saturation", "imgst_colourfulness", "imgst_laplacian_var", "imgst_mean_r", "imgst_mean_g",
     "imgst_mean_b"]
    + [f"imgst_dom{k}_{part}" for k in range(1, N_DOMINANT + 1) for part in ("r", "g", "b", "share")]
)


def phash(img: Image.Image) -> int:
    """64-bit DCT perceptual hash (as a signed int64): grey 32x32, 2-D DCT, top-left 8x8 > their median.

    Bits are row-major over the 8x8 low frequencies, the first one the most significant. Re-encoding or resizing
    an image flips only a few bits; unrelated images differ in about half of them. A perfectly flat image hashes
    to 0, which downstream code reads as "no hash" (a flat image has no structure to match anyway).
    """
    grey = np.asarray(img.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    # unnormalised DCT-II, as the ``imagehash`` package does, so hashes match its ``phash`` bit for bit
    low = scipy.fft.dctn(grey, type=2)[:8, :8]
    bits = (low > np.median(low)).ravel()
    value = int.from_bytes(np.packbits(bits).tobytes(), "big")
    return int(np.uint64(value).view(np.int64))


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two hashes as stored (int64)."""
    return int(np.bitwise_count(np.int64(a).view(np.uint64) ^ np.int64(b).view(np.uint64)))


def dominant_colours(rgb: np.ndarray, k: int = N_DOMINANT) -> np.ndarray:
    """The ``k`` most common colours of a palette-quantised image as ``(k, 4)`` rows of r, g, b, share.

    Each colour is the mean of the pixels in its palette bin (more exact than the bin's centre). Fewer than ``k``
    distinct bins leave NaN colours with share 0.
    """
    pixels = rgb.reshape(-1, 3)
    levels = (pixels.astype(np.int32) * PALETTE_LEVELS) >> 8
    bins = (levels[:, 0] * PALETTE_LEVELS + levels[:, 1]) * PALETTE_LEVELS + levels[:, 2]
    counts = np.bincount(bins, minlength=PALETTE_LEVELS ** 3)
    sums = np.stack([np.bincount(bins, weights=pixels[:, c], minlength=PALETTE_LEVELS ** 3) for c in range(3)], 1)
    out = np.full((k, 4), np.nan)
    out[:, 3] = 0.0
    # stable sort: ties go to the lower bin, so the result does not depend on anything but the pixels
    top = np.argsort(-counts, kind="stable")[:k]
    for i, b in enumerate(top):
        if counts[b]:
            out[i, :3] = sums[b] / counts[b]
            out[i, 3] = counts[b] / len(pixels)
    return out


def measure(img: Image.Image, file_size: int, size: tuple[int, int] | None = None) -> np.ndarray:
    """The :data:`STAT_COLUMNS` of one decoded RGB image, as float64; ``size``: the original width and height
    when ``img`` was decoded reduced."""
    # contiguous planes: reductions over strided interleaved channels are several times slower
    r, g, b = np.asarray(img, dtype=np.float32).transpose(2, 0, 1).copy()
    luma = 0.299 * r + 0.587 * g + 0.114 * b  # ITU-R BT.601, what PIL's "L" uses
    cmax, cmin = np.maximum(np.maximum(r, g), b), np.minimum(np.minimum(r, g), b)
    saturation = np.divide(cmax - cmin, cmax, out=np.zeros_like(cmax), where=cmax > 0)
    # Hasler & Suesstrunk (2003): opponent-colour spread and offset
    rg, yb = r - g, 0.5 * (r + g) - b
    colourfulness = np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())
    # variance of the Laplacian: low for blurred images (edges spread out), high for sharp ones
    laplacian_var = scipy.ndimage.laplace(luma.astype(np.float64), mode="reflect").var()
    w, h = img.size
    thumb = img if max(w, h) <= PALETTE_THUMB else img.resize(
        (max(1, round(w * PALETTE_THUMB / max(w, h))), max(1, round(h * PALETTE_THUMB / max(w, h)))),
        Image.Resampling.NEAREST)  # nearest keeps real pixel colours, no blended in-between shades
    width, height = size or (w, h)
    head = [width, height, width / height, file_size, luma.mean(), luma.std(), saturation.mean(), colourfulness,
            laplacian_var, r.mean(), g.mean(), b.mean()]
    return np.concatenate([np.asarray(head, dtype=np.float64), dominant_colours(np.asarray(thumb)).ravel()])


def stats_of(blobs: list[bytes | None], limits: ImageLimits = DEFAULT_LIMITS,
             max_side: int | None = None) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
    """Features, hashes and why not (None if read) for each encoded image (None = missing: NaN, no reason)."""
    feats = np.full((len(blobs), len(STAT_COLUMNS)), np.nan)
    hashes = np.zeros(len(blobs), dtype=np.int64)
    reasons: list[str | None] = [None] * len(blobs)
    for i, data in enumerate(blobs):
        if data is None:
            continue
        decoded, reasons[i] = decode_image(data, limits, draft=max_side, max_side=max_side)
        if decoded is None:
            continue
        feats[i] = measure(decoded.image, len(data), decoded.size)
        hashes[i] = phash(decoded.image)
    return feats, hashes, reasons


def image_refs(ctx: BlockContext) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """All rows, and for each a (split, image id) pair; rows without an image id get ("", "")."""
    rows = ctx.data.all_rows()
    refs = [("test" if t else "train", i) if isinstance(i, str) and i else ("", "")
            for i, t in zip(rows["image"], rows["is_test"])]
    return rows, refs


def images_key(ctx_images: dict) -> dict[str, str]:
    """Fingerprints of both splits' image sets, for the keys of blocks that read pixels."""
    return {split: (ctx_images[split].fingerprint() if split in ctx_images else "no-images")
            for split in ("train", "test")}


def read_chunks(images: dict, refs: list[tuple[str, str]], chunk_size: int) -> Iterator[list[bytes | None]]:
    """Raw bytes of the referenced images, ``chunk_size`` rows at a time (a missing image is None, counted)."""
    for start in range(0, len(refs), chunk_size):
        chunk = []
        for split, image_id in refs[start:start + chunk_size]:
            source = images.get(split) if image_id else None
            chunk.append(source.read_bytes(image_id) if source is not None else None)
        yield chunk


@register
class ImageStatsBlock(FeatureBlock):
    """Size, exposure, colour, sharpness and dominant colours of each listing's image, plus its ``phash``."""

    name = "image_stats"
    rows_per_second = 700  # measured here at the default params (README), for --time-limit
    version = "1"
    # threads by default: no worker start-up or pickling, and PIL decoding and numpy on big photos release the
    # GIL; on the 160x120 synthetic images 2 threads, 2 processes and 1 thread all take 9-11 s per 12.3k images
    # max_side: images are measured at most this large (width, height and file size stay the original's)
    # dominant_colours: whether models see the 12 dominant-colour columns (they are always computed, for other
    # blocks). Off by default: on the embedded default they mostly restate the category (its background colour),
    # and LightGBM's CV was 0.0006 RMSE better without them (BENCHMARKS.md, block ablation), which had made
    # the whole block look harmful in the ablation.
    default_params = {"n_jobs": 2, "chunk_size": 256, "backend": "threading", "max_side": 1024,
                      "dominant_colours": False}

    def __init__(self, params=None):
        super().__init__(params)
        p = self.params
        self.require_ints({"n_jobs": 1, "chunk_size": 1, "max_side": 16})
        if p["backend"] not in ("loky", "threading"):
            raise ConfigError(f"features.image_stats.backend must be 'loky' or 'threading', got {p['backend']!r}")

    def key(self, data, target, input_keys: dict[str, str]) -> str:
        # the data fingerprint covers the CSVs only; the pixels decide these features too
        return make_key(super().key(data, target, input_keys), images_key(data.images))

    def build(self, ctx: BlockContext) -> BlockOutput:
        rows, refs = image_refs(ctx)
        n, size = len(refs), self.params["chunk_size"]
        feats = np.full((n, len(STAT_COLUMNS)), np.nan, dtype=np.float32)
        hashes = np.zeros(n, dtype=np.int64)
        readable = np.zeros(n, dtype=bool)
        images = ctx.data.images
        limits = next(iter(images.values())).limits if images else DEFAULT_LIMITS
        # generator in, generator out: joblib pulls chunks only as workers free up, so memory stays bounded
        parallel = Parallel(n_jobs=self.params["n_jobs"], backend=self.params["backend"], return_as="generator",
                            pre_dispatch="2*n_jobs")
        with counted_problems(images, "image_stats"), tqdm(total=n, desc="image_stats", unit="img",
                                                            leave=False) as bar:
            results = parallel(delayed(stats_of)(chunk, limits, self.params["max_side"])
                               for chunk in read_chunks(images, refs, size))
            for c, (f, h, reasons) in enumerate(results):
                lo = c * size
                feats[lo:lo + len(f)] = f
                hashes[lo:lo + len(f)] = h
                readable[lo:lo + len(f)] = ~np.isnan(f[:, 0])
                for j, reason in enumerate(reasons):  # counted here: workers' copies of the sources are not ours
                    if reason is not None:
                        images[refs[lo + j][0]].problems[reason] += 1
                bar.update(len(f))
        dense = pd.DataFrame(feats, columns=list(STAT_COLUMNS))
        dense.insert(0, "imgst_has_image", readable.astype(np.float32))
        dense["phash"] = hashes
        referenced = sum(1 for _, i in refs if i)
        log.info("image_stats: %d of %d rows have a readable image (%d referenced)", readable.sum(), n, referenced)
        hidden = [] if self.params["dominant_colours"] else [c for c in STAT_COLUMNS if c.startswith("imgst_dom")]
        return BlockOutput(dense=dense, non_features=list(NON_FEATURE_COLUMNS) + hidden)
