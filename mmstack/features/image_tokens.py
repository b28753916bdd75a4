"""EfficientNet-Lite0 patch tokens: each listing's last conv feature map as a grid of small token vectors.

The map of a ``image_size`` square input is ``(1280, g, g)`` with g = ceil(image_size / 32): 4 x 4 = 16 patches at
the default 128 px (image_embed's size, so one pass could serve both blocks). Every patch's 1280 values are
projected to ``components`` dims by a PCA fitted on the patches of the first ``pca_images`` listings with an image
(row order: deterministic), whitened (unit variance per component on that sample) and stored as float16.
No target is read.

``extras`` (saved with the block)::

    {"tokens":  (N, P, D) float16   # P = g * g patches in row-major grid order, D = components; 0 where absent
     "present": (N,) bool}          # False: no image, or missing/unreadable file -> the net must mask the row

N = train rows then test rows, in row-id order. **Bytes per listing: 2 * P * D + 1 = 1025** at the defaults
(16 patches x 32 dims x float16 + the flag): about 2.1 GB for the full Kaggle Avito train + test (2.01M rows).
The dense output is one column, ``imgtok_present``.

Speed: the CNN pass dominates. On 2 shared CPU cores a 128 px pass took 3-4 ms per image with one torch thread and
batches of 16 (two threads were slower whenever the other core was busy), so the embedded default's 12.3k images
take well under a minute; on CUDA it is a few seconds.
"""
from __future__ import annotations

import logging
from typing import Iterator

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..data.images import counted_problems
from ..errors import ConfigError
from ..threads import torch_threads
from .base import BlockContext, BlockOutput
from ..projection import principal_axes
from .image_embed import EMBED_DIM, EfficientNetLite0Encoder, PixelBlock, decode_for_model
from .image_stats import image_refs
from .registry import register

log = logging.getLogger(__name__)


def listing_feature_maps(ctx: BlockContext, encoder: EfficientNetLite0Encoder, batch_size: int,
                         desc: str = "image maps") -> Iterator[tuple[list[int], "torch.Tensor"]]:
    """Last conv maps of the listings' images, ``batch_size`` readable images at a time, in row order.

    Yields (row ids, maps (B, 1280, g, g) on the encoder's device). Missing and unreadable images are skipped and
    counted in their split's ``ImageSource.problems``. Call it inside :func:`torch_threads` and ``inference_mode``.
    """
    import torch

    _, refs = image_refs(ctx)
    images = ctx.data.images
    wanted = [i for i, (_, image_id) in enumerate(refs) if image_id]
    size = encoder.image_size
    with tqdm(total=len(wanted), unit="img", leave=False, desc=f"{desc} ({encoder.device.type}, {size}px)") as bar:
        for start in range(0, len(wanted), batch_size):
            batch = wanted[start:start + batch_size]
            got, imgs = [], []
            for i in batch:
                split, image_id = refs[i]
                source = images.get(split)
                data = source.read_bytes(image_id) if source is not None else None
                img, reason = decode_for_model(data, size, source.limits) if data is not None else (None, None)
                if reason is not None:
                    source.problems[reason] += 1
                if img is not None:
                    got.append(i)
                    imgs.append(img)
            if imgs:
                x = torch.from_numpy(encoder.preprocess(imgs)).to(encoder.device)
                yield got, encoder.model.extract_features(x)
            bar.update(len(batch))


def patch_pca(patches: "torch.Tensor", k: int) -> tuple["torch.Tensor", "torch.Tensor"]:
    """Mean (1280,) and whitening projection (1280, k) of patch vectors (M, 1280), float64, sign-fixed.

    Components beyond the sample's rank (or with ~zero variance) project to 0, never to amplified noise.
    """
    import torch

    x = patches.double()
    mean = x.mean(dim=0)
    centred = x - mean
    values, comps = principal_axes((centred.T @ centred / max(1, len(x))).numpy(), k, rel_tol=1e-8)
    scale = np.where(comps.any(axis=0), 1.0 / np.sqrt(np.maximum(values, 1e-30)), 0.0)  # whitening
    projection = torch.zeros(x.shape[1], k, dtype=torch.float64)
    projection[:, :comps.shape[1]] = torch.from_numpy(comps * scale)
    return mean, projection


@register
class ImageTokensBlock(PixelBlock):
    """Per listing a grid of PCA-projected EfficientNet-Lite0 patch tokens (float16) and a presence flag."""

    name = "image_tokens"
    rows_per_second = 280  # measured here at the default params (README), for --time-limit
    version = "1"
    default_params = {"image_size": 128, "components": 32, "pca_images": 512, "batch_size": 16, "num_threads": 1}

    def __init__(self, params=None):
        super().__init__(params)
        p = self.params
        self.require_ints({"image_size": 32, "components": 1, "pca_images": 1, "batch_size": 1, "num_threads": 0})
        if p["components"] > EMBED_DIM:
            raise ConfigError(f"features.image_tokens.components must be <= {EMBED_DIM}")

    @property
    def grid(self) -> int:
        return -(-self.params["image_size"] // 32)

    def build(self, ctx: BlockContext) -> BlockOutput:
        import torch

        p = self.params
        n = ctx.data.n_train + ctx.data.n_test
        k, n_patches = p["components"], self.grid ** 2
        tokens = np.zeros((n, n_patches, k), dtype=np.float16)
        present = np.zeros(n, dtype=bool)
        encoder = EfficientNetLite0Encoder(p["image_size"])
        pending_rows: list[int] = []
        pending: list[torch.Tensor] = []  # maps seen before the projection is fitted (pca_images of them)
        mean = projection = None

        def store(rows: list[int], maps: torch.Tensor) -> None:
            flat = maps.flatten(2).transpose(1, 2).double()  # (B, P, 1280), patches in row-major grid order
            tokens[rows] = ((flat - mean) @ projection).float().numpy().astype(np.float16)
            present[rows] = True

        with counted_problems(ctx.data.images, "image_tokens"), torch_threads(p["num_threads"]), \
                torch.inference_mode():
            for rows, maps in listing_feature_maps(ctx, encoder, p["batch_size"], desc="image_tokens"):
                maps = maps.float().cpu()
                if projection is None:
                    pending_rows += rows
                    pending.append(maps)
                    if len(pending_rows) < p["pca_images"]:
                        continue
                    mean, projection = self._fit(pending)
                    store(pending_rows, torch.cat(pending))
                    pending_rows, pending = [], []
                else:
                    store(rows, maps)
            if pending:  # fewer images than pca_images in all
                mean, projection = self._fit(pending)
                store(pending_rows, torch.cat(pending))
        log.info("image_tokens: %d of %d rows with %d patch tokens of %d dims (%s, %d px)", present.sum(), n,
                 n_patches, k, encoder.device.type, p["image_size"])
        dense = pd.DataFrame({"imgtok_present": present.astype(np.float32)})
        return BlockOutput(dense=dense, extras={"tokens": tokens, "present": present})

    def _fit(self, maps: list["torch.Tensor"]):
        import torch

        patches = torch.cat([m.flatten(2).transpose(1, 2).reshape(-1, m.shape[1]) for m in maps])
        return patch_pca(patches, self.params["components"])
