"""ONNX export of the product embedding: the image encoder and the fusion net, for serving with onnxruntime.

``mmstack export-onnx CONFIG`` writes into ``OUT`` (default ``<workdir>/models/products/onnx``):

* ``image_encoder.onnx``: EfficientNet-Lite0 to its pooled features. Input ``pixels`` (N, 3, S, S) float32 in
  [-1, 1] (:meth:`EfficientNetLite0Encoder.preprocess`: square resize, /127.5 - 1), output ``features`` (N, 1280).
* ``fusion.onnx``: the two towers and their fusion. Inputs ``image`` (N, 1280: the mean of a product's image
  features), ``image_present`` (N, 1), ``text`` (N, T: :meth:`ProductEmbedder.text_inputs`), ``text_present``
  (N, 1); output ``embedding`` (N, d), unit rows.
* ``embedder.joblib``: the fitted :class:`~mmstack.products.fusion.ProductEmbedder` (its text featurisers make
  the ``text`` input), and ``manifest.json`` (sizes, names, the torch-vs-onnxruntime check).

:func:`embed_with_onnx` is the serving path: PIL + numpy preprocessing, onnxruntime, the embedder's text inputs.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

import joblib
import numpy as np
import pandas as pd
import torch
from torch import nn

from ..store import atomic_path, write_json

log = logging.getLogger(__name__)

OPSET = 17


class PooledImageEncoder(nn.Module):
    """EfficientNet-Lite0 from pixels to its 1280-d pooled features (the image_embed / product_images vector)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.extract_features(pixels).mean(dim=(2, 3))


def _export(module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str]) -> None:
    axes = {name: {0: "batch"} for name in inputs + outputs}
    with atomic_path(path) as tmp:
        torch.onnx.export(module.eval(), args, str(tmp), input_names=inputs, output_names=outputs,
                          dynamic_axes=axes, opset_version=OPSET, dynamo=False)


def export_models(embedder, image_size: int, out: Path) -> dict:
    """Write the image encoder, the fusion net, the embedder and a manifest into ``out``; check each ONNX file
    against torch on random inputs (max abs difference) and return the manifest."""
    from ..features.image_embed import EfficientNetLite0Encoder
    from .fusion import IMAGE_DIM

    out.mkdir(parents=True, exist_ok=True)
    encoder = PooledImageEncoder(EfficientNetLite0Encoder(image_size, device="cpu").model)
    pixels = torch.rand(2, 3, image_size, image_size) * 2 - 1
    _export(encoder, (pixels,), out / "image_encoder.onnx", ["pixels"], ["features"])
    net = embedder.net()
    n = 4
    fusion_args = (torch.rand(n, IMAGE_DIM) * 2, torch.ones(n, 1), torch.randn(n, embedder.text_dim),
                   torch.ones(n, 1))
    _export(net, fusion_args, out / "fusion.onnx", ["image", "image_present", "text", "text_present"],
            ["embedding"])
    with atomic_path(out / "embedder.joblib") as tmp:
        joblib.dump(embedder, tmp)
    sessions = onnx_sessions(out)
    with torch.inference_mode():
        image_diff = float(np.abs(encoder(pixels).numpy() - sessions[0].run(None, {"pixels": pixels.numpy()})[0]).max())
        feeds = dict(zip(["image", "image_present", "text", "text_present"], (a.numpy() for a in fusion_args)))
        fusion_diff = float(np.abs(net(*fusion_args).numpy() - sessions[1].run(None, feeds)[0]).max())
    manifest = {"image_size": image_size, "image_dim": IMAGE_DIM, "text_dim": embedder.text_dim,
                "dim": embedder.params["dim"], "encoder": embedder.params["encoder"], "opset": OPSET,
                "max_abs_diff": {"image_encoder": image_diff, "fusion": fusion_diff},
                "files": ["image_encoder.onnx", "fusion.onnx", "embedder.joblib"]}
    write_json(out / "manifest.json", manifest)
    log.info("export-onnx: wrote %s (torch vs onnxruntime max abs diff: image %.2e, fusion %.2e)", out,
             image_diff, fusion_diff)
    return manifest


def onnx_sessions(folder: Path):
    """onnxruntime sessions of ``image_encoder.onnx`` and ``fusion.onnx`` (CPU, one thread)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return tuple(ort.InferenceSession(str(folder / name), options, providers=["CPUExecutionProvider"])
                 for name in ("image_encoder.onnx", "fusion.onnx"))


def embed_with_onnx(folder: Path | str, products: pd.DataFrame, images: Sequence[Sequence]) -> np.ndarray:
    """Embeddings of new products with onnxruntime: ``products`` has ``title`` (and optionally ``description``,
    ``attributes``); ``images[i]`` holds product i's PIL images (may be empty)."""
    from ..features.image_embed import EfficientNetLite0Encoder
    from .fusion import IMAGE_DIM

    folder = Path(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    embedder = joblib.load(folder / "embedder.joblib")
    image_session, fusion_session = onnx_sessions(folder)
    size = manifest["image_size"]
    preprocess = EfficientNetLite0Encoder.preprocess.__get__(type("P", (), {"image_size": size})())
    image = np.zeros((len(products), IMAGE_DIM), np.float32)
    image_present = np.zeros((len(products), 1), np.float32)
    for i, imgs in enumerate(images):
        if len(imgs):
            feats = image_session.run(None, {"pixels": preprocess(list(imgs))})[0]
            image[i], image_present[i] = feats.mean(axis=0), 1.0
    rows = products.reindex(columns=["title", "description", "attributes"])
    text, text_present = embedder.text_inputs(rows)
    return fusion_session.run(None, {"image": image, "image_present": image_present, "text": text,
                                     "text_present": text_present.reshape(-1, 1)})[0]


def export_from_config(config, input_dir: Path | None, workdir: Path | str, out: Path | None) -> tuple[Path, dict]:
    """Build (or reuse) the config's ``product_embed`` block on its input and export it (``export-onnx``)."""
    from ..errors import ConfigError
    from ..features.base import BlockCache
    from ..features.registry import make_block
    from ..pipeline import Timer, prepare, resolve_input
    from ..store import Store

    if config.task != "products":
        raise ConfigError(f"export-onnx exports the products task's embedding; {config.path} is task {config.task!r}")
    store = Store(workdir)
    from .supervised import final_embedder

    _, data, targets = prepare(config, resolve_input(config, input_dir), store, Timer())
    resolve = lambda name: make_block(name, config.block_params(name))  # noqa: E731
    cache = BlockCache(data, store, config.seed)
    output = cache.get(resolve("product_embed"), resolve)
    image_size = resolve("product_images").params["image_size"]
    folder = Path(out) if out is not None else store.dir("models") / "products" / "onnx"
    # the embedder the run wrote to embeddings.parquet (supervised on every labelled row when configured)
    embedder = final_embedder(config, targets, output, cache.outputs.get("product_images"))
    return folder, export_models(embedder, image_size, folder)
