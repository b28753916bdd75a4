"""Photo-text mismatch: the kit's zero-shot image-text score between a listing's text and each of its photos.

The score is built on the relevance task's label bridge (:mod:`mmstack.features.pair_match`): every ImageNet
class name is embedded as "a photo of {class}" with the multilingual USE sentence encoder (Russian listings work),
and the text's cosine with each class vector is weighted by the photo's class probabilities (EfficientNet-Lite0,
224 px): the text's expected similarity to what the photo shows (pair_match's ``expected_sim``). It is given in
units of the text's own spread over the 1000 class vectors, ``(sum_j p_j cos(text, class_j) - mean_j cos(text,
class_j)) / std_j cos(text, class_j)``: 0 is "no better than a class picked at random" (a photo the classifier
cannot read, with flat probabilities, scores 0), and texts of any wording sit on one scale. It needs no training
data; on Flickr8k it separated a photo's own caption from another photo's caption with ROC AUC 0.83, against 0.75
for the plain cosine of the text with the probability-weighted class vector (BENCHMARKS.md).

A listing is flagged when every readable photo scores below the threshold (``[images] mismatch_threshold``).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

TEMPLATE = "a photo of {}"
IMAGE_SIZE = 224


@dataclass(frozen=True)
class ListingMatch:
    """Scores of each photo against the listing's text, and whether the listing is flagged."""

    scores: tuple[float, ...]
    flagged: bool
    reason: str

    @property
    def best(self) -> float:
        return max(self.scores) if self.scores else float("nan")


class ImageTextScorer:
    """Zero-shot image-text scores (see the module docstring); models and class vectors load on first use."""

    def __init__(self, encoder: str = "use", num_threads: int = 1, batch_size: int = 16, text_encoder=None):
        self.encoder_name = encoder
        self.num_threads = num_threads
        self.batch_size = batch_size
        self._encoder = text_encoder  # an already loaded sentence encoder to share (else made on first use)
        self._labels: np.ndarray | None = None
        self._image_encoder = None

    def _text_encoder(self):
        if self._encoder is None:
            from ..features.text_embed import make_encoder

            self._encoder = make_encoder(self.encoder_name, num_threads=self.num_threads or None)
        return self._encoder

    def labels(self) -> np.ndarray:
        """Unit sentence vectors (1000, d) of the ImageNet class names in :data:`TEMPLATE`."""
        if self._labels is None:
            from ..features.pair_match import label_vectors

            self._labels = label_vectors(self._text_encoder(), TEMPLATE)
        return self._labels

    def text_vectors(self, texts: Sequence[str]) -> np.ndarray:
        from ..features.text_embed import embed_texts
        from ..projection import unit_rows

        return unit_rows(embed_texts(self._text_encoder(), list(texts)).astype(np.float64))

    def image_probs(self, images: Sequence[Image.Image]) -> np.ndarray:
        """ImageNet class probabilities (n, 1000) of decoded RGB images."""
        import torch

        if self._image_encoder is None:
            from ..features.image_embed import EfficientNetLite0Encoder

            self._image_encoder = EfficientNetLite0Encoder(IMAGE_SIZE, num_threads=self.num_threads or None)
        logits = self._image_encoder.encode(list(images), self.batch_size)[1]
        return torch.softmax(torch.from_numpy(logits).double(), dim=1).numpy()

    def score_vectors(self, text_vectors: np.ndarray, probs: np.ndarray) -> np.ndarray:
        """Scores (n_texts, n_images) from unit text vectors and class probabilities."""
        sims = text_vectors @ self.labels().T  # (n_texts, 1000)
        spread = np.maximum(sims.std(axis=1, keepdims=True), 1e-9)
        return (sims @ np.asarray(probs, np.float64).T - sims.mean(axis=1, keepdims=True)) / spread

    def scores(self, texts: Sequence[str], images: Sequence[Image.Image]) -> np.ndarray:
        """Scores (n_texts, n_images) of every text against every image."""
        if not len(texts) or not len(images):
            return np.zeros((len(texts), len(images)))
        return self.score_vectors(self.text_vectors(texts), self.image_probs(images))


def listing_mismatch(text: str, images: Sequence[Image.Image], threshold: float,
                     scorer: ImageTextScorer | None = None) -> ListingMatch:
    """Score each photo of a listing against its text; flagged when all photos score below ``threshold``.

    A listing with no readable photo is not flagged here (there is nothing to compare; the batch screen reports
    unreadable files), nor is an empty text."""
    if not text.strip() or not images:
        return ListingMatch((), False, "no text" if not text.strip() else "no readable photo")
    scorer = scorer or ImageTextScorer()
    scores = tuple(float(s) for s in scorer.scores([text], images)[0])
    best = max(scores)
    if best < threshold:
        return ListingMatch(scores, True, f"every photo scores below {threshold:g} against the text "
                                          f"(best {best:.2f})")
    return ListingMatch(scores, False, f"best photo scores {best:.2f} >= {threshold:g}")
