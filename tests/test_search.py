"""Search: scores agree with the trained stack's test predictions, withheld images never come back, a query for
children gets a notice, the contact sheet is written, image vectors are cached. Tiny drawn data."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from mmstack.cli import app
from mmstack.config import Config
from mmstack.legal import MinorFilter
from mmstack.moderation_images.minors import ChildFilter
from mmstack.pipeline import run
from mmstack.search import NOTICE_MINORS, search

from .conftest import ROOT
from .test_relevance import SMALL, shared_label_vectors, write_flickr  # noqa: F401  (fixture)

OVERRIDES = ["folds.n_folds=3", "models.train=['lgb', 'twotower']", "models.lgb.max_rounds=50",
             "models.twotower.epochs=3", "stack.blenders=['weights', 'ridge']",
             *(f"features.pair_match.{k}={v}" for k, v in SMALL.items())]


def _config():
    return Config.load(ROOT / "configs" / "relevance.toml", OVERRIDES)


def _faces_only(faces: MinorFilter) -> ChildFilter:
    """The search's filter with the classifier's threshold at 1 (a probability never reaches it): faces decide."""
    return ChildFilter(threshold=1.0, face_filter=faces, progress=False)


def _null_filter() -> ChildFilter:
    """Nothing withheld: no face found, classifier threshold 1."""
    return _faces_only(MinorFilter(estimator=lambda image: [], upscale_to=None, progress=False))


class WideImagesAreChildren:
    """A stand-in estimator: one face aged 8 in images wider than 150 px, no face otherwise; counts its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, image: Image.Image) -> list[float]:
        self.calls += 1
        return [8.0] if image.width > 150 else []


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("flickr-search")
    write_flickr(root)
    work = root / "work"
    mp = pytest.MonkeyPatch()
    from . import test_relevance

    mp.setattr(test_relevance.pair_match, "label_vectors",
               lambda encoder, template: test_relevance._labels(encoder.name, template))
    run_dir = run(_config(), root, work)
    yield root, work, pd.read_csv(run_dir / "submission.csv")
    mp.undo()


def test_search_scores_match_the_stacks_test_predictions(trained):
    root, work, submission = trained
    query_id = "2000_cd0.jpg#0"
    query = pd.read_csv(root / "test_queries.csv", sep="|", index_col=0).set_index("query_id").loc[query_id,
                                                                                                    "query_text"]
    result = search(_config(), query, root / "test_images", top=10, input_dir=root, workdir=work,
                    child_filter=_null_filter())
    expected = submission[submission["query_id"] == query_id].set_index("image")["relevance"]
    got = result.ranked.set_index("image")["score"]
    assert len(got) == 4 and result.withheld == 0 and result.n_images == 4
    assert np.allclose(got.sort_index(), expected.sort_index(), atol=2e-3), (got, expected)
    assert got.is_monotonic_decreasing


def test_withheld_images_never_come_back(trained, tmp_path):
    root, work, _ = trained
    folder = tmp_path / "imgs"
    shutil.copytree(root / "test_images", folder)
    Image.new("RGB", (200, 90), (200, 120, 90)).save(folder / "3000_wide.jpg", "JPEG")
    estimator = WideImagesAreChildren()
    mf = _faces_only(MinorFilter(estimator=estimator, upscale_to=None, progress=False))
    sheet = tmp_path / "sheet.png"
    result = search(_config(), "a square", folder, top=10, input_dir=root, workdir=work, sheet=sheet,
                    child_filter=mf)
    assert result.withheld == 1 and "3000_wide.jpg" not in set(result.ranked["image"])
    assert len(result.ranked) == 4 and result.n_images == 5
    assert sheet.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and result.sheet == sheet
    calls = estimator.calls
    again = search(_config(), "a red square", folder, top=2, input_dir=root, workdir=work, child_filter=mf)
    assert estimator.calls == calls, "decisions cached per image"
    assert len(again.ranked) == 2 and "3000_wide.jpg" not in set(again.ranked["image"])
    cached = list((work / "features" / "search_images").rglob("*.joblib"))
    assert len(cached) == 5, "one cached vector file per distinct image"


def _model_flagging(folder, positive: str):
    """A real minors model (EfficientNet-Lite0 at 224 px -> logistic), trained here on the folder's images with
    ``positive`` as the only image that "shows a child": what the shipped model does, on data we control."""
    from sklearn.linear_model import LogisticRegression

    from mmstack.moderation_images.minors import ImageFeatures, MinorsModel

    names = sorted(f.name for f in folder.iterdir())
    X = ImageFeatures((224,))([Image.open(folder / n).convert("RGB") for n in names])
    y = np.array([n == positive for n in names])
    mean, scale = X.mean(axis=0), X.std(axis=0) + 1e-6
    fitted = LogisticRegression(C=10.0, max_iter=2000).fit((X - mean) / scale, y)
    model = MinorsModel((224,), False, mean, scale, fitted.coef_[0], float(fitted.intercept_[0]), 0.5, 0.5)
    scores = dict(zip(names, model.probability(X)))
    assert scores[positive] > 0.5 and max(v for n, v in scores.items() if n != positive) < 0.5
    return model


