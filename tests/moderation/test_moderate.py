"""`mmstack moderate`: the output contract (columns, order, rows, empty texts) and one-line errors (exit 2)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from mmstack.errors import ConfigError, InputError
from mmstack.moderation.screen import load_settings, moderate_file

ROOT = Path(__file__).resolve().parents[2]
ROWS = [("a1", "Спасибо за обзор, очень подробно", "x"), ("a2", "ты дебил", "y"), ("a3", "", "z"),
        ("a4", "с.у.к.а, опять сервер лежит", ""), ("a5", "Скорпион заполз в палатку", "w"),
        ("007", "х*й тебе, а не скидка", "v")]


def _mmstack(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "mmstack", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=600)


@pytest.fixture
def texts_csv(tmp_path) -> Path:
    path = tmp_path / "comments.csv"
    pd.DataFrame(ROWS, columns=["id", "body", "note"]).to_csv(path, index=False)
    return path


def test_moderate_writes_input_columns_plus_scores_in_order(texts_csv, tmp_path):
    out = tmp_path / "out.csv"
    result = _mmstack("moderate", "--texts", str(texts_csv), "--column", "body", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "6 rows, 3 toxic" in result.stdout
    frame = pd.read_csv(out, dtype={"id": str})
    assert frame.columns.tolist() == ["id", "body", "note", "toxicity", "toxic"]
    assert frame["id"].tolist() == [r[0] for r in ROWS]  # input order, values as written ("007")
    assert frame["toxic"].tolist() == [0, 1, 0, 1, 0, 1]
    assert frame["toxicity"].between(0, 1).all() and frame.loc[2, "toxicity"] == 0
    assert pd.isna(frame.loc[2, "body"]) and pd.isna(frame.loc[3, "note"])  # empty cells stay empty


def test_threshold_option_and_fast_path(texts_csv, tmp_path):
    out = tmp_path / "out.csv"
    summary = moderate_file(texts_csv, out, column="body", threshold=0.99, embeddings=False, progress=False)
    frame = pd.read_csv(out)
    assert summary["threshold"] == 0.99 and summary["embeddings"] is False and summary["rows"] == 6
    assert frame["toxic"].tolist() == (frame["toxicity"] >= 0.99).astype(int).tolist()
    assert summary["toxic"] == frame["toxic"].sum() <= 3
    zero = moderate_file(texts_csv, out, column="body", threshold=0.0, embeddings=False, progress=False)
    assert zero["toxic"] == 6  # every row is at or above 0, the empty one included
    with pytest.raises(ConfigError, match="from 0 to 1"):
        moderate_file(texts_csv, out, column="body", threshold=1.5)


def test_header_only_file_gives_header_only_output(tmp_path):
    source = tmp_path / "empty.csv"
    source.write_text("text,id\n", encoding="utf-8")
    out = tmp_path / "out.csv"
    assert moderate_file(source, out, progress=False)["rows"] == 0
    assert out.read_text(encoding="utf-8").strip() == "text,id,toxicity,toxic"


@pytest.mark.parametrize("case", ["missing_column", "missing_file", "binary_file", "empty_file", "images"])
def test_bad_input_is_one_line_with_exit_2(case, texts_csv, tmp_path):
    out = tmp_path / "out.csv"
    args = ["moderate", "--texts", str(texts_csv), "--out", str(out)]
    expected = {"missing_column": f"error: {texts_csv}, column 'text': no such column; columns are: id, body, note",
                "missing_file": f"error: {tmp_path / 'nope.csv'}: no such file",
                "binary_file": f"error: {tmp_path / 'bin.csv'}: not UTF-8 text",
                "empty_file": f"error: {tmp_path / 'blank.csv'}: empty file",
                "images": "error: moderate needs exactly one of --texts FILE.csv or --images FOLDER"}[case]
    if case == "missing_file":
        args[2] = str(tmp_path / "nope.csv")
    elif case == "binary_file":
        (tmp_path / "bin.csv").write_bytes(bytes(range(128, 256)) * 4)
        args[2] = str(tmp_path / "bin.csv")
    elif case == "empty_file":
        (tmp_path / "blank.csv").write_bytes(b"")
        args[2] = str(tmp_path / "blank.csv")
    elif case == "images":
        args += ["--images", str(tmp_path)]
    result = _mmstack(*args)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith(expected), result.stderr
    assert "Traceback" not in result.stderr and not out.exists()


def test_settings_from_config(tmp_path):
    settings = load_settings(ROOT / "configs" / "moderation.toml")
    assert 0 < settings.threshold < 1 and settings.embeddings is True and settings.batch_size > 0
    bad = tmp_path / "bad.toml"
    bad.write_text("[text]\nthreshold = 0.5\ncolour = 'red'\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown key"):
        load_settings(bad)
    with pytest.raises(ConfigError, match="no such moderation config"):
        load_settings(tmp_path / "missing.toml")


def test_read_errors_name_the_file(tmp_path):
    from mmstack.moderation.screen import read_texts

    folder = tmp_path / "dir.csv"
    folder.mkdir()
    with pytest.raises(InputError, match="not a file"):
        read_texts(folder, "text")
