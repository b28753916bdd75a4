"""EfficientNet-Lite0 features of a product's images, averaged over its images, plus each image's perceptual hash.

Reads the ``images`` column (space-separated image ids of ``data.images["train"]``, as the products loader
writes it). Every read and decode is guarded (:mod:`mmstack.data.images`); an unreadable image is counted and
left out of its product's mean. Model features: ``pimg_present``, ``pimg_count`` (images decoded) and a PCA
projection of the mean pooled features (``pimg_pca_XX``). Extras: ``pooled`` (rows x 1280 float32 means, zeros
where no image was read), ``present`` and ``phash`` (per row, an int64 array of its images' 64-bit hashes), which
the product embedding and the duplicates finder read.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..data.images import DEFAULT_LIMITS, counted_problems
from ..projection import pca_projection
from ..threads import torch_threads
from .base import BlockContext, BlockOutput
from .image_embed import EMBED_DIM, EfficientNetLite0Encoder, PixelBlock, decode_batch
from .image_stats import phash
from .registry import register

log = logging.getLogger(__name__)


def image_ids(value: object) -> list[str]:
    return value.split() if isinstance(value, str) else []


@register
class ProductImagesBlock(PixelBlock):
    """Mean EfficientNet-Lite0 pooled features over each product's images (PCA for models), and pHashes."""

    name = "product_images"
    version = "1"
    # 224 px is the network's native size and what real catalogue photos need; the embedded default's drawn
    # 96 px pictures are read at 128 (configs/products.toml)
    default_params = {"image_size": 224, "batch_size": 32, "pca_components": 32, "num_threads": 1}

    def __init__(self, params=None):
        super().__init__(params)
        self.require_ints({"image_size": 32, "batch_size": 1, "pca_components": 0, "num_threads": 0})

    def build(self, ctx: BlockContext) -> BlockOutput:
        p = self.params
        rows = ctx.data.all_rows()
        source = ctx.data.images.get("train")
        refs = [(r, image_id) for r, ids in enumerate(rows["images"]) for image_id in image_ids(ids)]
        n = len(rows)
        sums = np.zeros((n, EMBED_DIM), np.float64)
        counts = np.zeros(n, np.int32)
        hashes: list[list[int]] = [[] for _ in range(n)]
        limits = source.limits if source is not None else DEFAULT_LIMITS
        encoder = EfficientNetLite0Encoder(p["image_size"]) if refs else None
        with counted_problems(ctx.data.images, "product_images"), torch_threads(p["num_threads"]), \
                tqdm(total=len(refs), desc=f"product_images ({p['image_size']}px)", unit="img", leave=False) as bar:
            for start in range(0, len(refs), p["batch_size"]):
                batch = refs[start:start + p["batch_size"]]
                payloads = [(j, source.read_bytes(image_id) if source is not None else None)
                            for j, (_, image_id) in enumerate(batch)]
                got, imgs, rejected = decode_batch(payloads, p["image_size"], limits)
                for _, reason in rejected:
                    source.problems[reason] += 1
                if imgs:
                    feats, _ = encoder.encode(imgs, batch_size=len(imgs))
                    for j, img, f in zip(got, imgs, feats):
                        row = batch[j][0]
                        sums[row] += f
                        counts[row] += 1
                        hashes[row].append(phash(img))
                bar.update(len(batch))
        present = counts > 0
        pooled = np.zeros((n, EMBED_DIM), np.float32)
        pooled[present] = (sums[present] / counts[present, None]).astype(np.float32)
        k = min(p["pca_components"], int(present.sum()))
        dense = pd.DataFrame({"pimg_present": present.astype(np.float32), "pimg_count": counts.astype(np.float32)})
        if p["pca_components"]:
            proj = np.full((n, p["pca_components"]), np.nan, np.float32)
            if k:
                proj[np.ix_(np.flatnonzero(present), np.arange(k))] = pca_projection(pooled, np.flatnonzero(present), k)
            for j in range(p["pca_components"]):
                dense[f"pimg_pca_{j:02d}"] = proj[:, j]
        log.info("product_images: %d of %d products with a readable image (%d images read of %d)", present.sum(), n,
                 counts.sum(), len(refs))
        phash_column = np.empty(n, dtype=object)
        for r in range(n):
            phash_column[r] = np.asarray(hashes[r], np.int64)
        return BlockOutput(dense=dense, extras={"pooled": pooled, "present": present, "phash": phash_column})
