"""Store: keys change with what decides the content; an interrupted write leaves no artifact."""
from __future__ import annotations

import pandas as pd
import pytest

from mmstack.store import Store, atomic_path, make_key, write_json, write_parquet


def test_key_is_stable_and_order_free():
    assert make_key({"a": 1, "b": [1, 2]}, "x") == make_key({"b": [1, 2], "a": 1}, "x")


@pytest.mark.parametrize("change", [{"num_leaves": 64}, {"num_leaves": 63, "extra": 1}])
def test_param_change_changes_key(change):
    assert make_key("lgb", {"num_leaves": 63}, "data-fp") != make_key("lgb", change, "data-fp")


def test_key_covers_data_version_and_folds():
    base = make_key("te", "1", "data-a", {"m": 10}, "folds-1")
    assert base != make_key("te", "1", "data-b", {"m": 10}, "folds-1")
    assert base != make_key("te", "2", "data-a", {"m": 10}, "folds-1")
    assert base != make_key("te", "1", "data-a", {"m": 10}, "folds-2")


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_interrupted_write_leaves_nothing(tmp_path, exc):
    final = tmp_path / "features" / "block" / "key.parquet"
    with pytest.raises(exc):
        with atomic_path(final) as tmp:
            pd.DataFrame({"a": [1, 2]}).to_parquet(tmp)
            raise exc()
    assert not final.exists()
    assert list(final.parent.iterdir()) == [], "no temporary left behind"


def test_interrupted_overwrite_keeps_old_version(tmp_path):
    path = tmp_path / "x.json"
    write_json(path, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text('{"v": 2')
            raise RuntimeError
    assert path.read_text().strip().replace(" ", "").replace("\n", "") == '{"v":1}'


def test_directory_artifacts_are_atomic_too(tmp_path):
    final = tmp_path / "blockdir"
    with atomic_path(final) as tmp:
        tmp.mkdir()
        (tmp / "a.txt").write_text("1")
    assert (final / "a.txt").read_text() == "1"


def test_store_paths(tmp_path):
    store = Store(tmp_path)
    write_parquet(store.path("oof", "avito", "lgb__abc", ".parquet"), pd.DataFrame({"x": [1]}))
    assert (tmp_path / "oof" / "avito" / "lgb__abc.parquet").is_file()
    with pytest.raises(ValueError):
        store.dir("elsewhere")
