"""Config: TOML loading, typed --set overrides, clear errors."""
from __future__ import annotations

import pytest

from mmstack.config import Config, diff_flat
from mmstack.errors import ConfigError

from .conftest import ROOT

CONFIG = ROOT / "configs" / "avito.toml"


def _file_value(key: str) -> int:
    """The [models.lgb] value as written in the file, read without mmstack's loader."""
    import tomllib

    return tomllib.loads(CONFIG.read_text())["models"]["lgb"][key]


def test_default_config_loads():
    cfg = Config.load(CONFIG)
    assert cfg.task == "avito" and cfg.seed == 42
    assert "basic" in cfg.blocks and "lgb" in cfg.models
    assert cfg.model_params("lgb")["num_leaves"] == _file_value("num_leaves")


def test_set_overrides_are_typed():
    cfg = Config.load(CONFIG, ["models.lgb.num_leaves=255", "models.lgb.objective=cross_entropy",
                               "models.train=['lgb']", "folds.n_folds=3", "task.seed=7"])
    assert cfg.model_params("lgb")["num_leaves"] == 255
    assert cfg.model_params("lgb")["objective"] == "cross_entropy"
    assert cfg.get("folds.n_folds") == 3 and cfg.seed == 7


def test_diff_between_configs():
    a = Config.load(CONFIG).flat()
    b = Config.load(CONFIG, ["models.lgb.num_leaves=255"]).flat()
    assert diff_flat(a, b) == [f"models.lgb.num_leaves: {_file_value('num_leaves')} -> 255"]


def test_section_hash_changes_only_with_its_section():
    a, b = Config.load(CONFIG), Config.load(CONFIG, ["models.lgb.num_leaves=255"])
    assert a.section_hash("models.lgb") != b.section_hash("models.lgb")
    assert a.section_hash("features") == b.section_hash("features")


@pytest.mark.parametrize("override", ["no-equals-sign", "=3", "models.lgb.num_leaves.deeper=3"])
def test_bad_override(override):
    with pytest.raises(ConfigError):
        Config.load(CONFIG, [override])


def test_missing_or_invalid_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        Config.load(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[task\nname=1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        Config.load(bad)
