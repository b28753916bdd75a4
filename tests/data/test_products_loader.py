"""Catalogue loader: typed frames, labels, images found by index, counted image problems, clear input errors."""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mmstack.data.products import decode_image, load_catalogue, normalise_attributes, parse_attributes
from mmstack.errors import InputError

RED, GREEN, BLUE, WHITE = (220, 20, 20), (20, 200, 20), (20, 20, 220), (250, 250, 250)


def _image_bytes(colour, fmt="JPEG", size=(16, 12)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format=fmt)
    return buf.getvalue()


def _rows() -> pd.DataFrame:
    return pd.DataFrame({
        "nm": ["101", "102", "103", "104", "a_1"],
        "title": ["Футболка женская", "", "Кружка", "Кальян", "Шарф"],
        "description": ["<p>Хлопок</p>", "", "Для чая.", "", "Тёплый"],
        "brend": ["URBAN FOX", "", "Home&Co", "", ""],
        "attributes": ['{"Цвет": "белый", "Материал": "хлопок"}', "Материал: хлопок; Цвет: белый", "", "",
                       "Цвет:красный"],
        "category": ["Одежда", "Одежда", "", "Товары для взрослых", "Аксессуары"],
        "sub_category": ["Футболки", "Футболки", "Кружки", "Кальяны", ""],
        "price": ["990", "1299.5", "", "4500", "0"],
        "gender": ["female", "", "", "", ""],
        "age_group": ["adult", "", "", "", ""],
        "isadult": ["false", "NO", "", "True", "0"],
        "group": ["g1", "g1", "", "g3", "g4"],
    })


@pytest.fixture
def catalogue_dir(tmp_path) -> Path:
    """Five products; 101 has three images in mixed formats (and one past k=10), 102 none, 103 one bare file,
    104 a corrupt one, a_1 one that must not go to nm 'a'."""
    root = tmp_path / "cat"
    (root / "images").mkdir(parents=True)
    _rows().to_csv(root / "products.csv", index=False)
    files = {"101_2.png": _image_bytes(GREEN, "PNG"), "101.jpg": _image_bytes(RED), "101_10.webp": _image_bytes(BLUE, "WEBP"),
             "101_11.jpg": _image_bytes(WHITE), "103.GIF": _image_bytes(BLUE, "GIF"), "104_1.jpg": b"not an image",
             "a_1.jpeg": _image_bytes(WHITE), "notes.txt": b"ignored"}
    for name, data in files.items():
        (root / "images" / name).write_bytes(data)
    return root


def _close(img: Image.Image, colour, tol=12) -> bool:
    return bool(np.abs(np.asarray(img, dtype=int).mean((0, 1)) - colour).max() <= tol)


def test_frame_and_labels_are_typed_in_file_order(catalogue_dir):
    cat = load_catalogue(catalogue_dir)
    assert cat.frame["nm"].tolist() == ["101", "102", "103", "104", "a_1"]
    assert list(cat.frame.columns[:6]) == ["nm", "title", "description", "brend", "attributes", "attributes_parsed"]
    assert cat.frame["title"].iloc[1] is None and cat.frame["title"].iloc[0] == "Футболка женская"
    assert cat.label_columns == ["category", "sub_category", "price", "gender", "age_group", "isadult", "group"]
    assert cat.labels["price"].dtype == np.float64 and cat.labels["isadult"].dtype == np.float64
    np.testing.assert_allclose(cat.labels["price"], [990, 1299.5, np.nan, 4500, 0])
    np.testing.assert_array_equal(cat.labels["isadult"], [0.0, 0.0, np.nan, 1.0, 0.0])
    assert cat.labels["category"].tolist() == ["Одежда", "Одежда", None, "Товары для взрослых", "Аксессуары"]
    assert cat.labels["group"].isna().tolist() == [False, False, True, False, False]
    assert len(cat) == 5 and len(cat.fingerprint) == 16


def test_attributes_are_normalised_whatever_their_format_and_order(catalogue_dir):
    cat = load_catalogue(catalogue_dir)
    parsed = cat.frame["attributes_parsed"].tolist()
    assert parsed[0] == parsed[1] == "материал: хлопок; цвет: белый"
    assert parsed[2] == "" and parsed[4] == "цвет: красный"
    assert parse_attributes('[{"name": "Цвет", "value": ["чёрный", "белый"]}, {"name": "Размер", "value": 44}]') == \
        {"цвет": "чёрный, белый", "размер": "44"}
    assert parse_attributes("{broken json") is None
    assert normalise_attributes(parse_attributes("Б: 2; а: 1; без ключа")) == "без ключа; а: 1; б: 2"


