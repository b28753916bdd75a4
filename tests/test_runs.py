"""runs.jsonl and run folders: appends are safe under concurrent runs and crashes; run ids are unique; a run
folder is created exclusively and visible only when complete; leftovers of killed runs are cleaned."""
from __future__ import annotations

import datetime as dt
import errno
import json
import multiprocessing
import os

import pytest

from mmstack.run_folder import PARTIAL_PREFIX, RunFolder, clean_leftovers, new_run_id
from mmstack.runs import append_run, load_runs, runs_path
from mmstack.store import Store


def _append_many(workdir: str, worker: int, n: int) -> None:
    store = Store(workdir)
    for i in range(n):
        append_run(store, {"run_id": f"w{worker}-{i}", "task": "t", "pad": "x" * 2000})


def test_concurrent_appends_keep_every_line(tmp_path):
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_append_many, args=(str(tmp_path), w, 40)) for w in range(6)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(60)
        assert p.exitcode == 0
    runs = load_runs(Store(tmp_path))
    assert len(runs) == 240 and len({r["run_id"] for r in runs}) == 240


def test_a_torn_line_is_skipped_and_a_failed_append_leaves_the_log_as_it_was(tmp_path, monkeypatch, caplog):
    store = Store(tmp_path)
    append_run(store, {"run_id": "a", "task": "t"})
    path = runs_path(store)
    with open(path, "a") as fh:
        fh.write('{"run_id": "cut sh')  # a crash in the middle of a write
    assert append_run(store, {"run_id": "b", "task": "t"})
    with caplog.at_level("WARNING"):
        assert [r["run_id"] for r in load_runs(store)] == ["a", "b"]
    assert "line 2: not a complete run record" in caplog.text
    before = path.read_bytes()

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError):
        append_run(store, {"run_id": "c", "task": "t"})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert not append_run(store, {"run_id": "b", "task": "t"}), "a run is logged once"


def test_run_ids_made_at_the_same_moment_differ_and_name_the_input():
    now = dt.datetime(2026, 1, 2, 3, 4, 5)
    ids = {new_run_id({"a": 1}, "data1", now) for _ in range(50)}
    assert len(ids) == 50 and all(i.startswith("20260102-030405-") for i in ids)
    other_input = new_run_id({"a": 1}, "data2", now)
    assert other_input.split("-")[2] != next(iter(ids)).split("-")[2]


def test_run_folder_is_visible_only_when_published(tmp_path):
    store = Store(tmp_path)
    folder = RunFolder.begin(store, {"a": 1}, "fp")
    assert folder.path.name == PARTIAL_PREFIX + folder.run_id and not folder.final.exists()
    (folder.path / "submission.csv").write_text("x\n")
    clean_leftovers(store)  # a live run's folder is never cleaned: its owner holds the lock
    assert folder.path.is_dir()
    record = {"run_id": folder.run_id, "task": "t"}
    assert folder.publish(record) == folder.final
    assert (folder.final / "submission.csv").is_file() and not folder.path.exists()
    assert not (folder.final / ".lock").exists()
    assert json.loads((folder.final / "run.json").read_text()) == record
    assert (tmp_path / "submissions" / "latest").resolve() == folder.final
    assert [r["run_id"] for r in load_runs(store)] == [folder.run_id]


def _begin_and_die(workdir: str, publish: bool) -> None:
    folder = RunFolder.begin(Store(workdir), {"a": 1}, "fp")
    (folder.path / "submission.csv").write_text("x\n")
    if publish:  # killed after the rename, before runs.jsonl got the line
        from mmstack import run_folder

        run_folder.append_run = lambda *a, **k: os._exit(9)
        folder.publish({"run_id": folder.run_id, "task": "t"})
    os._exit(9)  # killed: no cleanup of any kind


def _die_in(workdir: str, publish: bool) -> None:
    ctx = multiprocessing.get_context("fork")
    p = ctx.Process(target=_begin_and_die, args=(workdir, publish))
    p.start()
    p.join(60)
    assert p.exitcode == 9


def test_leftovers_of_killed_runs_are_cleaned_at_the_next_run(tmp_path):
    subs = tmp_path / "submissions"
    _die_in(str(tmp_path), publish=True)
    (published,) = [p for p in subs.iterdir() if p.is_dir() and not p.name.startswith(".") and not p.is_symlink()]
    assert load_runs(Store(tmp_path)) == []
    _die_in(str(tmp_path), publish=False)  # this run's start adds the line the first one could not
    assert [r["run_id"] for r in load_runs(Store(tmp_path))] == [published.name]
    (partial,) = [p for p in subs.iterdir() if p.name.startswith(PARTIAL_PREFIX)]
    stray = subs / ".runs.jsonl.abc.tmp"
    stray.mkdir()
    os.utime(stray, (0, 0))  # an old temporary of an atomic write
    folder = RunFolder.begin(Store(tmp_path), {"a": 1}, "fp")  # the next run
    assert not partial.exists() and not stray.exists()
    folder.abandon()
    assert sorted(p.name for p in subs.iterdir()) == sorted([published.name, "latest", "runs.jsonl"])
    assert [r["run_id"] for r in load_runs(Store(tmp_path))] == [published.name]
