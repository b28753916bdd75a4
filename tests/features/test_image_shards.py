"""image_embed in shards: a job stopped after shard k resumes at shard k+1 and ends with the same bytes; zip input."""
from __future__ import annotations

import shutil
import zipfile

import numpy as np
import pandas as pd
import pytest

from mmstack.data import avito
from mmstack.features import image_shards
from mmstack.features.base import BlockCache
from mmstack.features.image_embed import ImageEmbedBlock
from mmstack.store import Store

PARAMS = {"image_size": 32, "batch_size": 16, "pca_components": 4, "top_k": 2, "num_threads": 1}
SHARD = 64


class Stop(Exception):
    pass


@pytest.fixture
def small_shards(monkeypatch):
    monkeypatch.setattr(image_shards, "SHARD_IMAGES", SHARD)
    done: list[int] = []
    monkeypatch.setattr(image_shards, "AFTER_SHARD", [done.append])
    return done


def build(input_dir, workdir):
    data = avito.load(input_dir)
    cache = BlockCache(data, Store(workdir), seed=0)
    out = cache.get(ImageEmbedBlock(PARAMS), lambda name: None)
    return data, out, workdir / "features" / "image_embed" / cache.keys["image_embed"]


def shard_files(workdir):
    return sorted((workdir / "features" / image_shards.SHARD_KIND).glob("*.npz"))


def test_killed_embedding_resumes_at_the_next_shard_with_identical_output(tiny_avito_dir, tmp_path, small_shards):
    data, whole, whole_dir = build(tiny_avito_dir, tmp_path / "whole")
    n_shards = len(shard_files(tmp_path / "whole"))
    n_images = sum(isinstance(i, str) and bool(i) for i in data.all_rows()["image"])
    assert n_shards == -(-n_images // SHARD) and n_shards >= 5
    assert small_shards == list(range(n_shards))

    def stop_after_two(index):
        if index == 2:
            raise Stop
    small_shards.clear()
    image_shards.AFTER_SHARD.append(stop_after_two)
    with pytest.raises(Stop):
        build(tiny_avito_dir, tmp_path / "killed")
    assert small_shards == [0, 1, 2] and len(shard_files(tmp_path / "killed")) == 3
    assert not (tmp_path / "killed" / "features" / "image_embed").exists()  # the block itself was never written

    image_shards.AFTER_SHARD.remove(stop_after_two)
    small_shards.clear()
    _, resumed, resumed_dir = build(tiny_avito_dir, tmp_path / "killed")
    assert small_shards == list(range(3, n_shards))  # the three stored shards were not recomputed
    pd.testing.assert_frame_equal(whole.dense, resumed.dense, check_exact=True)
    assert (whole_dir / "dense.parquet").read_bytes() == (resumed_dir / "dense.parquet").read_bytes()
    for a, b in zip(shard_files(tmp_path / "whole"), shard_files(tmp_path / "killed")):
        assert a.name == b.name
        with np.load(a) as x, np.load(b) as y:
            assert all(np.array_equal(x[name], y[name]) for name in x.files)


def test_images_read_straight_from_the_zip_give_the_same_embedding(tiny_avito_dir, tmp_path, small_shards):
    zipped = tmp_path / "zipped"
    zipped.mkdir()
    for name in ("train.csv", "test.csv"):
        shutil.copy(tiny_avito_dir / name, zipped / name)
    for split in ("train", "test"):
        with zipfile.ZipFile(zipped / f"{split}_jpg.zip", "w") as zf:
            for path in sorted((tiny_avito_dir / f"{split}_jpg").glob("*.jpg")):
                zf.write(path, f"data/competition_files/{split}_jpg/{path.name}")
    _, from_folder, _ = build(tiny_avito_dir, tmp_path / "a")
    data, from_zip, _ = build(zipped, tmp_path / "b")
    assert data.images["train"]._zip is not None
    present = from_zip.dense["imgemb_present"].to_numpy() == 1
    assert present.sum() > 100
    np.testing.assert_array_equal(from_folder.dense["imgemb_present"], from_zip.dense["imgemb_present"])
    np.testing.assert_array_equal(from_folder.dense["imgemb_top1_class"], from_zip.dense["imgemb_top1_class"])
    np.testing.assert_allclose(from_folder.dense.to_numpy(np.float64), from_zip.dense.to_numpy(np.float64),
                               rtol=0, atol=1e-5, equal_nan=True)


def test_onnx_engine_gives_the_torch_features_within_1e_4(tiny_avito_dir, tmp_path, small_shards):
    from PIL import Image

    from mmstack.features.image_embed import EfficientNetLite0Encoder
    from mmstack.features.image_onnx import OnnxImageEncoder

    paths = sorted((tiny_avito_dir / "train_jpg").glob("*.jpg"))[:40]
    images = [Image.open(p).convert("RGB") for p in paths]
    torch_encoder = EfficientNetLite0Encoder(64, device="cpu")
    onnx_encoder = OnnxImageEncoder(torch_encoder, workers=2)
    want_pooled, want_logits = torch_encoder.encode(images, batch_size=16)
    got_pooled, got_logits = onnx_encoder.encode(images, batch_size=16)  # 3 batches on 2 workers, in order
    assert got_pooled.shape == (40, 1280) and got_logits.shape == (40, 1000)
    assert np.abs(got_pooled - want_pooled).max() <= 1e-4
    assert np.abs(got_logits - want_logits).max() <= 1e-4
    assert onnx_encoder.max_difference <= 1e-4

    # the block with engine onnx and two workers: the same rows, classes and (float16-stored) features as torch
    data = avito.load(tiny_avito_dir)
    outputs = {}
    for engine in ("torch", "onnx"):
        params = {**PARAMS, "engine": engine, "num_threads": 2 if engine == "onnx" else 1}
        cache = BlockCache(data, Store(tmp_path / engine), seed=0)
        outputs[engine] = cache.get(ImageEmbedBlock(params), lambda name: None).dense
    a, b = outputs["torch"], outputs["onnx"]
    np.testing.assert_array_equal(a["imgemb_present"], b["imgemb_present"])
    np.testing.assert_array_equal(a["imgemb_top1_class"], b["imgemb_top1_class"])
    np.testing.assert_allclose(a["imgemb_entropy"], b["imgemb_entropy"], atol=1e-4, equal_nan=True)
    np.testing.assert_allclose(a["imgemb_top1_prob"], b["imgemb_top1_prob"], atol=1e-5, equal_nan=True)
    assert a["imgemb_present"].sum() > 100
    # the shards of the two engines never share a key
    names = {e: {p.name for p in (tmp_path / e / "features" / image_shards.SHARD_KIND).glob("*.npz")}
             for e in outputs}
    assert names["torch"] and names["onnx"] and not names["torch"] & names["onnx"]


def test_unknown_image_engine_is_a_config_error():
    from mmstack.errors import ConfigError

    with pytest.raises(ConfigError, match="engine"):
        ImageEmbedBlock({**PARAMS, "engine": "tensorrt"})
