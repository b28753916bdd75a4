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


@pytest.mark.parametrize("override, message", [
    ("folds.n_folds=abc", "folds.n_folds (--set folds.n_folds=abc): expected an integer in [2, 100], got 'abc'"),
    ("folds.n_folds=130", "folds.n_folds (--set folds.n_folds=130): expected an integer in [2, 100], got 130"),
    ("folds.n_folds=5.7", "folds.n_folds (--set folds.n_folds=5.7): expected an integer in [2, 100], got 5.7"),
    ("models.lgb.num_leaves=[1,", "--set 'models.lgb.num_leaves=[1,': not a valid TOML value"),
    ("models.lgb.num_leaves=abc", "models.lgb.num_leaves (--set models.lgb.num_leaves=abc): expected an integer, "
                                  "got 'abc'"),
    ("models.lgb.learning_rate=inf", "models.lgb.learning_rate (--set models.lgb.learning_rate=inf): expected a "
                                     "finite number, got inf"),
    ("models.mlp.hidden=['a']", "models.mlp.hidden (--set models.mlp.hidden=['a']): expected a list of integers"),
    ("folds.strategy=stratified", "folds.strategy (--set folds.strategy=stratified): expected one of 'kfold', "
                                  "'group'"),
    ("folds.nfolds=3", "folds.nfolds (--set folds.nfolds=3): unknown setting"),
    ("models.lgb.num_leafs=3", "models.lgb.num_leafs (--set models.lgb.num_leafs=3): unknown param; known:"),
    ("models.train=['lgb', 'boost']", "no model 'boost'"),
    ("models.lgb.blocks=['nope']", "models.lgb.blocks (--set models.lgb.blocks=['nope']): names block(s) not in "
                                   "features.blocks: nope"),
    ("features.image_stats.backend=dask", "features.image_stats.backend must be 'loky' or 'threading'"),
    ("data.max_image_pixels=0", "data.max_image_pixels (--set data.max_image_pixels=0): expected an integer in"),
    ("ablation.params={ num_leaves = 'x' }", "ablation.params.num_leaves"),
])
def test_every_bad_value_is_one_line_naming_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        Config.load(CONFIG, [override])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_bad_values_in_the_file_name_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(CONFIG.read_text().replace("n_folds = 5", "n_folds = 1"))
    with pytest.raises(ConfigError, match=rf"folds.n_folds in {bad}: expected an integer in \[2, 100\], got 1"):
        Config.load(bad)


def test_cli_stops_at_once_on_a_bad_value(tmp_path, monkeypatch, capsys):
    """Before any work: nothing is read or written, exit 2, one line naming the key."""
    import sys

    from mmstack.cli import entry

    for value in ("abc", "130", "5.7"):
        monkeypatch.setattr(sys, "argv", ["mmstack", "run", str(CONFIG), "--input", str(tmp_path / "none"),
                                          "--workdir", str(tmp_path / "w"), "--set", f"folds.n_folds={value}"])
        with pytest.raises(SystemExit) as exit_:
            entry()
        assert exit_.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: folds.n_folds (--set folds.n_folds=")
    assert not (tmp_path / "w").exists()
