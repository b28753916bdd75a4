"""Minors classifier: the shipped model file loads offline and scores; training picks thresholds that keep the
target recall out of fold; the combined filter's decisions, cache and unreadable images; caption labels."""
from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mmstack.errors import ConfigError, MmstackError
from mmstack.legal import MinorFilter
from mmstack.moderation_images.minors import (EMBED_DIM, MODEL_FILE, ChildFilter, FeatureRecipe, ImageFeatures,
                                              MinorsModel, caption_shows_minors)
from mmstack.moderation_images.minors_training import (DEFAULT_RECIPE, fit_minors_model, recall_threshold,
                                                       train_labels)

from ..conftest import ROOT


def jpeg(color, size=(120, 90)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG")
    return buf.getvalue()


def test_shipped_model_file_is_small_loads_offline_in_a_fresh_process_and_scores():
    assert MODEL_FILE.is_file() and MODEL_FILE.stat().st_size < 200_000
    code = ("import numpy as np; from mmstack.moderation_images.minors import MinorsModel; m = MinorsModel.load(); "
            "p = m.probability(np.zeros((2, m.n_features)) + m.mean); "
            "print(m.n_features, round(float(p[0]), 6), 0 < m.threshold < 1, m.meta['target_recall'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True,
                         env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)})
    n, p, ok, recall = out.stdout.split()[-4:]
    model = MinorsModel.load()
    assert int(n) == model.recipe.n_features == EMBED_DIM * (len(model.sizes) + 2)
    assert model.recipe == DEFAULT_RECIPE, "the shipped file is what the training command's defaults make"
    assert ok == "True" and float(recall) == 0.95
    # at the training mean the score is the intercept's probability
    assert float(p) == pytest.approx(1 / (1 + np.exp(-model.intercept)), abs=1e-6)
    assert model.meta["oof_auc"] > 0.8 and "Flickr8k" in model.meta["trained_on"]


def test_model_save_load_round_trip_and_a_broken_file_is_one_clear_error(tmp_path):
    rng = np.random.default_rng(0)
    model = MinorsModel((224,), True, rng.normal(size=1280), rng.uniform(0.5, 2, 1280), rng.normal(size=1280),
                        -0.3, 0.4, 0.5, {"note": "test"})
    back = MinorsModel.load(model.save(tmp_path / "m.npz"))
    X = rng.normal(size=(3, 1280))
    assert back.sizes == (224,) and back.flip and back.meta == {"note": "test"} and back.version == \
        MinorsModel.load(tmp_path / "m.npz").version
    assert np.allclose(back.probability(X), model.probability(X), atol=1e-4)
    with pytest.raises(ValueError):
        back.probability(np.zeros((2, 5)))
    (tmp_path / "bad.npz").write_bytes(b"not a model")
    with pytest.raises(MmstackError, match="bad.npz: cannot be read"):
        MinorsModel.load(tmp_path / "bad.npz")


def test_model_with_crops_round_trips_and_an_old_whole_photo_file_still_loads(tmp_path):
    rng = np.random.default_rng(2)
    n = 3 * EMBED_DIM  # one size + crop max + crop mean
    model = MinorsModel((224,), False, rng.normal(size=n), rng.uniform(0.5, 2, n), rng.normal(size=n), 0.1, 0.3,
                        0.4, {}, grid=2, crop_frac=0.6)
    back = MinorsModel.load(model.save(tmp_path / "crops.npz"))
    assert (back.grid, back.crop_frac, back.n_features) == (2, 0.6, n)
    assert back.version != MinorsModel(**{**back.__dict__, "grid": 3}).version, "the recipe is part of the version"
    whole = MinorsModel((224,), False, *rng.normal(size=(3, EMBED_DIM)), 0.0, 0.5, 0.5)
    path = whole.save(tmp_path / "v1.npz")
    with np.load(path) as z:  # rewrite as a format-1 file: no grid in the header
        header = json.loads(str(z["header"]))
        arrays = {k: z[k] for k in ("mean", "scale", "coef")}
    header = {k: v for k, v in header.items() if k not in ("grid", "crop_frac")} | {"format": 1}
    np.savez(path, **arrays, header=np.array(json.dumps(header)))
    assert MinorsModel.load(path).recipe == FeatureRecipe((224,), False, 0, 0.5)
    header["format"] = 7
    np.savez(path, **arrays, header=np.array(json.dumps(header)))
    with pytest.raises(MmstackError, match="cannot be read.*format 7"):
        MinorsModel.load(path)
    # arrays that do not match the recipe: one clear error
    MinorsModel((224,), False, *rng.normal(size=(3, EMBED_DIM)), 0.0, 0.5, 0.5, grid=3).save(tmp_path / "odd.npz")
    with pytest.raises(MmstackError, match="do not match its features"):
        MinorsModel.load(tmp_path / "odd.npz")


