"""Loader and validator: every bad input gives a clear InputError naming file, column and row."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from mmstack.data import avito
from mmstack.data.images import ImageSource
from mmstack.errors import InputError
from mmstack.store import Store


def _edit(path: Path, fn) -> None:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame = fn(frame)
    frame.to_csv(path, index=False)


def test_loads_generated_data_with_multiline_descriptions(tiny_avito_dir):
    data = avito.load(tiny_avito_dir)
    assert data.n_train == 600 and data.n_test == round(600 * avito_test_ratio())
    assert data.train["description"].str.contains("\n", na=False).any(), "multi-line descriptions survive parsing"
    assert data.train["price"].dtype == float and data.train["activation_date"].dtype.kind == "M"
    assert set(data.extras) == {"train_active", "periods_train"}
    assert len(data.images["train"]) > 0.85 * data.n_train
    y = data.labelled(data.target())[1]
    assert len(y) == data.n_train and y.min() >= 0 and y.max() <= 1
    assert "deal_probability" not in data.train.columns, "labels live apart from the feature tables"
    assert data.target().name == "deal_probability" and data.target().metric.name == "rmse"
    assert (data.test["activation_date"].min() > data.train["activation_date"].max())


def avito_test_ratio() -> float:
    from mmstack.data.avito_synth import TEST_SHARE

    return TEST_SHARE


def test_parsed_tables_are_cached_by_content(tiny_avito_dir, tmp_path, caplog):
    store = Store(tmp_path)
    first = avito.load(tiny_avito_dir, store)
    with caplog.at_level("INFO"):
        second = avito.load(tiny_avito_dir, store)
    assert "reused parsed tables" in caplog.text
    assert first.fingerprint == second.fingerprint
    pd.testing.assert_frame_equal(first.train, second.train)


BAD_INPUTS = [
    ("missing column", "train.csv", lambda f: f.drop(columns=["price"]), "price", None, "missing column"),
    ("non-numeric price", "train.csv", lambda f: f.assign(price=["12 руб" if i == 4 else p for i, p in enumerate(f["price"])]),
     "price", 5, "expected a number"),
    ("unparsable date", "train.csv",
     lambda f: f.assign(activation_date=["15.03.2017" if i == 9 else d for i, d in enumerate(f["activation_date"])]),
     "activation_date", 10, "expected a date"),
    ("duplicated item_id", "train.csv", lambda f: f.assign(item_id=[f["item_id"][0] if i == 6 else v for i, v in enumerate(f["item_id"])]),
     "item_id", 7, "duplicated id"),
    ("target above 1", "train.csv",
     lambda f: f.assign(deal_probability=["1.5" if i == 2 else v for i, v in enumerate(f["deal_probability"])]),
     "deal_probability", 3, "outside [0, 1]"),
    ("target below 0", "train.csv",
     lambda f: f.assign(deal_probability=["-0.1" if i == 0 else v for i, v in enumerate(f["deal_probability"])]),
     "deal_probability", 1, "outside [0, 1]"),
    ("test has an extra column", "test.csv", lambda f: f.assign(extra="x"), "extra", None, "do not match"),
    ("test lacks a column", "test.csv", lambda f: f.drop(columns=["title"]), "title", None, "do not match"),
    ("path-like image id", "train.csv", lambda f: f.assign(image=["../../etc/passwd" if i == 3 else v for i, v in enumerate(f["image"])]),
     "image", 4, "not a plain file name"),
    ("absolute image id", "test.csv", lambda f: f.assign(image=["/etc/passwd" if i == 1 else v for i, v in enumerate(f["image"])]),
     "image", 2, "not a plain file name"),
]


@pytest.mark.parametrize("what,file,edit,column,row,message", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_names_file_column_and_row(avito_copy, what, file, edit, column, row, message):
    _edit(avito_copy / file, edit)
    with pytest.raises(InputError) as err:
        avito.load(avito_copy)
    exc = err.value
    assert Path(exc.file).name == file
    assert exc.column == column
    assert exc.row == row
    assert message in str(exc)


def test_empty_file(avito_copy):
    (avito_copy / "test.csv").write_text("")
    with pytest.raises(InputError, match="test.csv: file is empty"):
        avito.load(avito_copy)


def test_header_only_file(avito_copy):
    header = (avito_copy / "train.csv").read_text().splitlines()[0]
    (avito_copy / "train.csv").write_text(header + "\n")
    with pytest.raises(InputError, match="header but no rows"):
        avito.load(avito_copy)


def test_missing_train_file(avito_copy):
    (avito_copy / "train.csv").unlink()
    with pytest.raises(InputError, match="train.csv: file not found"):
        avito.load(avito_copy)


def test_item_in_both_train_and_test(avito_copy):
    train_first = pd.read_csv(avito_copy / "train.csv", dtype=str)["item_id"][0]
    _edit(avito_copy / "test.csv", lambda f: f.assign(item_id=[train_first] + list(f["item_id"][1:])))
    with pytest.raises(InputError, match="also in train.csv") as err:
        avito.load(avito_copy)
    assert err.value.row == 1


def test_real_format_without_images_or_extras(tmp_path, tiny_avito_dir):
    """Only train.csv and test.csv, with NaNs where the real data has them: loads, no image counted."""
    for name in ("train.csv", "test.csv"):
        (tmp_path / name).write_bytes((tiny_avito_dir / name).read_bytes())
    data = avito.load(tmp_path)
    assert data.extras == {}
    assert len(data.images["train"]) == 0
    for col in ("param_2", "param_3", "description", "price", "image"):
        assert data.train[col].isna().any(), col


def test_missing_and_corrupt_images_are_counted_not_fatal(avito_copy, caplog):
    ids = pd.read_csv(avito_copy / "train.csv", dtype=str)["image"].dropna().tolist()
    (avito_copy / "train_jpg" / f"{ids[0]}.jpg").unlink()
    (avito_copy / "train_jpg" / f"{ids[1]}.jpg").write_bytes(b"not a jpeg at all")
    with caplog.at_level("WARNING"):
        data = avito.load(avito_copy)
    assert "1 of" in caplog.text and "referenced images not found" in caplog.text
    source = data.images["train"]
    assert source.open(ids[0]) is None
    assert source.open(ids[1]) is None
    assert source.open(ids[2]).size == (64, 48)
    assert source.problems == {"missing": 1, "unreadable": 1}


def test_images_from_zip_like_kaggle(avito_copy):
    folder = avito_copy / "train_jpg"
    ids = sorted(p.stem for p in folder.glob("*.jpg"))[:5]
    with zipfile.ZipFile(avito_copy / "train_jpg.zip", "w") as zf:
        for i in ids:  # the Kaggle archive nests files under data/competition_files/train_jpg/
            zf.write(folder / f"{i}.jpg", f"data/competition_files/train_jpg/{i}.jpg")
    source = ImageSource(avito_copy / "train_jpg.zip")
    assert len(source) == 5 and ids[0] in source
    assert source.open(ids[0]).mode == "RGB"
    assert "../x" not in source


def test_cli_bad_input_is_one_line_without_traceback(avito_copy, tmp_path):
    _edit(avito_copy / "train.csv", lambda f: f.assign(price=["abc" if i == 2 else p for i, p in enumerate(f["price"])]))
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-m", "mmstack", "run", str(root / "configs" / "avito.toml"),
                           "--input", str(avito_copy), "--workdir", str(tmp_path / "w")],
                          capture_output=True, text=True, cwd=root)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {avito_copy / 'train.csv'}, column 'price', row 3: expected a number, got 'abc'"]
