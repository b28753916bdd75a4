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

from .conftest import fast_config


@pytest.fixture(scope="module")
def first_run(tiny_avito_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("work")
    cfg = fast_config()
    start = time.perf_counter()
    run_dir = run(cfg, tiny_avito_dir, workdir)
    return workdir, run_dir, time.perf_counter() - start


def test_submission_contract(first_run, tiny_avito_dir):
    workdir, run_dir, _ = first_run
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
    assert set(metrics["models"]) == set(fast_config().models) >= {"lgb", "cat", "xgb", "ridge", "mlp"}
    y = pd.read_csv(tiny_avito_dir / "train.csv")["deal_probability"].to_numpy()
    for key, model in metrics["models"].items():
        assert len(model["folds"]) == 3 and model["seconds"] > 0
        # the CV matches the stored OOF predictions
        oof = pd.read_parquet(run_dir.parents[1] / "oof" / "avito" / f"{key}__{model['key']}.parquet")
        assert np.isclose(np.sqrt(np.mean((oof["pred"] - y) ** 2)), model["cv"]), key
    assert metrics["models"]["lgb"]["cv"] < np.std(y)
    stack = metrics["stack"]
    assert stack["method"] in stack["blenders"] and stack["cv"] == stack["blenders"][stack["method"]]["cv"]
    assert all(b["cv"] >= b["cv_in_sample"] - 0.01 for b in stack["blenders"].values())
    assert stack["best_single"]["cv"] == min(m["cv"] for m in metrics["models"].values())
    weights = stack["blenders"]["weights"]["weights"]
    assert sum(weights.values()) == pytest.approx(1.0) and min(weights.values()) >= 0
    ablation = metrics["ablation"]
    assert {"all blocks", "skeleton only", "without tabular", "without graph"} <= set(ablation)
    assert ablation["all blocks"]["delta"] == 0.0
    assert set(metrics["features"]) >= {"basic", "text_tfidf", "text_embed", "tabular", "target_encoding", "graph",
                                        "image_stats", "image_embed"}


def test_report_images_exist_and_load(first_run, tmp_path):
    import re
    import shutil
    import subprocess

    _, run_dir, _ = first_run
    page = (run_dir / "report.html").read_text()
    images = re.findall(r"<img src='([^']+)'", page)
    expected = {"cv_by_model.png", "oof_stack.png", "importance_lgb.png", "blend_weights.png", "ablation.png",
                "residuals_parent_category_name.png"}
    assert expected <= set(images)
    for src in images:
        assert (run_dir / src).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", src
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        return  # parsed and checked above; CI machines with Chromium also render it below
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    dom = subprocess.run([browser, *flags, "--dump-dom", (run_dir / "report.html").as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    assert f'data-images-ok="{len(images)}/{len(images)}"' in dom, "every image loaded in headless Chromium"
    shot = run_dir / "report_screenshot.png"
    subprocess.run([browser, *flags, f"--screenshot={shot}", "--window-size=1100,3000",
                    (run_dir / "report.html").as_uri()], capture_output=True, timeout=120)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_second_run_reuses_everything(first_run, tiny_avito_dir, caplog):
    workdir, _, first_seconds = first_run
    with caplog.at_level("INFO"):
        run_dir = run(fast_config(), tiny_avito_dir, workdir)
    text = caplog.text
    assert "reused parsed tables" in text and "folds: reused" in text
    for block in ("basic", "text_tfidf", "text_embed", "image_embed", "graph"):
        assert f"features: {block} reused" in text
    assert "stack: reused" in text
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert all(m["reused"] for m in metrics["models"].values())
    assert all(f["reused"] for f in metrics["features"].values())


def test_set_change_retrains_only_that_model_and_the_stack(first_run, tiny_avito_dir, caplog):
    workdir, _, _ = first_run
    with caplog.at_level("INFO"):
        run_dir = run(fast_config("models.lgb.num_leaves=15"), tiny_avito_dir, workdir)
    assert "folds: reused" in caplog.text and " built " not in caplog.text, "no feature block rebuilt"
    assert "lgb fold 1/3 rmse=" in caplog.text and "lgb: reused" not in caplog.text
    for other in set(fast_config().models) - {"lgb"}:
        assert f"{other}: reused" in caplog.text
    assert "stack weights: nested cv" in caplog.text and "stack: reused" not in caplog.text
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert not metrics["models"]["lgb"]["reused"] and metrics["models"]["cat"]["reused"]

    result = CliRunner().invoke(app, ["runs", "--workdir", str(workdir)])
    assert result.exit_code == 0, result.output
    leaves_change = f"models.lgb.num_leaves: {fast_config().model_params('lgb')['num_leaves']} -> 15"
    assert leaves_change in result.output
    assert result.output.count("avito") >= 3
    from mmstack.runs import load_runs
    from mmstack.store import Store

    runs = load_runs(Store(workdir))
    result = CliRunner().invoke(app, ["runs", "--workdir", str(workdir), "--compare", runs[0]["run_id"],
                                      runs[-1]["run_id"]])
    assert result.exit_code == 0, result.output
    delta = runs[-1]["models"]["lgb"] - runs[0]["models"]["lgb"]
    assert f"{delta:+.5f}" in result.output and leaves_change in result.output


def test_block_param_change_recomputes_that_block_only(first_run, tiny_avito_dir, caplog):
    workdir, _, _ = first_run
    with caplog.at_level("INFO"):
        run(fast_config("features.text_stats.fields=['title']"), tiny_avito_dir, workdir)
    built = [line for line in caplog.text.splitlines() if "features:" in line and " built " in line]
    assert len(built) == 1 and "text_stats built" in built[0], built


def test_cli_run_and_make_data(tmp_path):
    from .conftest import ROOT

    runner = CliRunner()
    result = runner.invoke(app, ["make-data", "avito", "--rows", "200", "--seed", "3", "--out", str(tmp_path / "in"),
                                 "--no-images"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "in" / "train.csv").is_file() and not any((tmp_path / "in").glob("*_jpg"))
    result = runner.invoke(app, ["run", str(ROOT / "configs" / "avito.toml"), "--input", str(tmp_path / "in"),
                                 "--workdir", str(tmp_path / "w"), "--set", "folds.n_folds=3",
                                 "--set", "models.train=['lgb', 'ridge']", "--set", "ablation.enabled=false",
                                 "--set", "models.lgb.max_rounds=50",
                                 "--set", "features.blocks=['basic', 'text_tfidf', 'tabular', 'target_encoding']"])
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(tmp_path / "w" / "submissions" / "latest" / "submission.csv")) == round(200 * 508_438 / 1_503_424)


def test_saved_fold_models_and_blender_reproduce_the_test_predictions_in_a_fresh_process(first_run, tmp_path):
    """Every level-1 family (the nets with their token tables and graph included) and the chosen blender, loaded
    from the store by a new Python process that never saw the training run, give the run's test predictions
    exactly."""
    import subprocess
    import sys

    from mmstack.stack.stacking import load_stack
    from mmstack.store import Store

    from .conftest import ROOT

    workdir, run_dir, _ = first_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["stack"]["method"] != "single" and len(metrics["models"]) >= 7
    out = tmp_path / "pred.npy"
    script = (
        "import json, sys, numpy as np\n"
        "from mmstack.predict import run_predictions\n"
        "from mmstack.store import Store\n"
        f"metrics = json.load(open({str(run_dir / 'metrics.json')!r}))\n"
        "rows = np.arange(metrics['n_train'], metrics['n_train'] + metrics['n_test'])\n"
        f"np.save({str(out)!r}, run_predictions(Store({str(workdir)!r}), 'avito', metrics, rows))\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    fresh = np.load(out)
    stacked = load_stack(Store(workdir), "avito", metrics["stack"]["key"])
    assert fresh.shape == stacked.test.shape == (metrics["n_test"], 1)
    assert np.abs(fresh - stacked.test).max() <= 1e-12
    sub = pd.read_csv(run_dir / "submission.csv")
    assert np.abs(sub["deal_probability"].to_numpy() - fresh[:, 0]).max() <= 1e-9


def test_a_classification_run_end_to_end(tiny_avito_dir, tmp_path, monkeypatch):
    """The whole pipeline on a binary target ("sold at all"): stratified folds, probabilities through models and
    stack, the class in the submission (and its probability when the task asks), classification metrics and
    plots in the report, the direction of the metric in runs.jsonl."""
    import dataclasses

    import mmstack.pipeline as pipeline
    from mmstack.data import avito

    from .conftest import relabel

    spec = pipeline.get_task("avito")

    def load(input_dir, store, options):
        data = avito.load(input_dir, store, options)
        y = data.labelled(data.target())[1]
        return relabel(data, np.where(y > 0, "sold", "unsold"), problem="binary", fingerprint="sold-or-not")

    monkeypatch.setattr(pipeline, "get_task", lambda name: dataclasses.replace(spec, load=load, probabilities=True))
    cfg = fast_config("features.blocks=['basic', 'text_stats', 'text_tfidf', 'tabular', 'target_encoding']",
                      "models.train=['lgb', 'ridge', 'mlp']", "ablation.enabled=false",
                      "stack.blenders=['weights', 'ridge', 'logistic']")
    run_dir = run(cfg, tiny_avito_dir, tmp_path)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["problem"] == "binary" and metrics["classes"] == ["sold", "unsold"]
    assert metrics["metric"] == "logloss" and metrics["greater_is_better"] is False
    assert set(metrics["stack"]["blenders"]) == {"weights", "logistic"}, "ridge does not serve classification"
    assert set(metrics["stack_scores"]) >= {"logloss", "auc", "f1", "precision", "recall"}
    assert metrics["stack_scores"]["auc"] > 0.6
    sub = pd.read_csv(run_dir / "submission.csv")
    assert list(sub.columns) == ["item_id", "deal_probability", "p_unsold"]
    assert set(sub["deal_probability"]) <= {"sold", "unsold"} and sub["p_unsold"].between(0, 1).all()
    assert ((sub["p_unsold"] >= 0.5) == (sub["deal_probability"] == "unsold")).all()
    assert {"confusion.png", "calibration.png"} <= {p.name for p in run_dir.iterdir()}
    assert "Per class" in (run_dir / "report.html").read_text()
    line = json.loads((tmp_path / "submissions" / "runs.jsonl").read_text().splitlines()[-1])
    assert line["metric"] == "logloss" and line["greater_is_better"] is False


def test_low_memory_mode_drops_the_raw_columns_before_the_models_and_gives_the_same_run(first_run, tiny_avito_dir,
                                                                                         monkeypatch):
    """features.hold_in_memory = false (avito-full.toml): blocks are read back from the store, and once built the
    dataset keeps only the submission's key and the report's groups; the run's numbers do not change."""
    import mmstack.pipeline as pipeline

    workdir, run_dir, _ = first_run
    seen = []
    train_models = pipeline.train_models

    def spy(config, spec, target, store, cache, **kwargs):
        seen.append((list(cache.data.train.columns), list(cache.data.test.columns), dict(cache.data.extras)))
        return train_models(config, spec, target, store, cache, **kwargs)

    monkeypatch.setattr(pipeline, "train_models", spy)
    cfg = fast_config("features.hold_in_memory=false")
    low_dir = run(cfg, tiny_avito_dir, workdir)
    groups = cfg.get("report.residual_groups")
    assert seen and seen[0][0] == seen[0][1] == ["item_id", *groups] and seen[0][2] == {}
    assert (low_dir / "submission.csv").read_bytes() == (run_dir / "submission.csv").read_bytes()
    low, full = (json.loads((d / "metrics.json").read_text()) for d in (low_dir, run_dir))
    assert {k: m["cv"] for k, m in low["models"].items()} == {k: m["cv"] for k, m in full["models"].items()}
    # the report's residual groups were still there to be read
    assert f"residuals by {groups[0]}" in (low_dir / "report.html").read_text()


def test_blocks_built_in_their_own_process_give_the_same_run(first_run, tiny_avito_dir, tmp_path, monkeypatch):
    """features.own_process = true (avito-full.toml): the blocks are built in a spawned process that loads the
    input again; this process builds none of them, drops its raw data first, and the models read the same blocks
    (same keys) and give the same OOF bytes."""
    import mmstack.pipeline as pipeline

    workdir, run_dir, _ = first_run
    calls, seen = [], []
    real = pipeline.in_own_process

    def spy(what, fn, *args):
        result, peak = real(what, fn, *args)
        calls.append((what, peak))
        return result, peak

    def not_here(*args, **kwargs):
        raise AssertionError("a block was built in the run's own process")

    train_models = pipeline.train_models

    def models_spy(config, spec, target, store, cache, **kwargs):
        seen.append(list(cache.data.train.columns))
        return train_models(config, spec, target, store, cache, **kwargs)

    monkeypatch.setattr(pipeline, "in_own_process", spy)
    monkeypatch.setattr(pipeline, "build_features", not_here)
    monkeypatch.setattr(pipeline, "train_models", models_spy)
    cfg = fast_config("features.hold_in_memory=false", "features.own_process=true", 'models.train=["ridge","gnn"]')
    own_dir = run(cfg, tiny_avito_dir, tmp_path)  # a fresh store: every block and model is computed again
    assert [c[0] for c in calls] == ["features"] and calls[0][1] > 100  # a child that imported torch, built
    assert seen == [["item_id", *cfg.get("report.residual_groups")]]  # the raw columns were dropped
    own, full = (json.loads((d / "metrics.json").read_text()) for d in (own_dir, run_dir))
    assert {n: f["key"] for n, f in own["features"].items()} == {n: f["key"] for n, f in full["features"].items()}
    assert not any(f["reused"] for f in own["features"].values())
    for key in ("ridge", "gnn"):
        assert own["models"][key]["key"] == full["models"][key]["key"]
        for suffix in (".parquet", ".test.parquet"):
            name = f"avito/{key}__{own['models'][key]['key']}{suffix}"
            assert (tmp_path / "oof" / name).read_bytes() == (workdir / "oof" / name).read_bytes(), name


def test_blocks_in_their_own_process_need_them_stored():
    with pytest.raises(Exception, match="features.own_process.*hold_in_memory = false"):
        fast_config("features.own_process=true", "features.hold_in_memory=true")
