"""Reliability end to end, each run in a child process as a user would start it: hostile image files with
bounded memory, concurrent runs in one workdir, a run killed in its report step, a read-only or full disk, bad
config values. Tiny generated data; a reduced config (basic + image_stats blocks, LightGBM) keeps each run short."""
from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
from PIL import Image

from .conftest import ROOT

CONFIG = ROOT / "configs" / "avito.toml"
# small and fast: two cheap blocks, one model, no ablation; the images still go through image_stats
REDUCED = ["features.blocks=['basic', 'image_stats']", "models.train=['lgb']", "folds.n_folds=3",
           "models.lgb.max_rounds=30", "models.lgb.early_stopping=10", "ablation.enabled=false",
           "stack.blenders=['weights']", "features.image_stats.n_jobs=1", "models.lgb.num_threads=1"]
GB = 2**30


def start_child(args: list[str], cwd: Path, prelude: str = "") -> tuple[subprocess.Popen, Path]:
    """Start ``mmstack ARGS`` in a child Python; ``prelude``: Python run in the child before the CLI (to simulate
    a kill, a full disk, a frozen clock ...). The child's address space is capped at 16 GB so that a regression
    fails the test instead of taking the machine down."""
    code = f"{prelude}\nimport sys\nfrom mmstack.cli import entry\nsys.argv = ['mmstack', *{args!r}]\nentry()\n"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    err_path = cwd / f"stderr-{len(list(cwd.glob('stderr-*')))}.txt"

    def cap_memory():
        resource.setrlimit(resource.RLIMIT_AS, (16 * GB, 16 * GB))

    with open(err_path, "w") as err:
        child = subprocess.Popen([sys.executable, "-c", code], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                                 stderr=err, preexec_fn=cap_memory)
    return child, err_path


def finish_child(child: subprocess.Popen, err_path: Path, timeout: float = 240) -> tuple[int, str, int]:
    """Wait for a child: (exit code, stderr, peak RSS in bytes). The peak is the child's own (``wait4``), not
    that of earlier children of the test process (which ``RUSAGE_CHILDREN`` would mix in)."""
    import time

    deadline = time.monotonic() + timeout
    got = 0
    while not got and time.monotonic() < deadline:
        got, status, usage = os.wait4(child.pid, os.WNOHANG)
        time.sleep(0.05)
    if not got:
        os.kill(child.pid, signal.SIGKILL)
        _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here: keep Popen from waiting again
    return child.returncode, err_path.read_text(), usage.ru_maxrss * 1024


def run_child(args: list[str], cwd: Path, prelude: str = "", timeout: float = 240) -> tuple[int, str, int]:
    return finish_child(*start_child(args, cwd, prelude), timeout=timeout)


def run_args(input_dir: Path, workdir: Path, *extra: str) -> list[str]:
    args = ["run", str(CONFIG), "--input", str(input_dir), "--workdir", str(workdir)]
    for item in [*REDUCED, *extra]:
        args += ["--set", item]
    return args


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


# -- hostile image files ---------------------------------------------------------------------------------------