def test_images_are_found_by_index_in_k_order_and_decoded(catalogue_dir):
    cat = load_catalogue(catalogue_dir)
    assert cat.images == [["101.jpg", "101_2.png", "101_10.webp"], [], ["103.GIF"], ["104_1.jpg"], ["a_1.jpeg"]]
    colours = [cat.open_image(0, k) for k in range(3)]
    assert all(img is not None and img.mode == "RGB" for img in colours)
    assert [_close(img, c) for img, c in zip(colours, (RED, GREEN, BLUE))] == [True, True, True]
    assert _close(cat.open_image(2), BLUE)
    assert cat.open_image(1) is None, "no image, not a crash"
    assert cat.problems["no_image"] == 1
    assert cat.problems["unmatched"] == 1, "101_11.jpg is past k = 10"


def test_corrupt_missing_and_oversized_images_are_counted_not_raised(catalogue_dir):
    cat = load_catalogue(catalogue_dir)
    assert cat.open_image(3) is None
    assert cat.problems["unreadable"] == 1
    (catalogue_dir / "images" / "103.GIF").unlink()  # gone after the scan
    assert cat.open_image(2) is None
    assert cat.problems["unreadable"] == 2
    small = load_catalogue(catalogue_dir, max_bytes=100)
    assert small.open_image(0) is None and small.problems["too_large"] == 1


def test_image_problems_are_reported_as_counted_warnings(catalogue_dir, caplog):
    cat = load_catalogue(catalogue_dir)
    assert cat.open_image(3) is None  # the corrupt file reads as "no image"
    caplog.clear()
    with caplog.at_level("WARNING", logger="mmstack.data.products"):
        cat.report()
    lines = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "products: 1 image reads failed: missing or not a decodable image (treated as no image)" in lines
    assert len(lines) == sum(1 for v in cat.problems.values() if v)


def test_decode_image_checks_pixel_and_byte_limits():
    data = _image_bytes(RED, size=(40, 30))
    assert decode_image(data, max_pixels=1200, max_bytes=10_000).size == (40, 30)
    assert decode_image(data, max_pixels=1199, max_bytes=10_000) is None
    assert decode_image(data, max_pixels=1200, max_bytes=len(data) - 1) is None
    assert decode_image(b"GIF89a broken", 10**6, 10**6) is None
    tiff = io.BytesIO()
    Image.new("RGB", (8, 8)).save(tiff, format="TIFF")
    assert decode_image(tiff.getvalue(), 10**6, 10**6) is None, "only JPEG, PNG, GIF and WebP decoders"


def test_non_regular_files_are_skipped_and_counted(catalogue_dir, tmp_path):
    images = catalogue_dir / "images"
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(_image_bytes(WHITE))
    os.symlink(outside, images / "102.jpg")  # a link out of the folder
    os.mkfifo(images / "102_1.jpg")  # would hang a naive read
    (images / "102_2.jpg").mkdir()
    os.symlink(images / "101.jpg", images / "103_1.jpg")  # a link inside the folder is fine
    cat = load_catalogue(catalogue_dir)
    assert cat.images[1] == []
    assert cat.problems["not_regular"] == 3
    assert cat.images[2] == ["103.GIF", "103_1.jpg"] and _close(cat.open_image(2, 1), RED)


def test_parquet_input_equals_csv_input(catalogue_dir, tmp_path):
    rows = _rows()
    typed = rows.assign(price=pd.to_numeric(rows["price"]).astype(float),
                        isadult=pd.array([False, False, None, True, False], dtype="boolean"))
    other = tmp_path / "pq"
    other.mkdir()
    typed.replace({"": None}).to_parquet(other / "products.parquet", index=False)
    (other / "images").symlink_to(catalogue_dir / "images")
    a, b = load_catalogue(catalogue_dir), load_catalogue(other)
    pd.testing.assert_frame_equal(a.frame, b.frame)
    pd.testing.assert_frame_equal(a.labels, b.labels)
    assert a.images == b.images


