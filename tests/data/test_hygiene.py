"""Text and number hygiene of the loaders: non-finite numbers are rejected, line endings are normalised, a file
with the wrong separator or too few rows gets a message that names the file and the likely cause."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmstack.data import avito, relevance
from mmstack.errors import InputError


def _set_cell(path: Path, column: str, row: int, value: str) -> None:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.loc[row - 1, column] = value
    frame.to_csv(path, index=False)


@pytest.mark.parametrize("column, value", [("price", "inf"), ("price", "1e400"), ("price", "-Infinity"),
                                           ("price", "1e39"), ("item_seq_number", "1e400"),
                                           ("image_top_1", "inf")])
def test_non_finite_numbers_are_rejected_with_file_column_row(avito_copy, column, value):
    _set_cell(avito_copy / "train.csv", column, 4, value)
    with pytest.raises(InputError) as err:
        avito.load(avito_copy)
    assert str(err.value) == (f"{avito_copy / 'train.csv'}, column '{column}', row 4: expected a finite number, "
                              f"got {value!r}")


def test_non_finite_numbers_in_the_relevance_files(tmp_path):
    from tests.test_relevance import write_flickr

    write_flickr(tmp_path)
    crowd = tmp_path / "CrowdAnnotations.tsv"
    lines = crowd.read_text().splitlines()
    lines[1] = "\t".join(lines[1].split("\t")[:2] + ["inf"] + lines[1].split("\t")[3:])
    crowd.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"CrowdAnnotations.tsv, column 'share_yes', row 2: expected a finite number"):
        relevance.load(tmp_path)


def _to_crlf(path: Path) -> None:
    data = path.read_bytes()
    assert b"\r" not in data
    path.write_bytes(data.replace(b"\n", b"\r\n"))


def test_crlf_files_load_exactly_like_lf_files(tiny_avito_dir, avito_copy):
    for name in ("train.csv", "test.csv", "train_active.csv"):
        _to_crlf(avito_copy / name)
    lf, crlf = avito.load(tiny_avito_dir), avito.load(avito_copy)
    assert crlf.train["description"].str.contains("\n", na=False).any()
    assert not crlf.train["description"].str.contains("\r", na=False).any()
    pd.testing.assert_frame_equal(lf.train, crlf.train)
    pd.testing.assert_frame_equal(lf.test, crlf.test)
    pd.testing.assert_frame_equal(lf.extras["train_active"], crlf.extras["train_active"])


def test_old_mac_line_endings_inside_values_become_newlines(avito_copy):
    _set_cell(avito_copy / "train.csv", "description", 2, "first line\rsecond line")
    assert avito.load(avito_copy).train["description"][1] == "first line\nsecond line"


def test_semicolon_separated_file_names_the_likely_separator(avito_copy):
    frame = pd.read_csv(avito_copy / "train.csv", dtype=str, keep_default_na=False)
    frame.to_csv(avito_copy / "train.csv", index=False, sep=";")
    with pytest.raises(InputError) as err:
        avito.load(avito_copy)
    assert str(err.value).startswith(f"{avito_copy / 'train.csv'}")
    assert str(err.value).endswith("the file looks ';'-separated (its first line has 17 ';' and no ','); "
                                   "expected ','-separated")


def test_comma_separated_tsv_names_the_likely_separator(tmp_path):
    from tests.test_relevance import write_flickr

    write_flickr(tmp_path)
    expert = tmp_path / "ExpertAnnotations.tsv"
    expert.write_text(expert.read_text().replace("\t", ","))
    with pytest.raises(InputError, match=r"ExpertAnnotations.tsv: not a readable CSV: the file looks ','-separated "
                                         r"\(its first line has 4 ',' and no tab\); expected tab-separated"):
        relevance.load(tmp_path)


def test_too_few_training_rows_for_the_folds_names_the_file(avito_copy, tmp_path):
    from mmstack.pipeline import Timer, prepare
    from mmstack.store import Store

    from ..conftest import fast_config

    frame = pd.read_csv(avito_copy / "train.csv", dtype=str, keep_default_na=False)
    frame.head(3).to_csv(avito_copy / "train.csv", index=False)
    with pytest.raises(InputError) as err:
        prepare(fast_config("folds.n_folds=5"), avito_copy, Store(tmp_path), Timer())
    assert str(err.value) == f"{avito_copy / 'train.csv'}: only 3 training rows for 5 folds (folds.n_folds)"


def test_a_simple_semicolon_file_with_one_column_names_it_too(tmp_path):
    from mmstack.data.schema import Column, Schema, read_csv_text, validate

    path = tmp_path / "t.csv"
    path.write_text("a;b\n1;2\n")
    schema = Schema((Column("a", "str", False, "id"), Column("b", "float", False, "numeric")))
    with pytest.raises(InputError) as err:
        validate(read_csv_text(path), schema, path)
    assert str(err.value) == (f"{path}, column 'a': missing column(s) a, b; found a;b: the file looks ';'-separated "
                              "(its first line has 1 ';' and no ','); expected ','-separated")


def test_large_finite_numbers_still_load(avito_copy):
    _set_cell(avito_copy / "train.csv", "price", 4, "1e30")
    price = avito.load(avito_copy).train["price"]
    assert price[3] == 1e30 and np.isfinite(price.dropna()).all()
