"""The image-text score of a listing's photos, and the best photo.

Two parts, both reading the features of :mod:`mmstack.describe.encode`:

- the zero-shot image-text score of the image moderation (:mod:`mmstack.moderation_images.mismatch`, built on
  the relevance blocks' label bridge): the text's expected similarity to what the photo shows, in units of the
  text's spread over the ImageNet class vectors (0 = no better than a random class). Needs no training; reads
  real photos (the CLIPScore role on Flickr8k);
- a category matcher trained on the kit's listings (:class:`CategoryMatcher`): the listing category read from the
  photo (logistic regression on PCA-reduced EfficientNet features) and from the text (logistic regression on the
  USE vector); their agreement, the Bhattacharyya coefficient of the two distributions (0..1), says whether the
  photo shows what the text offers. It drives the best photo and the mismatch verdicts when it is present.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .encode import Encoded, ListingEncoder

log = logging.getLogger(__name__)



def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass
class CategoryMatcher:
    """Listing category from a photo and from a text, and their agreement; arrays only (no pickle)."""

    classes: np.ndarray  # (C,) category names
    img_centre: np.ndarray  # (1280,)
    img_axes: np.ndarray  # (1280, k) PCA axes
    col_mean: np.ndarray  # (8,) colour statistics' mean and scale (they join the k PCA components)
    col_scale: np.ndarray
    img_coef: np.ndarray  # (C, k + 8)
    img_intercept: np.ndarray  # (C,)
    txt_coef: np.ndarray  # (C, 512)
    txt_intercept: np.ndarray  # (C,)
    threshold: float  # agreement under this = the photo does not show what the text offers

    @classmethod
    def fit(cls, pooled: np.ndarray, colours: np.ndarray, img_labels: np.ndarray, text_vecs: np.ndarray,
            txt_labels: np.ndarray, components: int = 64, seed: int = 0) -> "CategoryMatcher":
        """Shrinkage LDA (scikit-learn; closed form, fast) on PCA-reduced photo features with the photo's colour
        statistics, and on text vectors."""
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

        from .captioners import fit_pca

        classes = np.array(sorted(set(img_labels) | set(txt_labels)))
        centre, axes = fit_pca(pooled, components, seed)
        code = {c: i for i, c in enumerate(classes)}

        def fit_lda(X, labels):
            y = np.array([code[c] for c in labels])
            lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(X, y)
            coef = np.zeros((len(classes), X.shape[1]))
            intercept = np.full(len(classes), -30.0)  # a class never seen here gets no mass
            if len(lda.classes_) == 2:  # binary: one decision row, for the second class
                coef[lda.classes_[1]], intercept[lda.classes_[1]] = lda.coef_[0], lda.intercept_[0]
                intercept[lda.classes_[0]] = 0.0
            else:
                coef[lda.classes_], intercept[lda.classes_] = lda.coef_, lda.intercept_
            return coef, intercept

        col_mean, col_scale = colours.mean(axis=0), np.maximum(colours.std(axis=0), 1e-6)
        X = np.hstack([(pooled - centre) @ axes, (colours - col_mean) / col_scale])
        img_coef, img_intercept = fit_lda(X, img_labels)
        txt_coef, txt_intercept = fit_lda(text_vecs, txt_labels)
        return cls(classes, centre, axes, col_mean, col_scale, img_coef, img_intercept, txt_coef, txt_intercept,
                   threshold=0.2)

    def image_probs(self, pooled: np.ndarray, colours: np.ndarray) -> np.ndarray:
        X = np.hstack([(pooled - self.img_centre) @ self.img_axes, (colours - self.col_mean) / self.col_scale])
        return _softmax(X @ self.img_coef.T + self.img_intercept)

    def text_probs(self, text_vecs: np.ndarray) -> np.ndarray:
        return _softmax(np.atleast_2d(text_vecs) @ self.txt_coef.T + self.txt_intercept)

    def agreement(self, text_vec: np.ndarray, pooled: np.ndarray, colours: np.ndarray) -> np.ndarray:
        """Per photo, the Bhattacharyya coefficient of the photo's and the text's category distributions."""
        if not len(pooled):
            return np.zeros(0)
        return np.sqrt(self.image_probs(pooled, colours) * self.text_probs(text_vec)).sum(axis=1)

    def to_arrays(self, prefix: str = "matcher_") -> dict[str, np.ndarray]:
        return {f"{prefix}{k}": np.asarray(getattr(self, k)) for k in self.__dataclass_fields__}

    @classmethod
    def from_arrays(cls, arrays, prefix: str = "matcher_") -> "CategoryMatcher":
        values = {k: arrays[f"{prefix}{k}"] for k in cls.__dataclass_fields__}
        values["threshold"] = float(values["threshold"])
        values = {k: (v.astype(np.float64) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v)
                  for k, v in values.items()}
        return cls(**values)


class ImageTextScorer:
    """Scores photos against a text: the zero-shot bridge always, the category agreement when a matcher is given.
    The bridge is :class:`mmstack.moderation_images.mismatch.ImageTextScorer` sharing this encoder's USE model."""

    def __init__(self, encoder: ListingEncoder, matcher: CategoryMatcher | None = None):
        from ..moderation_images.mismatch import ImageTextScorer as ZeroShot

        self.encoder, self.matcher = encoder, matcher
        self.zero_shot = ZeroShot(text_encoder=encoder.text_encoder)

    def bridge(self, text_vec: np.ndarray, probs: np.ndarray) -> np.ndarray:
        """Per photo, the zero-shot image-text score of the text's vector against the photo's class
        probabilities (0 = chance; higher = the photo shows what the text says)."""
        if not len(probs) or not np.any(text_vec):
            return np.zeros(len(probs))
        return self.zero_shot.score_vectors(np.atleast_2d(text_vec).astype(np.float64), probs)[0]

    def warm_up(self) -> None:
        self.zero_shot.labels()

    def scores(self, enc: Encoded, text_vec: np.ndarray | None = None) -> dict[str, np.ndarray | None]:
        """``bridge``, ``agreement`` (None without a matcher) and ``score`` (agreement when there is one, else
        the bridge) per photo, against ``text_vec`` (default: the listing's own text)."""
        text_vec = enc.text_vec if text_vec is None else text_vec
        bridge = self.bridge(text_vec, enc.probs)
        agreement = None
        if self.matcher is not None and np.any(text_vec):
            agreement = self.matcher.agreement(text_vec, enc.pooled, enc.colours)
        return {"bridge": bridge, "agreement": agreement, "score": agreement if agreement is not None else bridge}

    def best_photo(self, enc: Encoded) -> int | None:
        """Index of the photo that matches the text best; the first photo when there is no text; None without
        photos."""
        if not enc.n_photos:
            return None
        if not enc.has_text:
            return 0
        return int(np.argmax(self.scores(enc)["score"]))


def summary(values: np.ndarray | None) -> dict[str, float | None]:
    """Mean and max of per-photo scores (None without photos)."""
    if values is None or not len(values):
        return {"mean": None, "max": None}
    return {"mean": round(float(np.mean(values)), 4), "max": round(float(np.max(values)), 4)}