def test_int_nm_in_parquet_is_kept_as_string(tmp_path):
    pd.DataFrame({"nm": [7, 12], "title": ["a", "b"]}).to_parquet(tmp_path / "products.parquet")
    cat = load_catalogue(tmp_path)
    assert cat.frame["nm"].tolist() == ["7", "12"] and cat.label_columns == []
    assert cat.problems["no_image"] == 2


def test_fingerprint_follows_table_and_image_bytes(catalogue_dir):
    first = load_catalogue(catalogue_dir).fingerprint
    assert load_catalogue(catalogue_dir).fingerprint == first
    (catalogue_dir / "images" / "103.GIF").write_bytes(_image_bytes(RED, "GIF"))
    assert load_catalogue(catalogue_dir).fingerprint != first


def _set(col, row, value):
    def fn(f):
        f[col] = f[col].astype(object)
        f.loc[row, col] = value
        return f
    return fn


BAD_INPUTS = [
    ("missing nm column", lambda f: f.drop(columns=["nm"]), "nm", None, "missing column"),
    ("missing title column", lambda f: f.drop(columns=["title"]), "title", None, "missing column"),
    ("duplicated nm", _set("nm", 3, "101"), "nm", 4, "duplicated id '101'"),
    ("empty nm", _set("nm", 2, ""), "nm", 3, "empty value"),
    ("negative price", _set("price", 1, "-5"), "price", 2, "outside [0, inf]"),
    ("non-numeric price", _set("price", 4, "990 руб"), "price", 5, "expected a number"),
    ("non-boolean isadult", _set("isadult", 2, "maybe"), "isadult", 3, "expected a boolean"),
    ("path as nm", _set("nm", 1, "../../etc/passwd"), "nm", 2, "not a plain file name"),
    ("folder in nm", _set("nm", 0, "img/101"), "nm", 1, "not a plain file name"),
    ("hidden-file nm", _set("nm", 4, ".101"), "nm", 5, "not a plain file name"),
]


@pytest.mark.parametrize("what,edit,column,row,message", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_names_file_column_and_row(catalogue_dir, what, edit, column, row, message):
    path = catalogue_dir / "products.csv"
    edit(pd.read_csv(path, dtype=str, keep_default_na=False)).to_csv(path, index=False)
    with pytest.raises(InputError) as err:
        load_catalogue(catalogue_dir)
    exc = err.value
    assert exc.file == str(path) and exc.column == column and exc.row == row
    assert message in str(exc) and str(path) in str(exc)
    assert exc.exit_code == 2


def test_bad_parquet_value_names_its_row(tmp_path):
    pd.DataFrame({"nm": [1, 2, 3], "title": ["a", "b", "c"], "price": [1.0, -2.0, 3.0]}).to_parquet(
        tmp_path / "products.parquet")
    with pytest.raises(InputError) as err:
        load_catalogue(tmp_path)
    assert err.value.column == "price" and err.value.row == 2 and "products.parquet" in err.value.file


def test_table_must_be_there_and_unambiguous(catalogue_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="products.csv or products.parquet"):
        load_catalogue(tmp_path / "empty")
    _rows().to_parquet(catalogue_dir / "products.parquet")
    with pytest.raises(InputError, match="keep one"):
        load_catalogue(catalogue_dir)
    (catalogue_dir / "products.csv").unlink()
    (catalogue_dir / "products.parquet").write_bytes(b"PAR1 broken")
    with pytest.raises(InputError, match="not a readable parquet"):
        load_catalogue(catalogue_dir)


def test_extra_columns_are_kept_as_text(tmp_path):
    (tmp_path / "products.csv").write_text("nm,title,seller\n1,Футболка,ООО Ромашка\n2,Кружка,\n")
    cat = load_catalogue(tmp_path)
    assert cat.frame["seller"].tolist() == ["ООО Ромашка", None]
    assert cat.frame["description"].isna().all() and cat.frame["attributes_parsed"].tolist() == ["", ""]
    assert json.loads(json.dumps(dict(cat.problems))) == {"no_image": 2}


def test_one_stem_in_two_formats_keeps_the_jpeg_and_counts_the_other(catalogue_dir):
    (catalogue_dir / "images" / "102.png").write_bytes(_image_bytes(GREEN, "PNG"))
    (catalogue_dir / "images" / "102.jpg").write_bytes(_image_bytes(RED))
    cat = load_catalogue(catalogue_dir)
    assert cat.images[1] == ["102.jpg"] and cat.problems["duplicate_stem"] == 1
    assert _close(cat.open_image(1), RED)
