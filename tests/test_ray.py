"""``mmstack run --ray``: a real local Ray cluster (a head and a worker node, ``ray start`` subprocesses on
127.0.0.1) runs the image shards and model folds; the results are the bytes a local run writes, also when the
worker node is killed mid-run (Ray retries its tasks on the head)."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from mmstack import parallel  # noqa: E402
from mmstack.features import image_shards  # noqa: E402
from mmstack.pipeline import run  # noqa: E402

from .conftest import fast_config  # noqa: E402

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))
BLOCKS = '["basic", "text_stats", "text_tfidf", "tabular", "target_encoding", "image_embed"]'
SETS = [f"features.blocks={BLOCKS}", 'models.train=["ridge", "lgb", "mlp"]', "ablation.enabled=false",
        'stack.blenders=["weights"]', "features.image_embed.image_size=32", "features.image_embed.pca_components=4"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_node(args: list[str], env: dict) -> subprocess.Popen:
    """``ray start --block`` in its own process group: killing the group takes the node down."""
    return subprocess.Popen([RAY, "start", "--block", "--node-ip-address=127.0.0.1", "--num-cpus=1",
                             "--object-store-memory=80000000", "--disable-usage-stats", *args], env=env,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_node(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # the group of this node's own processes only
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)


def alive_nodes() -> int:
    return sum(n["Alive"] for n in ray.nodes())


@pytest.fixture(scope="module")
def cluster():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1"}
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    port = free_port()
    address = f"127.0.0.1:{port}"
    head = start_node(["--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={temp}"], env)
    nodes = {"head": head}
    try:
        deadline = time.time() + 120
        while True:
            try:
                subprocess.run([RAY, "status", f"--address={address}"], env=env, check=True, capture_output=True)
                break
            except subprocess.CalledProcessError:
                if time.time() > deadline or head.poll() is not None:
                    raise RuntimeError("the Ray head did not start")
                time.sleep(1)
        nodes["worker"] = start_node([f"--address={address}"], env)
        executor = parallel.RayExecutor(address)
        deadline = time.time() + 120
        while alive_nodes() < 2:
            if time.time() > deadline:
                raise RuntimeError("the Ray worker node did not join")
            time.sleep(1)
        yield executor, nodes
    finally:
        ray.shutdown()
        for proc in reversed(list(nodes.values())):
            stop_node(proc)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def local_run(tiny_avito_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("local")
    run(fast_config(*SETS), tiny_avito_dir, workdir)
    return workdir


def outputs(workdir: Path) -> dict[str, bytes]:
    """Every OOF / test prediction file and the image block's features, by path inside the workdir."""
    files = sorted((workdir / "oof" / "avito").glob("*.parquet"))
    files += sorted((workdir / "features" / "image_embed").glob("*/dense.parquet"))
    return {str(f.relative_to(workdir)): f.read_bytes() for f in files}


def ray_run(tiny_avito_dir, workdir, executor, monkeypatch, during=None):
    monkeypatch.setattr(image_shards, "SHARD_IMAGES", 128)  # the plan is made here, in the driver
    with parallel.use(executor):
        if during is None:
            return run(fast_config(*SETS), tiny_avito_dir, workdir)
        result = {}
        worker = threading.Thread(target=lambda: result.update(dir=run(fast_config(*SETS), tiny_avito_dir, workdir)))
        worker.start()
        during()
        worker.join()
        return result["dir"]


def test_ray_run_equals_the_local_run(cluster, local_run, tiny_avito_dir, tmp_path, monkeypatch):
    executor, _ = cluster
    sent = {}
    real_map = executor.map

    def counted_map(fn, items, shared=()):
        sent[fn.__name__] = sent.get(fn.__name__, 0) + len(items)
        return real_map(fn, items, shared)

    monkeypatch.setattr(executor, "map", counted_map)
    run_dir = ray_run(tiny_avito_dir, tmp_path, executor, monkeypatch)
    assert (run_dir / "submission.csv").is_file()
    expected, got = outputs(local_run), outputs(tmp_path)
    assert len([p for p in expected if p.endswith(".test.parquet")]) == 3  # ridge, lgb, mlp
    assert got.keys() == expected.keys()
    assert all(got[p] == expected[p] for p in expected)
    n_folds = fast_config(*SETS).get("folds.n_folds")
    assert len(list((tmp_path / "models" / "avito").glob("*/fold*.joblib"))) == 3 * n_folds
    # the units went through Ray: every fold of the 3 models, and the image shards (743 images / 128)
    assert sent == {"_remote_fold": 3 * n_folds, "embed_shard": 6}


def test_a_killed_worker_node_does_not_change_the_result(cluster, local_run, tiny_avito_dir, tmp_path,
                                                          monkeypatch):
    executor, nodes = cluster
    folds_dir = tmp_path / "models" / "avito"

    def kill_worker_once_work_runs():
        deadline = time.time() + 300
        while not list(folds_dir.glob("*/fold*.joblib")) and time.time() < deadline:
            time.sleep(0.2)
        stop_node(nodes["worker"])  # SIGTERM then SIGKILL to the worker node's process group, mid-run

    ray_run(tiny_avito_dir, tmp_path, executor, monkeypatch, during=kill_worker_once_work_runs)
    assert nodes["worker"].poll() is not None and alive_nodes() == 1
    expected, got = outputs(local_run), outputs(tmp_path)
    assert got.keys() == expected.keys() and all(got[p] == expected[p] for p in expected)