@pytest.fixture
def flagged_orange(trained, tmp_path, monkeypatch):
    """The test images plus an orange drawing that the (monkeypatched) minors classifier flags: (root, work, folder)."""
    from mmstack.moderation_images import minors

    root, work, _ = trained
    folder = tmp_path / "imgs"
    shutil.copytree(root / "test_images", folder)
    Image.new("RGB", (200, 90), (230, 150, 40)).save(folder / "3000_orange.jpg", "JPEG")
    model = _model_flagging(folder, "3000_orange.jpg")
    monkeypatch.setattr(minors.MinorsModel, "load", classmethod(lambda cls, path=None: model))
    return root, work, folder


def test_search_withholds_what_the_minors_classifier_flags_and_never_returns_it(flagged_orange):
    """The search's default legal filter is the minors classifier OR the face check: with no face found, an image
    the classifier flags is withheld, for every query, even one that describes it."""
    root, work, folder = flagged_orange
    faces = MinorFilter(estimator=lambda image: [], upscale_to=None, progress=False)
    for query in ("an orange rectangle", "a red square", "a square on a grey background"):
        result = search(_config(), query, folder, top=10, input_dir=root, workdir=work, minor_filter=faces)
        assert result.withheld == 1 and result.n_images == 5 and len(result.ranked) == 4
        assert "3000_orange.jpg" not in set(result.ranked["image"])
        assert result.withheld_images["3000_orange.jpg"].startswith("minors classifier")
    assert (work / "features" / "legal" / "minors_scores.json").is_file()


def test_mmstack_search_command_never_lists_a_withheld_image(flagged_orange, tmp_path, monkeypatch):
    """End to end through the CLI: the image the minors classifier flags is withheld and absent from the printed
    ranking, whatever the query, even with --top larger than the folder; the others are all listed."""
    from mmstack import search as search_module

    root, work, folder = flagged_orange
    # no face anywhere (the real detector is slow and finds none in drawings): the classifier alone withholds
    monkeypatch.setattr(search_module, "MinorFilter", lambda **kw: MinorFilter(estimator=lambda image: [],
                                                                                 upscale_to=None, progress=False))
    others = sorted(f.name for f in folder.iterdir() if f.name != "3000_orange.jpg")
    for query in ("an orange rectangle", "a red square"):
        args = ["search", str(ROOT / "configs" / "relevance.toml"), query, "--images", str(folder), "--input",
                str(root), "--workdir", str(work), "--top", "10", "--sheet", str(tmp_path / "sheet.png")]
        for o in OVERRIDES:
            args += ["--set", o]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        assert "3000_orange" not in result.output and all(name in result.output for name in others)
        assert "withheld by the legal filter (minors classifier or a face estimated under age): 1 image(s)" \
            in result.output


def test_the_search_filter_is_the_shipped_classifier_with_the_config_threshold():
    from mmstack.moderation_images.minors import MinorsModel
    from mmstack.search import legal_filter

    shipped = MinorsModel.load()
    default = legal_filter(_config())
    assert isinstance(default, ChildFilter) and default.model.version == shipped.version
    assert default.threshold == shipped.threshold and default.face_filter is not None
    assert default.face_filter.age_threshold == 25
    tuned = legal_filter(Config.load(ROOT / "configs" / "relevance.toml", [*OVERRIDES, "search.minor_threshold=0.4"]),
                         age_threshold=30)
    assert tuned.threshold == 0.4 and tuned.face_filter.age_threshold == 30


def test_query_for_children_gets_a_notice(trained):
    root, work, _ = trained
    result = search(_config(), "Дети играют во дворе", root / "test_images", input_dir=root, workdir=work)
    assert result.notice == NOTICE_MINORS and result.ranked.empty


def test_search_cli(trained, tmp_path):
    root, work, _ = trained
    args = ["search", str(ROOT / "configs" / "relevance.toml"), "two little girls", "--images",
            str(root / "test_images"), "--input", str(root), "--workdir", str(work)]
    for o in OVERRIDES:
        args += ["--set", o]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0 and NOTICE_MINORS in result.output
    result = CliRunner().invoke(app, [*args[:2], "x", "--images", str(tmp_path / "none"), *args[4:]])
    assert result.exit_code != 0


def test_russian_query_is_answered(trained):
    root, work, _ = trained
    result = search(_config(), "красный квадрат на сером фоне", root / "test_images", top=3, input_dir=root,
                    workdir=work, child_filter=_null_filter())
    assert result.notice is None and len(result.ranked) == 3
    assert result.ranked["score"].between(0, 1).all() and result.ranked["score"].is_monotonic_decreasing




