"""Photo-text mismatch: a listing whose text is unrelated to its photos is flagged, one that describes a photo is
not (real EfficientNet-Lite0 and USE models, a real photo shipped with matplotlib, a drawn one)."""
from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pytest
from PIL import Image

from mmstack.moderation_images.mismatch import ImageTextScorer, listing_mismatch
from mmstack.moderation_images.settings import ImageModerationSettings

PORTRAIT = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


@pytest.fixture(scope="module")
def scorer() -> ImageTextScorer:
    return ImageTextScorer()


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    return [Image.open(PORTRAIT).convert("RGB"), Image.new("RGB", (200, 150), (120, 120, 120))]


def test_listing_text_unrelated_to_its_photos_is_flagged(scorer, photos):
    threshold = ImageModerationSettings.load(Path(__file__).resolve().parents[2] / "configs" /
                                             "moderation_images.toml").mismatch_threshold
    related = listing_mismatch("Продаю военный китель, парадная форма офицера", photos, threshold, scorer)
    unrelated = listing_mismatch("Свежая клубника и бананы, доставка", photos, threshold, scorer)
    assert len(related.scores) == 2 and not related.flagged and related.best >= threshold
    assert unrelated.flagged and max(unrelated.scores) < threshold and "every photo" in unrelated.reason
    assert related.scores[0] > unrelated.scores[0] + 2  # the uniform is what the portrait shows


def test_score_matrix_shape_and_text_normalisation(scorer, photos):
    scores = scorer.scores(["a woman in a military uniform", "a bowl of fruit", "a grey wall"], photos)
    assert scores.shape == (3, 2) and np.isfinite(scores).all()
    assert scores[0, 0] == scores[:, 0].max(), "the portrait matches the uniform best"
    # the score of a text is measured against its own spread over the class vectors: rescaling is invariant
    labels = scorer.labels()
    assert labels.shape == (1000, 512) and np.allclose(np.linalg.norm(labels, axis=1), 1)


def test_nothing_to_compare_is_not_flagged(scorer, photos):
    assert not listing_mismatch("", photos, 0.0, scorer).flagged
    empty = listing_mismatch("велосипед", [], 0.0, scorer)
    assert not empty.flagged and empty.reason == "no readable photo"
