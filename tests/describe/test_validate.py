"""Input validation of a listing: each violation is one message naming the field or the file."""
from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from mmstack.describe.validate import MAX_PHOTO_BYTES, ValidationError, check_photo, parse_attributes, validate_listing


def png_bytes(size=(40, 30), colour=(200, 30, 30), fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, fmt)
    return buf.getvalue()


def problems(attributes=None, photos=()):
    with pytest.raises(ValidationError) as err:
        validate_listing(attributes, photos)
    return {p.field: p.message for p in err.value.problems}


def test_good_listing_passes_with_photo_formats_by_content():
    photos = [("a.jpg", png_bytes(fmt="JPEG"), None), ("b.gif", png_bytes(fmt="GIF"), None),
              ("named.jpg", png_bytes(fmt="PNG"), None)]  # a PNG named .jpg is fine: the content decides
    listing = validate_listing(json.dumps({"Цена": "5000", "Название": "Куртка"}), photos)
    assert listing.attributes == {"Цена": "5000", "Название": "Куртка"}
    assert [p.format for p in listing.photos] == ["jpg", "gif", "png"]
    assert listing.photos[0].image.size == (40, 30)
    assert "Цена: 5000" in listing.text


def test_attributes_must_be_an_object_of_strings():
    assert "not valid JSON" in problems("{oops")["attributes"]
    assert "got a list" in problems("[1, 2]")["attributes"]
    found = problems(json.dumps({"Цена": 5000, "Размер": None, "Город": "Москва"}))
    assert found['attributes["Цена"]'] == 'expected a string, got a number (write "5000")'
    assert found['attributes["Размер"]'] == "expected a string, got null"
    assert 'attributes["Город"]' not in found


def test_empty_listing_is_refused():
    assert problems(None, [])["listing"] == "empty: give at least one attribute or one photo"
    assert problems('{"Цена": "  "}', [])["listing"].startswith("empty")


def test_photo_problems_name_the_file():
    found = problems('{"a": "b"}', [("notes.jpg", b"hello, not an image", None), ("empty.png", b"", None),
                                    ("big.jpg", b"x", MAX_PHOTO_BYTES + 1),
                                    ("pic.bmp", png_bytes(fmt="BMP"), None),
                                    ("cut.png", png_bytes((400, 300))[:200], None)])
    assert found["photo 'notes.jpg'"] == "not an image (expected a JPEG, PNG or GIF file)"
    assert found["photo 'empty.png'"] == "empty file"
    assert found["photo 'big.jpg'"] == "25.0 MB, over the 25 MB limit"
    assert found["photo 'pic.bmp'"] == "a BMP image: expected a JPEG, PNG or GIF file"
    assert "damaged or truncated" in found["photo 'cut.png'"] or "not an image" in found["photo 'cut.png'"]


def test_too_many_photos_and_decompression_bomb():
    eleven = [(f"{i}.png", png_bytes(), None) for i in range(11)]
    assert problems(None, eleven)["photos"] == "11 photos: at most 10"
    # a PNG whose header declares 20000 x 20000 pixels (400 MP) is refused before decoding
    bomb = io.BytesIO()
    Image.new("1", (20000, 20000)).save(bomb, "PNG")
    photo, problem = check_photo("bomb.png", bomb.getvalue())
    assert photo is None and "over 50 megapixels" in problem.message


def test_open_files_are_read_one_at_a_time(tmp_path):
    path = tmp_path / "p.png"
    path.write_bytes(png_bytes())
    with open(path, "rb") as fh:
        listing = validate_listing(None, [("p.png", fh, None), ("q.png", path, None)])
    assert len(listing.photos) == 2


def test_parse_attributes_strips_and_keeps_names():
    attrs, found = parse_attributes({" Цвет ": " красный "})
    assert attrs == {"Цвет": "красный"} and not found


def test_cli_names_each_bad_input_in_one_line(tmp_path):
    """`mmstack describe` refuses bad input with one line and exit 2, before any model loads."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    attrs = tmp_path / "attrs.json"
    attrs.write_text('{"Цена": 5000}', encoding="utf-8")
    notes = tmp_path / "notes.jpg"
    notes.write_text("hello")
    done = subprocess.run([sys.executable, "-m", "mmstack", "describe", "--attrs", str(attrs), str(notes),
                           str(tmp_path / "missing.png")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert f'{attrs}["Цена"]: expected a string, got a number (write "5000")' in lines[0]
    assert f"photo '{notes}': not an image (expected a JPEG, PNG or GIF file)" in lines[0]
    assert "missing.png': cannot be read (missing)" in lines[0]
