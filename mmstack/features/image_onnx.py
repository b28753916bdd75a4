"""EfficientNet-Lite0 on ONNX Runtime: the image blocks' faster CPU engine (``features.image_embed.engine``).

The torch model (weights from the package, nothing downloads) is exported in memory once per process and image
size, and checked against torch on a random batch (at most :data:`TOLERANCE` apart, else the export is refused).
Throughput on CPU comes from several single-threaded workers, each decoding and running its own batch, rather
than one multi-threaded network: decoding overlaps the network, and ONNX Runtime's one-thread kernels do not
spin-wait on each other (BENCHMARKS.md "Image throughput at 224 px"). Imported only where that engine is used.
"""
from __future__ import annotations

import importlib.metadata
import io
import logging
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Sequence, TypeVar

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

TOLERANCE = 1e-4  # max abs difference of pooled features and logits to the torch path
OPSET = 17
T = TypeVar("T")
R = TypeVar("R")


def engine_identity() -> dict[str, str]:
    """What the ONNX engine adds to the vectors' identity (its version), for store keys."""
    return {"engine": "onnx", "onnxruntime": importlib.metadata.version("onnxruntime")}


class OnnxImageEncoder:
    """Pooled 1280-d features and 1000 ImageNet logits of EfficientNet-Lite0 on ONNX Runtime, ``workers`` batches
    at a time (one ONNX Runtime thread each). Same preprocessing as the torch encoder it is exported from."""

    def __init__(self, torch_encoder, workers: int = 1):
        import onnxruntime as ort

        self.torch_encoder = torch_encoder
        self.image_size = torch_encoder.image_size
        self.workers = max(1, int(workers))
        heads = Heads(torch_encoder.model).eval()
        probe = torch.rand(2, 3, self.image_size, self.image_size) * 2 - 1
        buffer = io.BytesIO()
        with warnings.catch_warnings():  # the tracer's notes on the model's own padding code, not ours to fix
            warnings.simplefilter("ignore")
            torch.onnx.export(heads, (probe,), buffer, input_names=["pixels"], output_names=["pooled", "logits"],
                              dynamic_axes={"pixels": {0: "batch"}, "pooled": {0: "batch"}, "logits": {0: "batch"}},
                              opset_version=OPSET, dynamo=False)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
        with torch.inference_mode():
            expected = [t.numpy() for t in heads(probe)]
        got = self.run(probe.numpy())
        diff = max(float(np.abs(a - b).max()) for a, b in zip(expected, got))
        if diff > TOLERANCE:
            raise RuntimeError(f"ONNX export of the image encoder differs from torch by {diff:.2e} (> {TOLERANCE})")
        self.max_difference = diff

    def run(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pooled features and logits of preprocessed pixels ``(N, 3, S, S)``; thread-safe."""
        pooled, logits = self.session.run(None, {"pixels": np.ascontiguousarray(pixels, dtype=np.float32)})
        return pooled, logits

    def encode(self, images: Sequence, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """Like the torch encoder's ``encode``: ``(N, 1280)`` features and ``(N, 1000)`` logits, float32."""
        batches = [images[s:s + batch_size] for s in range(0, len(images), batch_size)]
        parts = in_workers(lambda b: self.run(self.torch_encoder.preprocess(b)), batches, self.workers)
        if not parts:
            return np.zeros((0, 1280), np.float32), np.zeros((0, 1000), np.float32)
        return np.concatenate([p for p, _ in parts]), np.concatenate([lg for _, lg in parts])


def in_workers(work: Callable[[T], R], items: Iterable[T], workers: int) -> list[R]:
    """``work`` on every item, ``workers`` at a time in threads (the GIL is released while decoding and inside
    ONNX Runtime), results in item order."""
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        return [work(item) for item in items]
    with ThreadPoolExecutor(workers, thread_name_prefix="mmstack-image") as pool:
        return list(pool.map(work, items))


class Heads(nn.Module):
    """The pooled features and the ImageNet logits (dropout is the identity in eval mode)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor):
        pooled = self.model.extract_features(pixels).mean(dim=(2, 3))
        return pooled, self.model._fc(pooled)
