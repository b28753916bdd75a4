"""End to end on tiny generated data: submission, metrics.json, report, reuse, --set, leaderboard."""
from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from mmstack.cli import app
from mmstack.pipeline import run


@pytest.fixture(scope="module")
def first_run(tiny_avito_dir, tmp_path_factory):
    from mmstack.config import Config

    from .conftest import ROOT

    workdir = tmp_path_factory.mktemp("work")
    cfg = Config.load(ROOT / "configs" / "avito.toml",
                      ["folds.n_folds=3", "models.lgb.max_rounds=200", "models.lgb.early_stopping=20"])
    start = time.perf_counter()
    run_dir = run(cfg, tiny_avito_dir, workdir)
    return workdir, run_dir, time.perf_counter() - start


def test_submission_contract(first_run, tiny_avito_dir):
    workdir, run_dir, seconds = first_run
    assert seconds < 60
    latest = workdir / "submissions" / "latest"
    assert latest.is_symlink() and latest.resolve() == run_dir.resolve()
    sub = pd.read_csv(latest / "submission.csv")
    test = pd.read_csv(tiny_avito_dir / "test.csv")
    assert list(sub.columns) == ["item_id", "deal_probability"]
    assert sub["item_id"].tolist() == test["item_id"].tolist()
    assert sub["deal_probability"].between(0, 1).all() and sub["deal_probability"].std() > 0


def test_metrics_json_contract(first_run, tiny_avito_dir):
    _, run_dir, _ = first_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["task"] == "avito" and metrics["metric"] == "rmse" and metrics["n_folds"] == 3
    lgb = metrics["models"]["lgb"]
    assert len(lgb["folds"]) == 3 and lgb["seconds"] > 0
    # the CV matches the stored OOF predictions, and beats predicting the mean
    y = pd.read_csv(tiny_avito_dir / "train.csv")["deal_probability"].to_numpy()
    oof = pd.read_parquet(next((run_dir.parents[1] / "oof" / "avito").glob("lgb__*[0-9a-f].parquet")))
    assert np.isclose(np.sqrt(np.mean((oof["pred"] - y) ** 2)), lgb["cv"])
    assert lgb["cv"] < np.std(y)
    assert metrics["stack"]["cv"] == pytest.approx(lgb["cv"]) and metrics["stack"]["weights"] == {"lgb": 1.0}


def test_report_references_existing_images(first_run):
    _, run_dir, _ = first_run
    page = (run_dir / "report.html").read_text()
    import re

    images = re.findall(r"<img src='([^']+)'", page)
    assert "cv_by_model.png" in images and "oof_stack.png" in images and "importance_lgb.png" in images
    for src in images:
        assert (run_dir / src).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_second_run_reuses_everything(first_run, tiny_avito_dir, caplog):
    from mmstack.config import Config

    from .conftest import ROOT

    workdir, _, first_seconds = first_run
    cfg = Config.load(ROOT / "configs" / "avito.toml",
                      ["folds.n_folds=3", "models.lgb.max_rounds=200", "models.lgb.early_stopping=20"])
    with caplog.at_level("INFO"):
        run_dir = run(cfg, tiny_avito_dir, workdir)
    text = caplog.text
    assert "reused parsed tables" in text and "folds: reused" in text
    assert "features: basic reused" in text and "lgb: reused" in text
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["models"]["lgb"]["reused"] and all(f["reused"] for f in metrics["features"].values())


def test_set_change_retrains_only_that_model(first_run, tiny_avito_dir, caplog):
    from mmstack.config import Config

    from .conftest import ROOT

    workdir, _, _ = first_run
    cfg = Config.load(ROOT / "configs" / "avito.toml",
                      ["folds.n_folds=3", "models.lgb.max_rounds=200", "models.lgb.early_stopping=20",
                       "models.lgb.num_leaves=15"])
    with caplog.at_level("INFO"):
        run_dir = run(cfg, tiny_avito_dir, workdir)
    assert "features: basic reused" in caplog.text and "folds: reused" in caplog.text
    assert "lgb fold 1/3 rmse=" in caplog.text and "lgb: reused" not in caplog.text
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert not metrics["models"]["lgb"]["reused"]

    result = CliRunner().invoke(app, ["runs", "--workdir", str(workdir)])
    assert result.exit_code == 0, result.output
    assert "models.lgb.num_leaves: 63 -> 15" in result.output
    assert result.output.count("avito") >= 3


def test_block_param_change_recomputes_that_block(first_run, tiny_avito_dir, caplog):
    from mmstack.config import Config

    from .conftest import ROOT

    workdir, _, _ = first_run
    cfg = Config.load(ROOT / "configs" / "avito.toml",
                      ["folds.n_folds=3", "models.lgb.max_rounds=200", "models.lgb.early_stopping=20",
                       "features.basic.categoricals=['region', 'category_name']"])
    with caplog.at_level("INFO"):
        run(cfg, tiny_avito_dir, workdir)
    assert "features: basic built" in caplog.text and "folds: reused" in caplog.text


def test_cli_run_and_make_data(tmp_path):
    from .conftest import ROOT

    runner = CliRunner()
    result = runner.invoke(app, ["make-data", "avito", "--rows", "200", "--seed", "3", "--out", str(tmp_path / "in"),
                                 "--no-images"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "in" / "train.csv").is_file() and not any((tmp_path / "in").glob("*_jpg"))
    result = runner.invoke(app, ["run", str(ROOT / "configs" / "avito.toml"), "--input", str(tmp_path / "in"),
                                 "--workdir", str(tmp_path / "w"), "--set", "folds.n_folds=2",
                                 "--set", "models.lgb.max_rounds=50"])
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(tmp_path / "w" / "submissions" / "latest" / "submission.csv")) == round(200 * 508_438 / 1_503_424)
