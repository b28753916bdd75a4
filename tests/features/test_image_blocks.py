"""image_stats and image_embed on images drawn here and on the tiny generated dataset (damaged copies included)."""
from __future__ import annotations

import io
import logging
import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw, ImageFilter

from mmstack.features.base import BlockCache, BlockContext, BlockOutput
from mmstack.features.image_embed import EMBED_DIM, N_CLASSES, EfficientNetLite0Encoder, ImageEmbedBlock
from mmstack.features.image_stats import (NON_FEATURE_COLUMNS, STAT_COLUMNS, ImageStatsBlock, hamming, measure,
                                          phash, stats_of)
from mmstack.store import Store

# small and fast: 64 px inputs, few images
EMBED_PARAMS = {"image_size": 64, "batch_size": 32, "pca_components": 8, "top_k": 2, "num_threads": 1}


def jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def checkerboard(w: int = 64, h: int = 48, cell: int = 4) -> Image.Image:
    yy, xx = np.mgrid[0:h, 0:w]
    grey = np.where(((yy // cell) + (xx // cell)) % 2 == 0, 20, 235).astype(np.uint8)
    return Image.fromarray(np.stack([grey] * 3, axis=2))


def scene(seed: int, w: int = 96, h: int = 72) -> Image.Image:
    """A picture with structure: gradient background and a few random shapes."""
    rng = np.random.default_rng(seed)
    base = np.linspace(rng.uniform(0, 120), rng.uniform(120, 255), w)[None, :, None] * np.ones((h, 1, 3))
    img = Image.fromarray(base.astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(4):
        x0, y0 = rng.uniform(0, w * 0.7), rng.uniform(0, h * 0.7)
        box = (x0, y0, x0 + rng.uniform(10, w * 0.4), y0 + rng.uniform(10, h * 0.4))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    return img


def stats(img: Image.Image, size: int = 1000) -> dict[str, float]:
    return dict(zip(STAT_COLUMNS, measure(img, size)))


# -- image_stats: the measures -----------------------------------------------------------------------------------

def test_exposure_and_colour_measures_order_correctly():
    flat = stats(Image.new("RGB", (64, 48), (128, 128, 128)))
    board = stats(checkerboard())
    dark = stats(Image.new("RGB", (64, 48), (30, 30, 30)))
    red = stats(Image.new("RGB", (64, 48), (220, 20, 20)))
    assert dark["imgst_brightness"] < flat["imgst_brightness"]
    assert flat["imgst_brightness"] == pytest.approx(128, abs=0.5)
    assert flat["imgst_contrast"] == pytest.approx(0, abs=1e-3) and board["imgst_contrast"] > 80
    assert red["imgst_saturation"] > 0.8 and flat["imgst_saturation"] == pytest.approx(0, abs=1e-6)
    assert red["imgst_colourfulness"] > 50 > flat["imgst_colourfulness"]
    assert flat["imgst_colourfulness"] == pytest.approx(0, abs=1e-6)
    assert (red["imgst_mean_r"], red["imgst_mean_g"], red["imgst_mean_b"]) == pytest.approx((220, 20, 20), abs=0.5)


def test_laplacian_variance_drops_when_blurred():
    sharp = checkerboard()
    blurred = sharp.filter(ImageFilter.GaussianBlur(2))
    assert stats(sharp)["imgst_laplacian_var"] > 10 * stats(blurred)["imgst_laplacian_var"]
    assert stats(Image.new("RGB", (64, 48), (90, 90, 90)))["imgst_laplacian_var"] == pytest.approx(0, abs=1e-6)


def test_size_columns_are_exact():
    img = scene(1, 90, 60)
    data = jpeg(img)
    feats, hashes, bad = stats_of([data])
    s = dict(zip(STAT_COLUMNS, feats[0]))
    assert (s["imgst_width"], s["imgst_height"], s["imgst_aspect"]) == (90, 60, 1.5)
    assert s["imgst_file_size"] == len(data) and not bad[0] and hashes[0] != 0


def test_dominant_colours_and_shares():
    img = Image.new("RGB", (40, 40), (200, 30, 30))
    ImageDraw.Draw(img).rectangle((0, 0, 39, 9), fill=(20, 40, 220))  # a quarter blue
    s = stats(img)
    assert (s["imgst_dom1_r"], s["imgst_dom1_g"], s["imgst_dom1_b"]) == pytest.approx((200, 30, 30))
    assert s["imgst_dom1_share"] == pytest.approx(0.75) and s["imgst_dom2_share"] == pytest.approx(0.25)
    assert (s["imgst_dom2_r"], s["imgst_dom2_g"], s["imgst_dom2_b"]) == pytest.approx((20, 40, 220))
    assert s["imgst_dom3_share"] == 0 and np.isnan(s["imgst_dom3_r"])


def test_phash_survives_reencoding_but_tells_images_apart():
    hashes = []
    for seed in range(6):
        img = scene(seed)
        a = phash(Image.open(io.BytesIO(jpeg(img, 95))).convert("RGB"))
        b = phash(Image.open(io.BytesIO(jpeg(img, 40))).convert("RGB"))
        small = phash(img.resize((48, 36)))
        assert hamming(a, b) <= 4 and hamming(a, small) <= 6
        hashes.append(a)
    assert all(isinstance(h, int) and -2 ** 63 <= h < 2 ** 63 for h in hashes)
    distances = [hamming(x, y) for i, x in enumerate(hashes) for y in hashes[i + 1:]]
    assert min(distances) >= 12, distances


def test_phash_matches_an_independent_reference():
    """The classic pHash (imagehash's recipe), written here with scipy.fftpack and a bit string."""
    from scipy.fftpack import dct

    for seed in (11, 12):
        img = scene(seed)
        pixels = np.asarray(img.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=float)
        low = dct(dct(pixels, axis=0), axis=1)[:8, :8]
        bits = "".join("1" if v else "0" for v in (low > np.median(low)).ravel())
        expected = int(bits, 2)
        assert phash(img) == (expected - 2 ** 64 if expected >= 2 ** 63 else expected)


def test_laplacian_variance_exact_on_an_impulse():
    grey = np.zeros((9, 9, 3), np.uint8)
    grey[4, 4] = 100  # luma 100: the Laplacian is -400 there and 100 at its 4 neighbours
    assert stats(Image.fromarray(grey))["imgst_laplacian_var"] == pytest.approx(200_000 / 81, rel=1e-4)
    ramp = np.repeat(np.linspace(0, 250, 64)[None, :, None], 48, 0).repeat(3, 2).astype(np.uint8)
    smooth = stats(Image.fromarray(ramp))  # strong contrast but no sharp edge
    assert smooth["imgst_contrast"] > 50 and smooth["imgst_laplacian_var"] < 5


def test_missing_and_corrupt_bytes_give_nan():
    feats, hashes, why = stats_of([None, b"not a jpeg at all", jpeg(scene(3))[:200]])
    assert np.isnan(feats).all() and (hashes == 0).all()
    assert why == [None, "unreadable", "unreadable"]


# -- the tiny generated dataset, damaged --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def damaged(tmp_path_factory, tiny_avito_dir):
    """A copy of the tiny dataset with 3 train images deleted and 2 test images corrupted."""
    import shutil

    from mmstack.data import avito

    dest = tmp_path_factory.mktemp("img_damaged") / "input"
    shutil.copytree(tiny_avito_dir, dest)
    train = pd.read_csv(dest / "train.csv")["image"].dropna().tolist()
    test = pd.read_csv(dest / "test.csv")["image"].dropna().tolist()
    for image_id in train[:3]:
        (dest / "train_jpg" / f"{image_id}.jpg").unlink()
    (dest / "test_jpg" / f"{test[0]}.jpg").write_bytes(b"garbage")
    path = dest / "test_jpg" / f"{test[1]}.jpg"
    path.write_bytes(path.read_bytes()[:100])  # truncated JPEG
    return avito.load(dest), set(train[:3]), set(test[:2])


def _fresh(data):
    """Reload the dataset so problem counters start at zero."""
    from mmstack.data import avito

    return avito.load(data.input_dir)


def _ctx(data) -> BlockContext:

    return BlockContext(data=data, store=None, seed=0)


def test_image_stats_block_rows_order_and_problems(damaged, tmp_path):
    data, deleted, corrupt = damaged
    data = _fresh(data)
    out = ImageStatsBlock({"n_jobs": 2, "chunk_size": 50, "dominant_colours": True}).build(_ctx(data))
    rows = data.all_rows()
    dense = out.dense
    assert len(dense) == data.n_train + data.n_test == len(rows)
    assert out.non_features == list(NON_FEATURE_COLUMNS) == ["phash"]
    assert "phash" not in out.features().columns and dense["phash"].dtype == np.int64
    # by default models do not see the dominant colours (other blocks still can)
    lean = ImageStatsBlock({"n_jobs": 2, "chunk_size": 50}).build(_ctx(_fresh(data)))
    assert "imgst_dom1_r" in lean.dense.columns and "imgst_dom1_r" not in lean.features().columns
    assert len(out.features().columns) - len(lean.features().columns) == 12
    assert all(c.startswith("imgst_") for c in out.features().columns)
    feat_cols = [c for c in dense.columns if c != "phash"]
    assert (dense[feat_cols].dtypes == np.float32).all()

    image = rows["image"]
    bad = image.isin(deleted | corrupt).to_numpy()
    none = ~image.apply(lambda v: isinstance(v, str)).to_numpy()
    good = ~bad & ~none
    assert none.any() and good.sum() > 100
    assert (dense["imgst_has_image"].to_numpy() == good).all()
    assert dense.loc[~good, list(STAT_COLUMNS)].isna().all().all() and (dense.loc[~good, "phash"] == 0).all()
    assert dense.loc[good, ["imgst_brightness", "imgst_laplacian_var"]].notna().all().all()
    assert (dense.loc[good, "phash"] != 0).all()
    assert data.images["train"].problems["missing"] == 3 and data.images["test"].problems["unreadable"] == 2

    # row order: each row's measured file size and pixel size are its own image's
    for pos in np.flatnonzero(good)[::37]:
        split = "test" if rows["is_test"][pos] else "train"
        raw = data.images[split].read_bytes(image[pos])
        assert dense["imgst_file_size"][pos] == len(raw)
        with Image.open(io.BytesIO(raw)) as img:
            assert (dense["imgst_width"][pos], dense["imgst_height"][pos]) == img.size == (64, 48)
            assert dense["phash"][pos] == phash(img.convert("RGB"))

    # the stored block keeps the hash exact (int64, no float round trip) and still hides it from models
    out.save(tmp_path / "block")
    back = BlockOutput.load(tmp_path / "block")
    assert back.dense["phash"].dtype == np.int64 and (back.dense["phash"] == dense["phash"]).all()
    assert "phash" not in back.features().columns


def test_image_stats_backends_agree(damaged):
    data = _fresh(damaged[0])
    a = ImageStatsBlock({"n_jobs": 1, "chunk_size": 64}).build(_ctx(data)).dense
    b = ImageStatsBlock({"n_jobs": 2, "chunk_size": 40, "backend": "loky"}).build(_ctx(data)).dense
    pd.testing.assert_frame_equal(a, b)


def test_image_keys_follow_the_pixels(avito_copy):
    from mmstack.data import avito
    folds = None
    before = avito.load(avito_copy)
    keys = [ImageStatsBlock().key(before, folds, {}), ImageEmbedBlock().key(before, folds, {})]
    victim = next((avito_copy / "test_jpg").glob("*.jpg"))
    victim.write_bytes(victim.read_bytes() + b"\0\0")  # same CSVs, different pixels file
    after = avito.load(avito_copy)
    assert after.fingerprint == before.fingerprint
    assert ImageStatsBlock().key(after, folds, {}) != keys[0]
    assert ImageEmbedBlock().key(after, folds, {}) != keys[1]
    assert ImageStatsBlock({"n_jobs": 1}).key(before, folds, {}) != keys[0]


def test_bad_params_are_config_errors():
    from mmstack.errors import ConfigError

    with pytest.raises(ConfigError):
        ImageStatsBlock({"backend": "dask"})
    with pytest.raises(ConfigError):
        ImageEmbedBlock({"image_size": 8})
    with pytest.raises(ConfigError):
        ImageEmbedBlock({"pca_components": 5000})
    with pytest.raises(ConfigError):
        ImageEmbedBlock({"colour": True})


# -- image_embed --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def encoder():
    return EfficientNetLite0Encoder(image_size=64, num_threads=1)


def drawn(kind: str, seed: int) -> Image.Image:
    """A red ellipse or a blue rectangle at a random place and size on a random light background."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (80, 60), tuple(int(c) for c in rng.integers(170, 256, 3)))
    cx, cy, rx, ry = rng.uniform(25, 55), rng.uniform(20, 40), rng.uniform(10, 22), rng.uniform(8, 18)
    if kind == "red":
        ImageDraw.Draw(img).ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=(210, 30, 30))
    else:
        ImageDraw.Draw(img).rectangle((cx - rx, cy - ry, cx + rx, cy + ry), fill=(30, 60, 210))
    return img


def test_encoder_shapes_and_feature_map(encoder):
    images = [drawn("red", 0), drawn("blue", 1).convert("L"), Image.new("RGB", (300, 40))]
    pooled, logits = encoder.encode(images, batch_size=2)
    assert pooled.shape == (3, EMBED_DIM) and logits.shape == (3, N_CLASSES)
    assert pooled.dtype == logits.dtype == np.float32 and np.isfinite(pooled).all()
    assert (pooled >= 0).all() and (pooled <= 6).all()  # means of ReLU6 activations
    fmap = encoder.feature_map(images[:2])
    assert fmap.shape == (2, EMBED_DIM, 2, 2) and fmap.dtype == np.float32
    assert np.allclose(fmap.mean(axis=(2, 3)), pooled[:2], atol=1e-4)
    empty_pooled, empty_logits = encoder.encode([])
    assert empty_pooled.shape == (0, EMBED_DIM) and empty_logits.shape == (0, N_CLASSES)


def test_encoder_uses_the_packaged_pretrained_weights(encoder):
    import torch

    from mmstack.features.image_embed import weights_path

    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    mine = encoder.model.state_dict()
    assert set(state) == set(mine)
    for name in ("_conv_stem.weight", "_bn1.running_var", "_fc.weight", "_fc.bias"):
        assert torch.equal(mine[name].cpu(), state[name]), name
    assert not torch.allclose(mine["_bn1.running_var"], torch.ones_like(mine["_bn1.running_var"]))
    assert not encoder.model.training


def test_embeddings_separate_two_drawn_classes(encoder):
    kinds = ["red", "blue"] * 20
    pooled, _ = encoder.encode([drawn(k, i) for i, k in enumerate(kinds)])
    y = np.array([k == "red" for k in kinds])
    train, test = np.arange(40) < 24, np.arange(40) >= 24
    centroids = [pooled[train & (y == c)].mean(0) for c in (False, True)]
    pred = np.linalg.norm(pooled[test][:, None] - np.stack(centroids)[None], axis=2).argmin(1).astype(bool)
    assert (pred == y[test]).mean() >= 0.9


def test_image_embed_block_via_cache(damaged, tmp_path, caplog):
    data, deleted, corrupt = damaged
    data = _fresh(data)
    store = Store(tmp_path)
    cache = BlockCache(data, store, seed=0)
    block = ImageEmbedBlock(EMBED_PARAMS)
    out = cache.get(block, lambda name: None)
    dense, rows = out.dense, data.all_rows()
    emb = [f"imgemb_pca_{i:02d}" for i in range(8)]
    assert len(dense) == data.n_train + data.n_test
    assert list(dense.columns) == (["imgemb_present"] + emb + ["imgemb_entropy", "imgemb_top1_prob",
                                                                "imgemb_top1_class", "imgemb_top2_prob",
                                                                "imgemb_top2_class"])
    assert out.categorical == ["imgemb_top1_class", "imgemb_top2_class"]
    assert dense["imgemb_top1_class"].dtype == np.int32 and dense[emb].dtypes.eq(np.float32).all()

    image = rows["image"]
    good = (image.apply(lambda v: isinstance(v, str)) & ~image.isin(deleted | corrupt)).to_numpy()
    assert (dense["imgemb_present"].to_numpy() == good).all()
    assert dense.loc[~good, emb + ["imgemb_top1_prob", "imgemb_entropy"]].isna().all().all()
    assert (dense.loc[~good, "imgemb_top1_class"] == -1).all()
    assert np.isfinite(dense.loc[good, emb].to_numpy()).all()
    assert dense.loc[good, "imgemb_top1_class"].between(0, N_CLASSES - 1).all()
    top = dense.loc[good, ["imgemb_top1_prob", "imgemb_top2_prob"]].to_numpy()
    assert (top[:, 0] >= top[:, 1]).all() and (top <= 1).all()
    # PCA: centred, variance decreasing, components uncorrelated
    x = dense.loc[good, emb].to_numpy(np.float64)
    assert np.abs(x.mean(0)).max() < 1e-3 * x.std(0).max()
    assert (np.diff(x.var(0)) <= 1e-6).all()
    corr = np.corrcoef(x.T)
    assert np.abs(corr - np.eye(8)).max() < 1e-3
    assert data.images["train"].problems["missing"] == 3 and data.images["test"].problems["unreadable"] == 2

    # determinism: a second build from scratch is identical; the cache then reuses it
    again = ImageEmbedBlock(EMBED_PARAMS).build(_ctx(_fresh(data)))
    pd.testing.assert_frame_equal(dense, again.dense)
    with caplog.at_level(logging.INFO):
        BlockCache(data, store, seed=0).get(ImageEmbedBlock(EMBED_PARAMS), lambda name: None)
    assert "features: image_embed reused" in caplog.text


def test_image_embed_without_pca_and_without_images(tiny_avito_dir, tmp_path):
    import shutil

    from mmstack.data import avito

    dest = tmp_path / "input"
    dest.mkdir()
    for name in ("train.csv", "test.csv"):
        shutil.copy(tiny_avito_dir / name, dest / name)
    data = avito.load(dest)  # no image folders at all
    out = ImageEmbedBlock({**EMBED_PARAMS, "pca_components": 0, "top_k": 1}).build(_ctx(data))
    assert out.dense.shape == (data.n_train + data.n_test, 1 + EMBED_DIM + 1 + 2)
    assert (out.dense["imgemb_present"] == 0).all() and out.dense["imgemb_0000"].isna().all()
    stats_out = ImageStatsBlock({"n_jobs": 1}).build(_ctx(data))
    assert (stats_out.dense["imgst_has_image"] == 0).all() and (stats_out.dense["phash"] == 0).all()


def test_blocks_are_registered_with_unique_columns():
    from mmstack.features.registry import BLOCKS

    assert BLOCKS["image_stats"] is ImageStatsBlock and BLOCKS["image_embed"] is ImageEmbedBlock
    stats_cols = {"imgst_has_image", *STAT_COLUMNS}
    emb, probs, classes = ImageEmbedBlock().columns()
    assert not stats_cols & {"imgemb_present", "imgemb_entropy", *emb, *probs, *classes}
    assert "has_image" not in stats_cols  # the basic block's column
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