def test_hostile_images_cost_no_memory_and_are_counted(avito_copy, tmp_path):
    """A 12000 x 12000 JPEG, a symlink to /dev/zero, a FIFO and a symlink to /etc/passwd in the image folder: the
    run finishes (exit 0) under 2 GB peak RSS, and each is counted in a warning as "no image"."""
    train = pd.read_csv(avito_copy / "train.csv", dtype=str)
    ids = train["image"].dropna().drop_duplicates().tolist()[:4]
    folder = avito_copy / "train_jpg"
    for image_id in ids:
        (folder / f"{image_id}.jpg").unlink()
    # a decompression bomb: 12000 x 12000 pixels (432 MB as RGB) in a few hundred KB of JPEG
    Image.new("L", (12000, 12000), 128).save(folder / f"{ids[0]}.jpg", "JPEG", quality=50)
    assert (folder / f"{ids[0]}.jpg").stat().st_size < 3_000_000
    os.symlink("/dev/zero", folder / f"{ids[1]}.jpg")
    os.mkfifo(folder / f"{ids[2]}.jpg")
    os.symlink("/etc/passwd", folder / f"{ids[3]}.jpg")
    rows = train["image"].value_counts()  # image_stats counts per row that references the image
    code, stderr, peak = run_child(run_args(avito_copy, tmp_path / "w"), tmp_path)
    assert code == 0, stderr[-3000:]
    print(f"hostile images: peak RSS of the run {peak / 2**20:.0f} MB")
    assert peak < 2 * GB, f"peak RSS {peak / GB:.2f} GB"
    assert f"{folder}: skipped 3 image file(s): 2 a symlink out of the folder, 1 not a regular file" in stderr
    outside, fifo, bomb = rows[ids[1]] + rows[ids[3]], rows[ids[2]], rows[ids[0]]
    assert (f"image_stats: train images: {outside} a symlink out of the folder, {fifo} not a regular file, "
            f"{bomb} over the pixel limit (treated as no image)") in stderr
    assert "referenced images not found" not in stderr  # skipped files are not reported twice as missing
    run_dir = (tmp_path / "w" / "submissions" / "latest").resolve()
    assert (run_dir / "submission.csv").is_file() and (run_dir / "report.html").is_file()


# -- concurrent runs, killed runs ------------------------------------------------------------------------------

# both children see the same "now", as two runs finishing in the same second do
FROZEN_CLOCK = textwrap.dedent("""
    import datetime as _datetime, importlib as _importlib, types as _types
    class _Frozen(_datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return cls(2026, 1, 2, 3, 4, 5)
    _fake = _types.SimpleNamespace(datetime=_Frozen, date=_datetime.date, timedelta=_datetime.timedelta)
    for _name in ("mmstack.pipeline", "mmstack.run_folder"):
        try:
            _module = _importlib.import_module(_name)
        except ImportError:
            continue
        if getattr(_module, "dt", None) is _datetime:
            _module.dt = _fake
""")

# killed (SIGKILL, no cleanup) in the report step, after metrics.json and before the report
KILL_IN_REPORT = textwrap.dedent("""
    import os as _os, signal as _signal
    import mmstack.pipeline as _pipeline
    from mmstack.store import write_json as _write_json
    def _killed(run_dir, metrics, *args, **kwargs):
        _write_json(run_dir / "metrics.json", metrics)
        _os.kill(_os.getpid(), _signal.SIGKILL)
    _pipeline.write_report = _killed
""")


def visible_runs(workdir: Path) -> list[Path]:
    return sorted(p for p in (workdir / "submissions").iterdir()
                  if p.is_dir() and not p.is_symlink() and not p.name.startswith("."))


def log_lines(workdir: Path) -> list[dict]:
    path = workdir / "submissions" / "runs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def assert_complete(run_dir: Path) -> None:
    for name in ("submission.csv", "metrics.json", "report.html"):
        assert (run_dir / name).is_file(), (run_dir, name)
    assert json.loads((run_dir / "metrics.json").read_text())["run_id"] == run_dir.name


def test_two_runs_of_one_config_at_the_same_moment_keep_both(tiny_avito_dir, tmp_path):
    work = tmp_path / "w"
    children = [start_child(run_args(tiny_avito_dir, work), tmp_path, FROZEN_CLOCK) for _ in range(2)]
    for child, err in children:
        code, stderr, _ = finish_child(child, err)
        assert code == 0, stderr[-3000:]
    runs = visible_runs(work)
    assert len(runs) == 2, [p.name for p in runs]
    for run_dir in runs:
        assert_complete(run_dir)
    lines = log_lines(work)
    assert sorted(r["run_id"] for r in lines) == [p.name for p in runs]
    assert sorted(r["submission"] for r in lines) == [str(p / "submission.csv") for p in runs]
    assert (work / "submissions" / "latest").resolve() in runs
    assert not [p.name for p in (work / "submissions").iterdir() if p.name.startswith(".")]