def test_crop_grid_covers_the_photo_corner_to_corner_with_overlap():
    boxes = FeatureRecipe((224,), grid=3, crop_frac=0.5).crop_boxes(500, 375)
    assert len(boxes) == 9 and boxes[0] == (0, 0, 250, 188) and boxes[-1] == (250, 188, 500, 375)
    assert boxes[1] == (125, 0, 375, 188) and boxes[3] == (0, 94, 250, 281)  # half-overlapping neighbours
    assert FeatureRecipe((224,), grid=2, crop_frac=0.6).crop_boxes(100, 50) == [
        (0, 0, 60, 30), (40, 0, 100, 30), (0, 20, 60, 50), (40, 20, 100, 50)]


def test_crop_features_are_the_max_and_mean_of_each_crops_features():
    """A small warm patch in one corner: the crop holding it sees it at 4x the pixels of the whole photo."""
    photo = Image.new("RGB", (200, 150), (40, 90, 200))
    photo.paste((240, 170, 60), (4, 4, 30, 24))
    recipe = FeatureRecipe((224,), grid=2, crop_frac=0.5)
    got = ImageFeatures((224,), grid=2, crop_frac=0.5)([photo])
    assert got.shape == (1, recipe.n_features) == (1, 3 * EMBED_DIM)
    whole = ImageFeatures((224,))([photo])
    crops = ImageFeatures((224,))([photo.crop(b) for b in recipe.crop_boxes(200, 150)])
    assert np.allclose(got[0, :EMBED_DIM], whole[0], atol=1e-5)
    assert np.allclose(got[0, EMBED_DIM:2 * EMBED_DIM], crops.max(axis=0), atol=1e-5)
    assert np.allclose(got[0, 2 * EMBED_DIM:], crops.mean(axis=0), atol=1e-5)
    # the corner crop's features differ from the other crops' (it holds the patch), so max != mean
    assert np.abs(crops[0] - crops[3]).max() > 0.1
    assert (got[0, EMBED_DIM:2 * EMBED_DIM] >= got[0, 2 * EMBED_DIM:] - 1e-6).all()


def test_recall_threshold_keeps_the_share_of_positives_counting_those_already_withheld():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.1, 0.2])
    positive = np.array([True, True, True, True, False, True, False])
    assert recall_threshold(scores, positive, 0.8) == 0.6  # 4 of 5 positives: 0.9, 0.8, 0.7, 0.6
    assert recall_threshold(scores, positive, 1.0) == 0.1
    already = np.array([False, False, False, True, False, True, False])  # two positives withheld by faces
    assert recall_threshold(scores, positive, 1.0, already) == 0.7
    assert recall_threshold(scores, positive, 0.4, already) == 1.0  # faces alone reach it


def test_training_on_synthetic_features_reaches_the_target_recall_out_of_fold():
    rng = np.random.default_rng(1)
    n = 300
    y = rng.random(n) < 0.3
    X = rng.normal(size=(n, 1280))
    X[:, :20] += 1.0 * y[:, None]  # a direction that tells children apart, plus noise
    fitted = fit_minors_model(X, y, FeatureRecipe((224,)), recall=0.95)
    model = fitted.model
    assert fitted.C in (0.0003, 0.001, 0.003) and model.threshold == model.threshold_alone
    assert (fitted.oof[y] >= model.threshold).mean() >= 0.95
    fresh = rng.normal(size=(400, 1280))
    fresh_y = rng.random(400) < 0.5
    fresh[:, :20] += 1.0 * fresh_y[:, None]
    p = model.probability(fresh)
    assert (p[fresh_y] >= model.threshold).mean() > 0.85 and (p[~fresh_y] >= model.threshold).mean() < 0.5


