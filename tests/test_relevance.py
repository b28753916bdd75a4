"""Relevance task (Flickr8k format): loader and validator, target mapping, pair features that never read captions,
the two-tower contract, and a run end to end. Tiny data drawn by the test."""
from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

from mmstack.data import relevance
from mmstack.data.dataset import Dataset
from mmstack.errors import InputError
from mmstack.features import pair_match

REAL_LABEL_VECTORS = pair_match.label_vectors
from mmstack.features.base import BlockContext
from mmstack.features.registry import make_block
from mmstack.metrics import score_all
from mmstack.projection import unit_rows
from mmstack.store import Store

from .conftest import ROOT, target_data_for

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220), "yellow": (240, 220, 20),
           "black": (10, 10, 10), "white": (245, 245, 245), "orange": (250, 140, 0), "purple": (130, 40, 160)}
SMALL = {"image_size": 64, "label_components": 4, "image_components": 3, "encoders": ["use"]}


def _draw(path, colour, shape: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    img = Image.fromarray((rng.random((90, 120, 3)) * 60 + 100).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    box = (20 + seed % 10, 15, 90, 75)
    (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=COLOURS[colour])
    img.save(path, "JPEG", quality=90)


def write_flickr(root, pipe_queries: bool = True):
    """8 train images, 4 test images; each train image paired with 4 queries (its own caption among them)."""
    (root / "train_images").mkdir(parents=True)
    (root / "test_images").mkdir()
    names = list(COLOURS)
    train_images = [f"{1000 + i}_ab{i}.jpg" for i in range(8)]
    captions = {}
    for i, name in enumerate(train_images):
        shape = "circle" if i % 2 else "square"
        _draw(root / "train_images" / name, names[i], shape, i)
        captions[f"{name}#0"] = f"A {names[i]} {shape} on a grey background ."
    pairs, expert, crowd = [], [], []
    qids = list(captions)
    for i, image in enumerate(train_images):
        for j in (i, (i + 1) % 8, (i + 3) % 8, (i + 5) % 8):
            qid = qids[j]
            score = 4 if j == i else 1 + (i + j) % 2
            pairs.append((image, qid, captions[qid]))
            expert.append((image, qid, score, score, max(1, score - 1)))
            if (i + j) % 3 == 0:
                crowd.append((image, qid, 1.0 if j == i else 0.0, 3 if j == i else 0, 0 if j == i else 3))
    pd.DataFrame(pairs, columns=["image", "query_id", "query_text"]).to_csv(root / "train_dataset.csv", index=False)
    pd.DataFrame(expert).to_csv(root / "ExpertAnnotations.tsv", sep="\t", header=False, index=False)
    pd.DataFrame(crowd).to_csv(root / "CrowdAnnotations.tsv", sep="\t", header=False, index=False)
    test_images = [f"{2000 + i}_cd{i}.jpg" for i in range(4)]
    for i, name in enumerate(test_images):
        _draw(root / "test_images" / name, names[i * 2], "square", 50 + i)
    queries = pd.DataFrame({"query_id": [f"{n}#0" for n in test_images] + [f"{test_images[0]}#1"],
                            "query_text": [f"A {names[i * 2]} square ." for i in range(4)] + ["Дети играют во дворе"],
                            "image": test_images + [test_images[0]]})
    queries.to_csv(root / "test_queries.csv", sep="|")  # pipe-separated, with the unnamed index column
    pd.DataFrame({"image": test_images}).to_csv(root / "test_images.csv", index=False)
    return train_images, test_images


@pytest.fixture(scope="module")
def flickr_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("flickr")
    write_flickr(root)
    return root


def test_loader_reads_the_course_format(flickr_dir):
    data = relevance.load(flickr_dir)
    assert data.n_train == 32 and data.n_test == 5 * 4, "every test query against every test image"
    assert set(data.test.columns) >= {"image", "query_id", "query_text", "image_id", "image_split"}
    assert (data.test["image_split"] == "test").all() and (data.train["image_split"] == "train").all()
    assert data.test["query_text"].str.contains("Дети").sum() == 4, "UTF-8 text survives the pipe-separated file"
    assert "expert" not in data.train.columns and "crowd" not in data.train.columns, "scores stay out of features"
    own = data.train["image"] == data.train["query_id"].str.split("#").str[0]
    # own caption: experts 4, 4, 3 -> (11/3 - 1) / 3
    rows, y = data.labelled(data.target())
    assert rows.tolist() == list(range(data.n_train))
    assert np.allclose(y[own.to_numpy()], (11 / 3 - 1) / 3)
    assert y.min() >= 0 and y.max() <= 1
    assert set(data.labels.columns) == {"relevance", "expert", "crowd"}, "scores live with the target"


def test_target_mapping_and_crowd_blend():
    assert np.allclose(relevance.expert_to_unit(np.array([1, 4, 2]), np.array([1, 4, 3]), np.array([1, 4, 4])),
                       [0.0, 1.0, 2 / 3])
    blended = relevance.blend_target(np.array([0.2, 0.2]), np.array([np.nan, 1.0]), 0.25)
    assert np.allclose(blended, [0.2, 0.75 * 0.2 + 0.25])


def test_crowd_weight_changes_target_and_fingerprint(flickr_dir):
    plain, mixed = relevance.load(flickr_dir), relevance.load(flickr_dir, options={"crowd_weight": 0.5})
    assert plain.fingerprint != mixed.fingerprint
    voted = mixed.labels["crowd"].notna().to_numpy()[:mixed.n_train]
    y_plain, y_mixed = (d.labelled(d.target())[1] for d in (plain, mixed))
    assert voted.any() and not np.allclose(y_plain[voted], y_mixed[voted])
    assert np.array_equal(y_plain[~voted], y_mixed[~voted])
    assert "scores" not in mixed.extras


def test_test_pairs_file_wins_and_finds_train_images(flickr_dir, tmp_path):
    import shutil

    shutil.copytree(flickr_dir, tmp_path / "d")
    train_image = sorted((flickr_dir / "train_images").iterdir())[0].name
    pd.DataFrame({"image": ["2000_cd0.jpg", train_image, "9999_zz.jpg"], "query_id": ["q#0", "q#1", "q#2"],
                  "query_text": ["a red square", "a dog", "a cat"]}).to_csv(tmp_path / "d" / "test_pairs.csv",
                                                                            index=False)
    data = relevance.load(tmp_path / "d")
    assert data.test["image_split"].tolist() == ["test", "train", "train"]
    assert data.n_test == 3


@pytest.mark.parametrize("breakage, file, column, row", [
    ("unknown_pair", "ExpertAnnotations.tsv", "query_id", 33),
    ("unscored", "train_dataset.csv", "query_id", 33),
    ("path_image", "train_dataset.csv", "image", 1),
    ("bad_score", "ExpertAnnotations.tsv", "e1", 1),
    ("dup_query", "test_queries.csv", "query_id", 2),
])
def test_loader_errors_name_file_column_row(flickr_dir, tmp_path, breakage, file, column, row):
    import shutil

    d = tmp_path / "d"
    shutil.copytree(flickr_dir, d)
    if breakage == "unknown_pair":
        with open(d / "ExpertAnnotations.tsv", "a") as fh:
            fh.write("1000_ab0.jpg\tnot_a_pair.jpg#0\t1\t1\t1\n")
    elif breakage == "unscored":
        with open(d / "train_dataset.csv", "a") as fh:
            fh.write("1000_ab0.jpg,extra.jpg#0,an unscored query\n")
    elif breakage == "path_image":
        frame = pd.read_csv(d / "train_dataset.csv")
        frame.loc[0, "image"] = "../secret.jpg"
        frame.to_csv(d / "train_dataset.csv", index=False)
        expert = pd.read_csv(d / "ExpertAnnotations.tsv", sep="\t", header=None)
        expert.loc[0, 0] = "../secret.jpg"
        expert.to_csv(d / "ExpertAnnotations.tsv", sep="\t", header=False, index=False)
    elif breakage == "bad_score":
        expert = pd.read_csv(d / "ExpertAnnotations.tsv", sep="\t", header=None)
        expert.loc[0, 2] = 7
        expert.to_csv(d / "ExpertAnnotations.tsv", sep="\t", header=False, index=False)
    elif breakage == "dup_query":
        queries = pd.read_csv(d / "test_queries.csv", sep="|", index_col=0)
        queries.loc[1, "query_id"] = queries.loc[0, "query_id"]
        queries.to_csv(d / "test_queries.csv", sep="|")
    with pytest.raises(InputError) as err:
        relevance.load(d)
    assert err.value.file.endswith(file) and err.value.column == column and err.value.row == row, str(err.value)


def test_missing_image_is_a_counted_warning_and_no_image(flickr_dir, tmp_path, caplog):
    import shutil

    d = tmp_path / "d"
    shutil.copytree(flickr_dir, d)
    (d / "train_images" / "1000_ab0.jpg").unlink()
    with caplog.at_level("WARNING"):
        data = relevance.load(d)
    assert "train: 4 of 32 pairs name an image that is not in the image folders" in caplog.text
    out = _build(data, tmp_path / "s")
    missing = (data.train["image_id"] == "1000_ab0").to_numpy()
    assert (out.dense["image_present"].to_numpy()[:32][missing] == 0).all()
    assert (out.dense["image_present"].to_numpy()[:32][~missing] == 1).all()


@functools.lru_cache(maxsize=None)
def _labels(encoder_name: str, template: str) -> np.ndarray:
    from mmstack.features.text_embed import make_encoder

    return REAL_LABEL_VECTORS(make_encoder(encoder_name), template)


@pytest.fixture(autouse=True)
def shared_label_vectors(monkeypatch):
    """The 1000 label vectors are the same in every test: embed them once per session."""
    monkeypatch.setattr(pair_match, "label_vectors", lambda encoder, template: _labels(encoder.name, template))


def _build(data: Dataset, store_dir):
    block = make_block("pair_match", SMALL)
    return block.build(BlockContext(data.label_free(), Store(store_dir), seed=0))


def test_pair_features_never_read_the_candidates_captions(flickr_dir, tmp_path):
    """A pair's features depend on its query text and pixels only: replace every other query's text (among them
    all captions of the pair's image) and blank every query_id (which names a query's source image), and the
    features of the kept query's pairs do not move."""
    data = relevance.load(flickr_dir)
    full = _build(data, tmp_path / "a").dense
    kept = data.train["query_id"].iloc[0]
    rows = data.all_rows()
    mine = (rows["query_id"] == kept).to_numpy()
    assert mine.sum() >= 3 and rows.loc[mine, "image"].nunique() == mine.sum()

    def strip(frame: pd.DataFrame) -> pd.DataFrame:
        other = frame["query_id"] != kept
        frame = frame.copy()
        frame.loc[other, "query_text"] = [f"removed text {i}" for i in range(int(other.sum()))]
        return frame.assign(query_id="?")

    stripped = dataclasses.replace(data, train=strip(data.train), test=strip(data.test),
                                   fingerprint=data.fingerprint + "-stripped")
    reduced = _build(stripped, tmp_path / "b").dense
    pd.testing.assert_frame_equal(full[mine].reset_index(drop=True), reduced[mine].reset_index(drop=True),
                                  check_exact=False, rtol=1e-5)
    assert not np.allclose(full.loc[~mine, "pm_use_cos_top1"], reduced.loc[~mine, "pm_use_cos_top1"]), \
        "the replaced queries' features did change: the test can fail"


def test_bridge_scores_follow_the_labels():
    labels = np.eye(4)[:, :3].astype(float)  # 4 classes in a 3-d text space (class 3 is the zero vector)
    labels[3] = [0, 0, 1]
    q = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    probs = np.array([[0.9, 0.05, 0.05, 0.0], [0.9, 0.05, 0.05, 0.0]])
    s = pair_match.bridge_scores(q, probs, labels, top_k=2)
    assert s["cos_top1"].tolist() == [1.0, 0.0]
    assert s["cos_bridge_all"][0] > 0.9 > 0.1 > s["cos_bridge_all"][1]
    assert np.isclose(s["prob_query_labels"][0], 0.9 + 0.05), "the query's two best labels: classes 0 and 1"


def test_metrics_by_name():
    y, pred = np.array([0.0, 0.5, 1.0]), np.array([0.0, 0.5, 0.7])
    s = score_all(y, pred)
    assert np.isclose(s["mse"], 0.03) and np.isclose(s["rmse"], np.sqrt(0.03)) and np.isclose(s["mae"], 0.1)
    assert np.isclose(s["r2"], 1 - 0.09 / 0.5) and np.isclose(s["spearman"], 1.0)


def test_twotower_contract(flickr_dir, tmp_path):
    from mmstack.features.base import BlockCache

    from .models.test_contract import assert_contract

    data = relevance.load(flickr_dir)
    store = Store(tmp_path / "w")
    target = target_data_for(data, n_folds=3, store=store, strategy="group", group_by="image")
    cache = BlockCache(data, store, seed=0, target=target)
    block = make_block("pair_match", SMALL)
    cache.get(block, lambda name: block)
    assert_contract("twotower", target, cache, ["pair_match"], "relevance", tmp_path)



def test_relevance_run_end_to_end(flickr_dir, tmp_path):
    from mmstack.config import Config
    from mmstack.pipeline import run

    cfg = Config.load(ROOT / "configs" / "relevance.toml", [
        "folds.n_folds=3", "models.train=['lgb', 'twotower']", "models.lgb.max_rounds=50",
        "models.twotower.epochs=3", "stack.blenders=['weights']",
        *(f"features.pair_match.{k}={v}" for k, v in SMALL.items())])
    run_dir = run(cfg, flickr_dir, tmp_path / "w")
    sub = pd.read_csv(run_dir / "submission.csv")
    data = relevance.load(flickr_dir)
    assert list(sub.columns) == ["image", "query_id", "relevance"] and len(sub) == data.n_test
    assert sub[["image", "query_id"]].equals(data.test[["image", "query_id"]])
    assert sub["relevance"].between(0, 1).all()


def test_caption_bridge_never_uses_the_candidates_own_captions(flickr_dir, tmp_path):
    """Remove every caption of one image (its queries stay, but no longer name it as their source): the values
    of that image's pairs, as validated and as every fold's model trains on them, do not move; other images'
    values do (the captions were used, just never for their own image)."""
    from mmstack.features.base import BlockCache

    def build(data, where):
        store = Store(where)
        target = target_data_for(dataclasses.replace(data, fingerprint="same-folds"), n_folds=3, store=store,
                                 strategy="group", group_by="image")
        cache = BlockCache(data, store, seed=0, target=target)
        made = {"pair_match": make_block("pair_match", SMALL), "caption_bridge": make_block("caption_bridge")}
        return cache.get(made["caption_bridge"], lambda n: made[n])

    data = relevance.load(flickr_dir)
    full = build(data, tmp_path / "a")
    image = data.train["image"].iloc[0]
    renamed = data.train.assign(query_id=data.train["query_id"].str.replace(image, "9999_gone.jpg", regex=False))
    assert (renamed["query_id"] != data.train["query_id"]).sum() >= 3
    stripped = dataclasses.replace(data, train=renamed, fingerprint=data.fingerprint + "-no-captions")
    reduced = build(stripped, tmp_path / "b")
    mine = (data.train["image"] == image).to_numpy()
    assert list(full.dense.columns) == ["cb_use_cos", "cb_use_knn_max", "cb_use_knn_wmean"]
    for column in full.dense.columns:
        assert np.isfinite(full.dense[column]).all()
        assert np.allclose(full.dense[column][:data.n_train][mine], reduced.dense[column][:data.n_train][mine])
        for k in full.train_views:
            assert np.allclose(full.train_views[k][column][mine], reduced.train_views[k][column][mine])
        assert not np.allclose(full.dense[column][:data.n_train][~mine],
                               reduced.dense[column][:data.n_train][~mine]), column


def test_caption_neighbours_skip_the_querys_own_text():
    """A query is new at search time: its own text, remembered as a caption, must not score it."""
    from mmstack.features.caption_bridge import fit_memory, score_pairs

    rng = np.random.default_rng(0)
    z_images = rng.normal(size=(4, 6))
    captions = unit_rows(rng.normal(size=(4, 3)))
    memory = fit_memory(z_images, captions, alpha=1.0)
    queries = np.vstack([captions[0], unit_rows(rng.normal(size=(1, 3)))])
    z = z_images[:1] + 0.01 * rng.normal(size=(1, 6))  # an image very like caption item 0's image
    out = score_pairs(memory, z, np.array([True]), queries, np.array([0, 0]), np.array([0, 1]), neighbours=2)
    assert out.shape == (2, 3) and np.isfinite(out).all()
    assert out[0, 1] < 0.999, "the query's own caption is skipped"
    expected = np.max([captions[j] @ captions[0] for j in range(1, 4)
                       if j in np.argsort(-(unit_rows(z) @ unit_rows(z_images).T)[0])[:3]])
    assert np.isclose(out[0, 1], expected)


def test_caption_bridge_refuses_folds_not_grouped_by_image(flickr_dir, tmp_path):
    """Under plain K-fold a candidate image's pairs straddle folds, so its own captions would reach its features
    through the map fitted on the other folds: the run stops before any block is built, saying what to set."""
    from mmstack.config import Config
    from mmstack.errors import ConfigError
    from mmstack.pipeline import run

    cfg = Config.load(ROOT / "configs" / "relevance.toml", [
        "folds.n_folds=3", "folds.strategy=\"kfold\"", "models.train=['lgb']",
        *(f"features.pair_match.{k}={v}" for k, v in SMALL.items())])
    with pytest.raises(ConfigError, match='caption_bridge needs folds grouped by .image.*folds.strategy = "group"'):
        run(cfg, flickr_dir, tmp_path / "w")
    assert not (tmp_path / "w" / "features" / "pair_match").exists(), "stopped before building anything"