# a model small enough to split on 32 rows, so that scores follow the features (the default predicts a constant)
SENSITIVE = [*OVERRIDES, "models.train=['lgb']", "models.lgb.min_data_in_leaf=2", "models.lgb.num_leaves=8",
             "models.lgb.learning_rate=0.3", "models.lgb.early_stopping=200"]


def _sensitive_config():
    return Config.load(ROOT / "configs" / "relevance.toml", SENSITIVE)


def _scores(result) -> dict[str, float]:
    return dict(zip(result.ranked["image"], result.ranked["score"]))


def test_scores_do_not_move_with_corrupt_files_beside_the_images(trained, tmp_path):
    """The issue's case: the same images scored 0.502 / 0.456 / 0.418 alone and 0.515 / 0.471 / 0.437 with three
    corrupt files beside them. Corrupt files are no candidates: counted apart, they change no score."""
    root, work, _ = trained
    folder = tmp_path / "imgs"
    shutil.copytree(root / "test_images", folder)
    alone = search(_sensitive_config(), "a red square", folder, top=10, input_dir=root, workdir=work,
                   child_filter=_null_filter())
    (folder / "3001_garbage.jpg").write_bytes(b"not an image at all")
    (folder / "3002_cut.jpg").write_bytes((root / "test_images" / "2000_cd0.jpg").read_bytes()[:300])
    (folder / "3003_text.jpg").write_text("a text file called .jpg\n")
    beside = search(_sensitive_config(), "a red square", folder, top=10, input_dir=root, workdir=work,
                    child_filter=_null_filter())
    assert len(set(_scores(alone).values())) > 1, "the model must tell the images apart for this test to mean much"
    assert _scores(alone) == pytest.approx(_scores(beside), abs=1e-7) and len(_scores(beside)) == 4
    assert beside.n_images == 4 and beside.withheld == 0, "undecodable files are not counted as withheld"
    assert beside.unreadable == 3 and set(beside.unreadable_images) == {"3001_garbage.jpg", "3002_cut.jpg",
                                                                        "3003_text.jpg"}


def test_an_image_scores_the_same_alone_among_five_and_among_many(trained, tmp_path):
    """Pair features depend on the query and the image only (a fixed reference set of training images, not the
    query's other candidates): the skew between training (about 5 candidates per query) and search is 0."""
    from .test_relevance import COLOURS, _draw

    root, work, _ = trained
    target = "2002_cd2.jpg"
    folders = {n: tmp_path / f"among{n}" for n in (1, 5, 25)}
    for n, folder in folders.items():
        folder.mkdir()
        shutil.copy(root / "test_images" / target, folder / target)
        for i in range(n - 1):
            _draw(folder / f"{4000 + i}_x{i}.jpg", list(COLOURS)[i % len(COLOURS)], ("square", "circle")[i % 2],
                  100 + i)
    results = [search(_sensitive_config(), "a blue square", folder, top=30, input_dir=root, workdir=work,
                      child_filter=_null_filter()) for folder in folders.values()]
    scores = [_scores(r)[target] for r in results]
    assert len(set(_scores(results[2]).values())) > 1
    assert max(scores) - min(scores) < 1e-7, scores  # before the reference set: 0.346, 0.406, 0.411


def test_special_files_in_the_search_folder_are_skipped_and_counted(trained, tmp_path):
    root, work, _ = trained
    folder = tmp_path / "imgs"
    shutil.copytree(root / "test_images", folder)
    os.symlink("/dev/zero", folder / "3001_zero.jpg")
    os.symlink("/etc/passwd", folder / "3002_passwd.jpg")
    os.mkfifo(folder / "3003_fifo.jpg")
    result = search(_config(), "a red square", folder, top=10, input_dir=root, workdir=work,
                    child_filter=_null_filter())
    assert len(result.ranked) == 4 and result.withheld == 0 and result.unreadable == 3
    assert result.unreadable_images == {"3001_zero.jpg": "a symlink out of the folder",
                                        "3002_passwd.jpg": "a symlink out of the folder",
                                        "3003_fifo.jpg": "not a regular file"}


def test_empty_query_is_refused_and_a_long_one_is_shortened_in_display(trained, tmp_path):
    from mmstack.errors import ConfigError
    from mmstack.search import shown_query

    root, work, _ = trained
    for query in ("", "   \n\t"):
        with pytest.raises(ConfigError, match="the query is empty"):
            search(_config(), query, root / "test_images", input_dir=root, workdir=work)
    long = "a red square on a grey background " * 40
    assert len(shown_query(long)) == 80 and shown_query(long).endswith("\u2026")
    assert shown_query("a  red\nsquare") == "a red square"
    args = ["search", str(ROOT / "configs" / "relevance.toml"), " ", "--images", str(root / "test_images"),
            "--input", str(root), "--workdir", str(tmp_path / "w")]
    empty = CliRunner().invoke(app, args)
    assert empty.exit_code != 0 and "the query is empty" in str(empty.exception)
    assert not (tmp_path / "w").exists(), "refused before any work"