def _model_for_warm_colours() -> MinorsModel:
    """A real 224-px model trained here on drawn images: warm colours "show a child", cool ones do not."""
    from sklearn.linear_model import LogisticRegression

    warm = [(230, 150, 40), (220, 120, 60), (240, 170, 90), (210, 100, 30)]
    cool = [(30, 60, 200), (40, 160, 170), (20, 120, 60), (90, 90, 220)]
    images = [Image.new("RGB", (120, 90), c) for c in warm + cool]
    X = ImageFeatures((224,))(images)
    y = np.array([True] * 4 + [False] * 4)
    mean, scale = X.mean(axis=0), X.std(axis=0) + 1e-6
    lr = LogisticRegression(C=1.0, max_iter=2000).fit((X - mean) / scale, y)
    return MinorsModel((224,), False, mean, scale, lr.coef_[0], float(lr.intercept_[0]), 0.5, 0.5)


@pytest.fixture(scope="module")
def warm_model() -> MinorsModel:
    return _model_for_warm_colours()


def test_combined_filter_withholds_by_classifier_or_face_and_unreadable_images(warm_model, tmp_path):
    def estimator(image):  # a face aged 9 in the teal image only
        red, green, blue = image.getpixel((5, 5))
        return [9.0] if green > 120 and blue > 120 else []

    faces = MinorFilter(estimator=estimator, upscale_to=None, progress=False)
    child = ChildFilter(warm_model, face_filter=faces, progress=False)
    items = {"warm.jpg": jpeg((230, 160, 50)), "blue.jpg": jpeg((25, 70, 190)), "teal.jpg": jpeg((30, 150, 160)),
             "broken.jpg": b"\xff\xd8 not really a jpeg"}
    cache = tmp_path / "legal" / "minors_scores.json"
    got = child.check_many(items, cache_path=cache)
    assert got["warm.jpg"].withheld and got["warm.jpg"].reason.startswith("minors classifier")
    assert got["teal.jpg"].withheld and "face estimated age 9 < 25" in got["teal.jpg"].reason
    assert not got["blue.jpg"].withheld and got["blue.jpg"].score < 0.5
    assert got["broken.jpg"].withheld and got["broken.jpg"].reason == "unreadable"
    doc = json.loads(cache.read_text())
    assert len(doc["scores"]) == 4 and (tmp_path / "legal" / "decisions.json").is_file()
    # scores come back from the cache: a filter whose features would fail is not asked again
    again = ChildFilter(warm_model, face_filter=faces, progress=False)
    again.features = _NoFeatures()  # type: ignore[assignment]
    assert again.check_many(items, cache_path=cache) == got
    # the classifier alone uses its own threshold; the face does not count then
    alone = ChildFilter(warm_model, face_filter=None, progress=False).check_many(items)
    assert not alone["teal.jpg"].withheld and alone["warm.jpg"].withheld


class _NoFeatures:
    batch_size = 16

    def __call__(self, images):
        raise AssertionError("features computed again although cached")


def test_threshold_is_checked():
    with pytest.raises(ConfigError, match="threshold"):
        ChildFilter(MinorsModel.load(), threshold=1.5, face_filter=None)


def test_caption_labels_from_own_and_expert_matched_captions(tmp_path):
    assert caption_shows_minors("Two little girls play in the sand") and caption_shows_minors("Мальчик бежит")
    assert not caption_shows_minors("A man rides a bicycle") and not caption_shows_minors("Детская площадка пуста")
    pd.DataFrame({"image": ["a.jpg", "a.jpg", "b.jpg", "c.jpg", "d.jpg"],
                  "query_id": ["a.jpg#0", "x.jpg#1", "b.jpg#0", "c.jpg#0", "x.jpg#1"],
                  "query_text": ["A dog runs", "A child swims", "A boy on a bike", "A man on a bench",
                                 "A child swims"]}).to_csv(tmp_path / "train_dataset.csv", index=False)
    pd.DataFrame([("a.jpg", "x.jpg#1", 4, 4, 3), ("d.jpg", "x.jpg#1", 1, 1, 2)]).to_csv(
        tmp_path / "ExpertAnnotations.tsv", sep="\t", header=False, index=False)
    labels = train_labels(tmp_path)
    # a: own caption about a dog, but experts matched a caption about a child; d: no own caption and only a poor
    # match, so no caption describes it: not a training image of the classifier
    assert labels.to_dict() == {"a.jpg": True, "b.jpg": True, "c.jpg": False}