def test_a_run_killed_in_its_report_step_leaves_nothing_visible_and_is_cleaned_next_time(tiny_avito_dir, tmp_path):
    work = tmp_path / "w"
    code, stderr, _ = run_child(run_args(tiny_avito_dir, work), tmp_path)
    assert code == 0, stderr[-3000:]
    (first,) = visible_runs(work)
    code, _, _ = run_child(run_args(tiny_avito_dir, work), tmp_path, KILL_IN_REPORT)
    assert code == -signal.SIGKILL
    # the killed run is invisible: no folder without a report, no log line, latest unchanged
    assert visible_runs(work) == [first]
    assert [r["run_id"] for r in log_lines(work)] == [first.name]
    assert (work / "submissions" / "latest").resolve() == first
    assert [p.name for p in (work / "submissions").iterdir() if p.name.startswith(".partial-")]
    code, stderr, _ = run_child(run_args(tiny_avito_dir, work), tmp_path)
    assert code == 0, stderr[-3000:]
    runs = visible_runs(work)
    assert len(runs) == 2 and first in runs
    for run_dir in runs:
        assert_complete(run_dir)
    assert [r["run_id"] for r in log_lines(work)] == [first.name, (set(runs) - {first}).pop().name]
    assert (work / "submissions" / "latest").resolve() == (set(runs) - {first}).pop()
    assert not [p.name for p in (work / "submissions").iterdir() if p.name.startswith(".")], "leftovers cleaned"


# -- the machine: read-only and full disks ---------------------------------------------------------------------

READ_ONLY = textwrap.dedent("""
    import errno as _errno, os as _os
    _real_mkdir = _os.mkdir
    _root = _os.environ["READ_ONLY_ROOT"]
    def _mkdir(path, *args, **kwargs):
        path = _os.fspath(path)
        if path.startswith(_root + _os.sep) and _os.path.isdir(_os.path.dirname(path)):
            raise OSError(_errno.EROFS, _os.strerror(_errno.EROFS), path)
        return _real_mkdir(path, *args, **kwargs)
    _os.mkdir = _mkdir
""")

# the disk fills up in the middle of the third parquet file the run writes
FULL_DISK = textwrap.dedent("""
    import errno as _errno, os as _os
    import pandas as _pd
    _real = _pd.DataFrame.to_parquet
    _calls = [0]
    def _to_parquet(self, path, *args, **kwargs):
        _calls[0] += 1
        if _calls[0] == 3:
            with open(path, "wb") as fh:
                fh.write(b"PAR1" + bytes(100))
            raise OSError(_errno.ENOSPC, _os.strerror(_errno.ENOSPC))
        return _real(self, path, *args, **kwargs)
    _pd.DataFrame.to_parquet = _to_parquet
""")


def test_read_only_workdir_is_one_line(tiny_avito_dir, tmp_path, monkeypatch):
    work = tmp_path / "w"
    work.mkdir()
    monkeypatch.setenv("READ_ONLY_ROOT", str(work))
    code, stderr, _ = run_child(run_args(tiny_avito_dir, work), tmp_path, READ_ONLY)
    assert code == 2 and "Traceback" not in stderr, stderr[-3000:]
    assert error_lines(stderr) == [f"error: cannot write to {work / 'features'}: read-only file system"]
    assert list(work.iterdir()) == []


def test_full_disk_is_one_line_and_leaves_the_cache_consistent(tiny_avito_dir, tmp_path):
    work = tmp_path / "w"
    code, stderr, _ = run_child(run_args(tiny_avito_dir, work), tmp_path, FULL_DISK)
    assert code == 2 and "Traceback" not in stderr, stderr[-3000:]
    assert error_lines(stderr) == [f"error: no space left on the device holding {work}"]
    files = [p for p in work.rglob("*") if p.is_file()]
    assert not [p for p in work.rglob("*") if p.name.endswith(".tmp")], "no temporary left behind"
    assert len(files) == 2 and all(len(pd.read_parquet(p)) for p in files), files  # complete or absent
    code, stderr, _ = run_child(run_args(tiny_avito_dir, work), tmp_path)
    assert code == 0, stderr[-3000:]
